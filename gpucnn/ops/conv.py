"""2-D convolution (cross-correlation, as in every framework) over NCHW volumes.

Forward, for each output pixel: ``y[n, o] = b[o] + sum_{c, i, j} w[o, c, i, j] * x_pad[n, c, sy*oy + i, sx*ox + j]``.
The same weights slide over every position (weight sharing). Lowered to one matrix
product: im2col lays every window out as a column, so ``y = W @ cols``.

Dilation (dy, dx) spreads the taps apart: tap (i, j) reads ``x_pad[n, c, sy*oy + dy*i, sx*ox + dx*j]``.
Groups split the channels: with G groups, filter o sees only the C/G input channels of its
group g = o // (O/G), so ``weight`` is (O, C/G, kh, kw) and the product is one per group,
``y_g = W_g @ cols_g`` (cols_g: the rows of group g's channels), done as one batched matmul.

Backward, as the tutorials derive it:
- dW is the correlation of the layer's input with the output gradient: ``dW = dY @ cols.T``.
- dX is the full convolution of dY with the kernel rotated by 180 degrees. We compute
  the same numbers as ``cols_grad = W.T @ dY`` followed by col2im, which adds each
  column back onto the window it came from (strides and padding handled for free);
  tests/oracle.py holds the rotated-kernel formula itself, and the tests hold them equal.
- db is dY summed over the batch and the positions.

The NumPy functions here are the reference; CuPy arrays go to ``gpucnn.ops.cuda.conv``,
which takes the same arguments and returns the same results.
"""
import numpy
from numpy.lib.stride_tricks import as_strided

from ..backend import get_array_module
from .linear import grouped_matmul

__all__ = ["conv2d_forward", "conv2d_backward", "im2col", "col2im"]


