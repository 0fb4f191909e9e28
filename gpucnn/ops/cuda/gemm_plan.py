"""The plan of a fused GEMM launch (gpucnn/kernels/fused_common.cuh): its tile and its split-K slices, for the
launchers of ``gpucnn.ops.cuda.fused`` and the performance model (gpucnn/perf). Pure arithmetic, no CuPy.

The choice: among the plans whose grid fills at least one wave (a block per SM; all plans where none does), the
least k-steps of the busiest SM (the scheduler deals ceil(blocks / SMs) blocks to it, and blocks resident on one
SM share its issue slots) x the padded tile area / the tile's FFMA share (``tile_share``).
"""
import functools

from ..geometry import Window2D

__all__ = ["GEMM_TK", "GEMM_TILES", "STAGE_SLOTS", "STEP_SLOTS", "SM_COUNT", "SPLIT_K_MIN_K", "SPLIT_K_SEARCH",
           "INT32_LIMIT", "POOL_RUN", "pool_fuses", "pool_covers", "tile_share", "gemm_blocks", "gemm_tile",
           "split_k_slices", "weight_grad_plan"]

INT32_LIMIT = 2 ** 31 - 1

# Must equal GPUCNN_GEMM_TK, GPUCNN_GEMM_TILE_TABLE and GPUCNN_FUSED_* of gpucnn/kernels/fused_common.cuh
# (tests/kernels/test_compile.py). GEMM_TK is the k-step of split-K's slices; GEMM_TILES[tile] = (TM, TN, TK,
# RM, RN): a block of 256 threads computes a TM x TN output tile, TK of k per step, each thread RM x RN outputs.
GEMM_TK = 16
GEMM_TILES = ((128, 64, 8, 8, 4), (64, 64, 16, 4, 4), (32, 64, 16, 2, 4), (32, 32, 16, 2, 2), (32, 128, 16, 2, 8),
              (64, 128, 8, 4, 8), (32, 16, 16, 2, 1))
# The issue slots of a k-step besides its FFMA and LDS, for the tile choice only (the estimate reads the SASS):
# STAGE_SLOTS per element a thread stages from global memory (predicated LDG, its address and bounds, its share
# of the shared store: about 2 for a weight, 18 for an im2col element of x in conv_fwd_fused's k-loops), and
# STEP_SLOTS per k-step (the k cursors' step, the loop, the buffer switch, the barrier: about 40). Fitted to
# the k-loops of conv_fwd_fused on sm_90 (cuobjdump -sass), within 0.03 of their FFMA share for every tile.
STAGE_SLOTS = 10
STEP_SLOTS = 40


