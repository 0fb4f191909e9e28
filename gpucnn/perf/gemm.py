"""How the fused GEMM launches are written down, for the eager step and the graph step alike (both launch the
launchers of gpucnn/ops/cuda/fused.py, and take their tile and split-K choices from it, with the modelled GPU's
SM count).

    tiled_gemm     rec.gemm on ``blocks`` of tile ``tile`` (fused.GEMM_TILES), with the tile and the 32-byte
                   sectors of one warp's global load (4 when aligned along the contiguous axis; the im2col
                   reads of x at column stride sx: 4 x sx)
    gemm           fused._launch_gemm: the launcher's tile (``gemm_tile``) and its grid
    split_k_gemm   fused._launch_weight_grad (and linear_forward): (tile, S) = weight_grad_plan; S = 1, the
                   single pass; else the partial pass on tiles x S blocks into an (S, M, N) buffer, then the
                   grid-stride reduce
"""
from .record import F32

__all__ = ["tiled_gemm", "gemm", "split_k_gemm", "sms", "CONV_WGRAD", "CONV_WGRAD_POOLED", "DENSE_FWD", "DENSE_WGRAD"]

#: (file, single-pass kernel, partial-sum kernel, reduce kernel) of the split-K launches
CONV_WGRAD = ("fused_conv.cu", "conv_wgrad_fused", "conv_wgrad_partial_fused", "conv_wgrad_reduce_fused")
CONV_WGRAD_POOLED = ("fused_conv.cu", "conv_wgrad_pooled_fused", "conv_wgrad_pooled_partial_fused",
                     "conv_wgrad_reduce_fused")
DENSE_FWD = ("fused_dense.cu", "dense_fwd_fused", "dense_fwd_partial_fused", "dense_fwd_reduce_fused")
DENSE_WGRAD = ("fused_dense.cu", "dense_wgrad_fused", "dense_wgrad_partial_fused", "dense_wgrad_reduce_fused")


def _fused():
    from ..ops.cuda import fused  # imports CuPy (no GPU needed), so only when a step is listed
    return fused


def sms(sm_count):
    """``sm_count``, or the launcher's default count when None."""
    return _fused().SM_COUNT if sm_count is None else sm_count


def tiled_gemm(rec, file, name, tile, blocks, m, n, k, reads, writes, sectors=4):
    rec.gemm(file, name, blocks, m, n, k, reads, writes)
    rec.launches[-1].update(tile=list(_fused().GEMM_TILES[tile]), sectors_per_request=sectors)


def gemm(rec, file, name, m, n, k, reads, writes, sm_count, sectors=4, run=1):
    fused = _fused()
    tile = fused.gemm_tile(m, n, k, sms(sm_count), run)
    tiled_gemm(rec, file, name, tile, fused.gemm_blocks(m, n, tile), m, n, k, reads, writes, sectors)


def split_k_gemm(rec, kernels, m, n, k, reads, writes, sm_count, sectors=4):
    file, single, partial, reduce = kernels
    tile, slices = _fused().weight_grad_plan(m, n, k, sms(sm_count))
    tiles = _fused().gemm_blocks(m, n, tile)
    if slices == 1:
        tiled_gemm(rec, file, single, tile, tiles, m, n, k, reads, writes, sectors)
        rec.launches[-1]["slices"] = 1
        return
    tiled_gemm(rec, file, partial, tile, tiles * slices, m, n, k, reads, F32 * slices * m * n, sectors)
    rec.launches[-1].update(shape=rec.launches[-1]["shape"] + f" / S={slices}", slices=slices)
    rec.grid_stride(file, reduce, m * n, F32 * slices * m * n, writes, 0, f"{slices} x {m} x {n} partials")
    rec.launches[-1]["slices"] = slices
