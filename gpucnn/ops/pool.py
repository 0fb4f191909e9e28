"""Max and average pooling over NCHW volumes, with PyTorch's semantics.

Max pooling pads with -inf (padding never wins) and records, for every output, which
element of its window won: the argmax. Backward sends each output gradient to that element
only; where windows overlap, the gradients add. Average pooling pads with zeros and divides
each window's sum by its divisor (``Window2D.divisors``, PyTorch's rule): kh*kw with
count_include_pad=True (PyTorch's default) except where a ceil-mode window overhangs the padded
input, the number of real input elements with count_include_pad=False; it multiplies by the
divisor's reciprocal, rounded to the dtype (as the CUDA kernel does). Backward spreads each output
gradient, times the same reciprocal, over its window.

The window (``gpucnn.ops.geometry``) may be dilated (tap (i, j) reads padded row oy*sy + i*dy),
padded unequally before and after, and in ceil mode overhang the padded input: the taps past it
read nothing (-inf for max, 0 for the sum, never counted), the padded array is made large enough.
A ``SameWindow2D`` is resolved for the input's size first.

Both loop over the kh*kw kernel offsets, each step a vectorised operation on whole
(N, C, out_h, out_w) slices; never a loop over pixels. CuPy arrays go to
``gpucnn.ops.cuda.pool``, which has the same functions.

The argmax convention (every path computes this one; only the encoding differs)
-------------------------------------------------------------------------------
- The argmax of an output is the window-local index ``k = i*kw + j`` of the winning tap
  (row i, column j of the window, counted from its top-left corner, padding included).
- Ties: the first maximum in that row-major order wins.
- NaN: a window holding NaN outputs NaN, and its gradient goes to the LAST NaN of the window
  (PyTorch's scan, ``if (v > best || isnan(v))``, replaces the running maximum on every NaN;
  tests/test_torch_parity.py::test_pool_nan_propagates holds it).
- A window whose real elements are all -inf outputs -inf and names its first real element,
  never padding, as PyTorch does (its scan starts at the first real element).
- Backward, where windows overlap, adds each input element's share in ascending k, the order
  of the loop over taps below; in one window order, so two runs give the same bits.

Its four encodings, and why each differs (cost)
-----------------------------------------------
- Here (the reference): ``k`` as uint8 when the window has at most 255 elements, else int32;
  a quarter of int32's memory for every real network's window.
- The CUDA op (``gpucnn.ops.cuda.pool``; ``gpucnn/kernels/pool_body.cuh``, ``max_pool_fwd_body``
  and ``max_pool_bwd_body``): ``k`` as int32 always, whatever the window; no dtype to pick or check
  per launch, at four times the memory of uint8. Its gather (one thread per input element) visits
  the covering windows with oy, ox descending, i.e. k ascending: the reference's order (the same bits
  on the host harness; on a GPU within the verify tolerance, float32 denormals flushing to zero).
- The fused CUDA graph (``gpucnn.compile.cuda_graph.launch``; ``gpucnn/kernels/fused_pool_body.cuh``,
  ``max_pool_u8_fwd_body`` / ``max_pool_u8_bwd_body``): ``k`` as uint8, refused above 255 elements;
  the smallest encoding, as the graph keeps every activation for a whole step. Its gather visits
  the covering windows with oy, ox descending, and its forward starts at the first real element,
  both as ``pool_body.cuh``.
- The CPU fast path (``gpucnn.compile.cpu.chwn.max_pool_taps``, used by ``stages.py``'s ConvStage and
  PoolStage): a bool mask per window position, ``masks[k] == (argmax == k)``, (kh*kw, C, oh, ow, N);
  kh*kw bytes per output instead of one, in exchange the forward builds them from the equality
  tests it makes anyway and the backward is one multiply per tap with no comparison. It adds in
  ascending k like the reference. It marks the first tap equal to the maximum; an all -inf window
  with padding is then sent to its first real element (``chwn.route_dead_windows_to_real``).

So all paths send each gradient to the same element and add in the same order; what still differs
is the encoding, for what it costs: uint8 ``k`` everywhere (int32 above 255 elements) with pool.cu
templated on the argmax type would make one (fused_pool would then be pool.cu's kernel plus the ReLU
mask).
"""
import numpy

from ..backend import get_array_module

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"]


def _pad(x, window, value):
    """x padded by the window's padding, and past it (ceil mode) to every row/column a window reaches."""
    n, c, h, w = x.shape
    hp, wp = window.covered_size(h, w)
    if (hp, wp) == (h, w):
        return x
    out = numpy.full((n, c, hp, wp), value, dtype=x.dtype)
    out[:, :, window.pt:window.pt + h, window.pl:window.pl + w] = x
    return out


def _tap(xp_, window, i, j, oh, ow):
    """The (N, C, oh, ow) slice of the padded input seen at kernel offset (i, j) by every window."""
    top, left = i * window.dy, j * window.dx
    return xp_[:, :, top:top + window.sy * (oh - 1) + 1:window.sy, left:left + window.sx * (ow - 1) + 1:window.sx]


def _unpad(grad_p, x_shape, window):
    h, w = x_shape[2:]
    if grad_p.shape[2:] == (h, w):
        return grad_p
    return numpy.ascontiguousarray(grad_p[:, :, window.pt:window.pt + h, window.pl:window.pl + w])


def _argmax_dtype(window):
    return numpy.uint8 if window.kh * window.kw <= 255 else numpy.int32


