"""2-D convolution (cross-correlation, as in every framework) over NCHW volumes, as the tutorials write it.

Forward, for each output pixel:
``y[n, o, oy, ox] = b[o] + sum_{c, i, j} w[o, c, i, j] * x_pad[n, c, sy*oy + i, sx*ox + j]``.
The same weights slide over every position (weight sharing). Lowered to one matrix
product: im2col lays every window out as a column, so ``y = W @ cols`` with W reshaped to (O, C*kh*kw).

Dilation (dy, dx) spreads the taps apart: tap (i, j) reads ``x_pad[n, c, sy*oy + dy*i, sx*ox + dx*j]``.
Groups split the channels: with G groups, filter o sees only the C/G input channels of its
group g = o // (O/G), so ``weight`` is (O, C/G, kh, kw) and the product is one per group,
``y_g = W_g @ cols_g`` (cols_g: the rows of group g's channels), done as one batched matmul
(``gpucnn.ops.linear.grouped_matmul``).

Backward, as the tutorials derive it:
- dW is the correlation of the layer's input with the output gradient: ``dW = dY @ cols.T``.
- dX is the full convolution of dY (dilated by the stride: zeros inserted) with the kernel rotated
  by 180 degrees (input and output channels swapped), cropped by the padding:
  ``conv2d_input_grad``. ``conv2d_backward`` computes the same numbers as ``cols_grad = W.T @ dY``
  followed by ``col2im``, the adjoint of im2col, which adds each column back onto the window it
  came from (strides, dilation and padding handled for free); the tests hold the two equal, and
  both against the plain loops of the test oracle and against PyTorch.
- db is dY summed over the batch and the positions.

im2col and col2im are one vectorised copy (or add) per kernel tap (i, j) of plain slices of the
zero-padded input: kh*kw array operations, never a loop over pixels or images.

This is the reference, written for reading, not for speed. The CPU speed work lives in the fast
path, ``gpucnn.compile.cpu`` (``chwn.py``: im2col/col2im in a channel-major layout with the batch
innermost; ``stages.py``: ConvStage, with ReLU and max pooling folded in), which replaces this op
for every convolution it can run (no dilation, one group) and is held against it. CuPy arrays go to
``gpucnn.ops.cuda.conv``, which takes the same arguments and returns the same results.
"""
import numpy

from ..backend import get_array_module
from .linear import grouped_matmul

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_input_grad", "im2col", "col2im"]


