"""Export a Sequential or a Model to ONNX (opset 17), for onnxruntime and every other ONNX consumer.

Needs the ``onnx`` package (``pip install 'gpucnn[onnx]'``). Each layer becomes the ONNX
operator with the same meaning:

    Conv2D -> Conv (explicit pads: 'same' with an even kernel pads one more at the bottom/right),
    MaxPool2D -> MaxPool, AvgPool2D -> AveragePool (explicit pads, dilations, ceil_mode and the layer's
    count_include_pad; 'same' at a stride above 1 resolved for the input size), Dense -> Gemm (transB=1),
    Flatten -> Flatten(axis=1), ReLU/LeakyReLU/Sigmoid/Tanh ->
    Relu/LeakyRelu/Sigmoid/Tanh, BatchNorm1D/2D -> BatchNormalization in eval form (the running
    statistics), Dropout -> nothing (it is the identity at inference), Add -> Add, Concatenate ->
    Concat, GlobalAvgPool2D / GlobalMaxPool2D -> GlobalAveragePool / GlobalMaxPool + Flatten (ONNX keeps
    (N, C, 1, 1)), AdaptiveAvgPool2D -> AveragePool where its bins are even (the input size a multiple of the
    output size; refused otherwise); a nested Sequential or Model is inlined.

Softmax -> Softmax, Reshape -> Reshape. The other direction, ONNX into a trainable Model, is ``load``
(gpucnn/io/onnx_import.py), and ``backend`` is gpucnn as an ONNX backend (gpucnn/io/onnx_backend.py).

The input is ``"input"`` of shape (batch, *input_shape) with a dynamic batch; the output is ``"output"``.
Both are float32, and so are the weights: a float64 model is rounded to float32, the precision
that ONNX runtimes serve (onnxruntime has no float64 convolution on the CPU).
"""

import numpy

from ..nn.registry import LAYER_TYPES, layer_type
from ..backend import asnumpy
from .arrays import write_file
from ..nn.summary import output_shapes
from ..ops.geometry import Window2D

__all__ = ["export", "to_onnx", "ExportError", "OPSET", "load", "backend"]

OPSET = 17
_IR_VERSION = 8  # the IR version of opset 17: readable by every onnxruntime that runs opset 17


class ExportError(ValueError):
    """The model cannot be written as ONNX (an unsupported layer, or an input shape it cannot take)."""


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"gpucnn.onnx needs the onnx package: pip install 'gpucnn[onnx]' ({exc})") from None
    return onnx


