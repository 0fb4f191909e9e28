"""The launches of one BatchNorm2D stage of the captured step (gpucnn/compile/cuda_graph/launch_batchnorm.py).

Each direction is two launches of C*S blocks of loader.BLOCK threads, S = ``batch_norm_slices(C, N*H*W, SMs)``
(the launcher's own choice, with the modelled GPU's SM count), recorded with ``slices`` = S:

    forward   bn_stats_partial_fused   reads x, writes the (C*S, 2) partials
              bn_forward_apply_fused   reads x, the partials, gamma, beta, the running statistics;
                                       writes y, mean, inv_std, the running statistics
    backward  bn_grad_partial_fused    reads grad_y, x, [y: the ReLU mask], mean, inv_std; writes the partials
              bn_backward_apply_fused  reads the partials, gamma, inv_std [and for grad_x: mean, grad_y, x, [y]];
                                       writes grad_gamma, grad_beta [, grad_x]

FLOPs are the per-element arithmetic of the kernels' loops (fused_batchnorm_body.cuh), per element of x:
Welford's update 6 (d = x - mean; mean += d / n; M2 += d * (x - mean)), the normalisation 4
((x - mean) * inv_std * gamma + beta), the backward sums 5 (x_hat 2, sum gz 1, sum gz * x_hat 2) and grad_x 6
(x_hat 2, gz - mean_gz 1, - x_hat * mean_gzx 2, * scale 1), plus 1 for the ReLU mask's multiply where there is
one (the forward's ReLU is a comparison: not counted); the block trees and the merges of S partials per
channel (C*S*(255 + S) merges) are left out. Bytes are the compulsory DRAM traffic (record.py). Every figure
is an estimate (gpucnn/perf/roofline.py).
"""
import math

import numpy

from ..ops.cuda import loader

__all__ = ["record_batchnorm_forward", "record_batchnorm_backward", "batchnorm_slices", "FILE",
           "STATS_FLOPS", "APPLY_FLOPS", "GRAD_SUMS_FLOPS", "GRAD_X_FLOPS", "MASK_FLOPS"]

FILE = "fused_batchnorm.cu"
STATS_FLOPS, APPLY_FLOPS, GRAD_SUMS_FLOPS, GRAD_X_FLOPS, MASK_FLOPS = 6, 4, 5, 6, 1


def _launchers():
    from ..compile.cuda_graph import launch, launch_batchnorm  # import CuPy (no GPU needed): only when recording
    return launch, launch_batchnorm


def _geometry(shape):
    n, c = int(shape[0]), int(shape[1])
    return n, c, math.prod(int(s) for s in shape[2:])


def batchnorm_slices(shape, sm_count=None):
    """S of the launcher for x of ``shape`` ((N, C, H, W) or (N, C)) on ``sm_count`` SMs (None: launch.SM_COUNT)."""
    launch, launch_batchnorm = _launchers()
    n, c, hw = _geometry(shape)
    return int(launch_batchnorm.batch_norm_slices(c, n * hw, launch.SM_COUNT if sm_count is None else sm_count))


def _record(rec, kernel, dtype, blocks, reads, writes, flops, shape, slices):
    rec.ours(FILE, kernel, blocks, reads, writes, flops, shape)
    rec.launches[-1].update(expression=loader.name_expression(kernel, dtype), slices=slices)


def record_batchnorm_forward(rec, name, shape, dtype=numpy.float32, relu=False, sm_count=None):
    """Append the two forward launches of a BatchNorm2D stage (x of ``shape``, training mode, ReLU after it when
    ``relu``) to Recorder ``rec``, under layer ``name`` (None: rec.layer as it is)."""
    if name is not None:
        rec.layer = name
    n, c, hw = _geometry(shape)
    size, item, slices = n * c * hw, numpy.dtype(dtype).itemsize, batchnorm_slices(shape, sm_count)
    partial = 2 * c * slices
    label = f"{n} x {c} x {hw} / S={slices}"
    _record(rec, "bn_stats_partial_fused", dtype, c * slices, item * size, item * partial, STATS_FLOPS * size,
            label, slices)
    _record(rec, "bn_forward_apply_fused", dtype, c * slices, item * (size + partial + 4 * c), item * (size + 4 * c),
            APPLY_FLOPS * size, label + (" + ReLU" if relu else ""), slices)


def record_batchnorm_backward(rec, name, shape, dtype=numpy.float32, relu=False, need_input_grad=True,
                              sm_count=None):
    """Append the two backward launches of a BatchNorm2D stage (grad_y times (y > 0) first when ``relu``; grad_x
    only when ``need_input_grad``) to Recorder ``rec``, under layer ``name`` (None: rec.layer as it is)."""
    if name is not None:
        rec.layer = name
    n, c, hw = _geometry(shape)
    size, item, slices = n * c * hw, numpy.dtype(dtype).itemsize, batchnorm_slices(shape, sm_count)
    partial, mask = 2 * c * slices, 1 if relu else 0
    label = f"{n} x {c} x {hw} / S={slices}" + (" (ReLU mask)" if relu else "")
    _record(rec, "bn_grad_partial_fused", dtype, c * slices, item * ((2 + mask) * size + 2 * c), item * partial,
            (GRAD_SUMS_FLOPS + MASK_FLOPS * mask) * size, label, slices)
    if need_input_grad:
        reads, writes = item * ((2 + mask) * size + partial + 3 * c), item * (size + 2 * c)
        flops = (GRAD_X_FLOPS + MASK_FLOPS * mask) * size
    else:
        reads, writes, flops = item * (partial + 2 * c), item * 2 * c, 0
    _record(rec, "bn_backward_apply_fused", dtype, c * slices, reads, writes, flops,
            label + ("" if need_input_grad else " (no grad_x)"), slices)
