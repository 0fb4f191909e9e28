"""Timing on a device, shared by every benchmark command (bench, bench --distributed, bench --graph).

The device is synchronised around every timed region, warm-up runs come first, and a figure is
the median of its runs. ``timed_alternating`` runs several functions in alternating blocks, so
that drift in the machine's speed hits them all alike. Nothing here imports a command module.
"""
import argparse
import statistics
import time

import numpy

from .. import backend

__all__ = ["synchronizer", "timed", "timed_alternating", "matmul_peak", "batch_sizes"]


def synchronizer(device):
    """A function that waits for ``device`` ('cpu' or 'cuda:N') to finish its queued work."""
    if device == "cpu":
        return lambda: None
    gpu = backend.cupy_or_none().cuda.Device(int(device.split(":")[1]))
    return gpu.synchronize


def timed(fn, sync, repeats, warmup):
    """The median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, each synchronised."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_alternating(fns, sync, repeats, warmup, rounds=4):
    """{name: median seconds}. Rounds of blocks, each function in turn running one untimed call then
    repeats/rounds timed ones: drift in the machine's speed hits every function alike. Blocks, and
    a pause before each, because one library's idle worker threads (OpenMP and OpenBLAS spin a
    while after work) otherwise compete with the other's timed calls."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    per_block = max(1, repeats // rounds)
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(0.3)  # let the previous block's spinning worker threads go to sleep
            fn()
            for _ in range(per_block):
                sync()
                start = time.perf_counter()
                fn()
                sync()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def matmul_peak(device, sync):
    """The achieved GFLOP/s of a large single-precision matrix product on ``device``, measured now."""
    n = 4096 if device != "cpu" else 1024
    a = backend.to_device(numpy.ones((n, n), dtype=numpy.float32), device)
    with backend.device_scope(a):
        seconds = timed(lambda: a @ a, sync, 15, 3)
    return 2 * n ** 3 / seconds / 1e9


def batch_sizes(text):
    """argparse type of --batch-sizes: '64,256' -> [64, 256]; one line saying what is wrong otherwise."""
    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"every batch size must be >= 1, got {text!r}")
    return sizes
