"""The one place that knows about NumPy versus CuPy.

Everything above this module asks an array for its module (``get_array_module``)
and stays device-agnostic after that. CuPy is imported lazily and guarded: it may
be missing, or installed on a machine without a driver or GPU, where ``import
cupy`` succeeds and the first CUDA call fails.
"""
import contextlib
import ctypes
import functools

import numpy

__all__ = ["get_array_module", "to_device", "asnumpy", "gpu_available",
           "resolve_device", "device_of", "gpu_unavailable_reason", "cupy_or_none", "is_out_of_memory",
           "device_scope", "nvidia_driver_cuda_version", "install_command", "describe_auto_choice", "set_tf32"]

# The smallest kernel that proves NVRTC loads, compiles for this device and the driver runs its code.
_PROBE_KERNEL = 'extern "C" __global__ void gpucnn_probe(float* x) { x[threadIdx.x] += 1.0f; }'


@functools.lru_cache(maxsize=1)
def nvidia_driver_cuda_version():
    """(major, minor) of the CUDA version the NVIDIA driver supports, or None where no driver loads.

    Asked of libcuda itself (ctypes), so it answers even when CuPy or CUDA's runtime libraries
    are missing: it tells "no driver" from "a driver, but the GPU path is not installed".
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        try:
            if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
                return None
        except AttributeError:
            return None
        return version.value // 1000, (version.value % 1000) // 10
    return None


def install_command():
    """The pip command that brings CuPy with CUDA's libraries (NVRTC, cuBLAS, runtime) for this driver."""
    driver = nvidia_driver_cuda_version()
    major = driver[0] if driver is not None and driver[0] in (12, 13) else None
    if major is None:
        return "pip install 'gpucnn[cuda13]' (or 'gpucnn[cuda12]' for a CUDA 12 driver)"
    return f"pip install 'gpucnn[cuda{major}]' (CuPy with CUDA {major}'s libraries)"


def _check_toolkit(cupy):
    """None when NVRTC compiles and runs a small kernel and cuBLAS loads, else why not (with the fix)."""
    try:
        cupy.cuda.nvrtc.getVersion()
        kernel = cupy.RawKernel(_PROBE_KERNEL, "gpucnn_probe")
        kernel.compile()
    except Exception as exc:
        return (f"NVRTC, CUDA's runtime compiler that builds gpucnn's kernels, is missing or cannot compile "
                f"({type(exc).__name__}: {exc}); {install_command()}")
    try:
        cupy.cuda.device.get_cublas_handle()
    except Exception as exc:
        return (f"cuBLAS, CUDA's matrix library, is missing or does not load ({type(exc).__name__}: {exc}); "
                f"{install_command()}")
    return None


@functools.lru_cache(maxsize=1)
def _probe_cupy():
    """Return (cupy module or None, reason it is unusable or None).

    Usable means: a device answers, NVRTC loads and compiles a small kernel, and cuBLAS loads.
    """
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken install raising anything
        return None, f"CuPy is not installed or failed to import ({exc}); {install_command()}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cudaErrorInsufficientDriver, cudaErrorNoDevice, a missing libcudart, ...
        fix = ""
        if nvidia_driver_cuda_version() is not None:
            fix = f"; an NVIDIA driver is present, so CUDA's runtime may be missing: {install_command()}"
        return cupy, f"CuPy is installed but no CUDA device is usable ({exc}){fix}"
    if count < 1:
        return cupy, "CuPy is installed but no CUDA device was found"
    return cupy, _check_toolkit(cupy)


def describe_auto_choice(device):
    """One line for 'auto' having chosen ``device``: on the CPU, why (the reason matters most where an
    NVIDIA driver is present, since the GPU was expected to work)."""
    if device != "cpu":
        return f"device auto -> {device}"
    driver = nvidia_driver_cuda_version()
    if driver is None:
        return f"device auto -> cpu (no NVIDIA driver on this machine; {gpu_unavailable_reason()})"
    return (f"device auto -> cpu, although an NVIDIA driver (CUDA {driver[0]}.{driver[1]}) is present: "
            f"{gpu_unavailable_reason()}")


