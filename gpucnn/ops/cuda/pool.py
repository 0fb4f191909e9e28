"""CUDA twin of ``gpucnn.ops.pool``: max and average pooling for CuPy arrays, same contract.

Forward: one thread per output scans its window (max: running maximum with PyTorch's
tie/NaN rule and the winner's in-window index as int32 argmax; average: the sum of its real
elements times 1/divisor, the divisor counted per window in the kernel by PyTorch's rule,
``count_include_pad`` or not, and the reciprocal computed in double and rounded to the dtype, as
``Window2D.divisors`` and the NumPy reference do). Backward is a gather: one thread per input
element adds the gradients of the windows that cover it (overlapping, dilated and ceil-mode
windows included) in ascending in-window index, so there are no atomics and the result is
bitwise repeatable. No host copies, no synchronisation.

The window (``gpucnn.ops.geometry.Window2D``; ``gpucnn.ops.pool`` resolves a ``SameWindow2D``
before it calls here) goes to the kernels as H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow:
dilation, padding before and after per axis, and the output size of ``Window2D.output_size``
(ceil mode included; taps past the padded input are ignored).
"""
import cupy
import numpy

from . import loader

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"]

_FILE = "pool.cu"
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def _check(x, what, layer):
    if not isinstance(x, cupy.ndarray):
        raise TypeError(f"{layer} (CUDA): {what} must be a CuPy array, got {type(x).__name__}")
    if numpy.dtype(x.dtype) not in _FLOATS:
        raise TypeError(f"{layer} (CUDA): {what} must be float32 or float64, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{layer} (CUDA): {what} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    return numpy.dtype(x.dtype)


def _geometry(x_shape, window, oh, ow):
    """(H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow): the kernels' geometry arguments."""
    return (int(x_shape[2]), int(x_shape[3]), window.kh, window.kw, window.sy, window.sx, window.dy, window.dx,
            window.pt, window.pb, window.pl, window.pr, oh, ow)


def _launch(name, dtype, args, sizes):
    """Launch a pooling kernel with the index type that ``sizes`` (input and output element counts) allow."""
    loader.launch(_FILE, name, dtype, args, index=loader.index_type(*sizes))


def _include_pad_flag(count_include_pad, layer):
    if not isinstance(count_include_pad, (bool, numpy.bool_)):
        raise TypeError(f"{layer} (CUDA): count_include_pad must be True or False, got {count_include_pad!r}")
    return 1 if count_include_pad else 0


def _check_grad(grad_y, x_shape, window, layer):
    dtype = _check(grad_y, "grad_y", layer)
    oh, ow = window.output_size(int(x_shape[2]), int(x_shape[3]))
    expected = (int(x_shape[0]), int(x_shape[1]), oh, ow)
    if tuple(grad_y.shape) != expected:
        raise ValueError(f"{layer} (CUDA): grad_y must have the output's shape {expected}, "
                         f"got {tuple(grad_y.shape)}")
    return dtype, oh, ow


@loader.on_device_of_first_argument
def max_pool2d_forward(x, window):
    """(y, (argmax, x_shape, window)); see ``gpucnn.ops.pool.max_pool2d_forward``."""
    dtype = _check(x, "x", window.layer)
    n, c, h, w = (int(s) for s in x.shape)
    oh, ow = window.output_size(h, w)
    x = cupy.ascontiguousarray(x)
    y = cupy.empty((n, c, oh, ow), dtype=dtype)
    argmax = cupy.empty((n, c, oh, ow), dtype=numpy.int32)
    if y.size:
        _launch("max_pool_fwd", dtype, (x, y, argmax) + _geometry(x.shape, window, oh, ow) + (y.size,),
                (x.size, y.size))
    return y, (argmax, tuple(x.shape), window)


@loader.on_device_of_first_argument
def max_pool2d_backward(grad_y, saved):
    """dL/dx of max pooling; see ``gpucnn.ops.pool.max_pool2d_backward``."""
    argmax, x_shape, window = saved
    dtype, oh, ow = _check_grad(grad_y, x_shape, window, window.layer)
    if not isinstance(argmax, cupy.ndarray) or argmax.dtype != numpy.int32 or argmax.shape != grad_y.shape:
        raise ValueError(f"{window.layer} (CUDA): saved argmax must be an int32 CuPy array of shape "
                         f"{tuple(grad_y.shape)}")
    grad_y = cupy.ascontiguousarray(grad_y)
    argmax = cupy.ascontiguousarray(argmax)
    grad_x = cupy.empty(tuple(x_shape), dtype=dtype)
    if grad_x.size:
        if grad_y.size == 0:
            grad_x.fill(0)
        else:
            _launch("max_pool_bwd", dtype,
                    (grad_y, argmax, grad_x) + _geometry(x_shape, window, oh, ow) + (grad_x.size,),
                    (grad_y.size, grad_x.size))
    return grad_x


@loader.on_device_of_first_argument
def avg_pool2d_forward(x, window, count_include_pad=True):
    """(y, (x_shape, window, count_include_pad)); see ``gpucnn.ops.pool.avg_pool2d_forward``."""
    dtype = _check(x, "x", window.layer)
    include = _include_pad_flag(count_include_pad, window.layer)
    n, c, h, w = (int(s) for s in x.shape)
    oh, ow = window.output_size(h, w)
    x = cupy.ascontiguousarray(x)
    y = cupy.empty((n, c, oh, ow), dtype=dtype)
    if y.size:
        _launch("avg_pool_fwd", dtype, (x, y) + _geometry(x.shape, window, oh, ow) + (include, y.size),
                (x.size, y.size))
    return y, (tuple(x.shape), window, bool(count_include_pad))


@loader.on_device_of_first_argument
def avg_pool2d_backward(grad_y, saved):
    """dL/dx of average pooling; see ``gpucnn.ops.pool.avg_pool2d_backward``."""
    x_shape, window, count_include_pad = saved
    dtype, oh, ow = _check_grad(grad_y, x_shape, window, window.layer)
    include = _include_pad_flag(count_include_pad, window.layer)
    grad_y = cupy.ascontiguousarray(grad_y)
    grad_x = cupy.empty(tuple(x_shape), dtype=dtype)
    if grad_x.size:
        if grad_y.size == 0:
            grad_x.fill(0)
        else:
            _launch("avg_pool_bwd", dtype, (grad_y, grad_x) + _geometry(x_shape, window, oh, ow)
                    + (include, grad_x.size), (grad_y.size, grad_x.size))
    return grad_x
