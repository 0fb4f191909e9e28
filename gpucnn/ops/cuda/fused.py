"""Launchers of the fused kernels (gpucnn/kernels/fused_*.cu) for CuPy arrays: the ops of the graph-captured step,
and the eager CUDA Conv2D and Dense where their geometry allows (gpucnn/ops/cuda/conv.py, linear.py).

``gpucnn.compile.cuda_graph.launch`` is this module under its old name (the same object). Each launcher
replaces a chain of readable ops (named per function; their NumPy twins, composed from those ops, are in
``gpucnn.compile.cuda_graph.reference`` and take the same arguments):

- ``conv2d_forward``: ``relu(conv2d(x, w) + b)`` as one implicit GEMM (no im2col matrix);
- ``conv2d_data_grad``: conv2d's dx, times ``(mask > 0)`` when a mask is given;
- ``conv2d_weight_grad``: conv2d's dW and db in one GEMM (split-K into ``split_k_slices`` k-slices when the
  output tiles alone leave SMs idle: a partial-sum pass and a fixed-order reduce pass, see below);
- ``linear_forward`` / ``linear_data_grad`` / ``linear_weight_grad``: the same for Dense, the
  ReLU after the layer folded into the backward pass when ``y`` is given (the forward split-K too, its
  reduce pass adding the bias and applying the ReLU);
- ``max_pool2d_forward`` (uint8 argmax; with ``mask`` the ReLU's mask recorded in it, code 255) /
  ``max_pool2d_backward`` (reads the gradient and the argmax only);
- ``conv2d_pool_forward``: ``max_pool2d_forward(relu(conv2d(x, w) + b))`` in one launch, the pool in the GEMM's
  epilogue (windows that do not overlap: ``pool_fuses``); ``conv2d_weight_grad_pooled``: dW and db from the pool's
  gradient and argmax, the pool's backward inside the GEMM's loads (``pool_covers``).

Tiles and split-K slices are planned in ``gpucnn.ops.cuda.gemm_plan`` (re-exported here).

Nothing here reads device memory back, calls cuBLAS or synchronises: every function can be
captured into a CUDA graph. Sizes are checked before launch, including that every tensor
has fewer than 2^31 elements (the kernels index with 32-bit ints).

Split-K of the weight gradients (gpucnn/kernels/fused_splitk.cuh): their K (N*oh*ow, or the batch) is long
and their output small (conv1 of fashion_cnn: 32 x 10 outputs, one tile, over 200704 k at batch 256). With
(tile, S) = ``weight_grad_plan(M, N, K, device_sm_count())`` and S > 1, pass 1 runs tiles * S blocks, each summing its
k-slice into an (S, M, N) partial buffer of the gradient's dtype (``cupy.empty``: under capture the graph
step's private pool serves it), and pass 2 adds the S partials per output in ascending s and stores dW and
db. No atomics: bitwise repeatable. S = 1 runs the single-pass kernel as before. ``slices=`` on the
launchers overrides the choice (the tests); the NumPy twins take the same ``slices``.
"""
import cupy
import numpy

from . import loader
from .gemm_plan import (GEMM_TILES, GEMM_TK, INT32_LIMIT as _INT32_LIMIT, POOL_RUN, SM_COUNT, SPLIT_K_MIN_K,
                        SPLIT_K_SEARCH, STAGE_SLOTS, STEP_SLOTS, gemm_blocks, gemm_tile, pool_covers, pool_fuses,
                        split_k_slices, tile_share, weight_grad_plan)

__all__ = ["conv2d_forward", "conv2d_data_grad", "conv2d_weight_grad", "conv2d_pool_forward",
           "conv2d_weight_grad_pooled", "linear_forward", "linear_data_grad", "linear_weight_grad",
           "max_pool2d_forward", "max_pool2d_backward", "check_int32", "check_arrays", "device_sm_count",
           # the launch plan (gemm_plan), re-exported
           "GEMM_TILES", "GEMM_TK", "SM_COUNT", "SPLIT_K_MIN_K", "SPLIT_K_SEARCH", "STAGE_SLOTS", "STEP_SLOTS",
           "POOL_RUN", "gemm_blocks", "gemm_tile", "split_k_slices", "tile_share", "weight_grad_plan", "pool_fuses",
           "pool_covers"]

BIAS, RELU, MASK = 1, 2, 4

