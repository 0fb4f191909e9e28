"""The estimated time of each launch and of a step: a roofline with the constants stated here.

For a launch of F FLOPs and B bytes (gpucnn/perf/record.py: compulsory traffic) on a GPU of gpucnn/perf/gpus.py:

    compute  = F' / blocks x busiest / (peak FP32 / SMs x share)   busiest = ceil(blocks of the grid / SMs)
    memory   = B / HBM bandwidth
    estimate = max(compute, memory) + LAUNCH_GAP_S
    bound    = 'compute' or 'memory', whichever is larger, or 'launch' where the gap exceeds both

The busiest SM runs ceil(blocks / SMs) blocks (the scheduler deals them out evenly; blocks resident on one SM
share its issue slots), each F' / blocks: for blocks <= SMs this is F' over the SMs in use, and a grid just past
a multiple of the SMs pays for the SMs that get one block more. F' = F, except for our tiled GEMMs: the FLOPs
their tile grid issues, padding included (``issued_flops``).
``share``, for our kernels: the FFMA share of the innermost loop in SASS (gpucnn/perf/resources.py); for a
tiled GEMM, of its launched tile's k-loop (``tile_loop``: one k-step with its global loads, shared stores and
cursor steps, the whole loop body); where no SASS is available, FIXED_FFMA_SHARE. Each launch also gets
``pct_of_peak`` = F / (peak FP32 x estimate) and, for the GEMMs, ``ffma_per_lds`` of that loop. For cuBLAS
(cupy.matmul): CUBLAS_EFFICIENCY of the peak, on a grid of 128 x 128 tiles (CUBLAS_TILE), one resident
tile per SM. For CuPy's kernels: no FLOPs are counted, so
only their bytes and the gap count. Resident blocks per SM come from registers, static shared memory and
the block size (gpus.blocks_per_sm); waves = ceil(blocks / (resident blocks x SMs)).

Assumptions, not measurements, and not tuned to any result:
- CUBLAS_EFFICIENCY = 0.7: a large FP32 SGEMM on these parts runs at a good fraction of the FP32 peak;
  0.7 is a round lower-end figure. The small and skinny products of the reference network are limited
  by the SMs their tile grid covers, which the formula counts.
- FIXED_FFMA_SHARE = 0.5, used only where no SASS could be had: half the issue slots of the inner loop.
- LAUNCH_GAP_S = 2 us per launch on the device (kernel start and drain between dependent kernels on one
  stream, of the order NVIDIA's CUDA Graphs material shows for short kernels), the same for both step kinds;
  the eager step's host time per launch is measured apart (gpucnn/perf/host.py).
What the model leaves out: latency (a single block cannot issue at the SM's peak; the double-buffered k-loop
overlaps its global loads with the multiply, but nothing here checks that enough warps hide them), cache
reuse beyond one pass, tail effects inside a wave, and the host for CuPy's and cuBLAS's launches.
"""
from .gpus import blocks_per_sm, waves

__all__ = ["CUBLAS_EFFICIENCY", "FIXED_FFMA_SHARE", "LAUNCH_GAP_S", "annotate", "totals", "tile_loop", "issued_flops"]

CUBLAS_EFFICIENCY = 0.7
FIXED_FFMA_SHARE = 0.5
LAUNCH_GAP_S = 2e-6
#: resident 128 x 128 cuBLAS tiles per SM (an assumption: cuBLAS's kernel and its resources are not known here)
CUBLAS_RESIDENT_TILES = 1


def _grid_blocks(grid):
    if grid is None:
        return None
    blocks = 1
    for g in grid:
        blocks *= int(g)
    return blocks


