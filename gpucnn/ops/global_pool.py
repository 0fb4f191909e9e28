"""Global and adaptive pooling over NCHW volumes, with PyTorch's semantics.

As the tutorials write them:
- ``global_avg_pool2d``: y[n, c] = mean over (h, w) of x[n, c]; dL/dx[n, c, h, w] = dL/dy[n, c] / (H*W).
- ``global_max_pool2d``: y[n, c] = max over (h, w) of x[n, c]; dL/dy[n, c] goes to the one position that
  won, all others get 0. The winner follows the convention of max pooling (gpucnn/ops/pool.py): the
  first maximum in row-major order; in a plane holding NaN, y is NaN and the winner is the LAST NaN
  (PyTorch's AdaptiveMaxPool2d(1), whose scan takes over on every NaN).
- ``adaptive_avg_pool2d``: the (H, W) plane cut into (out_h, out_w) bins; bin i of an axis of n elements cut
  into o covers [floor(i*n/o), ceil((i+1)*n/o)) (PyTorch's rule: the bins cover the axis, neighbours may
  share an element), and y is the mean of each bin. Backward gives every element the sum of
  dL/dy / (bin size) over the bins that cover it.

Both global pools return (N, C), as Keras's GlobalAveragePooling2D and PyTorch's AdaptiveAvgPool2d(1)
followed by flatten. All of it is NumPy and CuPy alike (the array's own module), whole-array operations.
"""
import numpy

from ..backend import get_array_module

__all__ = ["global_avg_pool2d", "global_avg_pool2d_backward", "global_max_pool2d", "global_max_pool2d_backward",
           "adaptive_bins", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward"]


def global_avg_pool2d(x):
    """(N, C, H, W) -> (N, C): the mean of every feature map."""
    return x.mean(axis=(2, 3))


def global_avg_pool2d_backward(grad_y, x_shape):
    """dL/dx = dL/dy spread evenly over each map: dL/dy / (H*W) at every position."""
    xp = get_array_module(grad_y)
    h, w = x_shape[2], x_shape[3]
    return xp.broadcast_to((grad_y / (h * w))[:, :, None, None], x_shape).astype(grad_y.dtype, copy=True)


def global_max_pool2d(x):
    """(N, C, H, W) -> (y, argmax): y (N, C) the maximum of every map; argmax (N, C) the flat index h*W + w of
    the element that won (the first maximum; the last NaN in a map holding NaN)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    planes = x.reshape(n, c, h * w)
    first_max = planes.argmax(axis=2)
    nan = xp.isnan(planes)
    last_nan = h * w - 1 - nan[:, :, ::-1].argmax(axis=2)
    argmax = xp.where(nan.any(axis=2), last_nan, first_max)
    return planes.max(axis=2), argmax


def global_max_pool2d_backward(grad_y, argmax, x_shape):
    """dL/dx: dL/dy[n, c] at the winner of map (n, c), 0 elsewhere (a select, not a product: a NaN or an inf
    in dL/dy reaches its winner only, as PyTorch's scatter)."""
    xp = get_array_module(grad_y)
    n, c, h, w = x_shape
    winner = xp.arange(h * w) == argmax[:, :, None]
    grad_x = xp.where(winner, grad_y[:, :, None], grad_y.dtype.type(0))
    return grad_x.reshape(x_shape)


def adaptive_bins(size, out_size):
    """(start, stop) of the ``out_size`` bins of an axis of ``size`` elements, as NumPy int arrays (shape
    arithmetic stays on the host): start[i] = floor(i * size / out_size), stop[i] = ceil((i + 1) * size / out_size)."""
    i = numpy.arange(out_size)
    return (i * size) // out_size, -((-(i + 1) * size) // out_size)


def _holders(start, stop, size):
    """(first, last + 1) of the bins holding each element r of an axis of ``size``: the bins i with
    start[i] <= r < stop[i] (start and stop both grow with i, so they are contiguous)."""
    r = numpy.arange(size)
    return numpy.searchsorted(stop, r, side="right"), numpy.searchsorted(start, r, side="right")


def _window_sums(a, axis, start, stop):
    """out[..., i, ...] = a[..., start[i]:stop[i], ...].sum(axis): every window gathered at once, padded to
    the longest by a masked-out index (a select, not a product with 0: an inf elsewhere on the axis must
    not become a NaN here). float16 adds in float32, as PyTorch's average pooling does; the caller rounds back."""
    xp = get_array_module(a)
    offsets = numpy.arange(int((stop - start).max()))
    index = numpy.minimum(start[:, None] + offsets, a.shape[axis] - 1)   # (windows, longest)
    inside = offsets < (stop - start)[:, None]
    shape = [1] * (a.ndim + 1)
    shape[axis], shape[axis + 1] = inside.shape
    windows = xp.take(a, xp.asarray(index), axis=axis)                 # the axis becomes (windows, longest)
    windows = xp.where(xp.asarray(inside.reshape(shape)), windows, a.dtype.type(0))
    return windows.sum(axis=axis + 1, dtype=numpy.float32 if a.dtype.itemsize < 4 else a.dtype)


def _bin_sizes(rows, cols, dtype, xp):
    """(out_h, out_w): the number of elements of every bin."""
    return xp.asarray(((rows[1] - rows[0])[:, None] * (cols[1] - cols[0])[None, :]).astype(dtype))


def adaptive_avg_pool2d(x, output_size):
    """(N, C, H, W) -> (N, C, out_h, out_w): the mean of every bin of PyTorch's rule (module docstring)."""
    xp = get_array_module(x)
    (out_h, out_w), (h, w) = output_size, x.shape[2:]
    rows, cols = adaptive_bins(h, out_h), adaptive_bins(w, out_w)
    sums = _window_sums(_window_sums(x, 2, *rows), 3, *cols)
    return (sums / _bin_sizes(rows, cols, sums.dtype, xp)).astype(x.dtype, copy=False)


def adaptive_avg_pool2d_backward(grad_y, x_shape):
    """dL/dx[n, c, r, s] = the sum of dL/dy[n, c, i, j] / |bin (i, j)| over the bins (i, j) that hold (r, s):
    the transpose of the forward pass, again a sum over contiguous windows (of bins, not of elements)."""
    xp = get_array_module(grad_y)
    (h, w), (out_h, out_w) = x_shape[2:], grad_y.shape[2:]
    rows, cols = adaptive_bins(h, out_h), adaptive_bins(w, out_w)
    share = grad_y / _bin_sizes(rows, cols, grad_y.dtype, xp)
    grad_x = _window_sums(_window_sums(share, 2, *_holders(*rows, h)), 3, *_holders(*cols, w))
    return grad_x.astype(grad_y.dtype, copy=False)