def cupy_or_none():
    """The cupy module when it imports (usable GPU or not), else None."""
    return _probe_cupy()[0]


def gpu_unavailable_reason():
    """None when a GPU is usable, else a sentence that says why not."""
    return _probe_cupy()[1]


def gpu_available():
    """True when CuPy imports and at least one CUDA device answers. Never raises."""
    try:
        return _probe_cupy()[1] is None
    except Exception:
        return False


def get_array_module(x):
    """numpy or cupy, whichever owns ``x`` (numpy for anything that is not a CuPy array)."""
    cupy = _probe_cupy()[0]
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return numpy


def resolve_device(device):
    """Normalise a device name to 'cpu' or 'cuda:N'.

    'auto' picks 'cuda:0' when a GPU is usable, else 'cpu'. Asking for CUDA where
    none is usable raises one RuntimeError that says why.
    """
    if device is None:
        return "cpu"
    if not isinstance(device, str):
        raise TypeError(f"device must be a string like 'cpu', 'cuda', 'cuda:0' or 'auto', got {device!r}")
    name = device.strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return "cuda:0" if gpu_available() else "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        index = 0
        if name.startswith("cuda:"):
            try:
                index = int(name[5:])
            except ValueError:
                raise ValueError(f"device index must be an integer, got {device!r}") from None
            if index < 0:
                raise ValueError(f"device index must be >= 0, got {device!r}")
        reason = gpu_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"device {device!r} was requested but {reason}")
        cupy = _probe_cupy()[0]
        count = cupy.cuda.runtime.getDeviceCount()
        if index >= count:
            raise RuntimeError(f"device {device!r} was requested but only {count} CUDA device(s) exist")
        return f"cuda:{index}"
    raise ValueError(f"unknown device {device!r}; expected 'cpu', 'cuda', 'cuda:N' or 'auto'")


def device_of(x):
    """'cpu' or 'cuda:N' for an array."""
    xp = get_array_module(x)
    if xp is numpy:
        return "cpu"
    return f"cuda:{x.device.id}"


def to_device(x, device):
    """Copy ``x`` to ``device`` ('cpu', 'cuda', 'cuda:N', 'auto'); no copy when it is already there."""
    target = resolve_device(device)
    if target == "cpu":
        return asnumpy(x)
    cupy = _probe_cupy()[0]
    index = int(target.split(":")[1])
    if isinstance(x, cupy.ndarray) and x.device.id == index:
        return x
    with cupy.cuda.Device(index):
        return cupy.asarray(x)


def asnumpy(x):
    """A NumPy array holding ``x``'s values (copied from the GPU when needed)."""
    cupy = _probe_cupy()[0]
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.asnumpy(x)
    return numpy.asarray(x)


def is_out_of_memory(exc):
    """True for CuPy's out-of-memory errors (checked by type name, so CuPy need not be importable)."""
    return type(exc).__name__ == "OutOfMemoryError" and type(exc).__module__.startswith("cupy")


def device_scope(x):
    """A context in which CuPy allocates and launches on ``x``'s GPU (CuPy uses the *current* device,
    not the arrays'); a no-op for NumPy arrays."""
    cupy = _probe_cupy()[0]
    if cupy is not None and isinstance(x, cupy.ndarray):
        return x.device
    return contextlib.nullcontext()


def set_tf32(enabled):
    """CuPy's float32 matrix products on TF32 tensor cores (``enabled``) or in strict FP32.

    Sets ``CUPY_TF32`` (read by CuPy at its first matrix product) and, where CuPy is already
    loaded, its float32 compute type directly. Our own kernels always compute in FP32.
    """
    import os

    os.environ["CUPY_TF32"] = "1" if enabled else "0"
    if not gpu_available():
        return
    try:
        from cupy._core import _routines_linalg as linalg
    except ImportError:  # a CuPy without this switch: the variable decides
        return
    linalg.set_compute_type(numpy.dtype(numpy.float32),
                            linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_FP32)
