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
"""
import numpy
from numpy.lib.stride_tricks import as_strided

__all__ = ["tap", "im2col", "col2im", "max_pool_forward", "max_pool_backward", "avg_pool_forward",
           "avg_pool_backward"]


BLOCK_BYTES = 1 << 19  # a channel block's input: well inside a core's L2 cache (512 KiB to 2 MiB today)


def channel_blocks(array):
    """Slices of axis 0 (channels) of about BLOCK_BYTES of ``array`` each (at least one channel)."""
    per_channel = max(1, array[0].nbytes)
    step = max(1, BLOCK_BYTES // per_channel)
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


def max_pool_forward(padded, window, oh, ow, out, masks, seen):
    """out = max over each window of ``padded`` (C, Hp, Wp, N); masks[k] marks, for each output, whether
    tap k (k = i*kw + j) is the element that gets its gradient.

    The same rule as gpucnn.ops.pool.max_pool2d_forward: the first of equal maxima wins, and in a
    window holding NaN the output is NaN and the last NaN wins. ``seen`` is a bool scratch buffer.
    """
    for b in channel_blocks(padded):
        _max_pool_block(padded[b], window, oh, ow, out[b], masks[:, b], seen[b])
    return out


def _max_pool_block(padded, window, oh, ow, out, masks, seen):
    taps = [tap(padded, window, k // window.kw, k % window.kw, oh, ow) for k in range(window.kh * window.kw)]
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


def max_pool_backward(grad_out, masks, window, oh, ow, out_padded, tiles_exactly):
    """Each output gradient onto the element its mask names; ``out_padded`` is (C, Hp, Wp, N)."""
    for b in channel_blocks(out_padded):
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
