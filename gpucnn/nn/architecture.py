"""A Sequential's architecture as JSON, so that a saved file can rebuild its model.

``describe(model)`` lists each layer's type and constructor arguments (for a Model, its nodes and the
tensors they read, nested networks included) (from the registry of layer
types, gpucnn/nn/registry.py); ``build(spec)`` makes a new Sequential from that list (fresh
weights, to be loaded from the file). Only gpucnn's own layers can be described: a layer of
another type makes ``describe`` return None, and a file without an architecture needs its model
built in Python (or named: ``--model``).

    {"layers": [{"type": "Conv2D", "args": {"in_channels": 1, "out_channels": 32, ...}}, ...],
     "dtype": "float32", "input_shape": [1, 28, 28]}
"""
import numpy

from .graph import GraphError, Input
from .model import Model
from .registry import ArchitectureError, build_layer, build_layers, describe
from .sequential import Sequential

__all__ = ["describe", "build", "ArchitectureError"]


def build(spec):
    """A new Sequential or Model (fresh weights, on the CPU) from ``describe``'s output; ArchitectureError when
    unusable."""
    if "graph" not in spec:
        return Sequential(build_layers(spec))
    try:
        return _build_network(spec["graph"], numpy.dtype(spec.get("dtype", "float32")))
    except ArchitectureError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, GraphError) as exc:
        raise ArchitectureError(f"cannot rebuild the model from its recorded architecture: "
                                f"{type(exc).__name__}: {exc}") from None


def _build_network(item, dtype):
    """A layer, a Sequential or a Model (with its nested networks) from ``describe_layer``'s record."""
    if item["type"] == "Sequential":
        return Sequential([_build_network(x, dtype) for x in item["layers"]], name=item.get("name"))
    if item["type"] != "Model":
        return build_layer(item, dtype)
    tensors = [Input(tuple(t["shape"]), dtype=t["dtype"]) for t in item["inputs"]]
    for node in item["nodes"]:
        args = [tensors[k] for k in node["inputs"]]
        layer = _build_network(node["layer"], dtype)  # unnamed layers get the same automatic names again
        tensors.append(layer(args if node["multi"] else args[0]))
    outputs = [tensors[k] for k in item["outputs"]]
    inputs = tensors[:len(item["inputs"])]
    return Model(inputs if item["multi_input"] else inputs[0], outputs if item["multi_output"] else outputs[0],
                 name=item.get("name"))
