"""Convolution and pooling in the channel-major layout (C, H, W, N): the batch is the innermost axis.

Replaces, on the fast path, the NCHW ops of gpucnn.ops.conv (conv2d_forward, conv2d_backward,
im2col, col2im) and gpucnn.ops.pool (max_pool2d_*, avg_pool2d_*). The math is theirs; only the
memory order differs. With N innermost:
- kernel offset (i, j) of a convolution reads ``padded[c, i + sy*oy, j + sx*ox, :]``: for stride 1
  every (c, oy) is one contiguous run of ow*N numbers, so im2col and col2im are long copies;
- ``W @ cols`` comes out as (O, oh, ow, N), the next layer's input as it stands: no transposes;
- a pooling tap is a strided view whose inner runs are N (or ow*N) contiguous numbers.

Every function writes into buffers it is given (``out``), so that the arena can reuse them. The
ones that pass over the same numbers several times (col2im's nine adds, pooling's taps, maxima
and masks) go channel block by channel block, each block small enough to stay in the core's L2
cache between its passes. Measured on a loaded 2-core EPYC: max pooling of (32, 28, 28, 128) from a
cold cache 7.4 -> 4.4 ms; a whole single-threaded step at 128 images per chunk about -10%, at 64 no change.

Contiguity: NumPy's elementwise loops (add, maximum, equal, multiply) are fast over contiguous
arrays and over strided ones whose contiguous runs are long (some 8000 numbers or more), and
several times slower over short runs: measured with numpy 2.4 on the 2-core EPYC, an add of 800k
float32 in runs of 128 numbers 1.0 ms, of 1792 numbers 0.29 ms, contiguous 0.08 ms. Copies
(``copyto``) of the same strided views stay fast. So the hot loops copy strided views into
contiguous scratch first, or line the data up so that the runs are long:
- max pooling with windows that do not overlap (``gather_taps``) copies all its taps in one pass and
  compares contiguous arrays; its backward multiplies contiguously and scatters in one copy
  ((32, 28, 28, 128) float32 on one core: forward 5.8 -> 4.8 ms, backward 3.5 -> 2.6 ms);
- ``col2im_same`` (stride 1, "same" padding) adds each kernel offset as one run per channel
  ((32*9, 14*14*128) columns: 6.1 -> 2.6 ms; at 32 images 1.5 -> 0.4 ms).
"""
import numpy
from numpy.lib.stride_tricks import as_strided

__all__ = ["tap", "im2col", "col2im", "col2im_same", "same_size", "max_pool_forward", "max_pool_backward",
           "max_pool_taps", "route_dead_windows_to_real", "gather_taps", "tap_major", "pool_scratch_shape",
           "avg_pool_forward",
           "avg_pool_backward"]


BLOCK_BYTES = 1 << 19  # a channel block's input: well inside a core's L2 cache (512 KiB to 2 MiB today)


