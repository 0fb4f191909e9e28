"""The one registry of layer types: what every part of gpucnn needs to know of a layer, in one entry.

Each entry says, for one layer class:
- ``args``: its architecture name (the key) and constructor arguments, so that a saved file can
  rebuild the model (``describe`` / ``gpucnn.architecture.build``); ``dtype``: whether it takes one;
- ``onnx``: the ONNX operator it exports to (``gpucnn.io.onnx`` keeps one emitter per operator;
  None: no node, as Dropout at inference; "AveragePool (adaptive)": an AveragePool of its own emitter);
- ``patterns``: its places in the planner's patterns (``gpucnn/compile/plan.py``), as
  (pattern, position): position 0 starts the pattern, later ones are optional followers;
- ``rank``: the rank of the data after it ('same', or 2 for Flatten; None: not known from the type, as
  Reshape's), which the planner follows;
- ``cuda_kernels``: the kernels of its eager CUDA ops, as ``file.cu:function`` of
  ``gpucnn/kernels`` (the fused ones of the graph step live with their stages).

How to add a layer type (docs/architecture.md; tests/nn/test_registry.py enforces each step):
write its op in ``gpucnn/ops`` (forward and backward, the NumPy reference), its layer class in
``gpucnn/nn/layers``, export it from ``gpucnn.nn.layers``, add its entry here, and optionally a
CPU fast stage (``gpucnn/compile/cpu``) and a graph stage (``gpucnn/compile/cuda_graph``).
"""
import numpy

from . import layers as L

__all__ = ["LayerType", "LAYER_TYPES", "layer_type", "describe", "describe_layer", "build_layer", "build_layers",
           "ArchitectureError"]


class ArchitectureError(ValueError):
    """An architecture that cannot be described or rebuilt."""


class LayerType:
    """One registry entry (see the module docstring)."""

    def __init__(self, cls, args, onnx, patterns=(), rank="same", cuda_kernels=(), dtype=False):
        self.cls, self.args, self.onnx, self.patterns = cls, args, onnx, tuple(patterns)
        self.rank, self.cuda_kernels, self.dtype = rank, tuple(cuda_kernels), dtype

    @property
    def name(self):
        return self.cls.__name__


def _padding_arg(layer):
    """The padding as a record keeps it: the string as given, [h, w] when symmetric, else [[t, b], [l, r]]."""
    w = layer.window
    if isinstance(layer.padding, str):
        return layer.padding
    return [w.pt, w.pl] if not w.asymmetric else [[w.pt, w.pb], [w.pl, w.pr]]


def _pool_args(layer):
    w = layer.window
    args = {"kernel_size": [w.kh, w.kw], "stride": [w.sy, w.sx], "padding": _padding_arg(layer)}
    if w.dilated:  # the options only where not their default, so that older records read the same
        args["dilation"] = [w.dy, w.dx]
    if w.ceil_mode:
        args["ceil_mode"] = True
    if not getattr(layer, "count_include_pad", True):
        args["count_include_pad"] = False
    return args


def _conv_args(layer):
    w = layer.window
    padding = _padding_arg(layer)
    return {"in_channels": layer.in_channels, "out_channels": layer.out_channels,
            "kernel_size": list(layer.weight.shape[2:]), "stride": [w.sy, w.sx], "padding": padding,
            "dilation": list(layer.dilation), "groups": layer.groups, "bias": layer.bias is not None}


def _dense_args(layer):
    return {"in_features": layer.in_features, "out_features": layer.out_features, "bias": layer.bias is not None}


def _batchnorm_args(layer):
    return {"num_features": layer.num_features, "eps": layer.eps, "momentum": layer.momentum}


def _no_args(layer):
    return {}


_CONV_KERNELS = ("conv.cu:im2col", "conv.cu:col2im", "conv.cu:conv_direct", "conv.cu:transpose01",
                 "conv.cu:row_sum")
_ACTIVATION = ("elementwise", 0)

