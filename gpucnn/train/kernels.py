"""The CUDA kernels compiled before the first epoch's timer starts, so that epoch 1 reports training speed."""
import time

import numpy

from ..backend import get_array_module

__all__ = ["warm_up_kernels"]


def warm_up_kernels(model, stream=None):
    """Compile (or load from CuPy's disk cache) the CUDA kernels of the model's float type. Returns the
    seconds it took (0.0 on the CPU); says so on ``stream`` when given."""
    params = model.parameters()
    if not params or get_array_module(params[0].data) is numpy:
        return 0.0
    from ..ops.cuda import loader  # imported at use: it needs CuPy

    data = params[0].data
    started = time.perf_counter()
    loader.compile_all(data.dtype, data.device.id)
    seconds = time.perf_counter() - started
    if stream is not None:
        print(f"CUDA kernels ready in {seconds:.1f} s (compiled once, then cached in {loader.kernel_cache_dir()})",
              file=stream, flush=True)
    return seconds