def channel_blocks_step(shape, itemsize=4):
    """Channels per block of ``channel_blocks`` for an array of ``shape`` (C, ...)."""
    per_channel = max(1, int(numpy.prod(shape[1:])) * itemsize)
    return max(1, min(shape[0], BLOCK_BYTES // per_channel))


def channel_blocks(array):
    """Slices of axis 0 (channels) of about BLOCK_BYTES of ``array`` each (at least one channel)."""
    step = channel_blocks_step(array.shape, array.itemsize)
    return [slice(c, min(c + step, array.shape[0])) for c in range(0, array.shape[0], step)]


def tap(padded, window, i, j, oh, ow):
    """(C, oh, ow, N) view of ``padded`` seen at kernel offset (i, j) by every output pixel."""
    return padded[:, i:i + window.sy * (oh - 1) + 1:window.sy, j:j + window.sx * (ow - 1) + 1:window.sx, :]


def im2col(padded, window, oh, ow, out):
    """out[(c, i, j), (oy, ox, n)] = padded[c, sy*oy + i, sx*ox + j, n]; ``out`` is (C*kh*kw, oh*ow*N)."""
    c, _, _, n = padded.shape
    s_c, s_h, s_w, s_n = padded.strides
    windows = as_strided(padded, shape=(c, window.kh, window.kw, oh, ow, n),
                         strides=(s_c, s_h, s_w, window.sy * s_h, window.sx * s_w, s_n), writeable=False)
    numpy.copyto(out.reshape(c, window.kh, window.kw, oh, ow, n), windows)
    return out


def col2im(cols, window, oh, ow, out_padded):
    """Adjoint of ``im2col``: every column added back onto its window of ``out_padded`` (C, Hp, Wp, N)."""
    c, _, _, n = out_padded.shape
    cols = cols.reshape(c, window.kh, window.kw, oh, ow, n)
    for block in channel_blocks(out_padded):
        target = out_padded[block]
        target.fill(0)
        for i in range(window.kh):
            for j in range(window.kw):
                # Within one offset no two output pixels touch the same input element, so += is exact.
                view = tap(target, window, i, j, oh, ow)
                numpy.add(view, cols[block, i, j], out=view)
    return out_padded


def same_size(window, h, w):
    """Whether ``col2im_same`` applies: stride 1 and padding that keeps the size (h, w) ("same")."""
    return (window.sy, window.sx) == (1, 1) and window.output_size(h, w) == (h, w)


def col2im_same(cols, window, h, w, out):
    """The input gradient of a stride-1 "same" convolution, unpadded: ``out`` (C, h, w, N), contiguous.

    Output and input have the same width, so kernel offset (i, j) moves every number by one constant
    distance, (i - pt) * w + (j - pl) pixels, in each channel's flat (h*w*N) array: the add of each
    offset is one long contiguous run per channel instead of a run of w*N numbers per row (NumPy's
    elementwise loops are about three times slower over runs of a few thousand numbers than over
    long ones). Columns that would wrap around into the next or previous row are zeroed in ``cols``
    first (``cols`` is scratch: the column gradient, used once), and rows that fall outside are cut off.
    """
    c, n = out.shape[0], out.shape[3]
    cols = cols.reshape(c, window.kh, window.kw, h, w, n)
    flat = out.reshape(c, h * w * n)
    size = h * w * n
    first = True
    order = [(window.pt, window.pl)] + [(i, j) for i in range(window.kh) for j in range(window.kw)
                                        if (i, j) != (window.pt, window.pl)]
    for i, j in order:  # the centre first: it covers every pixel, a copy instead of a zero fill and an add
        dj = j - window.pl
        shift = ((i - window.pt) * w + dj) * n
        if abs(shift) >= size:  # a kernel larger than the image: this offset reaches no pixel
            continue
        src = cols[:, i, j]
        if dj > 0:
            src[:, :, max(0, w - dj):].fill(0)
        elif dj < 0:
            src[:, :, :-dj].fill(0)
        src = src.reshape(c, size)
        target = flat[:, max(0, shift):size + min(0, shift)]
        part = src[:, max(0, -shift):size - max(0, shift)]
        if first:
            numpy.copyto(target, part)
            first = False
        else:
            numpy.add(target, part, out=target)
    return out


def max_pool_forward(padded, window, oh, ow, out, masks, seen, scratch=None):
    """out = max over each window of ``padded`` (C, Hp, Wp, N); masks[k] marks, for each output, whether
    tap k (k = i*kw + j) is the element that gets its gradient.

    The same rule as gpucnn.ops.pool.max_pool2d_forward: the first of equal maxima wins, and in a
    window holding NaN the output is NaN and the last NaN wins. ``seen`` is a bool scratch buffer;
    ``scratch``, of ``pool_scratch_shape``, lets windows that do not overlap go through ``gather_taps``.
    """
    for b in channel_blocks(padded):
        if scratch is None:
            taps = [tap(padded[b], window, k // window.kw, k % window.kw, oh, ow)
                    for k in range(window.kh * window.kw)]
        else:
            taps = gather_taps(padded[b], window, oh, ow, scratch[:, :b.stop - b.start])
        max_pool_taps(taps, out[b], masks[:, b], seen[b])
    return out


def route_dead_windows_to_real(out, masks, window, h, w):
    """Where a padded window holds nothing but -inf (so its maximum is -inf, which the padding equals too),
    send its gradient to the window's first real element, as gpucnn.ops.pool does (and PyTorch): the taps
    of ``max_pool_taps`` would name the padding, and the gradient would be lost. ``out`` (C, oh, ow, N),
    ``masks`` (kh*kw, C, oh, ow, N); (h, w): the unpadded input's size."""
    dead = numpy.isneginf(out)
    if not dead.any():
        return
    oh, ow = out.shape[1:3]
    rows = window.sy * numpy.arange(oh)[None, :] + numpy.arange(window.kh)[:, None] - window.pt  # (kh, oh)
    cols = window.sx * numpy.arange(ow)[None, :] + numpy.arange(window.kw)[:, None] - window.pl  # (kw, ow)
    real = (((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[None, :, None, :])
    real = real.reshape(window.kh * window.kw, oh, ow)
    first = numpy.arange(real.shape[0])[:, None, None] == real.argmax(axis=0)  # (kh*kw, oh, ow)
    c, oy, ox, n = numpy.nonzero(dead)
    masks[:, c, oy, ox, n] = first[:, oy, ox]


def pool_scratch_shape(shape, itemsize, window, oh, ow):
    """Shape of the scratch buffer of ``gather_taps`` for an input of ``shape`` (C, Hp, Wp, N), or None
    where the windows overlap (stride smaller than the kernel) and the taps are read in place."""
    if (window.sy, window.sx) != (window.kh, window.kw):
        return None
    c = channel_blocks_step(shape, itemsize)
    return (window.kh * window.kw, c, oh, ow, shape[3])


def tap_major(array, window, oh, ow):
    """(kh, kw, C, oh, ow, N) view of the (C, H, W, N) ``array`` covered by non-overlapping windows."""
    c, _, _, n = array.shape
    covered = array[:, :oh * window.kh, :ow * window.kw, :]
    return covered.reshape(c, oh, window.kh, ow, window.kw, n).transpose(2, 4, 0, 1, 3, 5)


def gather_taps(padded, window, oh, ow, scratch):
    """Non-overlapping windows: every tap copied, in one pass, into ``scratch`` (kh*kw, C, oh, ow, N), so
    that the comparisons after it run on contiguous arrays (NumPy's elementwise loops over the strided
    taps, whose contiguous runs are N numbers, take about four times as long); [tap 0, tap 1, ...]."""
    k, c, _, _, n = scratch.shape
    numpy.copyto(scratch.reshape(window.kh, window.kw, c, oh, ow, n), tap_major(padded, window, oh, ow))
    return list(scratch)


def max_pool_taps(taps, out, masks, seen):
    numpy.copyto(out, taps[0])
    for t in taps[1:]:
        numpy.maximum(out, t, out=out)
    numpy.equal(taps[0], out, out=masks[0])
    numpy.copyto(seen, masks[0])
    for k in range(1, len(taps)):
        numpy.equal(taps[k], out, out=masks[k])
        numpy.greater(masks[k], seen, out=masks[k])  # equal to the max and none before it was
        numpy.logical_or(seen, masks[k], out=seen)
    if not seen.all():  # only windows holding NaN (NaN equals nothing): PyTorch's rule, the last NaN wins
        nan_windows = ~seen
        for k in range(len(taps) - 1, -1, -1):
            hit = numpy.isnan(taps[k]) & nan_windows
            masks[k] |= hit
            nan_windows &= ~hit


def max_pool_backward(grad_out, masks, window, oh, ow, out_padded, tiles_exactly, scratch=None):
    """Each output gradient onto the element its mask names; ``out_padded`` is (C, Hp, Wp, N). With
    ``scratch`` (of ``pool_scratch_shape``) and windows that tile the input exactly, the products are
    made contiguous and scattered onto their taps in one copy."""
    for b in channel_blocks(out_padded):
        if tiles_exactly and scratch is not None:
            part = scratch[:, :b.stop - b.start]
            numpy.multiply(grad_out[b][None], masks[:, b], out=part)
            numpy.copyto(tap_major(out_padded[b], window, oh, ow),
                         part.reshape((window.kh, window.kw) + part.shape[1:]))
        else:
            _max_pool_backward_block(grad_out[b], masks[:, b], window, oh, ow, out_padded[b], tiles_exactly)
    return out_padded


def _max_pool_backward_block(grad_out, masks, window, oh, ow, out_padded, tiles_exactly):
    if tiles_exactly:  # every element in exactly one window: each tap written once, no zero fill
        for k in range(window.kh * window.kw):
            numpy.multiply(grad_out, masks[k], out=tap(out_padded, window, k // window.kw, k % window.kw, oh, ow))
        return out_padded
    out_padded.fill(0)
    for k in range(window.kh * window.kw):
        view = tap(out_padded, window, k // window.kw, k % window.kw, oh, ow)
        view += grad_out * masks[k]
    return out_padded


def avg_pool_forward(padded, window, oh, ow, out):
    """Mean over each window, padded zeros counted (the sum in gpucnn.ops.pool's order)."""
    numpy.copyto(out, tap(padded, window, 0, 0, oh, ow))
    for k in range(1, window.kh * window.kw):
        out += tap(padded, window, k // window.kw, k % window.kw, oh, ow)
    out *= out.dtype.type(1.0 / (window.kh * window.kw))
    return out


def avg_pool_backward(grad_out, window, oh, ow, out_padded):
    """Each output gradient, divided by kh*kw, onto every element of its window."""
    out_padded.fill(0)
    share = grad_out * grad_out.dtype.type(1.0 / (window.kh * window.kw))
    for k in range(window.kh * window.kw):
        view = tap(out_padded, window, k // window.kw, k % window.kw, oh, ow)
        view += share
    return out_padded
