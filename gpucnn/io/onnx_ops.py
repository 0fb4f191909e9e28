"""What each ONNX operator becomes when gpucnn imports a graph (gpucnn/io/onnx_import.py).

    Conv -> Conv2D (pads, asymmetric where Conv2D takes them; strides, dilations, group, auto_pad)
    MaxPool -> MaxPool2D, AveragePool -> AvgPool2D (pads, ceil_mode, dilations, count_include_pad where the
        layers take them), GlobalAveragePool -> GlobalAvgPool2D, GlobalMaxPool -> GlobalMaxPool2D (kept
        (N, C, 1, 1) as ONNX has it, unless a Flatten follows)
    Relu, LeakyRelu, Sigmoid, Tanh, Softmax -> ReLU, LeakyReLU, Sigmoid, Tanh, Softmax
    Gemm -> Dense (weight alpha * B, bias beta * C: one bias per feature), MatMul (+ Add of a constant) -> Dense
    Flatten (axis 1) and a Reshape that flattens -> Flatten; a Reshape that keeps the batch -> Reshape
    BatchNormalization (inference form) -> BatchNorm2D / BatchNorm1D with the running statistics
    Dropout -> Dropout (the identity in eval mode), Add -> Add, Concat -> Concatenate
    Identity, Constant -> nothing: the value passes through
    Shape, Gather, Unsqueeze -> nothing: followed as shape arithmetic into a Reshape (onnx_shape_ops.py)

Each handler reads its node through the importer's context ``ctx`` (attributes with their defaults, tensor and
constant inputs, layer names) and refuses, through ``ctx.refuse``, anything gpucnn's layers would compute
differently. ``params``: the input positions a layer holds as its state (the node tests feed them as inputs).
"""
import math

import numpy

from ..nn import layers as L
from ..nn.graph import SymbolicTensor
from .onnx_shape_ops import BATCH, ShapeValue, concat_shapes, gather, shape, unsqueeze

__all__ = ["OPS", "Op", "window_pads"]


class Op:
    """An operator's handler ``run(ctx, node)`` and the input positions that are parameters."""

    def __init__(self, run, params=()):
        self.run, self.params = run, tuple(params)


def _pair(values, default, what, ctx, node):
    values = list(values) if values is not None else [default, default]
    if len(values) != 2:
        ctx.refuse(node, f"{what} {values} is not 2-D; gpucnn's layers are 2-D")
    return int(values[0]), int(values[1])