class _Graph:
    """Nodes and initializers being collected; each layer's output is named after its index."""

    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.dtype = dtype
        self.nodes, self.initializers = [], []
        self.shapes = {}  # tensor name -> its shape without the batch (for the emitters that need it)

    def constant(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(
            numpy.ascontiguousarray(asnumpy(array), dtype=self.dtype), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _pair(value):
    return [int(v) for v in (value if isinstance(value, (tuple, list)) else (value, value))]


def _window(g, layer, x, i):
    """The layer's window for its input here: a 'same' padding at a stride above 1 resolved for the input's size
    (ONNX gets explicit pads)."""
    shape = getattr(g, "shapes", {}).get(x)
    if shape is None:
        if isinstance(layer.window, Window2D):
            return layer.window
        raise ExportError(f"gpucnn.onnx.export: layer {i} ({layer!r}): the input size is not known here, and "
                          f"its 'same' padding depends on it")
    return layer.window.resolve(*shape[-2:])


def _conv(g, layer, x, out, i):
    w = _window(g, layer, x, i)
    inputs = [x, g.constant(f"{i}.weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.constant(f"{i}.bias", layer.bias.data))
    # dilation and groups: read where Conv2D has them, the defaults otherwise.
    return g.node("Conv", inputs, out, kernel_shape=list(layer.weight.shape[2:]), strides=[w.sy, w.sx],
                  pads=[w.pt, w.pl, w.pb, w.pr], dilations=_pair(getattr(layer, "dilation", (1, 1))),
                  group=int(getattr(layer, "groups", 1)))


def _pool(op):
    def emit(g, layer, x, out, i):
        w = _window(g, layer, x, i)
        options = {"ceil_mode": int(w.ceil_mode)} if w.ceil_mode else {}
        if w.dilated:
            options["dilations"] = [w.dy, w.dx]
        if op == "AveragePool":
            options["count_include_pad"] = int(getattr(layer, "count_include_pad", True))
        return g.node(op, [x], out, kernel_shape=[w.kh, w.kw], strides=[w.sy, w.sx],
                      pads=[w.pt, w.pl, w.pb, w.pr], **options)
    return emit


def _dense(g, layer, x, out, i):
    inputs = [x, g.constant(f"{i}.weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.constant(f"{i}.bias", layer.bias.data))
    return g.node("Gemm", inputs, out, transB=1)


def _batchnorm(g, layer, x, out, i):
    inputs = [x] + [g.constant(f"{i}.{name}", getattr(layer, name) if name.startswith("running") else
                               getattr(layer, name).data)
                    for name in ("weight", "bias", "running_mean", "running_var")]
    return g.node("BatchNormalization", inputs, out, epsilon=layer.eps)  # training_mode=0: running statistics


def _reshape(g, layer, x, out, i):
    shape = g.onnx.numpy_helper.from_array(numpy.array((0,) + layer.shape, dtype=numpy.int64), f"{i}.shape")
    g.initializers.append(shape)  # 0: the batch is copied from the input
    return g.node("Reshape", [x, shape.name], out)


def _simple(op, **attrs):
    return lambda g, layer, x, out, i: g.node(op, [x], out, **attrs)


def _global_pool(op):
    """ONNX's global pools keep (N, C, 1, 1); gpucnn's give (N, C): the pool, then Flatten."""
    return lambda g, layer, x, out, i: g.node("Flatten", [g.node(op, [x], f"{out}.{op}")], out, axis=1)


def _adaptive_avg_pool(g, layer, x, out, i):
    """AdaptiveAvgPool2D as AveragePool: its bins are the windows of one kernel and stride only where the input
    size is a multiple of the output size (ONNX has no adaptive pool)."""
    size = g.shapes[x][1:]
    out_size = layer.resolved_size(size)
    if any(s % o for s, o in zip(size, out_size)):
        raise ExportError(f"gpucnn.onnx.export: layer {i} ({layer!r}) has no ONNX form for inputs of size "
                          f"{size[0]}x{size[1]}: its bins are an AveragePool only when the output size "
                          f"{out_size[0]}x{out_size[1]} divides the input size")
    kernel = [s // o for s, o in zip(size, out_size)]
    return g.node("AveragePool", [x], out, kernel_shape=kernel, strides=kernel, pads=[0, 0, 0, 0])


# ONNX operator -> the function that writes its node; which layer type exports to which operator is the
# registry's ``onnx`` (gpucnn/nn/registry.py).
EMITTERS = {
    "Conv": _conv,
    "MaxPool": _pool("MaxPool"),
    "AveragePool": _pool("AveragePool"),
    "Gemm": _dense,
    "Flatten": _simple("Flatten", axis=1),
    "Relu": _simple("Relu"),
    "Sigmoid": _simple("Sigmoid"),
    "Tanh": _simple("Tanh"),
    "LeakyRelu": lambda g, layer, x, out, i: g.node("LeakyRelu", [x], out, alpha=layer.negative_slope),
    "BatchNormalization": _batchnorm,
    "GlobalAveragePool": _global_pool("GlobalAveragePool"),
    "GlobalMaxPool": _global_pool("GlobalMaxPool"),
    "AveragePool (adaptive)": _adaptive_avg_pool,
    "Softmax": lambda g, layer, x, out, i: g.node("Softmax", [x], out, axis=layer.axis),
    "Reshape": _reshape,
    # the layers of several inputs get the list of their inputs' names
    "Add": lambda g, layer, x, out, i: g.node("Add", list(x), out),
    "Concat": lambda g, layer, x, out, i: g.node("Concat", list(x), out, axis=layer.axis),
}


def _exporter(layer, index):
    """The emitter of ``layer``'s node; None for a layer with no node (Dropout at inference)."""
    entry = layer_type(layer)  # only gpucnn's own types: a subclass may compute something else
    if entry is None:
        supported = ", ".join(sorted(LAYER_TYPES))
        raise ExportError(f"gpucnn.onnx.export: layer {index} ({layer!r}) has no ONNX form; supported layers: "
                          f"{supported}")
    return None if entry.onnx is None else EMITTERS[entry.onnx]


def _children(net):
    """[(name, layer)] of a Sequential ('0', '1', ...) or a Model (its layers' names); None for a plain layer."""
    if hasattr(net, "nodes"):
        return net.named_children()
    if hasattr(net, "locate"):
        return [(str(i), layer) for i, layer in enumerate(net.layers)]
    return None


def _check_exportable(net, prefix=""):
    """Every layer, nested ones included, checked before anything is written."""
    for name, layer in _children(net):
        if _children(layer) is not None:
            _check_exportable(layer, f"{prefix}{name}.")
        else:
            _exporter(layer, f"{prefix}{name}")


def _emit(g, net, x, prefix):
    """Emit the nodes of a Sequential or Model reading the tensor named ``x``; returns its output's name. Constants
    and nodes are named by the dotted paths of state_dict ('layer1.0.conv1.weight')."""
    if not hasattr(net, "nodes"):  # a chain
        shapes = output_shapes(net, g.shapes[x])
        for (name, layer), shape in zip(_children(net), shapes):
            x = _emit_layer(g, layer, x, f"{prefix}{name}")
            g.shapes[x] = shape
        return x
    if len(net.inputs) != 1 or len(net.outputs) != 1:
        raise ExportError("gpucnn.onnx.export: a Model of several inputs or outputs is not exported yet")
    names = {net.inputs[0].id: x}
    for node, name in zip(net.nodes, net.node_names):
        args = [names[t.id] for t in node.inputs]
        names[node.output.id] = _emit_layer(g, node.layer, args if node.multi else args[0], f"{prefix}{name}")
        g.shapes[names[node.output.id]] = node.output.shape
    return names[net.outputs[0].id]


def _emit_layer(g, layer, x, path):
    if _children(layer) is not None:
        return _emit(g, layer, x, path + ".")
    emit = _exporter(layer, path)
    return x if emit is None else emit(g, layer, x, f"{path}.{type(layer).__name__}", path)


def _output_shape(model, input_shape):
    if hasattr(model, "nodes"):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ExportError("gpucnn.onnx.export: a Model of several inputs or outputs is not exported yet")
        if model.inputs[0].shape != input_shape:
            raise ValueError(f"the model was built for inputs of shape {model.inputs[0].shape}")
        return model.outputs[0].shape
    return output_shapes(model, input_shape)[-1]


def to_onnx(model, input_shape):
    """The ``onnx.ModelProto`` of ``model`` for inputs of shape (batch, *input_shape); see ``export``."""
    onnx = _import_onnx()
    input_shape = tuple(int(d) for d in input_shape)
    if not model.layers:
        raise ExportError("gpucnn.onnx.export: the model has no layers")
    _check_exportable(model)
    try:
        output_shape = _output_shape(model, input_shape)
    except (ValueError, TypeError) as exc:
        raise ExportError(f"gpucnn.onnx.export: the model cannot take inputs of shape (N, "
                          f"{', '.join(map(str, input_shape))}): {exc}") from None
    dtype = numpy.dtype(numpy.float32)
    elem_type = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    g = _Graph(onnx, dtype)
    g.shapes["input"] = input_shape
    x = _emit(g, model, "input", "")
    # A fixed output name (runtimes optimise the Identity away); it also gives a graph of Dropouts alone a node.
    g.nodes.append(onnx.helper.make_node("Identity", [x], ["output"], name="output"))
    graph = onnx.helper.make_graph(
        g.nodes, f"gpucnn.{type(model).__name__}",
        [onnx.helper.make_tensor_value_info("input", elem_type, ["batch", *input_shape])],
        [onnx.helper.make_tensor_value_info("output", elem_type, ["batch", *output_shape])],
        initializer=g.initializers)
    proto = onnx.helper.make_model(graph, producer_name="gpucnn",
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    proto.ir_version = _IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, input_shape):
    """Write ``model`` to ``path`` as an ONNX file (opset 17, dynamic batch), atomically.

    Args:
        model: a Sequential of gpucnn's layers (on any device; the weights are copied to the host).
        path: the .onnx file to write.
        input_shape: one sample's shape, e.g. (1, 28, 28); the batch dimension is left dynamic.

    Raises:
        ExportError: a layer with no ONNX form (named in the message), or an input shape the model cannot take.
        ImportError: the onnx package is missing.

    Example:
        >>> gpucnn.onnx.export(model, "fashion_cnn.onnx", (1, 28, 28))
        >>> onnxruntime.InferenceSession("fashion_cnn.onnx").run(None, {"input": x})[0]   # == model.predict(x)
    """
    return write_file(path, to_onnx(model, input_shape).SerializeToString())


def __getattr__(name):
    """``load`` (gpucnn/io/onnx_import.py) and ``backend`` (gpucnn/io/onnx_backend.py), imported on first use:
    the importer uses none of this module, and the backend needs the onnx package at import."""
    if name == "load":
        from .onnx_import import load
        return load
    if name == "backend":
        from .onnx_backend import GpucnnBackend
        return GpucnnBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