LAYER_TYPES = {t.name: t for t in (
    LayerType(L.Conv2D, _conv_args, "Conv", [("conv", 0)], cuda_kernels=_CONV_KERNELS, dtype=True),
    LayerType(L.Dense, _dense_args, "Gemm", [("dense", 0)], dtype=True),
    LayerType(L.MaxPool2D, _pool_args, "MaxPool", [("pool", 0), ("conv", 2)],
              cuda_kernels=("pool.cu:max_pool_fwd", "pool.cu:max_pool_bwd")),
    LayerType(L.AvgPool2D, _pool_args, "AveragePool", [("pool", 0)],
              cuda_kernels=("pool.cu:avg_pool_fwd", "pool.cu:avg_pool_bwd")),
    LayerType(L.Flatten, _no_args, "Flatten", [("flatten", 0)], rank=2),
    LayerType(L.ReLU, _no_args, "Relu", [_ACTIVATION, ("conv", 1), ("dense", 1)]),
    LayerType(L.LeakyReLU, lambda layer: {"negative_slope": layer.negative_slope}, "LeakyRelu", [_ACTIVATION]),
    LayerType(L.Sigmoid, _no_args, "Sigmoid", [_ACTIVATION]),
    LayerType(L.Tanh, _no_args, "Tanh", [_ACTIVATION]),
    LayerType(L.Dropout, lambda layer: {"p": layer.p}, None),
    LayerType(L.BatchNorm1D, _batchnorm_args, "BatchNormalization", dtype=True),
    LayerType(L.BatchNorm2D, _batchnorm_args, "BatchNormalization", [("batchnorm", 0)], dtype=True),
    LayerType(L.Add, _no_args, "Add"),
    LayerType(L.Concatenate, lambda layer: {"axis": layer.axis}, "Concat"),
    LayerType(L.GlobalAvgPool2D, _no_args, "GlobalAveragePool", rank=2),
    LayerType(L.GlobalMaxPool2D, _no_args, "GlobalMaxPool", rank=2),
    LayerType(L.AdaptiveAvgPool2D, lambda layer: {"output_size": list(layer.output_size)},
              "AveragePool (adaptive)"),
    LayerType(L.Softmax, lambda layer: {"axis": layer.axis}, "Softmax"),
    LayerType(L.Reshape, lambda layer: {"shape": list(layer.shape)}, "Reshape", rank=None),
)}


def layer_type(layer):
    """The registry entry of ``layer``, or None for a class of the user's own (a subclass included: it may
    compute something else under the same name)."""
    entry = LAYER_TYPES.get(type(layer).__name__)
    return entry if entry is not None and type(layer) is entry.cls else None


def describe_layer(layer):
    """{"type", "args"} of one of gpucnn's layers, {"type": "Sequential"|"Model", ...} of a nested network, or None
    (a layer of the user's own: the architecture cannot be recorded)."""
    if hasattr(layer, "nodes"):  # a Model
        nodes = []
        tensors = {t.id: k for k, t in enumerate(layer.inputs)}
        for node, name in zip(layer.nodes, layer.node_names):
            spec = describe_layer(node.layer)
            if spec is None:
                return None
            nodes.append({"name": name, "layer": spec, "inputs": [tensors[t.id] for t in node.inputs],
                          "multi": node.multi})
            tensors[node.output.id] = len(tensors)
        return {"type": "Model", "name": layer.given_name,
                "inputs": [{"shape": list(t.shape), "dtype": t.dtype.name} for t in layer.inputs],
                "nodes": nodes, "outputs": [tensors[t.id] for t in layer.outputs],
                "multi_input": layer.multi_input, "multi_output": layer.multi_output}
    if hasattr(layer, "locate"):  # a Sequential
        specs = [describe_layer(item) for item in layer.layers]
        if any(spec is None for spec in specs):
            return None
        return {"type": "Sequential", "name": layer.given_name, "layers": specs}
    entry = layer_type(layer)
    if entry is None:
        return None
    spec = {"type": entry.name, "args": entry.args(layer)}
    if layer.given_name is not None:
        spec["name"] = layer.given_name
    return spec


def describe(model, input_shape=None):
    """The JSON-able architecture of ``model`` (a Sequential or a Model), or None when a layer is not one of
    gpucnn's own.

        {"layers": [{"type": "Conv2D", "args": {"in_channels": 1, "out_channels": 32, ...}}, ...],
         "dtype": "float32", "input_shape": [1, 28, 28]}                       (a Sequential)
        {"graph": {"type": "Model", "nodes": [{"name": "conv1", "layer": {...}, "inputs": [0]}, ...], ...},
         "dtype": "float32", "input_shape": [3, 32, 32]}                        (a Model)
    """
    if hasattr(model, "nodes"):
        graph = describe_layer(model)
        if graph is None:
            return None
        spec = {"graph": graph}
    else:
        specs = [describe_layer(layer) for layer in model.layers]
        if any(s is None or s["type"] in ("Sequential", "Model") for s in specs):
            return None  # a chain file holds plain layers (older versions read it)
        spec = {"layers": specs}
    params = model.parameters()
    spec["dtype"] = str(params[0].data.dtype) if params else "float32"
    if input_shape is not None:
        spec["input_shape"] = [int(d) for d in input_shape]
    return spec


def build_layer(item, dtype, where="layer"):
    """A fresh layer of gpucnn's own from ``describe_layer``'s record of it (a nested network not included)."""
    if item["type"] not in LAYER_TYPES:
        raise ArchitectureError(f"{where}: unknown layer type {item['type']!r}")
    entry = LAYER_TYPES[item["type"]]
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in item["args"].items()}
    if entry.dtype:
        args["dtype"] = dtype
    if item.get("name") is not None:
        args["name"] = item["name"]
    return entry.cls(**args)


def build_layers(spec):
    """Fresh layers (on the CPU) from ``describe``'s output of a Sequential; ArchitectureError when unusable."""
    try:
        dtype = numpy.dtype(spec.get("dtype", "float32"))
        return [build_layer(item, dtype, f"layer {i}") for i, item in enumerate(spec["layers"])]
    except ArchitectureError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArchitectureError(f"cannot rebuild the model from its recorded architecture: "
                                f"{type(exc).__name__}: {exc}") from None
