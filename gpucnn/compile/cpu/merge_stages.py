"""The graph's own stages, in the internal layout (C, H, W, n) / (F, n): the joins of a residual or a
concatenating network, and global average pooling, so that a Model's graph stays in the fast layout from its
input to its classifier (graph_runner.py).

Stage               replaces (readable ops)
AddStage            Add (gpucnn.ops.merge.add / add_backward): the same sum, left to right
ConcatenateStage    Concatenate (gpucnn.ops.merge.concatenate / concatenate_backward)
GlobalAvgPoolStage  GlobalAvgPool2D (gpucnn.ops.global_pool.global_avg_pool2d and its backward)

Public axis a of (N, C, H, W) or (N, F) is internal axis a - 1 (the batch moved last), so Concatenate on the
channels (axis 1) writes and, in backward, reads contiguous blocks of channels: no strided copies.

A stage with ``multi = True`` takes a list of inputs and returns, in backward, a list of their gradients;
Add's is the same array for every input, as the reference's (nobody writes into a gradient; where a
tensor is used twice the graph runner sums its gradients into a buffer of its own).
"""
import numpy

from ...ops.geometry import check_input
from .stages import Stage, shape_probe

__all__ = ["AddStage", "ConcatenateStage", "GlobalAvgPoolStage"]


class AddStage(Stage):
    """y = x_1 + x_2 + ...: the residual join."""

    multi = True

    def __init__(self, index, layer):
        super().__init__(index)
        self.layer = layer
        self.layers = (layer,)

    def out_shape(self, shapes, dtypes):
        if len(set(shapes)) > 1:
            raise ValueError(f"{self.layer.name}: the inputs must have one shape, got {', '.join(map(str, shapes))}")
        return shapes[0], numpy.result_type(*dtypes)

    def forward(self, ctx, xs):
        y = self.buffer(ctx, "y", xs[0].shape, numpy.result_type(*xs))
        numpy.add(xs[0], xs[1], out=y)
        for x in xs[2:]:
            y += x
        ctx.saved[self.index] = len(xs)
        return y

    def backward(self, ctx, grad, need_input_grad):
        return [grad] * ctx.saved[self.index] if need_input_grad else None


class ConcatenateStage(Stage):
    """The inputs side by side along one axis (public axis ``layer.axis``, internal axis one lower)."""

    multi = True

    def __init__(self, index, layer, rank):
        super().__init__(index)
        self.layer = layer
        self.layers = (layer,)
        self.public_axis = layer.axis + rank if layer.axis < 0 else layer.axis
        self.axis = self.public_axis - 1

    def out_shape(self, shapes, dtypes):
        a = self.public_axis
        if not 0 < a < len(shapes[0]) or any(len(s) != len(shapes[0]) for s in shapes) or \
                len({s[:a] + s[a + 1:] for s in shapes}) > 1:
            raise ValueError(f"{self.layer.name}: the inputs must agree on every axis but {self.layer.axis}, got "
                             f"{', '.join(map(str, shapes))}")
        shape = list(shapes[0])
        shape[a] = sum(s[a] for s in shapes)
        return tuple(shape), numpy.result_type(*dtypes)

    def forward(self, ctx, xs):
        shape = list(xs[0].shape)
        shape[self.axis] = sum(x.shape[self.axis] for x in xs)
        y = self.buffer(ctx, "y", shape, numpy.result_type(*xs))
        numpy.concatenate(xs, axis=self.axis, out=y)
        ctx.saved[self.index] = [x.shape[self.axis] for x in xs]
        return y

    def backward(self, ctx, grad, need_input_grad):
        if not need_input_grad:
            return None
        grads, start = [], 0
        for size in ctx.saved[self.index]:
            index = [slice(None)] * grad.ndim
            index[self.axis] = slice(start, start + size)
            grads.append(grad[tuple(index)])
            start += size
        return grads


class GlobalAvgPoolStage(Stage):
    """(C, H, W, n) -> (C, n): the mean of each feature map."""

    def __init__(self, index, layer):
        super().__init__(index)
        self.layer = layer
        self.layers = (layer,)

    def out_shape(self, shape, dtype):
        check_input(shape_probe(shape, dtype), self.layer.name, 4)
        return shape[:2], dtype

    def forward(self, ctx, x):
        c, h, w, n = x.shape
        ctx.saved[self.index] = x.shape
        y = self.buffer(ctx, "y", (c, n), x.dtype)
        return numpy.mean(x.reshape(c, h * w, n), axis=1, out=y)

    def backward(self, ctx, grad, need_input_grad):
        if not need_input_grad:
            return None
        shape = ctx.saved[self.index]
        share = grad / (shape[1] * shape[2])  # the reference's order: divide, then spread
        dx = self.buffer(ctx, "grad", shape, grad.dtype)
        numpy.copyto(dx, share[:, None, None, :])
        return dx
