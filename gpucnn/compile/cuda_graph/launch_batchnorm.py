"""Launchers of the fused training-mode batch norm (gpucnn/kernels/fused_batchnorm.cu) for CuPy arrays.

- ``batch_norm_train_forward``: ``relu?(batch_norm(x))`` with the batch statistics, the running statistics
  updated in place; replaces ops.batchnorm.batch_norm_forward (training) [+ ops.activation.relu];
- ``batch_norm_train_backward``: (dx, dgamma, dbeta) [after ops.activation.relu_backward against y]; replaces
  ops.batchnorm.batch_norm_backward (training).
Their NumPy twins, composed from those ops, are in ``gpucnn.compile.cuda_graph.reference_batchnorm``.

Each direction is two launches of C*S blocks, block b = c*S + s owning slice s of channel c's N*H*W elements:
a reduction pass writes one row per block into a (C*S, 2) partial buffer (forward: Welford's mean and M2 of
the slice; backward: sum gz and sum gz * x_hat), then the apply pass merges a channel's S rows in ascending s
(every block alike) and normalises (or forms dx) over its slice. No atomics: bitwise repeatable. S =
``batch_norm_slices(C, N*H*W, device_sm_count())`` makes C*S at least one full wave of blocks on the GPU
(``slices=`` overrides it: the tests).

Capture-safe like launch.py: sizes checked before launch (every tensor under 2^31 elements), no read of
device memory, no synchronisation, no cuBLAS; the partial buffers come from ``cupy.empty`` (under capture,
the graph step's private pool).
"""
import cupy
import numpy

from ...ops.cuda import loader
from .launch import check_arrays, check_int32, device_sm_count

__all__ = ["batch_norm_train_forward", "batch_norm_train_backward", "batch_norm_slices", "BN_BLOCKS_PER_SM",
           "BN_MIN_SLICE", "RELU", "MASK", "INPUT_GRAD"]

# Flags: GPUCNN_FUSED_RELU, GPUCNN_FUSED_MASK (fused_common.cuh), GPUCNN_BN_INPUT_GRAD (fused_batchnorm_body.cuh).
RELU, MASK, INPUT_GRAD = 2, 4, 8
FILE = "fused_batchnorm.cu"

# The slices' target: BN_BLOCKS_PER_SM blocks of 256 threads per SM (a quarter of an H100 SM's 2048 threads:
# enough loads in flight for a memory-bound pass), as long as each slice keeps BN_MIN_SLICE elements (16 per
# thread); never fewer blocks than one full wave (one per SM) while the channel has an element per slice.
BN_BLOCKS_PER_SM = 4
BN_MIN_SLICE = 16 * loader.BLOCK

