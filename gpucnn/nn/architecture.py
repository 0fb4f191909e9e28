"""A Sequential's architecture as JSON, so that a saved file can rebuild its model.

``describe(model)`` lists each layer's type and constructor arguments; ``build(spec)`` makes
a new Sequential from that list (fresh weights, to be loaded from the file). Only gpucnn's
own layers can be described: a layer of another type makes ``describe`` return None, and a
file without an architecture needs its model built in Python (or named: ``--model``).

    {"layers": [{"type": "Conv2D", "args": {"in_channels": 1, "out_channels": 32, ...}}, ...],
     "dtype": "float32", "input_shape": [1, 28, 28]}
"""
import numpy

from . import layers as L

__all__ = ["describe", "build", "ArchitectureError"]


class ArchitectureError(ValueError):
    """An architecture that cannot be described or rebuilt."""


def _pool_args(layer):
    w = layer.window
    return {"kernel_size": [w.kh, w.kw], "stride": [w.sy, w.sx], "padding": [w.pt, w.pl]}


def _conv_args(layer):
    w = layer.window
    padding = layer.padding if isinstance(layer.padding, str) else [w.pt, w.pl]
    args = {"in_channels": layer.in_channels, "out_channels": layer.out_channels,
            "kernel_size": list(layer.weight.shape[2:]), "stride": [w.sy, w.sx], "padding": padding,
            "dilation": list(layer.dilation), "groups": layer.groups, "bias": layer.bias is not None}
    return args


def _dense_args(layer):
    return {"in_features": layer.in_features, "out_features": layer.out_features, "bias": layer.bias is not None}


def _batchnorm_args(layer):
    return {"num_features": layer.num_features, "eps": layer.eps, "momentum": layer.momentum}


def _no_args(layer):
    return {}


# type -> (class, function giving the constructor arguments)
_LAYERS = {
    "Conv2D": (L.Conv2D, _conv_args),
    "Dense": (L.Dense, _dense_args),
    "MaxPool2D": (L.MaxPool2D, _pool_args),
    "AvgPool2D": (L.AvgPool2D, _pool_args),
    "Flatten": (L.Flatten, _no_args),
    "ReLU": (L.ReLU, _no_args),
    "LeakyReLU": (L.LeakyReLU, lambda layer: {"negative_slope": layer.negative_slope}),
    "Sigmoid": (L.Sigmoid, _no_args),
    "Tanh": (L.Tanh, _no_args),
    "Dropout": (L.Dropout, lambda layer: {"p": layer.p}),
    "BatchNorm1D": (L.BatchNorm1D, _batchnorm_args),
    "BatchNorm2D": (L.BatchNorm2D, _batchnorm_args),
}
_WITH_DTYPE = {"Conv2D", "Dense", "BatchNorm1D", "BatchNorm2D"}


def describe(model, input_shape=None):
    """The JSON-able architecture of ``model``, or None when a layer is not one of gpucnn's own."""
    specs = []
    for layer in model.layers:
        entry = _LAYERS.get(type(layer).__name__)
        if entry is None or type(layer) is not entry[0]:
            return None
        specs.append({"type": type(layer).__name__, "args": entry[1](layer)})
    params = model.parameters()
    spec = {"layers": specs, "dtype": str(params[0].data.dtype) if params else "float32"}
    if input_shape is not None:
        spec["input_shape"] = [int(d) for d in input_shape]
    return spec


def build(spec):
    """A new Sequential (fresh weights, on the CPU) from ``describe``'s output; ArchitectureError when unusable."""
    from .sequential import Sequential  # model.py saves describe()'s output, so it imports this module
    try:
        dtype = numpy.dtype(spec.get("dtype", "float32"))
        built = []
        for i, item in enumerate(spec["layers"]):
            if item["type"] not in _LAYERS:
                raise ArchitectureError(f"layer {i}: unknown layer type {item['type']!r}")
            cls = _LAYERS[item["type"]][0]
            args = {k: tuple(v) if isinstance(v, list) else v for k, v in item["args"].items()}
            if item["type"] in _WITH_DTYPE:
                args["dtype"] = dtype
            built.append(cls(**args))
    except ArchitectureError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArchitectureError(f"cannot rebuild the model from its recorded architecture: "
                                f"{type(exc).__name__}: {exc}") from None
    return Sequential(built)
