"""Read an ONNX file into a trainable gpucnn.Model: ``gpucnn.onnx.load(path_or_model_proto)``.

The graph's nodes are read in order (ONNX stores them topologically sorted) and each becomes one of
gpucnn's layers, called on the symbolic tensors of ``gpucnn.Input`` (gpucnn/nn/graph.py), so that every
shape is checked as the model is built. What each operator becomes is in gpucnn/io/onnx_ops.py.

- Initializers (and Constant nodes) become the layers' Parameters (weights, biases, BatchNorm's scale
  and shift) or buffers (BatchNorm's running statistics); a float tensor that no layer takes as its
  state (an Add of a constant that does not follow MatMul, say) is refused.
- A node's name becomes its layer's name, made an identifier and unique ('/conv1/Conv' -> 'conv1_Conv'),
  so ``state_dict`` keys say where each array came from ('conv1_Conv.weight').
- The first dimension of every graph input is the batch, and stays dynamic; the others must be fixed.
  The shapes the file declares for its outputs are checked against the model's.
- Anything else is refused in one line (OnnxImportError) naming the op, its node and the opset, before a
  model is returned: nothing is half-built.

The model is returned in eval mode, the ONNX graph's meaning (BatchNorm on its running statistics,
Dropout the identity); ``fit`` trains it as any other model.
"""
import os
import re

import numpy

from ..nn.graph import GraphError, Input, SymbolicTensor
from ..nn.model import Model
from .onnx_ops import OPS

__all__ = ["load", "build", "parameter_inputs", "OnnxImportError", "FLOAT_TYPES"]

#: ONNX element types gpucnn imports, by their TensorProto number: FLOAT, DOUBLE
FLOAT_TYPES = {1: numpy.float32, 11: numpy.float64}


class OnnxImportError(ValueError):
    """An ONNX model that gpucnn cannot import: an op, attribute or shape it has no layer for."""


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"gpucnn.onnx.load needs the onnx package: pip install 'gpucnn[onnx]' ({exc})") from None
    return onnx


