"""A Sequential's architecture as JSON, so that a saved file can rebuild its model.

``describe(model)`` lists each layer's type and constructor arguments (from the registry of layer
types, gpucnn/nn/registry.py); ``build(spec)`` makes a new Sequential from that list (fresh
weights, to be loaded from the file). Only gpucnn's own layers can be described: a layer of
another type makes ``describe`` return None, and a file without an architecture needs its model
built in Python (or named: ``--model``).

    {"layers": [{"type": "Conv2D", "args": {"in_channels": 1, "out_channels": 32, ...}}, ...],
     "dtype": "float32", "input_shape": [1, 28, 28]}
"""
from .registry import ArchitectureError, build_layers, describe
from .sequential import Sequential

__all__ = ["describe", "build", "ArchitectureError"]


def build(spec):
    """A new Sequential (fresh weights, on the CPU) from ``describe``'s output; ArchitectureError when unusable."""
    return Sequential(build_layers(spec))