_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def batch_norm_slices(channels, count, sm_count):
    """S, the slices per channel of the reductions over ``count`` elements per channel: the fewest that give
    C*S >= ``sm_count`` blocks (one full wave), raised towards BN_BLOCKS_PER_SM blocks per SM while each slice
    keeps BN_MIN_SLICE elements; never more than ``count`` (no empty slice), at least 1."""
    channels, count, sm_count = int(channels), int(count), int(sm_count)
    if channels < 1 or count < 1:
        return 1
    wave = -(-sm_count // channels)
    target = -(-BN_BLOCKS_PER_SM * sm_count // channels)
    slices = max(wave, min(target, count // BN_MIN_SLICE))
    return max(1, min(slices, count, (2 ** 31 - 1) // (2 * channels)))


def _geometry(op, x, shapes):
    """(N, C, HW) of x ((N, C, H, W) or (N, C)); every array of ``shapes`` checked against its expected shape."""
    if x.ndim not in (2, 4):
        raise ValueError(f"{op} (fused CUDA): x must be (N, C, H, W) or (N, C), got shape {tuple(x.shape)}")
    n, c = int(x.shape[0]), int(x.shape[1])
    hw = int(numpy.prod(x.shape[2:], dtype=numpy.int64)) if x.ndim == 4 else 1
    for name, (a, expected) in shapes.items():
        if tuple(a.shape) != tuple(expected):
            raise ValueError(f"{op} (fused CUDA): {name} has shape {tuple(a.shape)}, expected {tuple(expected)}")
    return n, c, hw


def _slices(op, slices, c, count):
    if slices is None:
        return batch_norm_slices(c, count, device_sm_count())
    if int(slices) != slices or slices < 1:
        raise ValueError(f"{op} (fused CUDA): slices must be a positive integer, got {slices!r}")
    check_int32(op, partial=2 * c * int(slices))
    return int(slices)


@loader.on_device_of_first_argument
def batch_norm_train_forward(x, gamma, beta, running_mean, running_var, momentum, eps, relu=False, slices=None):
    """(y, mean, inv_std) of training-mode batch norm over (N, H, W) with PyTorch's semantics: the batch mean and
    biased variance normalise, ``running_mean`` and ``running_var`` are updated in place with ``momentum`` and the
    unbiased variance; y = gamma * (x - mean) * inv_std + beta, then max(y, 0) when ``relu``. mean and inv_std
    (C,) are for ``batch_norm_train_backward``."""
    op = "batch_norm_train_forward"
    dtype = check_arrays(op, {"x": x, "gamma": gamma, "beta": beta, "running_mean": running_mean,
                        "running_var": running_var})
    c = int(x.shape[1]) if x.ndim >= 2 else 0
    n, c, hw = _geometry(op, x, {name: (a, (c,)) for name, a in (("gamma", gamma), ("beta", beta),
                                                                  ("running_mean", running_mean),
                                                                  ("running_var", running_var))})
    count = n * hw
    if count < 2:
        raise ValueError(f"{op} (fused CUDA): training needs more than 1 value per channel, got x of shape "
                         f"{tuple(x.shape)}")
    for name, a in (("running_mean", running_mean), ("running_var", running_var)):
        if not a.flags.c_contiguous:
            raise ValueError(f"{op} (fused CUDA): {name} must be contiguous (it is updated in place)")
    slices = _slices(op, slices, c, count)
    x = cupy.ascontiguousarray(x)
    y = cupy.empty(x.shape, dtype=dtype)
    mean = cupy.empty((c,), dtype=dtype)
    inv_std = cupy.empty((c,), dtype=dtype)
    if c:
        partial = cupy.empty((c * slices, 2), dtype=dtype)
        loader.launch(FILE, "bn_stats_partial_fused", dtype, (x, partial, n, c, hw, slices), grid=c * slices)
        loader.launch(FILE, "bn_forward_apply_fused", dtype,
                      (x, partial, cupy.ascontiguousarray(gamma), cupy.ascontiguousarray(beta), y, mean, inv_std,
                       running_mean, running_var, momentum, eps, n, c, hw, slices, RELU if relu else 0),
                      grid=c * slices)
    return y, mean, inv_std


@loader.on_device_of_first_argument
def batch_norm_train_backward(grad_y, x, mean, inv_std, gamma, y=None, need_input_grad=True, slices=None):
    """(grad_x or None, grad_gamma, grad_beta) of training-mode batch norm, x_hat = (x - mean) * inv_std recomputed
    (mean, inv_std: the forward's); with ``y`` (the forward's output, relu=True) grad_y is first multiplied by
    (y > 0). grad_x is None without ``need_input_grad``."""
    op = "batch_norm_train_backward"
    arrays = {"grad_y": grad_y, "x": x, "mean": mean, "inv_std": inv_std, "gamma": gamma}
    if y is not None:
        arrays["y"] = y
    dtype = check_arrays(op, arrays)
    c = int(x.shape[1]) if x.ndim >= 2 else 0
    shapes = {name: (arrays[name], (c,)) for name in ("mean", "inv_std", "gamma")}
    shapes.update({name: (arrays[name], x.shape) for name in ("grad_y", "y") if name in arrays})
    n, c, hw = _geometry(op, x, shapes)
    count = n * hw
    slices = _slices(op, slices, c, max(count, 1))
    grad_y, x = cupy.ascontiguousarray(grad_y), cupy.ascontiguousarray(x)
    y = grad_y if y is None else cupy.ascontiguousarray(y)
    mean, inv_std = cupy.ascontiguousarray(mean), cupy.ascontiguousarray(inv_std)
    grad_gamma = cupy.empty((c,), dtype=dtype)
    grad_beta = cupy.empty((c,), dtype=dtype)
    grad_x = cupy.empty(x.shape, dtype=dtype) if need_input_grad else None
    if c:
        mask = MASK if arrays.get("y") is not None else 0
        partial = cupy.empty((c * slices, 2), dtype=dtype)
        loader.launch(FILE, "bn_grad_partial_fused", dtype,
                      (grad_y, y, x, mean, inv_std, partial, n, c, hw, slices, mask), grid=c * slices)
        loader.launch(FILE, "bn_backward_apply_fused", dtype,
                      (grad_y, y, x, mean, inv_std, cupy.ascontiguousarray(gamma), partial,
                       grad_gamma if grad_x is None else grad_x, grad_gamma, grad_beta, n, c, hw, slices,
                       mask | (INPUT_GRAD if need_input_grad else 0)), grid=c * slices)
    return grad_x, grad_gamma, grad_beta