def window_pads(ctx, node, attrs, spatial, kernel, strides, dilations):
    """(top, bottom, left, right) from ``pads`` or ``auto_pad`` (SAME_UPPER puts the odd one at the end)."""
    auto = attrs["auto_pad"]
    if auto in ("NOTSET", ""):
        pads = list(attrs["pads"]) if attrs["pads"] is not None else [0, 0, 0, 0]
        if len(pads) != 4 or min(pads) < 0:
            ctx.refuse(node, f"pads {pads} must be 4 non-negative ints (2-D)")
        return pads[0], pads[2], pads[1], pads[3]
    if auto == "VALID":
        return 0, 0, 0, 0
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        ctx.refuse(node, f"auto_pad {auto!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    result = []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)
        small, big = total // 2, total - total // 2
        result += [small, big] if auto == "SAME_UPPER" else [big, small]
    return tuple(result)


def _padding(pads):
    """Conv2D/pool padding: (ph, pw) when symmetric, else ((top, bottom), (left, right))."""
    pt, pb, pl, pr = pads
    return (pt, pl) if (pt, pl) == (pb, pr) else ((pt, pb), (pl, pr))


def _spatial(ctx, node, x):
    if len(x.shape) != 3:
        ctx.refuse(node, f"input of shape (N, {', '.join(map(str, x.shape))}) is not (N, C, H, W); gpucnn's "
                         f"convolutions and pools are 2-D")
    return x.shape[1:]


def _conv(ctx, node):
    a = ctx.attrs(node, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None)
    x, w, b = ctx.tensor(node, 0), ctx.const(node, 1), ctx.const(node, 2, optional=True)
    spatial = _spatial(ctx, node, x)
    if w.ndim != 4:
        ctx.refuse(node, f"weight of shape {w.shape} is not (out, in / group, kh, kw)")
    kernel = tuple(w.shape[2:])
    if a["kernel_shape"] is not None and tuple(a["kernel_shape"]) != kernel:
        ctx.refuse(node, f"kernel_shape {a['kernel_shape']} disagrees with the weight's {kernel}")
    strides = _pair(a["strides"], 1, "strides", ctx, node)
    dilations = _pair(a["dilations"], 1, "dilations", ctx, node)
    pads = window_pads(ctx, node, a, spatial, kernel, strides, dilations)
    if w.shape[1] * a["group"] != x.shape[0]:
        ctx.refuse(node, f"weight {w.shape} with group={a['group']} does not take {x.shape[0]} input channels")
    layer = ctx.make(node, L.Conv2D, x.shape[0], w.shape[0], kernel, stride=strides, padding=_padding(pads),
                     dilation=dilations, groups=a["group"], bias=b is not None, dtype=ctx.dtype)
    ctx.set_state(node, layer, "weight", w)
    if b is not None:
        ctx.set_state(node, layer, "bias", b)
    ctx.output(node, ctx.apply(node, layer, x))


def _ceil_changes(spatial, kernel, strides, dilations, pads):
    """Whether ceil_mode gives more windows than floor: the last window must start inside the input or the
    padding before it (PyTorch's rule, which ONNX follows)."""
    for n, k, s, d, (before, after) in zip(spatial, kernel, strides, dilations, (pads[:2], pads[2:])):
        span = n + before + after - (d * (k - 1) + 1)
        floor_out, ceil_out = span // s + 1, -(-span // s) + 1
        if (ceil_out - 1) * s >= n + before:
            ceil_out -= 1
        if ceil_out != floor_out:
            return True
    return False


def _pool(cls, average):
    def run(ctx, node):
        extra = {"count_include_pad": 0} if average else {"storage_order": 0}
        a = ctx.attrs(node, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
                      strides=None, **extra)
        if len(node.output) > 1 and node.output[1]:
            ctx.refuse(node, "its second output (the argmax Indices) is not supported")
        x = ctx.tensor(node, 0)
        spatial = _spatial(ctx, node, x)
        if a["kernel_shape"] is None:
            ctx.refuse(node, "the kernel_shape attribute is missing")
        kernel = _pair(a["kernel_shape"], None, "kernel_shape", ctx, node)
        strides = _pair(a["strides"], 1, "strides", ctx, node)
        dilations = _pair(a["dilations"], 1, "dilations", ctx, node)
        pads = window_pads(ctx, node, a, spatial, kernel, strides, dilations)
        options = {}  # only what differs from the layer's defaults, so a layer without the option still serves
        if dilations != (1, 1):
            options["dilation"] = dilations
        ceil = bool(a["ceil_mode"]) and _ceil_changes(spatial, kernel, strides, dilations, pads)
        if ceil:
            options["ceil_mode"] = True
        if average and not a["count_include_pad"] and (any(pads) or ceil):
            options["count_include_pad"] = False
        layer = ctx.make(node, cls, kernel, stride=strides, padding=_padding(pads), **options)
        ctx.output(node, ctx.apply(node, layer, x))
    return run


def _global_pool(name):
    def run(ctx, node):
        ctx.attrs(node)
        cls = getattr(L, name, None)
        if cls is None:
            ctx.refuse(node, f"gpucnn has no {name} layer")
        x = ctx.tensor(node, 0)
        _spatial(ctx, node, x)
        y = ctx.apply(node, ctx.make(node, cls), x)
        follower = ctx.only_consumer(node)
        kept_4d = (x.shape[0], 1, 1)
        if y.shape != kept_4d and not (follower is not None and follower.op_type == "Flatten"):
            y = ctx.apply(node, ctx.make(node, L.Reshape, kept_4d, name_suffix="_4d"), y)
        ctx.output(node, y)
    return run


def _activation(cls, **defaults):
    def run(ctx, node):
        a = ctx.attrs(node, consumed_inputs=None, **defaults)  # consumed_inputs: opset < 6, no meaning now
        args = {"negative_slope": a["alpha"]} if "alpha" in defaults else {}
        ctx.output(node, ctx.apply(node, ctx.make(node, cls, **args), ctx.tensor(node, 0)))
    return run


def _bias_after(ctx, node, features):
    """The bias of an Add of a constant that alone reads ``node``'s output (taken into the Dense), or None."""
    add = ctx.only_consumer(node)
    if add is None or add.op_type != "Add" or len(add.input) != 2 or add.attribute:
        return None
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    c = ctx.values.get(other)
    if not isinstance(c, numpy.ndarray) or c.shape not in ((features,), (1, features)):
        return None
    ctx.fuse(add)
    return add, c.reshape(features)


def _dense(ctx, node, x, weight, bias):
    if len(x.shape) != 1:
        ctx.refuse(node, f"input of shape (N, {', '.join(map(str, x.shape))}) is not (N, features)")
    fused = _bias_after(ctx, node, weight.shape[0]) if bias is None else None
    if fused is not None:
        bias = fused[1]
    layer = ctx.make(node, L.Dense, weight.shape[1], weight.shape[0], bias=bias is not None, dtype=ctx.dtype)
    ctx.set_state(node, layer, "weight", weight)
    if bias is not None:
        ctx.set_state(node, layer, "bias", bias)
    y = ctx.apply(node, layer, x)
    ctx.output(node, y)
    if fused is not None:
        ctx.output(fused[0], y)


def _gemm(ctx, node):
    a = ctx.attrs(node, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0)  # broadcast: opset < 7
    if a["transA"]:
        ctx.refuse(node, "transA=1 puts the batch along A's columns; Dense takes (N, features)")
    x, b, c = ctx.tensor(node, 0), ctx.const(node, 1), ctx.const(node, 2, optional=True)
    if b.ndim != 2:
        ctx.refuse(node, f"B of shape {b.shape} is not a matrix")
    weight = a["alpha"] * (b if a["transB"] else b.T)
    bias = None
    if c is not None:
        out = weight.shape[0]
        if c.size not in (1, out) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            ctx.refuse(node, f"C of shape {c.shape} is not one bias per output feature ({out}); Dense has no bias "
                             f"per sample")
        bias = a["beta"] * numpy.broadcast_to(c.reshape(-1), (out,))
    _dense(ctx, node, x, weight, bias)


def _matmul(ctx, node):
    ctx.attrs(node)
    x, b = ctx.tensor(node, 0), ctx.const(node, 1)
    if b.ndim != 2:
        ctx.refuse(node, f"B of shape {b.shape} is not a matrix; gpucnn imports MatMul of (N, K) data by a "
                         f"(K, M) constant, as Dense")
    _dense(ctx, node, x, b.T, None)


def _add(ctx, node):
    ctx.attrs(node)
    values = [ctx.values.get(name) for name in node.input]
    if any(v is not None and not isinstance(v, SymbolicTensor) for v in values):
        ctx.refuse(node, "an Add of a constant is imported only as the bias right after MatMul or Gemm (Dense)")
    xs = [ctx.tensor(node, i) for i in range(len(node.input))]
    if len({x.shape for x in xs}) > 1:
        ctx.refuse(node, f"broadcasting (samples of shapes {', '.join(str(x.shape) for x in xs)}) is not "
                         f"supported; gpucnn's Add takes one shape")
    ctx.output(node, ctx.apply(node, ctx.make(node, L.Add), xs))


def _concat(ctx, node):
    a = ctx.attrs(node, axis=None)
    if a["axis"] is None:
        ctx.refuse(node, "the axis attribute is missing")
    values = [ctx.values.get(name) for name in node.input]
    if values and all(isinstance(v, (numpy.ndarray, ShapeValue)) for v in values):
        concat_shapes(ctx, node, values, a["axis"])  # shape arithmetic before a Reshape
        return
    xs = [ctx.tensor(node, i) for i in range(len(node.input))]
    rank = len(xs[0].shape) + 1
    axis = a["axis"] + rank if a["axis"] < 0 else a["axis"]
    if axis == 0:
        ctx.refuse(node, "concatenation along axis 0, the batch, is not supported")
    if len(xs) == 1:
        ctx.output(node, xs[0])
        return
    ctx.output(node, ctx.apply(node, ctx.make(node, L.Concatenate, axis=axis), xs))


def _flatten(ctx, node):
    a = ctx.attrs(node, axis=1)
    x = ctx.tensor(node, 0)
    rank = len(x.shape) + 1
    axis = a["axis"] + rank if a["axis"] < 0 else a["axis"]
    if axis != 1:
        ctx.refuse(node, f"axis {a['axis']} of a rank-{rank} input does not keep the batch apart (only axis 1 does)")
    ctx.output(node, x if len(x.shape) == 1 else ctx.apply(node, ctx.make(node, L.Flatten), x))


def _reshape(ctx, node):
    a = ctx.attrs(node, allowzero=0)
    x, given = ctx.tensor(node, 0), ctx.values.get(node.input[1]) if len(node.input) > 1 else None
    if isinstance(given, ShapeValue):  # worked out from Shape(x): BATCH first keeps the batch
        if BATCH in given.entries[1:] or given.scalar:
            ctx.refuse(node, f"shape {list(given.entries)} moves the batch")
        target = [0 if v == BATCH else v for v in given.entries]
    else:
        target = [int(v) for v in ctx.const(node, 1).reshape(-1)]
    size = math.prod(x.shape)
    if not target or (0 in target and a["allowzero"]):
        ctx.refuse(node, f"shape {target} with allowzero={a['allowzero']} does not keep the batch")
    sample = [x.shape[i - 1] if v == 0 and 0 < i <= len(x.shape) else v for i, v in enumerate(target)][1:]
    if -1 in sample and target[0] in (0, -1):
        if target[0] == -1 or sample.count(-1) > 1:
            ctx.refuse(node, f"shape {target} leaves the batch undetermined")
        known = math.prod(v for v in sample if v != -1)
        sample[sample.index(-1)] = size // known if known and size % known == 0 else 0
    batch_kept = target[0] in (0, -1) or target[0] == ctx.fixed_batch()
    if not batch_kept or min(sample, default=0) < 1 or math.prod(sample) != size:
        ctx.refuse(node, f"shape {target} does not keep the batch of samples of shape {x.shape}; gpucnn imports a "
                         f"Reshape that flattens or reshapes each sample")
    if tuple(sample) == x.shape:
        ctx.output(node, x)
    elif len(sample) == 1:
        ctx.output(node, ctx.apply(node, ctx.make(node, L.Flatten), x))
    else:
        ctx.output(node, ctx.apply(node, ctx.make(node, L.Reshape, tuple(sample)), x))


def _softmax(ctx, node):
    a = ctx.attrs(node, axis=1 if ctx.opset < 13 else -1)
    x = ctx.tensor(node, 0)
    rank = len(x.shape) + 1
    axis = a["axis"] + rank if a["axis"] < 0 else a["axis"]
    if axis == 0:
        ctx.refuse(node, "softmax along axis 0, the batch, is not supported")
    if ctx.opset < 13 and axis != rank - 1:
        ctx.refuse(node, f"before opset 13 Softmax normalises over all axes from axis {axis} on; gpucnn imports it "
                         f"only along the last axis")
    ctx.output(node, ctx.apply(node, ctx.make(node, L.Softmax, axis=axis), x))


def _batchnorm(ctx, node):
    a = ctx.attrs(node, epsilon=1e-5, momentum=0.9, training_mode=0, spatial=1, is_test=0, consumed_inputs=None)
    if a["training_mode"]:
        ctx.refuse(node, "training_mode=1 (normalising by the batch's statistics) is not the inference form")
    if not a["spatial"]:
        ctx.refuse(node, "spatial=0 (statistics per position) is not supported")
    if any(node.output[1:]):
        ctx.refuse(node, "its running-statistics outputs (training mode) are not supported")
    x = ctx.tensor(node, 0)
    cls = {3: L.BatchNorm2D, 1: L.BatchNorm1D}.get(len(x.shape))
    if cls is None:
        ctx.refuse(node, f"input of shape (N, {', '.join(map(str, x.shape))}) is neither (N, C, H, W) nor (N, F)")
    # ONNX's running mean moves as momentum * mean + (1 - momentum) * batch mean; PyTorch's and gpucnn's the other way
    layer = ctx.make(node, cls, x.shape[0], eps=a["epsilon"], momentum=round(1.0 - a["momentum"], 7), dtype=ctx.dtype)
    for i, name in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
        ctx.set_state(node, layer, name, ctx.const(node, i))
    ctx.output(node, ctx.apply(node, layer, x))


def _dropout(ctx, node):
    a = ctx.attrs(node, ratio=0.5, seed=None, is_test=0, consumed_inputs=None)
    ratio = ctx.const(node, 1, optional=True)
    training = ctx.const(node, 2, optional=True)
    if training is not None and bool(numpy.asarray(training).reshape(-1)[0]):
        ctx.refuse(node, "training_mode=true (a random mask at inference) is not supported")
    if any(node.output[1:]):
        ctx.refuse(node, "its mask output is not supported")
    p = float(str(numpy.asarray(ratio, numpy.float32).reshape(-1)[0])) if ratio is not None else float(a["ratio"])
    ctx.output(node, ctx.apply(node, ctx.make(node, L.Dropout, p), ctx.tensor(node, 0)))


def _identity(ctx, node):
    ctx.attrs(node)
    ctx.output(node, ctx.values[node.input[0]] if node.input[0] in ctx.values else ctx.tensor(node, 0))


def _constant(ctx, node):
    a = ctx.attrs(node, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None)
    given = [k for k, v in a.items() if v is not None]
    if len(given) != 1:
        ctx.refuse(node, f"expected one value attribute, got {given or 'none'}")
    value = a[given[0]]
    if given[0] == "value":
        value = ctx.to_array(value)
    dtype = numpy.float32 if "float" in given[0] else (numpy.int64 if "int" in given[0] else None)
    ctx.output(node, numpy.asarray(value, dtype=dtype))


#: ONNX operator -> its handler
OPS = {
    "Conv": Op(_conv, params=(1, 2)),
    "MaxPool": Op(_pool(L.MaxPool2D, average=False)),
    "AveragePool": Op(_pool(L.AvgPool2D, average=True)),
    "GlobalAveragePool": Op(_global_pool("GlobalAvgPool2D")),
    "GlobalMaxPool": Op(_global_pool("GlobalMaxPool2D")),
    "Relu": Op(_activation(L.ReLU)),
    "LeakyRelu": Op(_activation(L.LeakyReLU, alpha=0.01)),
    "Sigmoid": Op(_activation(L.Sigmoid)),
    "Tanh": Op(_activation(L.Tanh)),
    "Softmax": Op(_softmax),
    "Gemm": Op(_gemm, params=(1, 2)),
    "MatMul": Op(_matmul, params=(1,)),
    "Add": Op(_add),
    "Concat": Op(_concat),
    "Flatten": Op(_flatten),
    "Reshape": Op(_reshape, params=(1,)),
    "BatchNormalization": Op(_batchnorm, params=(1, 2, 3, 4)),
    "Dropout": Op(_dropout, params=(1, 2)),
    "Identity": Op(_identity),
    "Constant": Op(_constant),
    "Shape": Op(shape),  # Shape, Gather, Unsqueeze: the shape arithmetic before a Reshape (onnx_shape_ops.py)
    "Gather": Op(gather),
    "Unsqueeze": Op(unsqueeze),
}