def tile_loop(launch, res):
    """The k-loop of the launch's tile among the kernel's innermost SASS loops (``res['loops']``), or None: the
    loop with TK x RM x RN FFMA and TK x (ceil(RM/4) + ceil(RN/4)) LDS (float32: one LDS.64/128 per 4 values);
    where two instantiations match (conv_dgrad_fused: unit stride or not), the shorter for variant 'unit
    stride', else the longer."""
    tile = launch.get("tile")
    if not tile:
        return None
    _, _, tk, rm, rn = tile
    ffma, lds = tk * rm * rn, tk * (-(-rm // 4) + -(-rn // 4))
    matches = [loop for loop in res.get("loops") or () if loop["ffma"] == ffma and loop.get("lds") == lds]
    if not matches:
        return None
    pick = min if launch.get("variant") == "unit stride" else max
    return pick(matches, key=lambda loop: loop["instructions"])


def _residency(launch, gpu, resources):
    """(registers, smem, blocks per SM, what limits it, share, where the share comes from, the loop)."""
    if launch["kind"] == "ours":
        res = resources.get(launch["expression"])
        if res is None:
            return None, None, None, "unknown", FIXED_FFMA_SHARE, "fixed (no ptxas report)", None
        resident, limit = blocks_per_sm(gpu, launch["block"][0], res["registers"], res["smem"])
        loop = tile_loop(launch, res)
        if loop:
            how = (f"SASS k-loop of tile {launch['tile'][0]}x{launch['tile'][1]}: "
                   f"{loop['ffma']}/{loop['instructions']} FFMA")
        else:
            loop = res.get("inner_loop")
            how = f"SASS inner loop {loop['ffma']}/{loop['instructions']} FFMA" if loop else None
        if loop:
            share = loop["share"]
        elif res.get("sass") == "cuobjdump -sass":
            share, how = FIXED_FFMA_SHARE, "fixed (no FFMA in an inner loop)"
        else:
            share, how = FIXED_FFMA_SHARE, "fixed (no SASS)"
        return res["registers"], res["smem"], resident, limit, share, how, loop
    if launch["kind"] == "cublas":
        return None, None, CUBLAS_RESIDENT_TILES, "assumed", CUBLAS_EFFICIENCY, "cuBLAS efficiency (assumption)", None
    return None, None, None, "unknown", 1.0, "no FLOPs counted", None


def issued_flops(launch):
    """The FLOPs a tiled GEMM launch issues: its tile grid covers ceil(M/TM) TM x ceil(N/TN) TN outputs and
    every slice ceil(k/TK) TK of k (the padding multiplies zeros); ``flops`` for the other launches."""
    tile, gemm = launch.get("tile"), launch.get("gemm")
    if not tile or not gemm:
        return launch["flops"]
    (m, n, k), (tm, tn, tk) = gemm, tile[:3]
    slices = launch.get("slices") or 1
    slice_k = -(-(-(-k // slices)) // tk) * tk
    return 2 * (-(-m // tm) * tm) * (-(-n // tn) * tn) * slice_k * slices


def annotate(launch, gpu, resources):
    """``launch`` with its roofline figures added (see the module docstring); returns it."""
    regs, smem, resident, limit, share, how, loop = _residency(launch, gpu, resources)
    blocks = _grid_blocks(launch["grid"])
    sms_in_use = gpu.sms if blocks is None else min(blocks, gpu.sms)
    busiest = 1 if blocks is None else -(-blocks // gpu.sms)  # blocks on the busiest SM
    issued = issued_flops(launch)
    per_sm = issued / gpu.sms if blocks is None else issued / blocks * busiest  # FLOPs of the busiest SM
    compute = per_sm / (gpu.peak_fp32_flops / gpu.sms * share) if launch["flops"] else 0.0
    memory = launch["bytes"] / gpu.hbm_bytes_per_s
    body = max(compute, memory)
    if LAUNCH_GAP_S > body:
        bound = "launch"
    else:
        bound = "compute" if compute >= memory else "memory"
    launch.update({"registers": regs, "smem": smem, "blocks": blocks, "blocks_per_sm": resident,
                   "occupancy_limit": limit, "waves": waves(gpu, blocks, resident) if blocks is not None else None,
                   "sms_in_use": sms_in_use, "blocks_on_busiest_sm": busiest, "ffma_share": share, "share_from": how,
                   "compute_us": compute * 1e6, "memory_us": memory * 1e6, "est_us": (body + LAUNCH_GAP_S) * 1e6,
                   "bound": bound, "issued_flops": issued,
                   "ffma_per_lds": (loop["ffma"] / loop["lds"]) if loop and loop.get("lds") else None,
                   "pct_of_peak": 100 * launch["flops"] / (gpu.peak_fp32_flops * (body + LAUNCH_GAP_S))})
    return launch


def totals(launches):
    """The step's sums: est_step_ms, FLOPs, bytes, launches per kind, time per bound."""
    by_kind, by_bound = {}, {}
    for launch in launches:
        by_kind[launch["kind"]] = by_kind.get(launch["kind"], 0) + 1
        by_bound[launch["bound"]] = by_bound.get(launch["bound"], 0.0) + launch["est_us"] / 1000
    return {"est_step_ms": sum(launch["est_us"] for launch in launches) / 1000,
            "flops": sum(launch["flops"] for launch in launches),
            "bytes": sum(launch["bytes"] for launch in launches),
            "launch_count": len(launches), "launches_by_kind": by_kind, "est_ms_by_bound": by_bound}
