"""Ops that join or reduce feature maps: the residual sum, concatenation along an axis, global average pooling.

As the tutorials write them:
- ``add``: y = x_1 + x_2 + ... ; every input's gradient is dL/dy itself (the sum passes it through
  unchanged: the skip connection's gradient).
- ``concatenate``: y = [x_1, x_2, ...] along ``axis``; each input's gradient is its slice of dL/dy.
- ``global_avg_pool2d``: y[n, c] = mean over (h, w) of x[n, c]; dL/dx[n, c, h, w] = dL/dy[n, c] / (H*W).

NumPy and CuPy alike (the array's own module): on CUDA these are CuPy's elementwise kernels and
copies, which are as fast as a kernel of ours would be for memory-bound work.
"""
from ..backend import get_array_module

__all__ = ["add", "add_backward", "concatenate", "concatenate_backward", "global_avg_pool2d",
           "global_avg_pool2d_backward"]


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


def global_avg_pool2d(x):
    """(N, C, H, W) -> (N, C, 1, 1): the mean of every feature map (kept 4-D, as PyTorch's AdaptiveAvgPool2d(1))."""
    return x.mean(axis=(2, 3), keepdims=True)


def global_avg_pool2d_backward(grad_y, x_shape):
    """dL/dx = dL/dy spread evenly over each map: dL/dy / (H*W) at every position."""
    xp = get_array_module(grad_y)
    h, w = x_shape[2], x_shape[3]
    return xp.broadcast_to(grad_y / (h * w), x_shape).astype(grad_y.dtype, copy=True)
