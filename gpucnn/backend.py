"""The one place that knows about NumPy versus CuPy.

Everything above this module asks an array for its module (``get_array_module``)
and stays device-agnostic after that. CuPy is imported lazily and guarded: it may
be missing, or installed on a machine without a driver or GPU, where ``import
cupy`` succeeds and the first CUDA call fails.
"""
import contextlib
import functools

import numpy

__all__ = ["get_array_module", "to_device", "asnumpy", "gpu_available",
           "resolve_device", "device_of", "gpu_unavailable_reason", "cupy_or_none", "is_out_of_memory",
           "device_scope"]


@functools.lru_cache(maxsize=1)
def _probe_cupy():
    """Return (cupy module or None, reason it is unusable or None)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken install raising anything
        return None, f"CuPy is not installed or failed to import ({exc}); install gpucnn[cuda12] or gpucnn[cuda13]"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cudaErrorInsufficientDriver, cudaErrorNoDevice, ...
        return cupy, f"CuPy is installed but no CUDA device is usable ({exc})"
    if count < 1:
        return cupy, "CuPy is installed but no CUDA device was found"
    return cupy, None


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