def _read(source):
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        return onnx.load_model_from_string(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        return onnx.load(os.fspath(source))
    raise TypeError(f"gpucnn.onnx.load: expected a path or an onnx.ModelProto, got {type(source).__name__}")


def _opset(proto):
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _identifier(text, fallback):
    name = re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")
    if not name:
        return fallback
    return f"{fallback}_{name}" if name[0].isdigit() else name


class Importer:
    """One import: the values of the graph by name (SymbolicTensors, or NumPy arrays for constants) and the
    context the op handlers of onnx_ops.py work in (attributes, inputs, layer names, refusals)."""

    def __init__(self, proto, dtype, bound=None):
        self.onnx = _onnx()
        self.proto, self.graph = proto, proto.graph
        self.dtype = numpy.dtype(dtype)
        if self.dtype not in (numpy.float32, numpy.float64):
            raise ValueError(f"gpucnn.onnx.load: dtype must be float32 or float64, got {self.dtype}")
        self.opset = _opset(proto)
        self.values, self.taken, self.fused = {}, set(), {}
        self.consumers = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        outputs = {o.name for o in self.graph.output}
        self.graph_outputs = outputs
        self.constants = {init.name for init in self.graph.initializer} | set(bound or ())
        for init in self.graph.initializer:
            self.values[init.name] = self.onnx.numpy_helper.to_array(init)
        for name, array in (bound or {}).items():
            self.values[name] = numpy.asarray(array)
        self.inputs = [self._input(v) for v in self.graph.input if v.name not in self.values]

    # ---------------------------------------------------------------- graph inputs and outputs

    def _input(self, value):
        tensor = value.type.tensor_type
        where = f"gpucnn.onnx.load: graph input {value.name!r}"
        if not value.type.HasField("tensor_type"):
            raise OnnxImportError(f"{where} is not a tensor")
        if tensor.elem_type not in FLOAT_TYPES:
            kind = self.onnx.TensorProto.DataType.Name(tensor.elem_type)
            raise OnnxImportError(f"{where} has element type {kind}; gpucnn imports float and double tensors")
        if not tensor.HasField("shape"):
            raise OnnxImportError(f"{where} has no shape; gpucnn needs each sample's shape (the batch may vary)")
        dims = list(tensor.shape.dim)
        sample = []
        for i, d in enumerate(dims[1:], start=1):
            if not d.HasField("dim_value") or d.dim_value < 1:
                raise OnnxImportError(f"{where}: dimension {i} is not fixed ({d.dim_param or '?'}); gpucnn builds "
                                      f"a model for one sample shape (only dimension 0, the batch, may vary)")
            sample.append(int(d.dim_value))
        if not sample:
            raise OnnxImportError(f"{where} has rank {len(dims)}; gpucnn needs a batch dimension and a sample shape")
        x = Input(tuple(sample), dtype=self.dtype)
        self.values[value.name] = x
        return x

    def _output(self, value):
        if value.name not in self.values:
            raise OnnxImportError(f"gpucnn.onnx.load: graph output {value.name!r} is made by no node")
        y = self.values[value.name]
        if not isinstance(y, SymbolicTensor):
            raise OnnxImportError(f"gpucnn.onnx.load: graph output {value.name!r} is a constant or a shape; a gpucnn "
                                  f"model computes its outputs from its inputs")
        dims = list(value.type.tensor_type.shape.dim)
        declared = [int(d.dim_value) if d.HasField("dim_value") else None for d in dims[1:]]
        if dims and (len(declared) != len(y.shape) or
                     any(d is not None and d != s for d, s in zip(declared, y.shape))):
            shown = tuple("?" if d is None else d for d in declared)
            raise OnnxImportError(f"gpucnn.onnx.load: graph output {value.name!r}: the file declares samples of shape "
                                  f"{shown}, the model computes {y.shape}")
        return y

    # ---------------------------------------------------------------- what the op handlers use

    def where(self, node):
        return f"gpucnn.onnx.load: {node.op_type} node {self.node_name(node)} (opset {self.opset})"

    def node_name(self, node):
        """'name' in quotes, or #k (the node's place in the graph) for a node without a name."""
        if node.name:
            return repr(node.name)
        return f"#{next(k for k, n in enumerate(self.graph.node) if n is node)} (unnamed)"

    def refuse(self, node, why):
        raise OnnxImportError(f"{self.where(node)}: {why}")

    def attrs(self, node, **defaults):
        """{name: value} of the node's attributes over ``defaults``; an attribute not among them is refused."""
        values = dict(defaults)
        for attr in node.attribute:
            if attr.name not in defaults:
                self.refuse(node, f"attribute {attr.name} is not supported (gpucnn reads "
                                  f"{', '.join(sorted(defaults)) or 'none'})")
            value = self.onnx.helper.get_attribute_value(attr)
            if isinstance(value, float):  # ONNX keeps float attributes in float32: 1e-5 is read back as 1e-5
                value = float(str(numpy.float32(value)))
            values[attr.name] = value.decode() if isinstance(value, bytes) else value
        return values

    def tensor(self, node, i):
        """The SymbolicTensor at input ``i``; a constant there is refused."""
        value = self._value(node, i)
        if not isinstance(value, SymbolicTensor):
            self.refuse(node, f"input {i} ({node.input[i]!r}) is a constant or a shape; gpucnn's layers take "
                              f"computed data there")
        return value

    def const(self, node, i, optional=False):
        """The constant (an initializer or a Constant's value) at input ``i``; None for an absent optional one."""
        if i >= len(node.input) or not node.input[i]:
            if optional:
                return None
            self.refuse(node, f"input {i} is missing")
        value = self._value(node, i)
        if not isinstance(value, numpy.ndarray):
            self.refuse(node, f"input {i} ({node.input[i]!r}) must be an initializer or a Constant: gpucnn "
                              f"holds it as the layer's parameter, not as computed data")
        return value

    def _value(self, node, i):
        if node.input[i] not in self.values:
            self.refuse(node, f"input {node.input[i]!r} is made by no earlier node")
        return self.values[node.input[i]]

    def fixed_batch(self):
        """The batch size the file fixes for every graph input (dimension 0), or None where it varies."""
        sizes = {v.type.tensor_type.shape.dim[0].dim_value if v.type.tensor_type.shape.dim[0].HasField("dim_value")
                 else None for v in self.graph.input if v.name not in self.constants}
        return sizes.pop() if len(sizes) == 1 else None

    def to_array(self, tensor_proto):
        return self.onnx.numpy_helper.to_array(tensor_proto)

    def layer_name(self, node, suffix=""):
        base = _identifier(node.name, node.op_type.lower()) if node.name else node.op_type.lower()
        base += suffix
        name, k = base, 2
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def make(self, node, cls, *args, **kwargs):
        """``cls(*args, **kwargs, name=...)``; a layer that cannot take the arguments is a refusal."""
        name = self.layer_name(node, kwargs.pop("name_suffix", ""))
        try:
            return cls(*args, name=name, **kwargs)
        except (TypeError, ValueError) as exc:
            self.refuse(node, f"gpucnn's {cls.__name__} cannot take it: {exc}")

    def apply(self, node, layer, x):
        """``layer`` called on ``x`` (its shapes checked now); a GraphError is a refusal."""
        try:
            return layer(x)
        except GraphError as exc:
            self.refuse(node, str(exc))

    def set_state(self, node, layer, name, array):
        """Copy ``array`` into the layer's parameter or buffer ``name``, which must have its shape."""
        current = layer.named_state()[name]
        array = numpy.asarray(array)
        if array.dtype.kind != "f":
            self.refuse(node, f"its {name} has element type {array.dtype}; gpucnn imports floats")
        if array.shape != tuple(current.shape):
            self.refuse(node, f"its {name} has shape {array.shape}, the layer needs {tuple(current.shape)}")
        layer.set_state(name, array)

    def output(self, node, value, i=0):
        self.values[node.output[i]] = value

    def only_consumer(self, node):
        """The one node that reads this node's output 0, when it is not also a graph output; else None."""
        readers = self.consumers.get(node.output[0], [])
        if len(readers) != 1 or node.output[0] in self.graph_outputs:
            return None
        return readers[0]

    def fuse(self, node):
        """Mark ``node`` as taken into the layer of an earlier one (MatMul + Add: Dense's bias)."""
        self.fused[id(node)] = node

    # ---------------------------------------------------------------- the walk

    def model(self):
        for node in self.graph.node:
            if id(node) in self.fused:
                continue
            which = f"(node {self.node_name(node)}, opset {self.opset})"
            if node.domain not in ("", "ai.onnx"):
                raise OnnxImportError(f"gpucnn.onnx.load: op {node.domain}.{node.op_type} {which} is not supported: "
                                      f"gpucnn imports the default domain")
            handler = OPS.get(node.op_type)
            if handler is None:
                raise OnnxImportError(f"gpucnn.onnx.load: op {node.op_type} {which} is not supported; gpucnn imports "
                                      f"{', '.join(sorted(OPS))}")
            handler.run(self, node)
        outputs = [self._output(v) for v in self.graph.output]
        if not outputs:
            raise OnnxImportError("gpucnn.onnx.load: the graph has no outputs")
        if not self.inputs:
            raise OnnxImportError("gpucnn.onnx.load: the graph has no inputs besides its initializers")
        name = _identifier(self.graph.name, "onnx") if self.graph.name else None
        try:
            model = Model(self.inputs if len(self.inputs) > 1 else self.inputs[0],
                          outputs if len(outputs) > 1 else outputs[0], name=name)
        except GraphError as exc:
            raise OnnxImportError(f"gpucnn.onnx.load: {exc}") from None
        return model.eval()


def build(proto, dtype=numpy.float32, bound=None):
    """The Model of an ``onnx.ModelProto``; ``bound``: {graph input name: array} taken as constants."""
    return Importer(proto, dtype, bound).model()


def load(path_or_model_proto, dtype=numpy.float32):
    """Read an ONNX model into a trainable gpucnn.Model (see the module docstring for what maps to what).

    Args:
        path_or_model_proto: an .onnx file, an ``onnx.ModelProto``, or its serialised bytes.
        dtype: float32 (default) or float64, the dtype of every layer.

    Raises:
        OnnxImportError: an op, attribute or shape gpucnn has no layer for (one line naming the op, its node
            and the opset).
        ImportError: the onnx package is missing.

    Example:
        >>> model = gpucnn.onnx.load("lenet5.onnx")           # e.g. written by torch.onnx.export
        >>> model.predict(x)                                  # the ONNX model's outputs
        >>> gpucnn.train.fit(model, loss, optimizer, x, y, epochs=1)   # fine-tune it
    """
    return build(_read(path_or_model_proto), dtype)


def parameter_inputs(proto):
    """The graph inputs that the nodes read as parameters (a Conv's weight, a Gemm's B...): ONNX's node tests feed
    weights as inputs, which gpucnn holds as parameters (gpucnn/io/onnx_backend.py binds them)."""
    names = {v.name for v in proto.graph.input}
    bound = []
    for node in proto.graph.node:
        handler = OPS.get(node.op_type)
        for i in (handler.params if handler is not None else ()):
            if i < len(node.input) and node.input[i] in names and node.input[i] not in bound:
                bound.append(node.input[i])
    return bound