_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def check_int32(op, **sizes):
    """Raise ValueError unless every named element count fits a 32-bit index."""
    for name, size in sizes.items():
        if int(size) > _INT32_LIMIT:
            raise ValueError(f"{op} (fused CUDA): {name} has {int(size)} elements, more than the 32-bit indices "
                             f"of the fused kernels allow ({_INT32_LIMIT}); use the eager path")


_SM_COUNTS = {}


def device_sm_count():
    """The current device's SM count, ``cupy.cuda.Device().attributes['MultiProcessorCount']``, asked once per
    device at its first fused GEMM launch (never at import); ``SM_COUNT`` where no device answers."""
    try:
        device = int(cupy.cuda.runtime.getDevice())
        count = _SM_COUNTS.get(device)
        if count is None:
            count = _SM_COUNTS[device] = int(cupy.cuda.Device(device).attributes["MultiProcessorCount"])
        return count
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError):  # a stand-in CuPy, or no device
        return SM_COUNT


def _launch_gemm(file, name, dtype, args, mnk, run=1):
    """One single-pass fused GEMM launch of M x N x K = ``mnk``: its tile (``gemm_tile`` on the device's SMs, RN a
    multiple of ``run``) appended as the kernel's last argument, the grid sized for it."""
    tile = gemm_tile(*mnk, device_sm_count(), run)
    loader.launch(file, name, dtype, args + (tile,), grid=gemm_blocks(mnk[0], mnk[1], tile))


def _slices(op, slices):
    if int(slices) != slices or slices < 1:
        raise ValueError(f"{op} (fused CUDA): slices must be a positive integer, got {slices!r}")
    return int(slices)