def _tiles_exactly(x_shape, window, oh, ow):
    """True when the windows cover every input element exactly once (no overlap, no gap, no padding)."""
    h, w = x_shape[2:]
    return (not window.padded and not window.dilated and (window.sy, window.sx) == (window.kh, window.kw)
            and oh * window.kh == h and ow * window.kw == w)


def _real_taps(x_shape, window, oh, ow):
    """(kh*kw, 1, 1, oh, ow) booleans: True where tap k of a window is an input element, not padding."""
    inside = _pad(numpy.ones((1, 1) + tuple(x_shape[2:]), dtype=bool), window, False)
    return numpy.stack([_tap(inside, window, k // window.kw, k % window.kw, oh, ow)
                        for k in range(window.kh * window.kw)])


def max_pool2d_forward(x, window):
    """Max over each window. Returns (y, saved); saved holds the argmax (index i*kw + j in the window).

    The first of equal maxima wins, as in PyTorch; a window holding NaN gives NaN and
    its gradient goes to the last NaN (PyTorch's rule too).
    """
    window = window.resolve(*x.shape[2:])
    if get_array_module(x) is not numpy:
        from .cuda import pool as cuda_pool
        return cuda_pool.max_pool2d_forward(x, window)
    oh, ow = window.output_size(*x.shape[2:])
    padded = _pad(x, window, -numpy.inf)
    taps = numpy.stack([_tap(padded, window, k // window.kw, k % window.kw, oh, ow)
                        for k in range(window.kh * window.kw)])
    y = taps.max(axis=0)
    # argmax = the first k whose tap equals the max; boolean arithmetic beats numpy.argmax(axis=0) here.
    argmax = numpy.zeros(y.shape, dtype=_argmax_dtype(window))
    real = _real_taps(x.shape, window, oh, ow)
    not_found = (taps[0] != y) | ~real[0]
    for k in range(1, len(taps)):
        hit = not_found & (taps[k] == y) & real[k]
        argmax += hit * argmax.dtype.type(k)
        not_found &= ~hit
    nan_windows = numpy.isnan(y)
    if nan_windows.any():
        # PyTorch's rule: a NaN always takes over, so the last NaN of the window wins.
        last_nan = len(taps) - 1 - numpy.argmax(numpy.isnan(taps[::-1]), axis=0)
        argmax[nan_windows] = last_nan[nan_windows]
    return y, (argmax, x.shape, window)


def max_pool2d_backward(grad_y, saved):
    """dL/dx of max pooling: each output gradient goes to the element its argmax names."""
    if get_array_module(grad_y) is not numpy:
        from .cuda import pool as cuda_pool
        return cuda_pool.max_pool2d_backward(grad_y, saved)
    argmax, x_shape, window = saved
    n, c, h, w = x_shape
    oh, ow = grad_y.shape[2:]
    shape_p = (n, c) + window.covered_size(h, w)
    if _tiles_exactly(x_shape, window, oh, ow):
        # Every element belongs to exactly one window: write each tap, no zero fill, no add.
        grad_p = numpy.empty(shape_p, dtype=grad_y.dtype)
        for k in range(window.kh * window.kw):
            numpy.multiply(grad_y, argmax == k, out=_tap(grad_p, window, k // window.kw, k % window.kw, oh, ow))
        return grad_p
    grad_p = numpy.zeros(shape_p, dtype=grad_y.dtype)
    for k in range(window.kh * window.kw):
        _tap(grad_p, window, k // window.kw, k % window.kw, oh, ow)[...] += grad_y * (argmax == k)
    return _unpad(grad_p, x_shape, window)


def _scales(x_shape, window, count_include_pad, dtype):
    """(oh, ow): 1 / divisor per window, rounded to ``dtype``."""
    return (1.0 / window.divisors(*x_shape[2:], count_include_pad)).astype(dtype)


def avg_pool2d_forward(x, window, count_include_pad=True):
    """Mean over each window: its real elements' sum over the window's divisor (the module docstring).
    Returns (y, saved); saved = (x_shape, window, count_include_pad)."""
    window = window.resolve(*x.shape[2:])
    if get_array_module(x) is not numpy:
        from .cuda import pool as cuda_pool
        return cuda_pool.avg_pool2d_forward(x, window, count_include_pad)
    oh, ow = window.output_size(*x.shape[2:])
    padded = _pad(x, window, 0)
    # float16 sums overflow long before their mean does (4 x 30000 > 65504): add in float32, as PyTorch does.
    acc_dtype = numpy.float32 if x.dtype == numpy.float16 else x.dtype
    y = _tap(padded, window, 0, 0, oh, ow).astype(acc_dtype)
    for k in range(1, window.kh * window.kw):
        y += _tap(padded, window, k // window.kw, k % window.kw, oh, ow)
    y *= _scales(x.shape, window, count_include_pad, acc_dtype)
    return y.astype(x.dtype, copy=False), (x.shape, window, count_include_pad)


def avg_pool2d_backward(grad_y, saved):
    """dL/dx of average pooling: each output gradient, over its window's divisor, onto every element of its window."""
    if get_array_module(grad_y) is not numpy:
        from .cuda import pool as cuda_pool
        return cuda_pool.avg_pool2d_backward(grad_y, saved)
    x_shape, window, count_include_pad = saved
    n, c, h, w = x_shape
    oh, ow = grad_y.shape[2:]
    grad_p = numpy.zeros((n, c) + window.covered_size(h, w), dtype=grad_y.dtype)
    share = grad_y * _scales(x_shape, window, count_include_pad, grad_y.dtype)
    for k in range(window.kh * window.kw):
        _tap(grad_p, window, k // window.kw, k % window.kw, oh, ow)[...] += share
    return _unpad(grad_p, x_shape, window)
