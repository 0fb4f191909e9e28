"""The shape arithmetic that exporters write before a Reshape, worked out while importing (gpucnn/io/onnx_ops.py).

PyTorch writes ``x.view(x.size(0), -1)`` with a dynamic batch as

    Shape(x) -> Gather(index 0) -> Unsqueeze(axis 0) -> Concat(with [-1]) -> Reshape(x, that)

No layer computes these: the importer follows them as a ``ShapeValue``, the entries of a shape where the
batch is the symbol ``BATCH`` and every other entry a number, and the Reshape reads the result (a Reshape
whose target keeps BATCH first keeps the batch). On constants the same ops are folded into constants.
Anything else they are applied to is refused.
"""
import numpy

__all__ = ["BATCH", "ShapeValue", "shape", "gather", "unsqueeze", "concat_shapes"]

#: the batch dimension, inside a ShapeValue
BATCH = "batch"


class ShapeValue:
    """Entries of a shape (ints, and BATCH for the batch); ``scalar``: one entry of rank 0 (Gather's result)."""

    def __init__(self, entries, scalar=False):
        self.entries, self.scalar = tuple(entries), scalar

    def __repr__(self):
        return f"ShapeValue({list(self.entries)})"


def _ints(array):
    return [int(v) for v in numpy.asarray(array).reshape(-1)]


def shape(ctx, node):
    a = ctx.attrs(node, start=0, end=None)
    x = ctx.tensor(node, 0)
    entries = (BATCH,) + tuple(x.shape)
    ctx.output(node, ShapeValue(entries[a["start"]:a["end"]]))


def gather(ctx, node):
    a = ctx.attrs(node, axis=0)
    data, indices = ctx.values.get(node.input[0]), ctx.const(node, 1)
    if isinstance(data, numpy.ndarray):
        ctx.output(node, numpy.take(data, indices, axis=a["axis"]))
        return
    if not isinstance(data, ShapeValue) or a["axis"] != 0 or data.scalar or indices.ndim > 1:
        ctx.refuse(node, "gpucnn follows Gather on shapes (Shape's output) and constants only")
    picked = [data.entries[i] for i in _ints(indices)]
    ctx.output(node, ShapeValue(picked, scalar=indices.ndim == 0))


def unsqueeze(ctx, node):
    a = ctx.attrs(node, axes=None)  # an attribute before opset 13, an input from it on
    axes = a["axes"] if a["axes"] is not None else _ints(ctx.const(node, 1))
    data = ctx.values.get(node.input[0])
    if isinstance(data, numpy.ndarray):
        ctx.output(node, numpy.expand_dims(data, tuple(axes)))
        return
    if not isinstance(data, ShapeValue) or not data.scalar or list(axes) not in ([0], [-1]):
        ctx.refuse(node, "gpucnn follows Unsqueeze of one shape entry (Gather's output) and of constants only")
    ctx.output(node, ShapeValue(data.entries))


def concat_shapes(ctx, node, values, axis):
    """The Concat of constants and ShapeValues (along axis 0): a constant, or a ShapeValue."""
    if all(isinstance(v, numpy.ndarray) for v in values):
        ctx.output(node, numpy.concatenate(values, axis=axis))
        return
    if axis not in (0, -1) or any(isinstance(v, ShapeValue) and v.scalar for v in values) or \
            any(isinstance(v, numpy.ndarray) and v.ndim != 1 for v in values):
        ctx.refuse(node, "gpucnn follows Concat of 1-D shapes and constants along axis 0 only")
    entries = []
    for v in values:
        entries += list(v.entries) if isinstance(v, ShapeValue) else _ints(v)
    ctx.output(node, ShapeValue(entries))