def conv2d_forward(x, weight, bias, window, groups=1):
    """y = conv2d(x, weight) + bias.

    Args:
        x: (N, C, H, W) input.
        weight: (O, C/groups, kh, kw) filters.
        bias: (O,) or None.
        window: a ``gpucnn.ops.geometry.Window2D`` (stride, padding, dilation; the padding may differ
            before and after), or a ``SameWindow2D``, resolved here for the input's size.
        groups: channel groups (``gpucnn.ops.geometry.check_groups``); 1 is the plain convolution.

    Returns:
        (y, saved): y is (N, O, out_h, out_w); ``saved`` is what ``conv2d_backward`` needs:
        (cols, x_shape, weight, window, groups) on NumPy, the CUDA module's own tuple on CuPy.

    Example:
        >>> from gpucnn.ops.geometry import conv_window
        >>> y, saved = conv2d_forward(numpy.ones((1, 1, 4, 4)), numpy.ones((2, 1, 3, 3)), None, conv_window(3))
        >>> y[0, :, 0, 0]
        array([9., 9.])
    """
    window = window.resolve(*x.shape[2:])
    if get_array_module(x) is not numpy:
        from .cuda import conv as cuda_conv
        return cuda_conv.conv2d_forward(x, weight, bias, window, groups)
    n, _, h, w = x.shape
    out_c = weight.shape[0]
    oh, ow = window.output_size(h, w)
    cols = im2col(x, window, oh, ow)                                  # (C*kh*kw, N*oh*ow)
    w_groups = weight.reshape(groups, out_c // groups, -1)            # (G, O/G, C/G*kh*kw)
    y = grouped_matmul(w_groups, cols.reshape(groups, -1, cols.shape[1]))  # (O, N*oh*ow)
    if bias is not None:
        y += bias[:, None]
    y = numpy.ascontiguousarray(y.reshape(out_c, n, oh, ow).transpose(1, 0, 2, 3))
    return y, (cols, x.shape, weight, window, groups)


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
    cols, x_shape, weight, window, groups = saved
    out_c = weight.shape[0]
    n, _, oh, ow = grad_y.shape
    # dY laid out like the columns of cols: (O, N*oh*ow), column (n, oy, ox).
    gy_groups = grad_y.transpose(1, 0, 2, 3).reshape(groups, out_c // groups, n * oh * ow)
    cols_groups = cols.reshape(groups, -1, cols.shape[1])
    grad_w = grouped_matmul(gy_groups, cols_groups.transpose(0, 2, 1), out=grad_weight_out)  # dY @ cols.T
    grad_w = grad_w.reshape(weight.shape) if grad_weight_out is None else grad_weight_out
    grad_b = grad_y.sum(axis=(0, 2, 3), out=grad_bias_out) if need_bias else None
    if not need_input_grad:
        return None, grad_w, grad_b
    w_groups = weight.reshape(groups, out_c // groups, -1)
    grad_cols = grouped_matmul(w_groups.transpose(0, 2, 1), gy_groups)   # W.T @ dY: (C*kh*kw, N*oh*ow)
    return col2im(grad_cols, x_shape, window, oh, ow), grad_w, grad_b


def conv2d_input_grad(grad_y, weight, x_shape, window, groups=1):
    """dL/dx as the tutorials write it: the full convolution of dY with the kernel rotated by 180 degrees.

    Four steps, each a few array operations (NumPy or CuPy):

    1. dilate dY by the stride: insert (sy - 1) zero rows and (sx - 1) zero columns between its values;
    2. pad it by the window's extent minus one on every side (that is what makes the convolution "full");
    3. correlate it with the kernel rotated by 180 degrees, output and input channels swapped
       (``w[o, c, kh-1-i, kw-1-j]`` seen as a filter from channel o to channel c), its taps dilation apart;
       with groups, channel c of group g sees only the filters of group g;
    4. the result is the gradient of the padded input (zero past the last window where the stride
       leaves rows or columns untouched); crop the padding away.

    Gives the same numbers as ``conv2d_backward``'s dx (im2col's adjoint), computed another way.

    Args:
        grad_y: (N, O, oh, ow) output gradient.
        weight: (O, C/groups, kh, kw) filters.
        x_shape: (N, C, H, W) of the input.
        window, groups: as given to ``conv2d_forward``.

    Returns:
        (N, C, H, W) input gradient.
    """
    xp = get_array_module(grad_y)
    n, c, h, w = x_shape
    out_c, group_c, kh, kw = weight.shape
    oh, ow = grad_y.shape[2:]
    eh, ew = window.extent_h, window.extent_w
    # 1. dilate by the stride.
    dilated = xp.zeros((n, out_c, window.sy * (oh - 1) + 1, window.sx * (ow - 1) + 1), dtype=grad_y.dtype)
    dilated[:, :, ::window.sy, ::window.sx] = grad_y
    # 2. pad by extent - 1 on every side.
    padded = xp.pad(dilated, ((0, 0), (0, 0), (eh - 1, eh - 1), (ew - 1, ew - 1)))
    full_h, full_w = padded.shape[2] - eh + 1, padded.shape[3] - ew + 1   # rows/columns the windows touched
    # 3. correlate with the rotated kernel, channels swapped: tap (i, j) of rot multiplies padded
    #    shifted by (dy*i, dx*j); one tensor product per tap, over the group's filters.
    rotated = weight[:, :, ::-1, ::-1].reshape(groups, out_c // groups, group_c, kh, kw)
    padded = padded.reshape(n, groups, out_c // groups, *padded.shape[2:])
    grad_full = xp.zeros((n, groups, group_c, full_h, full_w), dtype=grad_y.dtype)
    for i in range(kh):
        for j in range(kw):
            shifted = padded[:, :, :, window.dy * i:window.dy * i + full_h, window.dx * j:window.dx * j + full_w]
            grad_full += xp.einsum("ngoyx,goc->ngcyx", shifted, rotated[:, :, :, i, j])
    # 4. the padded input's gradient, then the padding cut away.
    hp, wp = h + window.pt + window.pb, w + window.pl + window.pr
    grad_padded = xp.zeros((n, c, hp, wp), dtype=grad_y.dtype)
    grad_padded[:, :, :full_h, :full_w] = grad_full.reshape(n, c, full_h, full_w)
    return xp.ascontiguousarray(grad_padded[:, :, window.pt:window.pt + h, window.pl:window.pl + w])


def _tap(padded, window, i, j, oh, ow):
    """The (., ., oh, ow) view of a padded (., ., Hp, Wp) array that kernel tap (i, j) multiplies, one element
    per output pixel: ``padded[..., sy*oy + dy*i, sx*ox + dx*j]``."""
    top, left = window.dy * i, window.dx * j
    return padded[:, :, top:top + window.sy * (oh - 1) + 1:window.sy, left:left + window.sx * (ow - 1) + 1:window.sx]


def im2col(x, window, oh, ow):
    """(C*kh*kw, N*oh*ow) matrix whose column (n, oy, ox) is the window under output pixel (oy, ox) of image n.

    Rows are ordered (c, i, j) like ``weight.reshape(O, -1)``, so ``weight.reshape(O, -1) @ cols`` is the
    convolution. One copy per kernel tap (i, j): rows (c, i, j) of all columns are the zero-padded input
    seen through that tap. The padded input is laid out (C, N, Hp, Wp), channels first like the rows
    and images next like the columns, so that each tap is a plain slice copied as it is.
    """
    xp = get_array_module(x)
    n, c, _, _ = x.shape
    padded = xp.pad(x.transpose(1, 0, 2, 3), ((0, 0), (0, 0), (window.pt, window.pb), (window.pl, window.pr)))
    cols = xp.empty((c, window.kh, window.kw, n, oh, ow), dtype=x.dtype)
    for i in range(window.kh):
        for j in range(window.kw):
            cols[:, i, j] = _tap(padded, window, i, j, oh, ow)
    return cols.reshape(c * window.kh * window.kw, n * oh * ow)


def col2im(cols, x_shape, window, oh, ow):
    """Adjoint of ``im2col``: add every column back onto the window it came from; returns (N, C, H, W).

    One add per kernel tap (i, j), into the padded (C, N, Hp, Wp) gradient: within one tap no two output
    pixels touch the same input element, so the add through the strided slice is exact. Where windows
    overlap, the taps add up. The padding is cut away at the end.
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    grad_padded = xp.zeros((c, n, h + window.pt + window.pb, w + window.pl + window.pr), dtype=cols.dtype)
    cols = cols.reshape(c, window.kh, window.kw, n, oh, ow)
    for i in range(window.kh):
        for j in range(window.kw):
            tap = _tap(grad_padded, window, i, j, oh, ow)
            tap += cols[:, i, j]
    grad_x = grad_padded[:, :, window.pt:window.pt + h, window.pl:window.pl + w]
    return xp.ascontiguousarray(grad_x.transpose(1, 0, 2, 3))