def tile_share(tile):
    """FFMA share of one k-step of tile ``tile``, for the choice of tile: TK x RM x RN FFMA against TK x one
    shared-memory load per 16 bytes of the thread's RM values of A and of its RN values of B (LDS.128 / LDS.64,
    float32), STAGE_SLOTS for each element the thread stages (TK * (TM + TN) / 256) and STEP_SLOTS."""
    tm, tn, tk, rm, rn = GEMM_TILES[tile]
    ffma = tk * rm * rn
    staged = tk * (tm + tn) // 256
    return ffma / (ffma + tk * (-(-rm // 4) + -(-rn // 4)) + STAGE_SLOTS * staged + STEP_SLOTS)


# Split-K: the SM count assumed where no device answers (an H100 SXM's 132), and the least k a slice keeps:
# 16 k-steps of GEMM_TK, so that a slice's partial tile (TM x TN written once, read once by the reduce) costs
# at most about 1/8 of its operand loads (TK * (TM + TN) per step); shorter K stays single-pass.
SM_COUNT = 132
SPLIT_K_MIN_K = 256
# The slice counts split_k_slices tries: from the fewest that fill a wave up to this many times as many.
SPLIT_K_SEARCH = 4

def gemm_blocks(m, n, tile=1):
    """Blocks of a fused GEMM launch: one per TM x TN output tile of ``GEMM_TILES[tile]`` (at least 1)."""
    tm, tn = GEMM_TILES[tile][:2]
    return max(1, -(-m // tm) * -(-n // tn))


def _busiest_sm_steps(blocks, k_steps, sm_count):
    """k-steps the busiest SM runs: the block scheduler deals ``blocks`` out evenly, so one SM gets
    ceil(blocks / SMs) of them; blocks resident together share its issue slots (compute-bound)."""
    return _ceil(blocks, sm_count) * k_steps


def _tile_cost(m, n, k, tile, slices, sm_count):
    """What the choice minimises: the busiest SM's k-steps x the multiply-adds of one (TM x TN x TK) over the
    tile's FFMA share."""
    tm, tn, tk = GEMM_TILES[tile][:3]
    steps = _busiest_sm_steps(gemm_blocks(m, n, tile) * slices, _ceil(_ceil(k, slices), tk), sm_count)
    return steps * tm * tn * tk / tile_share(tile)


def _ceil(a, b):
    return -(-a // b)


def _filling(plans, m, n, sm_count):
    """The (tile, S) plans of at least one block per SM (one full wave), or all of them where none is."""
    full = [p for p in plans if gemm_blocks(m, n, p[0]) * p[1] >= sm_count]
    return full or plans


@functools.lru_cache(maxsize=4096)
def gemm_tile(m, n, k, sm_count=SM_COUNT, run=1):
    """The tile of a single-pass M x N x K GEMM: among the tiles that fill a wave (all, where none does), the
    least ``_tile_cost`` (ties: the lower id). ``run``: only tiles whose RN it divides (a problem that stores
    runs of that many columns at once, conv_fwd_pool_fused)."""
    tiles = [(tile, 1) for tile in range(len(GEMM_TILES)) if GEMM_TILES[tile][4] % run == 0]
    return min(_filling(tiles, m, n, sm_count), key=lambda p: (_tile_cost(m, n, k, p[0], 1, sm_count), p[0]))[0]


@functools.lru_cache(maxsize=4096)
def split_k_slices(m, n, k, sm_count=SM_COUNT, min_k=SPLIT_K_MIN_K, tile=1):
    """S, the k-slices of an M x N x K weight-gradient GEMM on tile ``tile``: 1 (the single pass) when the tiles
    alone fill a wave or k < 2 * min_k; else, among the S that make tiles * S blocks at least one full wave on
    ``sm_count`` SMs (up to SPLIT_K_SEARCH times the fewest), the one whose busiest SM runs the fewest k-steps
    (ties: the fewer slices), never more than k // min_k (every slice keeps about min_k of k or more) nor than
    32-bit indices allow for the (S, M, N) partial buffer."""
    tiles = gemm_blocks(m, n, tile)
    if tiles >= sm_count or k < 2 * min_k:
        return 1
    most = max(1, min(k // min_k, INT32_LIMIT // max(1, m * n)))
    fewest = min(-(-sm_count // tiles), most)
    steps = _ceil(k, GEMM_TK)
    return min(range(fewest, min(most, SPLIT_K_SEARCH * fewest) + 1),
               key=lambda s: (_busiest_sm_steps(tiles * s, _ceil(steps, s), sm_count), s))


@functools.lru_cache(maxsize=4096)
def weight_grad_plan(m, n, k, sm_count=SM_COUNT):
    """(tile, S) of a split-K GEMM (the weight gradients, the Dense forward): for each tile its
    ``split_k_slices``; among the pairs that fill a wave (all, where none does), the least ``_tile_cost``
    (ties: the fewer slices, then the lower id)."""
    plans = [(tile, split_k_slices(m, n, k, sm_count, tile=tile)) for tile in range(len(GEMM_TILES))]
    return min(_filling(plans, m, n, sm_count), key=lambda p: (_tile_cost(m, n, k, p[0], p[1], sm_count), p[1], p[0]))


# conv_fwd_pool_fused stores runs of this many columns (ConvForwardPool::kStoreRun, fused_conv_body.cuh)
POOL_RUN = 4


def pool_fuses(pool_window):
    """Whether conv2d_pool_forward takes ``pool_window``: non-overlapping windows (stride = window) without
    padding, of 1, 2 or 4 elements (a whole number of them in a run of POOL_RUN columns)."""
    w = pool_window
    return (isinstance(w, Window2D) and (w.kh, w.kw) == (w.sy, w.sx) and not any((w.pt, w.pl, w.pb, w.pr))
            and POOL_RUN % (w.kh * w.kw) == 0 and not w.dilated and not w.ceil_mode)


def pool_covers(pool_window, oh, ow):
    """Whether ``pool_window`` fuses (``pool_fuses``) and its windows tile an oh x ow output exactly, with no
    row or column left over (conv2d_weight_grad_pooled reads every pixel's gradient through a window)."""
    return pool_fuses(pool_window) and oh % pool_window.kh == 0 and ow % pool_window.kw == 0
