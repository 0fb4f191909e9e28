"""Ops that join feature maps: the residual sum and concatenation along an axis (global pooling: global_pool.py).

As the tutorials write them:
- ``add``: y = x_1 + x_2 + ... ; every input's gradient is dL/dy itself (the sum passes it through
  unchanged: the skip connection's gradient).
- ``concatenate``: y = [x_1, x_2, ...] along ``axis``; each input's gradient is its slice of dL/dy.

NumPy and CuPy alike (the array's own module): on CUDA these are CuPy's elementwise kernels and
copies, which are as fast as a kernel of ours would be for memory-bound work.
"""
from ..backend import get_array_module

__all__ = ["add", "add_backward", "concatenate", "concatenate_backward"]


def add(inputs):
    """The elementwise sum of arrays of one shape."""
    y = inputs[0] + inputs[1]
    for x in inputs[2:]:
        y += x
    return y


def add_backward(grad_y, count):
    """dL/dx_i = dL/dy for each of the ``count`` inputs (the same array: nobody writes into a gradient)."""
    return [grad_y] * count


def concatenate(inputs, axis):
    """The inputs side by side along ``axis``; returns (y, sizes) with sizes the inputs' extents on it."""
    xp = get_array_module(inputs[0])
    return xp.concatenate(inputs, axis=axis), [int(x.shape[axis]) for x in inputs]


def concatenate_backward(grad_y, sizes, axis):
    """Each input's slice of dL/dy along ``axis``."""
    grads, start = [], 0
    for size in sizes:
        index = [slice(None)] * grad_y.ndim
        index[axis] = slice(start, start + size)
        grads.append(grad_y[tuple(index)])
        start += size
    return grads

