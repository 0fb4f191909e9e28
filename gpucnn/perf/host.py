"""The host side of one of our launches, measured on this CPU with the device work left out.

What is timed is ``loader.launch`` itself, on representative arguments (numpy arrays of the declared
element types for the pointers, the launch's own count of work items), preceded by the launcher's
``loader.index_type`` choice for the kernels that have an index type: the look-up of the launch's plan
(``loader.launch_plan``: signature, name expression and argument conversions, made once per kernel, float
type and index type, at an untimed first call), the argument packing with its checks (exact C types,
contiguity, the integer ranges: memoised per tuple of integer arguments, as a steady step repeats them) and
the default grid. The kernel
object is a stand-in whose call does nothing, so CuPy's RawKernel call (its Cython argument marshalling and
cuLaunchKernel) and the launchers' own array checks and allocations are not in the figure: it is a lower
bound of the host time per launch. CuPy's and cuBLAS's launches are not measured.
"""
import statistics
import time

import numpy

from ..ops.cuda import loader

__all__ = ["host_launch_seconds"]


class _NoKernel:
    def __call__(self, grid, block, args, *rest, **kwargs):
        return None


def _arguments(file, name, count):
    """Arguments of the right C types for kernel ``name``: 1-element arrays, 1 for the sizes, ``count`` last."""
    signature = loader.SIGNATURES[file][name]
    args = []
    for ctype in signature:
        if ctype.endswith("*"):
            element = ctype.rstrip("*").replace("const ", "").strip()
            args.append(numpy.zeros(1, dtype=loader.POINTER_DTYPES.get(element, numpy.float32)))
        elif ctype in ("T", "double"):
            args.append(0.5)
        else:
            args.append(1)
    args[-1] = int(count)
    return tuple(args)


def _time(fn, number, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def host_launch_seconds(launches, number=300, repeats=5):
    """{(file, name): seconds} of the Python side of loader.launch for each of our kernels in ``launches``."""
    out = {}
    real = loader.get_kernel
    stand_in = _NoKernel()
    loader.get_kernel = lambda file, expression: stand_in
    try:
        for launch in launches:
            key = (launch["file"], launch["name"])
            if launch["kind"] != "ours" or key in out:
                continue
            file, name = key
            count = launch.get("count") or 1
            args = _arguments(file, name, count)
            grid = None if launch.get("grid_from") == "grid_for" else launch["grid"]
            with_index = loader.has_index_type(file, name)

            def one(file=file, name=name, args=args, grid=grid, with_index=with_index, count=count):
                index = loader.index_type(count, count) if with_index else None
                loader.launch(file, name, numpy.float32, args, grid=grid, index=index)

            one()  # plans the launch (once per kernel and types, as in a run); the timing is of its reuse
            out[key] = _time(one, number, repeats)
    finally:
        loader.get_kernel = real
    return out