def _launch_weight_grad(op, file, names, dtype, inputs, sizes, grad_w, grad_b, mnk, slices):
    """dW (and db) by ``names`` = (single-pass, partial, reduce) kernels of ``file``: args ``inputs`` (the
    kernel's input arrays), the output(s), then ``sizes`` (its int arguments); M x N x K = ``mnk``."""
    m, n, k = mnk
    tile, chosen = weight_grad_plan(m, n, k, device_sm_count())
    slices = chosen if slices is None else _slices(op, slices)
    grad_b = grad_w if grad_b is None else grad_b
    if slices == 1:
        loader.launch(file, names[0], dtype, inputs + (grad_w, grad_b) + sizes + (tile,),
                      grid=gemm_blocks(m, n, tile))
        return
    check_int32(op, partial=slices * m * n)
    partial = cupy.empty((slices, m, n), dtype=dtype)
    loader.launch(file, names[1], dtype, inputs + (partial,) + sizes + (slices, tile),
                  grid=gemm_blocks(m, n, tile) * slices)
    loader.launch(file, names[2], dtype, (partial, grad_w, grad_b, slices, n, grad_w.size // m, m * n))


def check_arrays(op, arrays, ndims=None):
    """The one float dtype of ``arrays`` ({name: CuPy array}); TypeError / ValueError naming the array that is not
    a CuPy array, of another dtype, of another rank than ``ndims`` (when given), or past 32-bit indices."""
    dtypes = set()
    for i, (name, a) in enumerate(arrays.items()):
        if not isinstance(a, cupy.ndarray):
            raise TypeError(f"{op} (fused CUDA): {name} must be a CuPy array, got {type(a).__name__}")
        ndim = None if ndims is None else ndims[i]
        if ndim is not None and a.ndim != ndim:
            raise ValueError(f"{op} (fused CUDA): {name} must be {ndim}-D, got shape {tuple(a.shape)}")
        dtypes.add(numpy.dtype(a.dtype))
    if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOATS:
        got = ", ".join(f"{name} {a.dtype}" for name, a in arrays.items())
        raise TypeError(f"{op} (fused CUDA): expected float32 or float64 arrays of one dtype, got {got}")
    check_int32(op, **{name: a.size for name, a in arrays.items()})
    return next(iter(dtypes))


def _conv_geometry(x_shape, out_channels, window):
    n, c, h, w = (int(s) for s in x_shape)
    oh, ow = window.output_size(h, w)
    return (n, c, h, w, int(out_channels), window.kh, window.kw, window.sy, window.sx, window.pt, window.pl,
            oh, ow)


def _weight_grad_outs(op, shape, dtype, need_bias, grad_weight_out, grad_bias_out):
    """(dW, db or None): the given output arrays, checked, or new ones."""
    outs = []
    for name, out, out_shape, wanted in (("grad_weight_out", grad_weight_out, shape, True),
                                         ("grad_bias_out", grad_bias_out, shape[:1], need_bias)):
        if not wanted:
            outs.append(None)
        elif out is None:
            outs.append(cupy.empty(out_shape, dtype=dtype))
        elif (not isinstance(out, cupy.ndarray) or tuple(out.shape) != tuple(out_shape) or out.dtype != dtype
              or not out.flags.c_contiguous):
            raise ValueError(f"{op} (fused CUDA): {name} must be a C-contiguous {dtype} CuPy array of shape "
                             f"{tuple(out_shape)}")
        else:
            outs.append(out)
    return tuple(outs)


def _check_shape(op, name, array, expected):
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{op} (fused CUDA): {name} has shape {tuple(array.shape)}, expected {tuple(expected)}")


@loader.on_device_of_first_argument
def conv2d_forward(x, weight, bias, window, relu=False):
    """``relu(conv2d(x, weight) + bias)`` (ReLU when ``relu``); replaces ops.conv.conv2d_forward + activation.relu."""
    dtype = check_arrays("conv2d_forward", {"x": x, "weight": weight}, (4, 4))
    geometry = _conv_geometry(x.shape, weight.shape[0], window)
    n, c, _, _, o, kh, kw, _, _, _, _, oh, ow = geometry
    _check_shape("conv2d_forward", "weight", weight, (o, c, kh, kw))
    if bias is not None:
        _check_shape("conv2d_forward", "bias", bias, (o,))
    y = cupy.empty((n, o, oh, ow), dtype=dtype)
    check_int32("conv2d_forward", y=y.size)
    if y.size:
        flags = (BIAS if bias is not None else 0) | (RELU if relu else 0)
        _launch_gemm("fused_conv.cu", "conv_fwd_fused", dtype,
                     (cupy.ascontiguousarray(x), cupy.ascontiguousarray(weight),
                      weight if bias is None else cupy.ascontiguousarray(bias), y) + geometry + (flags,),
                     (o, n * oh * ow, c * kh * kw))
    return y


@loader.on_device_of_first_argument
def conv2d_pool_forward(x, weight, bias, window, pool_window, relu=False, mask=False):
    """(y, argmax uint8) = max_pool2d_forward(relu(conv2d(x, weight) + bias), pool_window, mask) in one launch: the
    convolution's output is pooled in its epilogue and never written. Replaces ops.conv.conv2d_forward +
    activation.relu + ops.pool.max_pool2d_forward for a pool that ``pool_fuses``."""
    dtype = check_arrays("conv2d_pool_forward", {"x": x, "weight": weight}, (4, 4))
    if not pool_fuses(pool_window):
        raise ValueError(f"conv2d_pool_forward (fused CUDA): the pool {pool_window!r} is not one the epilogue takes "
                         f"(non-overlapping windows of 1, 2 or 4 elements, no padding)")
    geometry = _conv_geometry(x.shape, weight.shape[0], window)
    n, c, _, _, o, kh, kw, _, _, _, _, oh, ow = geometry
    _check_shape("conv2d_pool_forward", "weight", weight, (o, c, kh, kw))
    if bias is not None:
        _check_shape("conv2d_pool_forward", "bias", bias, (o,))
    ph, pw = pool_window.kh, pool_window.kw
    y = cupy.empty((n, o, oh // ph, ow // pw), dtype=dtype)
    argmax = cupy.empty(y.shape, dtype=numpy.uint8)
    check_int32("conv2d_pool_forward", y=y.size * ph * pw)
    if y.size:
        flags = (BIAS if bias is not None else 0) | (RELU if relu else 0) | (MASK if mask else 0)
        _launch_gemm("fused_conv.cu", "conv_fwd_pool_fused", dtype,
                     (cupy.ascontiguousarray(x), cupy.ascontiguousarray(weight),
                      weight if bias is None else cupy.ascontiguousarray(bias), y, argmax) + geometry
                     + (ph, pw, flags), (o, y.size // o * ph * pw, c * kh * kw), run=POOL_RUN)
    return y, argmax


@loader.on_device_of_first_argument
def conv2d_data_grad(grad_y, weight, x_shape, window, mask=None):
    """conv2d's dx (times ``mask > 0`` when given: the ReLU below); replaces the dx of ops.conv.conv2d_backward."""
    dtype = check_arrays("conv2d_data_grad", {"grad_y": grad_y, "weight": weight}, (4, 4))
    geometry = _conv_geometry(x_shape, weight.shape[0], window)
    n, c, h, w, o, kh, kw, _, _, _, _, oh, ow = geometry
    _check_shape("conv2d_data_grad", "grad_y", grad_y, (n, o, oh, ow))
    if mask is not None:
        _check_shape("conv2d_data_grad", "mask", mask, (n, c, h, w))
    grad_x = cupy.empty((n, c, h, w), dtype=dtype)
    check_int32("conv2d_data_grad", grad_x=grad_x.size)
    if grad_x.size:
        _launch_gemm("fused_conv.cu", "conv_dgrad_fused", dtype,
                     (cupy.ascontiguousarray(grad_y), cupy.ascontiguousarray(weight),
                      grad_y if mask is None else cupy.ascontiguousarray(mask), grad_x) + geometry
                     + (MASK if mask is not None else 0,), (c, n * h * w, o * kh * kw))
    return grad_x


@loader.on_device_of_first_argument
def conv2d_weight_grad(grad_y, x, weight_shape, window, need_bias=True, slices=None, grad_weight_out=None,
                       grad_bias_out=None):
    """(dW, db or None) of conv2d in one GEMM, split-K into ``slices`` (default: ``split_k_slices``);
    replaces the dW, db of ops.conv.conv2d_backward. ``grad_weight_out`` / ``grad_bias_out``: C-contiguous
    arrays of dW's / db's shape and dtype written instead of new ones (the eager path's Parameter.grad_out)."""
    dtype = check_arrays("conv2d_weight_grad", {"grad_y": grad_y, "x": x}, (4, 4))
    geometry = _conv_geometry(x.shape, weight_shape[0], window)
    n, c, _, _, o, kh, kw, _, _, _, _, oh, ow = geometry
    _check_shape("conv2d_weight_grad", "grad_y", grad_y, (n, o, oh, ow))
    if tuple(weight_shape[1:]) != (c, kh, kw):
        raise ValueError(f"conv2d_weight_grad (fused CUDA): weight shape {tuple(weight_shape)} does not fit x "
                         f"{tuple(x.shape)} and the window {kh}x{kw}")
    grad_w, grad_b = _weight_grad_outs("conv2d_weight_grad", (o, c, kh, kw), dtype, need_bias, grad_weight_out,
                                       grad_bias_out)
    check_int32("conv2d_weight_grad", grad_w=grad_w.size)
    if grad_w.size:
        _launch_weight_grad("conv2d_weight_grad", "fused_conv.cu",
                            ("conv_wgrad_fused", "conv_wgrad_partial_fused", "conv_wgrad_reduce_fused"), dtype,
                            (cupy.ascontiguousarray(grad_y), cupy.ascontiguousarray(x)), geometry
                            + (BIAS if need_bias else 0,), grad_w, grad_b,
                            (o, c * kh * kw + (1 if need_bias else 0), n * oh * ow), slices)
    return grad_w, grad_b


@loader.on_device_of_first_argument
def conv2d_weight_grad_pooled(grad_pool, argmax, x, weight_shape, window, pool_window, need_bias=True, slices=None,
                              grad_weight_out=None, grad_bias_out=None):
    """conv2d_weight_grad(max_pool2d_backward(grad_pool, argmax, ...), x, ...) in one GEMM whose loads unpool: no
    tensor of the convolution's output size is written. ``argmax``: conv2d_pool_forward's (the ReLU's mask in it);
    the pool must ``pool_fuses`` and cover the convolution's output exactly (``pool_covers``)."""
    dtype = check_arrays("conv2d_weight_grad_pooled", {"grad_pool": grad_pool, "x": x}, (4, 4))
    geometry = _conv_geometry(x.shape, weight_shape[0], window)
    n, c, _, _, o, kh, kw, _, _, _, _, oh, ow = geometry
    if not pool_covers(pool_window, oh, ow):
        raise ValueError(f"conv2d_weight_grad_pooled (fused CUDA): the pool {pool_window!r} does not tile the "
                         f"{oh}x{ow} output in non-overlapping windows of 1, 2 or 4 elements")
    ph, pw = pool_window.kh, pool_window.kw
    _check_shape("conv2d_weight_grad_pooled", "grad_pool", grad_pool, (n, o, oh // ph, ow // pw))
    _check_shape("conv2d_weight_grad_pooled", "argmax", argmax, grad_pool.shape)
    if numpy.dtype(argmax.dtype) != numpy.dtype(numpy.uint8):
        raise TypeError(f"conv2d_weight_grad_pooled (fused CUDA): argmax must be uint8, got {argmax.dtype}")
    if tuple(weight_shape[1:]) != (c, kh, kw):
        raise ValueError(f"conv2d_weight_grad_pooled (fused CUDA): weight shape {tuple(weight_shape)} does not fit "
                         f"x {tuple(x.shape)} and the window {kh}x{kw}")
    grad_w, grad_b = _weight_grad_outs("conv2d_weight_grad_pooled", (o, c, kh, kw), dtype, need_bias,
                                       grad_weight_out, grad_bias_out)
    check_int32("conv2d_weight_grad_pooled", grad_w=grad_w.size, conv_out=n * o * oh * ow)
    if grad_w.size:
        _launch_weight_grad("conv2d_weight_grad_pooled", "fused_conv.cu",
                            ("conv_wgrad_pooled_fused", "conv_wgrad_pooled_partial_fused", "conv_wgrad_reduce_fused"),
                            dtype, (cupy.ascontiguousarray(grad_pool), cupy.ascontiguousarray(argmax),
                                    cupy.ascontiguousarray(x)), geometry + (ph, pw, BIAS if need_bias else 0),
                            grad_w, grad_b, (o, c * kh * kw + (1 if need_bias else 0), n * oh * ow), slices)
    return grad_w, grad_b


@loader.on_device_of_first_argument
def linear_forward(x, weight, bias, relu=False, slices=None):
    """``relu(x @ weight.T + bias)``, split-K into ``slices`` (default: ``weight_grad_plan``'s, more than 1 where
    the output tiles leave SMs idle, as dense1 of fashion_cnn: 256 x 128 outputs over K = 3136); replaces
    ops.linear.linear_forward (+ ops.activation.relu)."""
    dtype = check_arrays("linear_forward", {"x": x, "weight": weight}, (2, 2))
    n, i = (int(s) for s in x.shape)
    o = int(weight.shape[0])
    _check_shape("linear_forward", "weight", weight, (o, i))
    if bias is not None:
        _check_shape("linear_forward", "bias", bias, (o,))
    y = cupy.empty((n, o), dtype=dtype)
    check_int32("linear_forward", y=y.size)
    if y.size:
        flags = (BIAS if bias is not None else 0) | (RELU if relu else 0)
        x, weight = cupy.ascontiguousarray(x), cupy.ascontiguousarray(weight)
        bias = weight if bias is None else cupy.ascontiguousarray(bias)
        tile, chosen = weight_grad_plan(n, o, i, device_sm_count())
        slices = chosen if slices is None else _slices("linear_forward", slices)
        if slices == 1:
            loader.launch("fused_dense.cu", "dense_fwd_fused", dtype, (x, weight, bias, y, n, i, o, flags, tile),
                          grid=gemm_blocks(n, o, tile))
        else:  # split-K: too few output tiles for the SMs; the reduce adds the bias and applies the ReLU
            check_int32("linear_forward", partial=slices * n * o)
            partial = cupy.empty((slices, n, o), dtype=dtype)
            loader.launch("fused_dense.cu", "dense_fwd_partial_fused", dtype,
                          (x, weight, partial, n, i, o, slices, tile), grid=gemm_blocks(n, o, tile) * slices)
            loader.launch("fused_dense.cu", "dense_fwd_reduce_fused", dtype,
                          (partial, bias, y, slices, o, flags, n * o))
    return y


@loader.on_device_of_first_argument
def linear_data_grad(grad_y, weight, y=None):
    """``(grad_y * (y > 0)) @ weight`` (no mask without ``y``); replaces ops.linear's dx (+ relu_backward)."""
    dtype = check_arrays("linear_data_grad", {"grad_y": grad_y, "weight": weight}, (2, 2))
    n, o = (int(s) for s in grad_y.shape)
    i = int(weight.shape[1])
    _check_shape("linear_data_grad", "weight", weight, (o, i))
    if y is not None:
        _check_shape("linear_data_grad", "y", y, (n, o))
    grad_x = cupy.empty((n, i), dtype=dtype)
    check_int32("linear_data_grad", grad_x=grad_x.size)
    if grad_x.size:
        _launch_gemm("fused_dense.cu", "dense_dgrad_fused", dtype,
                     (cupy.ascontiguousarray(grad_y), grad_y if y is None else cupy.ascontiguousarray(y),
                      cupy.ascontiguousarray(weight), grad_x, n, i, o, MASK if y is not None else 0), (n, i, o))
    return grad_x


@loader.on_device_of_first_argument
def linear_weight_grad(grad_y, x, y=None, need_bias=True, slices=None, grad_weight_out=None, grad_bias_out=None):
    """(dW, db or None) with gz = grad_y * (y > 0) (no mask without ``y``), split-K into ``slices`` (default:
    ``split_k_slices``); replaces ops.linear's dW, db. ``grad_weight_out`` / ``grad_bias_out``: as for
    ``conv2d_weight_grad``."""
    dtype = check_arrays("linear_weight_grad", {"grad_y": grad_y, "x": x}, (2, 2))
    n, o = (int(s) for s in grad_y.shape)
    i = int(x.shape[1])
    _check_shape("linear_weight_grad", "x", x, (n, i))
    if y is not None:
        _check_shape("linear_weight_grad", "y", y, (n, o))
    grad_w, grad_b = _weight_grad_outs("linear_weight_grad", (o, i), dtype, need_bias, grad_weight_out,
                                       grad_bias_out)
    check_int32("linear_weight_grad", grad_w=grad_w.size)
    if grad_w.size:
        flags = (BIAS if need_bias else 0) | (MASK if y is not None else 0)
        _launch_weight_grad("linear_weight_grad", "fused_dense.cu",
                            ("dense_wgrad_fused", "dense_wgrad_partial_fused", "dense_wgrad_reduce_fused"), dtype,
                            (cupy.ascontiguousarray(grad_y), grad_y if y is None else cupy.ascontiguousarray(y),
                             cupy.ascontiguousarray(x)), (n, i, o, flags), grad_w, grad_b,
                            (o, i + (1 if need_bias else 0), n), slices)
    return grad_w, grad_b


def _pool_args(x_shape, window):
    h, w = int(x_shape[2]), int(x_shape[3])
    oh, ow = window.output_size(h, w)
    if window.kh * window.kw > 255:
        raise ValueError(f"max_pool2d (fused CUDA): a {window.kh}x{window.kw} window does not fit a uint8 argmax")
    return (h, w, window.kh, window.kw, window.sy, window.sx, window.pt, window.pl, oh, ow)


@loader.on_device_of_first_argument
def max_pool2d_forward(x, window, mask=False):
    """(y, uint8 argmax) by ops.pool's rule; ``mask``: argmax 255, "no gradient", where not y > 0 (<= 0, NaN)."""
    dtype = check_arrays("max_pool2d_forward", {"x": x}, (4,))
    geometry = _pool_args(x.shape, window)
    n, c = int(x.shape[0]), int(x.shape[1])
    y = cupy.empty((n, c) + geometry[-2:], dtype=dtype)
    argmax = cupy.empty(y.shape, dtype=numpy.uint8)
    if y.size:
        loader.launch("fused_pool.cu", "max_pool_u8_fwd", dtype,
                      (cupy.ascontiguousarray(x), y, argmax) + geometry + (MASK if mask else 0, y.size))
    return y, argmax


@loader.on_device_of_first_argument
def max_pool2d_backward(grad_y, argmax, x_shape, window):
    """dx of max pooling, x of ``x_shape``; reads no x: argmax 255 adds nothing (masked, the ReLU's dx too; an inf
    grad_y there gives 0, not inf * 0 = NaN, as PyTorch's threshold_backward, where(x <= 0, 0, g))."""
    dtype = check_arrays("max_pool2d_backward", {"grad_y": grad_y}, (4,))
    geometry = _pool_args(x_shape, window)
    _check_shape("max_pool2d_backward", "grad_y", grad_y, tuple(x_shape[:2]) + geometry[-2:])
    _check_shape("max_pool2d_backward", "argmax", argmax, grad_y.shape)
    if numpy.dtype(argmax.dtype) != numpy.dtype(numpy.uint8):
        raise TypeError(f"max_pool2d_backward (fused CUDA): argmax must be uint8, got {argmax.dtype}")
    check_int32("max_pool2d_backward", grad_x=numpy.prod(x_shape, dtype=numpy.int64))
    grad_x = cupy.empty(tuple(x_shape), dtype=dtype)
    if grad_x.size:
        loader.launch("fused_pool.cu", "max_pool_u8_bwd", dtype,
                      (cupy.ascontiguousarray(grad_y), cupy.ascontiguousarray(argmax), grad_x, *geometry, grad_x.size))
    return grad_x
