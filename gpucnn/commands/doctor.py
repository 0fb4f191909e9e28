"""Say whether gpucnn works on this machine, GPU path included, and why not when it does not.

    gpucnn doctor                  # versions, devices, then every check
    gpucnn doctor --quick          # fewer random shapes (the setup script's check)
    gpucnn doctor --seed 7         # repeat a failing run's shapes

Prints the versions of gpucnn, Python, NumPy and CuPy, of CUDA's runtime, the driver, NVRTC and
cuBLAS, and each device's name, memory and compute capability. On a GPU it then compiles every
kernel file, runs every CUDA op on random shapes against its NumPy twin, and one training step of
the reference network against the same step on the CPU; everywhere it runs the CPU checks. One
PASS/FAIL line per check with its largest error; the exit status is 1 when any check fails.
Without a usable GPU it says why, runs the CPU checks, and exits 0 when they pass.
"""
import argparse
import platform
import sys

import numpy

import gpucnn
from .. import backend
from . import checks as selftest


def _version_triple(value):
    """13000 -> '13.0' (CUDA's encoding: 1000 * major + 10 * minor)."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def _ask(fn):
    """fn()'s value, or 'unknown (why)' when it raises: the report never stops at one missing piece."""
    try:
        return fn()
    except Exception as exc:
        return f"unknown ({type(exc).__name__}: {exc})"


def versions():
    """{'gpucnn': ..., 'Python': ..., 'NumPy': ..., 'CuPy': ..., 'CUDA runtime': ..., ...} as strings."""
    found = {"gpucnn": gpucnn.__version__, "Python": platform.python_version(), "NumPy": numpy.__version__}
    cupy = backend.cupy_or_none()
    driver = backend.nvidia_driver_cuda_version()
    found["NVIDIA driver"] = (f"supports CUDA {driver[0]}.{driver[1]}" if driver is not None
                              else "none found (libcuda does not load)")
    if cupy is None:
        found["CuPy"] = "not installed"
        return found
    found["CuPy"] = cupy.__version__
    found["CUDA runtime"] = _ask(lambda: _version_triple(cupy.cuda.runtime.runtimeGetVersion()))
    found["CUDA driver API"] = _ask(lambda: _version_triple(cupy.cuda.runtime.driverGetVersion()) if
                                    cupy.cuda.runtime.driverGetVersion() > 0 else "none (no driver answers)")
    found["NVRTC"] = _ask(lambda: ".".join(str(v) for v in cupy.cuda.nvrtc.getVersion()))
    found["cuBLAS"] = _ask(lambda: str(cupy.cuda.cublas.getVersion(cupy.cuda.device.get_cublas_handle())))
    return found


def devices():
    """[(index, name, GiB, 'major.minor')] of the usable CUDA devices (empty without a usable GPU)."""
    if not backend.gpu_available():
        return []
    cupy = backend.cupy_or_none()
    listed = []
    for index in range(cupy.cuda.runtime.getDeviceCount()):
        props = cupy.cuda.runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        listed.append((index, name, props["totalGlobalMem"] / 2 ** 30, f"{props['major']}.{props['minor']}"))
    return listed


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", action="append", default=None,
                   help="CUDA device(s) to check, e.g. cuda:1 (repeatable; default: every usable one)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random shapes (default: a fresh one, printed)")
    p.add_argument("--quick", action="store_true", help="one random shape per op instead of two")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU checks")
    args = p.parse_args(argv)
    if args.seed is not None and args.seed < 0:
        p.error("--seed must be >= 0")
    return args


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    seed = args.seed if args.seed is not None else int(numpy.random.SeedSequence().entropy % (1 << 31))
    print("gpucnn doctor")
    for name, value in versions().items():
        print(f"  {name:16} {value}")
    listed = devices()
    reason = backend.gpu_unavailable_reason()
    if reason is not None:
        print(f"  GPU              not usable: {reason}")
    else:
        from ..ops.cuda import loader
        print(f"  kernel cache     {loader.kernel_cache_dir()}")
    for index, name, gib, capability in listed:
        print(f"  {'cuda:' + str(index):16} {name}, {gib:.1f} GiB, compute capability {capability}")

    try:
        targets = [backend.resolve_device(d) for d in args.device] if args.device else \
            [f"cuda:{index}" for index, *_ in listed]
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"checks (seed {seed}; repeat with --seed {seed}):")
    failed = total = 0
    suites = [(device, selftest.gpu_checks(device, seed, rounds=1 if args.quick else 2)) for device in targets]
    if not args.no_cpu:
        suites.append(("cpu", selftest.cpu_checks(seed)))
    for where, checks in suites:
        for check, seconds in selftest.timed(checks):
            total += 1
            failed += not check.passed
            print(f"  [{where}] {check.line()}  [{seconds:.2f} s]", flush=True)
    if failed:
        print(f"{failed} of {total} checks FAILED")
        return 1
    gpu_note = "" if targets else " (no GPU checked: " + (reason or "no device given") + ")"
    print(f"all {total} checks passed{gpu_note}")
    return 0