def conv2d_forward(x, weight, bias, window, groups=1):
    """y = conv2d(x, weight) + bias.

    Args:
        x: (N, C, H, W) input.
        weight: (O, C/groups, kh, kw) filters.
        bias: (O,) or None.
        window: a ``gpucnn.ops.geometry.Window2D`` (stride, padding, dilation).
        groups: channel groups (``gpucnn.ops.geometry.check_groups``); 1 is the plain convolution.

    Returns:
        (y, saved): y is (N, O, out_h, out_w); ``saved`` is what ``conv2d_backward`` needs.
    """
    if get_array_module(x) is not numpy:
        from .cuda import conv as cuda_conv
        return cuda_conv.conv2d_forward(x, weight, bias, window, groups)
    n, c, h, w = x.shape
    out_c = weight.shape[0]
    oh, ow = window.output_size(h, w)
    grid_w = _grid_width(window, w, ow, c // groups, out_c // groups)
    cols = _im2col_grid(x, window, oh, grid_w)
    if grid_w != ow and not numpy.isfinite(x).all():
        # The spare grid columns read input wrapped around from the next row; an inf or NaN there
        # would turn dW = dY @ cols.T into NaN (0 * inf) where PyTorch's is finite, so zero them.
        # Finite values need nothing (0 * finite = 0), and checking x costs far less than the zeroing.
        cols.reshape(-1, n, oh, grid_w)[:, :, :, ow:] = 0
    length = cols.shape[1]
    y = grouped_matmul(weight.reshape(groups, out_c // groups, -1), cols.reshape(groups, -1, length))
    y = y.reshape(out_c, n, oh, grid_w)
    if bias is not None:
        y += bias[:, None, None, None]
    y = numpy.ascontiguousarray(y[:, :, :, :ow].transpose(1, 0, 2, 3))
    return y, (cols, x.shape, weight, window, grid_w, groups)


def conv2d_backward(grad_y, saved, need_bias=True, need_input_grad=True, grad_weight_out=None,
                    grad_bias_out=None):
    """Gradients (dx, dweight, dbias) of ``conv2d_forward`` given dL/dy.

    dbias is None unless ``need_bias``; dx is None unless ``need_input_grad`` (the first
    layer of a network needs no gradient with respect to the data). ``grad_weight_out`` /
    ``grad_bias_out``: optional C-contiguous arrays that dweight / dbias are written into
    (and returned), instead of new ones.
    """
    if get_array_module(grad_y) is not numpy:
        from .cuda import conv as cuda_conv
        return cuda_conv.conv2d_backward(grad_y, saved, need_bias, need_input_grad, grad_weight_out, grad_bias_out)
    cols, x_shape, weight, window, grid_w, groups = saved
    out_c = weight.shape[0]
    n, _, oh, ow = grad_y.shape
    # Output gradient laid out like the columns: (O, N, oh, grid_w), zero on the spare grid columns.
    gy_grid = numpy.zeros((out_c, n, oh, grid_w), dtype=grad_y.dtype) if grid_w != ow else \
        numpy.empty((out_c, n, oh, grid_w), dtype=grad_y.dtype)
    gy_grid[:, :, :, :ow] = grad_y.transpose(1, 0, 2, 3)
    gy_mat = gy_grid.reshape(out_c, -1)
    gy_groups = gy_mat.reshape(groups, out_c // groups, -1)
    cols_groups = cols.reshape(groups, -1, cols.shape[1])
    grad_w = grouped_matmul(gy_groups, cols_groups.transpose(0, 2, 1), out=grad_weight_out).reshape(weight.shape)
    if grad_weight_out is not None:
        grad_w = grad_weight_out
    grad_b = gy_mat.sum(axis=1, out=grad_bias_out) if need_bias else None  # the spare grid columns hold zeros
    if not need_input_grad:
        return None, grad_w, grad_b
    grad_cols = grouped_matmul(weight.reshape(groups, out_c // groups, -1).transpose(0, 2, 1), gy_groups)
    grad_x = _col2im_grid(grad_cols, x_shape, window, oh, grid_w)
    return grad_x, grad_w, grad_b


def im2col(x, window, oh, ow):
    """(C*kh*kw, N*oh*ow) matrix whose column (n, oy, ox) is the window under output pixel (oy, ox) of image n.

    Rows are ordered (c, i, j) like ``weight.reshape(O, -1)``, so ``weight.reshape(O, -1) @ cols`` is the convolution.
    """
    return _im2col_grid(x, window, oh, ow)


def col2im(cols, x_shape, window, oh, ow):
    """Adjoint of ``im2col``: add every column back onto the window it came from; returns (N, C, H, W)."""
    return _col2im_grid(cols, x_shape, window, oh, ow)


# How the lowering works. The padded input is stored as (C, N, Hp*Wp + slack): each image
# a flat row. Kernel offset (i, j) sees, for every output pixel, the input element at
# flat index  dy*i*Wp + dx*j + sy*Wp*oy + sx*ox : one strided view per offset (a "tap"), so
# im2col and col2im are kh*kw vectorised copies or adds, never a loop over pixels.
# With stride 1 we may compute the output on a grid Wp wide instead of ow wide: the spare
# columns are discarded, and in exchange every tap is one contiguous run per image.

def _grid_width(window, w, ow, in_c, out_c):
    """Wp (contiguous taps) for stride 1 when the columns outweigh the output (C*kh*kw >= O), else ow.

    The wide grid speeds up im2col and col2im, whose cost grows with C*kh*kw, but breaks
    the output into rows, which slows the transposes of y and dy, whose cost grows with O.
    """
    wide = (window.sy, window.sx) == (1, 1) and in_c * window.kh * window.kw >= out_c
    return w + window.pl + window.pr if wide else ow


def _flat_padded(shape, window, dtype):
    """Zeros of shape (C, N, Hp*Wp + extent_w) and the (C, N, Hp, Wp) view of its image part (the
    slack after the image lets the last tap of a wide grid run past the last row)."""
    n, c, h, w = shape
    hp, wp = h + window.pt + window.pb, w + window.pl + window.pr
    flat = numpy.zeros((c, n, hp * wp + window.extent_w), dtype=dtype)
    s_c, s_n, s_e = flat.strides
    image = as_strided(flat, shape=(c, n, hp, wp), strides=(s_c, s_n, wp * s_e, s_e))
    return flat, image


def _tap(flat, window, i, j, oh, grid_w, wp):
    """(C, N, oh, grid_w) view of the elements that kernel offset (i, j) multiplies."""
    c, n, _ = flat.shape
    s_c, s_n, s_e = flat.strides
    return as_strided(flat[:, :, i * window.dy * wp + j * window.dx:], shape=(c, n, oh, grid_w),
                      strides=(s_c, s_n, window.sy * wp * s_e, window.sx * s_e))


def _im2col_grid(x, window, oh, grid_w):
    n, c, h, w = x.shape
    wp = w + window.pl + window.pr
    flat, image = _flat_padded(x.shape, window, x.dtype)
    image[:, :, window.pt:window.pt + h, window.pl:window.pl + w] = x.transpose(1, 0, 2, 3)
    cols = numpy.empty((c, window.kh, window.kw, n, oh, grid_w), dtype=x.dtype)
    for i in range(window.kh):
        for j in range(window.kw):
            cols[:, i, j] = _tap(flat, window, i, j, oh, grid_w, wp)
    return cols.reshape(c * window.kh * window.kw, n * oh * grid_w)


def _col2im_grid(cols, x_shape, window, oh, grid_w):
    n, c, h, w = x_shape
    wp = w + window.pl + window.pr
    flat, image = _flat_padded(x_shape, window, cols.dtype)
    cols = cols.reshape(c, window.kh, window.kw, n, oh, grid_w)
    for i in range(window.kh):
        for j in range(window.kw):
            # Within one offset no two output pixels touch the same input element, so += is exact.
            tap = _tap(flat, window, i, j, oh, grid_w, wp)
            tap += cols[:, i, j]
    grad_x = image[:, :, window.pt:window.pt + h, window.pl:window.pl + w]
    return numpy.ascontiguousarray(grad_x.transpose(1, 0, 2, 3))
