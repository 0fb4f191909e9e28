"""Add and Concatenate around gpucnn.ops.merge: the joins residual networks are made of (their global pooling
is in global_pool.py)."""
from ...ops.merge import add, add_backward, concatenate, concatenate_backward
from .base import Layer

__all__ = ["Add", "Concatenate"]


def _check_inputs(inputs, layer):
    if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
        raise TypeError(f"{layer}: expected a list of at least two arrays, got {type(inputs).__name__}"
                        + (f" of {len(inputs)}" if isinstance(inputs, (list, tuple)) else ""))
    for x in inputs:
        if not hasattr(x, "dtype") or x.dtype.kind != "f":
            raise TypeError(f"{layer}: expected floating-point arrays, got {getattr(x, 'dtype', type(x).__name__)}")
    devices = {type(x) for x in inputs}
    if len(devices) > 1:
        raise TypeError(f"{layer}: the inputs are on different devices ({', '.join(t.__module__ for t in devices)})")


class Add(Layer):
    """y = x_1 + x_2 + ...: the residual connection. The inputs must have one shape.

    Example:
        >>> h = ReLU()(Add()([h, skip]))
    """

    def forward(self, inputs):
        _check_inputs(inputs, self.name)
        shapes = [tuple(x.shape) for x in inputs]
        if len(set(shapes)) > 1:
            raise ValueError(f"{self.name}: the inputs must have one shape, got {', '.join(map(str, shapes))}")
        self._cache = (len(inputs), shapes[0])
        return add(inputs)

    def backward(self, grad_out, need_input_grad=True):
        count, shape = self._saved()
        self._check_grad(grad_out, shape, self.name)
        return add_backward(grad_out, count)


class Concatenate(Layer):
    """The inputs side by side along ``axis`` (1: channels, as Keras's Concatenate(axis=1) on NCHW).

    The shapes must agree on every other axis.
    """

    def __init__(self, axis=1, name=None):
        super().__init__(name)
        if not isinstance(axis, int) or axis == 0:
            raise ValueError(f"Concatenate: axis must be a non-zero int (axis 0 is the batch), got {axis!r}")
        self.axis = axis

    def forward(self, inputs):
        _check_inputs(inputs, self.name)
        ndim = inputs[0].ndim
        axis = self.axis + ndim if self.axis < 0 else self.axis
        shapes = [tuple(x.shape) for x in inputs]
        if not 0 < axis < ndim or any(len(s) != ndim for s in shapes) or \
                len({s[:axis] + s[axis + 1:] for s in shapes}) > 1:
            raise ValueError(f"{self.name}: the inputs must agree on every axis but {self.axis}, got "
                             f"{', '.join(map(str, shapes))}")
        y, sizes = concatenate(inputs, axis)
        self._cache = (sizes, axis, y.shape)
        return y

    def backward(self, grad_out, need_input_grad=True):
        sizes, axis, shape = self._saved()
        self._check_grad(grad_out, shape, self.name)
        return concatenate_backward(grad_out, sizes, axis)

    def extra_repr(self):
        return f"axis={self.axis}"

