"""Plain-loop reference implementations, written the way the tutorials explain them.

Slow and obviously right; nothing here imports gpucnn's operators. Everything works
in float64 on NumPy arrays. Padding is always given as (top, bottom, left, right).

Also holds the one shared helper for comparing gpucnn's output (NumPy or CuPy) with a
reference: ``assert_close``.
"""
import numpy

__all__ = ["resolve_conv_padding", "pad2d", "dilate_kernel", "conv2d_forward", "conv2d_backward",
           "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
           "avg_pool2d_backward", "dense_forward", "dense_backward",
           "softmax_cross_entropy", "assert_close", "to_numpy", "pair"]


# ----------------------------------------------------------------------------------------
# small helpers

def pair(v):
    """An int or (h, w) as (h, w)."""
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def resolve_conv_padding(kernel_size, padding, dilation=1):
    """(top, bottom, left, right) for a conv padding argument (int, (h, w), 'valid', 'same').

    'same' (stride 1): total padding d*(k - 1) per axis (the dilated kernel's extent
    minus one); an odd total puts the extra zero at the bottom/right, as PyTorch does.
    """
    kh, kw = pair(kernel_size)
    dy, dx = pair(dilation)
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dy * (kh - 1), dx * (kw - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = pair(padding)
    return ph, ph, pw, pw


def pad2d(x, pad, value=0.0):
    """Pad the last two axes of an (N, C, H, W) array by pad=(top, bottom, left, right)."""
    pt, pb, pl, pr = pad
    n, c, h, w = x.shape
    out = numpy.full((n, c, h + pt + pb, w + pl + pr), value, dtype=numpy.float64)
    out[:, :, pt:pt + h, pl:pl + w] = x
    return out


def output_size(h, w, kernel, stride, pad):
    kh, kw = kernel
    sy, sx = stride
    pt, pb, pl, pr = pad
    return (h + pt + pb - kh) // sy + 1, (w + pl + pr - kw) // sx + 1


# ----------------------------------------------------------------------------------------
# convolution (cross-correlation, as every framework computes it)

def dilate_kernel(w, dilation):
    """Spread a (O, C, kh, kw) kernel out: (d - 1) zeros between neighbouring taps.

    A dilated convolution is the plain convolution with this bigger, mostly-zero kernel.
    """
    dy, dx = pair(dilation)
    out_c, in_c, kh, kw = w.shape
    out = numpy.zeros((out_c, in_c, dy * (kh - 1) + 1, dx * (kw - 1) + 1))
    out[:, :, ::dy, ::dx] = w
    return out


def conv2d_forward(x, w, b, stride, pad, dilation=1, groups=1):
    """y[n, o, oy, ox] = b[o] + sum over the window of x_pad * w[o].

    With dilation the window takes every dy-th row and dx-th column; with groups, filter o
    sees only the input channels of its group (C/groups of them, w is (O, C/groups, kh, kw)).
    """
    x = numpy.asarray(x, dtype=numpy.float64)
    w = numpy.asarray(w, dtype=numpy.float64)
    n_batch, _, h, wid = x.shape
    out_c, group_c, kh, kw = w.shape
    sy, sx = pair(stride)
    dy, dx = pair(dilation)
    eh, ew = dy * (kh - 1) + 1, dx * (kw - 1) + 1
    out_per_group = out_c // groups
    oh, ow = output_size(h, wid, (eh, ew), (sy, sx), pad)
    xp = pad2d(x, pad)
    y = numpy.zeros((n_batch, out_c, oh, ow))
    for n in range(n_batch):
        for o in range(out_c):
            first = (o // out_per_group) * group_c      # the first input channel of o's group
            for oy in range(oh):
                for ox in range(ow):
                    window = xp[n, first:first + group_c, oy * sy:oy * sy + eh:dy, ox * sx:ox * sx + ew:dx]
                    y[n, o, oy, ox] = numpy.sum(window * w[o])
                    if b is not None:
                        y[n, o, oy, ox] += b[o]
    return y


def dilate(dy, stride):
    """Insert (stride - 1) zeros between neighbouring output-gradient values."""
    sy, sx = pair(stride)
    n, c, oh, ow = dy.shape
    out = numpy.zeros((n, c, sy * (oh - 1) + 1, sx * (ow - 1) + 1))
    out[:, :, ::sy, ::sx] = dy
    return out


def conv2d_backward(x, w, dy, stride, pad, dilation=1, groups=1):
    """(dx, dw, db) of ``conv2d_forward``.

    dW is the correlation of the (padded) input with dY, dY spread out by the stride.
    dX is the FULL convolution of dY -- dilated by the stride and zero padded by k - 1
    on every side -- with the kernel rotated by 180 degrees; that gives the gradient of
    the padded input, from which the padding is cut away.

    A dilated kernel is the plain kernel spread out with zeros (``dilate_kernel``): both
    formulas run with that kernel, and dW keeps the taps that are real. With groups, each
    group is its own convolution: group g's filters, group g's input channels.
    """
    x = numpy.asarray(x, dtype=numpy.float64)
    w = numpy.asarray(w, dtype=numpy.float64)
    dy = numpy.asarray(dy, dtype=numpy.float64)
    n_batch, in_c, h, wid = x.shape
    out_c, group_c, _, _ = w.shape
    out_per_group = out_c // groups
    sy, sx = pair(stride)
    pt, pb, pl, pr = pad
    w_big = dilate_kernel(w, dilation)              # (O, C/groups, eh, ew)
    kh, kw = w_big.shape[2:]
    xp = pad2d(x, pad)
    dyd = dilate(dy, (sy, sx))                      # (N, O, Dh, Dw)
    dh, dw_ = dyd.shape[2:]

    # dW[o, c, i, j] = sum_n sum_{a, b} x_pad[n, c, i + a, j + b] * dY_dilated[n, o, a, b]  (c in o's group)
    grad_w_big = numpy.zeros_like(w_big)
    for o in range(out_c):
        first = (o // out_per_group) * group_c
        for c in range(group_c):
            for i in range(kh):
                for j in range(kw):
                    grad_w_big[o, c, i, j] = numpy.sum(xp[:, first + c, i:i + dh, j:j + dw_] * dyd[:, o])
    dil_y, dil_x = pair(dilation)
    grad_w = grad_w_big[:, :, ::dil_y, ::dil_x]

    # dX_pad = full_conv(dY_dilated, rot180(W)), i.e. correlate the (k-1)-padded dY with the rotated kernel;
    # input channel c gets contributions from the filters of its group only.
    rot = w_big[:, :, ::-1, ::-1]
    dyp = pad2d(dyd, (kh - 1, kh - 1, kw - 1, kw - 1))
    full_h, full_w = dh + kh - 1, dw_ + kw - 1      # = sy*(oh-1)+kh: the rows the windows touched
    grad_xp = numpy.zeros(xp.shape)                 # rows past the last window keep gradient 0
    for n in range(n_batch):
        for c in range(in_c):
            g = c // group_c
            filters = slice(g * out_per_group, (g + 1) * out_per_group)
            for yy in range(full_h):
                for xx in range(full_w):
                    grad_xp[n, c, yy, xx] = numpy.sum(dyp[n, filters, yy:yy + kh, xx:xx + kw]
                                                      * rot[filters, c - g * group_c])
    grad_x = grad_xp[:, :, pt:pt + h, pl:pl + wid]

    grad_b = dy.sum(axis=(0, 2, 3))
    return grad_x, grad_w, grad_b


# ----------------------------------------------------------------------------------------
# pooling

def max_pool2d_forward(x, kernel, stride, pad):
    """Max over each window (padding is -inf, so it never wins) and the argmax mask.

    Returns (y, mask): mask[n, c, oy, ox] is a 0/1 array the size of the padded input
    with a single 1 at the first (row-major) maximum of that window.
    """
    x = numpy.asarray(x, dtype=numpy.float64)
    kh, kw = pair(kernel)
    sy, sx = pair(stride)
    n_batch, ch, h, wid = x.shape
    oh, ow = output_size(h, wid, (kh, kw), (sy, sx), pad)
    xp = pad2d(x, pad, value=-numpy.inf)
    y = numpy.zeros((n_batch, ch, oh, ow))
    mask = numpy.zeros((n_batch, ch, oh, ow) + xp.shape[2:])
    for n in range(n_batch):
        for c in range(ch):
            for oy in range(oh):
                for ox in range(ow):
                    window = xp[n, c, oy * sy:oy * sy + kh, ox * sx:ox * sx + kw]
                    i, j = numpy.unravel_index(numpy.argmax(window), window.shape)
                    y[n, c, oy, ox] = window[i, j]
                    mask[n, c, oy, ox, oy * sy + i, ox * sx + j] = 1.0
    return y, mask


def max_pool2d_backward(dy, mask, x_shape, pad):
    """Each output gradient goes to its window's argmax; overlapping windows add up."""
    pt, pb, pl, pr = pad
    h, wid = x_shape[2:]
    n_batch, ch, oh, ow = dy.shape
    grad_xp = numpy.zeros(mask.shape[:2] + mask.shape[4:])
    for n in range(n_batch):
        for c in range(ch):
            for oy in range(oh):
                for ox in range(ow):
                    grad_xp[n, c] += dy[n, c, oy, ox] * mask[n, c, oy, ox]
    return grad_xp[:, :, pt:pt + h, pl:pl + wid]


def avg_pool2d_forward(x, kernel, stride, pad):
    """Mean over each window of the zero-padded input (padded zeros counted)."""
    x = numpy.asarray(x, dtype=numpy.float64)
    kh, kw = pair(kernel)
    sy, sx = pair(stride)
    n_batch, ch, h, wid = x.shape
    oh, ow = output_size(h, wid, (kh, kw), (sy, sx), pad)
    xp = pad2d(x, pad)
    y = numpy.zeros((n_batch, ch, oh, ow))
    for n in range(n_batch):
        for c in range(ch):
            for oy in range(oh):
                for ox in range(ow):
                    y[n, c, oy, ox] = xp[n, c, oy * sy:oy * sy + kh, ox * sx:ox * sx + kw].mean()
    return y


def avg_pool2d_backward(dy, x_shape, kernel, stride, pad):
    """Each output gradient / (kh*kw) onto every element of its window."""
    kh, kw = pair(kernel)
    sy, sx = pair(stride)
    pt, pb, pl, pr = pad
    n_batch, ch, h, wid = x_shape
    oh, ow = dy.shape[2:]
    grad_xp = numpy.zeros((n_batch, ch, h + pt + pb, wid + pl + pr))
    for n in range(n_batch):
        for c in range(ch):
            for oy in range(oh):
                for ox in range(ow):
                    grad_xp[n, c, oy * sy:oy * sy + kh, ox * sx:ox * sx + kw] += dy[n, c, oy, ox] / (kh * kw)
    return grad_xp[:, :, pt:pt + h, pl:pl + wid]


# ----------------------------------------------------------------------------------------
# dense and softmax cross-entropy

def dense_forward(x, w, b):
    """y[n, o] = sum_i w[o, i] x[n, i] + b[o]."""
    x = numpy.asarray(x, dtype=numpy.float64)
    w = numpy.asarray(w, dtype=numpy.float64)
    y = numpy.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            y[n, o] = numpy.dot(w[o], x[n]) + (b[o] if b is not None else 0.0)
    return y


def dense_backward(x, w, dy):
    """(dx, dw, db): dx = dY W, dW = dY^T X, db = column sums of dY."""
    x = numpy.asarray(x, dtype=numpy.float64)
    w = numpy.asarray(w, dtype=numpy.float64)
    dy = numpy.asarray(dy, dtype=numpy.float64)
    return dy @ w, dy.T @ x, dy.sum(axis=0)


def softmax_cross_entropy(logits, labels):
    """(mean loss, dL/dlogits) for integer labels; stable by subtracting the row max."""
    logits = numpy.asarray(logits, dtype=numpy.float64)
    n = logits.shape[0]
    loss = 0.0
    grad = numpy.zeros_like(logits)
    for i in range(n):
        row = logits[i] - logits[i].max()
        log_z = numpy.log(numpy.sum(numpy.exp(row)))
        loss += log_z - row[labels[i]]
        grad[i] = numpy.exp(row - log_z)
        grad[i, labels[i]] -= 1.0
    return loss / n, grad / n


# ----------------------------------------------------------------------------------------
# comparison

def to_numpy(a):
    """NumPy copy of a NumPy/CuPy array or scalar."""
    if hasattr(a, "get") and not isinstance(a, numpy.ndarray):  # cupy.ndarray
        return a.get()
    return numpy.asarray(a)


def assert_close(got, want, rtol=1e-9, atol=1e-11, what="value"):
    """Compare a gpucnn result (NumPy or CuPy) with a reference: same shape, values close."""
    got = to_numpy(got)
    want = numpy.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    numpy.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)
