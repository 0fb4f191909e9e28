"""Count the GPU operations (kernel launches, memsets, copies) of one call, and say how they were counted.

Methods, tried in order (``METHODS``); each returns (count, description) or None where it
cannot count here:

- CUPTI (``pip install cupti-python``): NVIDIA's profiling interface records every kernel,
  memset and memcpy the driver runs: CuPy's elementwise and reduction kernels, cuBLAS's
  GEMM kernels and ours alike. The exact count.
- gpucnn's own kernels: ``loader.launch`` wrapped during the call. Exact for our RawKernels,
  blind to CuPy's and cuBLAS's kernels, and labelled so.

The tests put the emulated CuPy's own counter first (every operation it would put on the
GPU), so the emulation's count and a real GPU's CUPTI count answer the same question.
"""
import contextlib

__all__ = ["count_launches", "METHODS"]


def _by_cupti(fn, sync):
    try:
        from cupti import cupti
    except Exception:  # not installed, or no CUPTI library for this driver
        return None
    kinds = [cupti.ActivityKind.CONCURRENT_KERNEL, cupti.ActivityKind.MEMSET, cupti.ActivityKind.MEMCPY]
    records = []

    def buffer_requested():
        return 8 * 1024 * 1024, 0

    def buffer_completed(activities):
        records.extend(int(a.kind) for a in activities)

    try:
        sync()
        cupti.activity_register_callbacks(buffer_requested, buffer_completed)
        for kind in kinds:
            cupti.activity_enable(kind)
        try:
            fn()
            sync()
        finally:
            cupti.activity_flush_all(1)
            for kind in kinds:
                cupti.activity_disable(kind)
    except Exception as exc:  # CUPTI present but unusable here (another profiler attached, driver too old)
        return None if not records else (len(records), f"CUPTI, incomplete ({exc})")
    wanted = {int(k) for k in kinds}
    return sum(1 for kind in records if kind in wanted), "CUPTI activity records: every kernel, memset and memcpy"


def _by_gpucnn_kernels(fn, sync):
    from ..ops.cuda import loader

    launches = []
    real_launch = loader.launch

    def counting_launch(*args, **kwargs):
        launches.append(args[:2])
        return real_launch(*args, **kwargs)

    loader.launch = counting_launch
    try:
        fn()
    finally:
        loader.launch = real_launch
    return len(launches), "gpucnn's RawKernel launches only (CuPy's and cuBLAS's kernels not counted: " \
                          "pip install cupti-python for the full count)"


METHODS = [_by_cupti, _by_gpucnn_kernels]


def count_launches(fn, sync=lambda: None):
    """(count, how it was counted) for one call of ``fn`` on the GPU; ``sync`` synchronises the device."""
    for method in METHODS:
        with contextlib.suppress(ImportError):
            result = method(fn, sync)
            if result is not None:
                return result
    return None, "no counting method available"
