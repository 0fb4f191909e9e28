"""The stand-in ``cupy`` module: ``make_fake_cupy()``, its array creation and copies, RandomState, NumPy's
functions forwarded as CuPy's, and what the emulated device reports about itself.

Part of the emulated CuPy (tests/support/emulated_cupy/__init__.py says what it holds gpucnn to).
"""
import os
import sys
import types

import numpy

from .. import emulated_streams as streams
from .array import DeviceArray, _computed, _plain, _reject_host, check_devices
from .tracking import DEVICE_COUNT, DEVICE_OPS, Device, _caller, _is_internal, _sync, current_device, internal

_INIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py")  # the fake module's __file__


# ----------------------------------------------------------------------------- the cupy module

def to_host(a):
    """A NumPy copy of a device (or host) array, without counting a sync: for the tests' own checks."""
    with internal():
        return numpy.array(_plain(a), copy=True)


def uniform(seed, shape, dtype):
    """What the emulated ``cupy.random.RandomState(seed).random_sample(shape, dtype)`` draws, on the host."""
    return numpy.random.default_rng(seed).random(shape).astype(dtype)


class RandomState:
    """cupy.random.RandomState: seedable; ``random_sample`` draws on the device (here: ``uniform``).

    Bound to the device that was current when it was made, as CuPy's cuRAND generator is:
    drawing while another device is current raises (CuPy would hand device-0 work to memory
    of device 1)."""

    def __init__(self, seed=None):
        self._device_id = current_device()
        self.seed(seed)

    def seed(self, seed=None):
        self._seed = 0 if seed is None else int(seed)
        self._calls = 0

    def random_sample(self, size=None, dtype=float):
        dtype = numpy.dtype(dtype)
        if dtype not in (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)):
            raise TypeError(f"cupy.random: dtype must be float32 or float64, got {dtype}")
        if self._device_id != current_device():
            raise ValueError(f"cupy.random: a generator made on device {self._device_id} drew while device "
                             f"{current_device()} is current (its cuRAND generator belongs to device "
                             f"{self._device_id}); at {_caller()}")
        DEVICE_OPS.record("cupy.random")
        # A reseeded generator draws the same numbers again; a second draw without reseeding continues.
        values = uniform(self._seed if self._calls == 0 else (self._seed, self._calls), size, dtype)
        self._calls += 1
        return values.view(DeviceArray)

    def rand(self, *size, dtype=float):
        return self.random_sample(size, dtype)


def _empty(shape, dtype=float, order="C"):
    """cupy.empty: uninitialised memory, here NaN (or a large negative int) so unwritten elements show."""
    a = numpy.empty(shape, dtype=dtype, order=order)
    a.fill(numpy.nan if a.dtype.kind in "fc" else (-123456 if a.dtype.itemsize >= 4 else 0xAB))
    return a.view(DeviceArray)


def _empty_like(a, dtype=None, order="K", shape=None):
    a = numpy.empty_like(_plain(a), dtype=dtype, order=order, shape=shape)
    a.fill(numpy.nan if a.dtype.kind in "fc" else (-123456 if a.dtype.itemsize >= 4 else 0xAB))
    return a.view(DeviceArray)


def _asarray(a, dtype=None, order=None, blocking=False):
    """cupy.asarray: a device array as it is (cast when asked), anything else copied to the device."""
    if isinstance(a, DeviceArray):
        if a._device_id != current_device():  # CuPy copies an array of another device to the current one
            DEVICE_OPS.record("cupy.asarray (copy between devices)")
            return numpy.array(_plain(a), dtype=dtype, copy=True).view(DeviceArray)
        return a if dtype is None or numpy.dtype(dtype) == a.dtype else a.astype(dtype)
    if not _is_internal():
        streams.host_write("cupy.asarray of host data")
    DEVICE_OPS.record("cupy.asarray (copy to the device)")
    return numpy.array(a, dtype=dtype, order=order or "K", copy=True).view(DeviceArray)


def _array(a, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(a, DeviceArray) and not copy:
        return _asarray(a, dtype)
    if isinstance(a, DeviceArray):
        return _computed("cupy.array", numpy.array, (a,), dict(dtype=dtype, copy=True, order=order, ndmin=ndmin))
    if not _is_internal():
        streams.host_write("cupy.array of host data")
    DEVICE_OPS.record("cupy.array (copy)")
    return numpy.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin).view(DeviceArray)


def _ascontiguousarray(a, dtype=None):
    """cupy.ascontiguousarray: the very same object when it already is C-contiguous (CuPy's rule)."""
    if not isinstance(a, DeviceArray):
        raise TypeError(f"cupy.ascontiguousarray: Unsupported type {type(a)}")
    if a.flags.c_contiguous and (dtype is None or numpy.dtype(dtype) == a.dtype):
        return a if a.ndim else a.reshape(1)  # CuPy ravels a 0-d array
    check_devices([a], "cupy.ascontiguousarray (copy)")
    return _computed("cupy.ascontiguousarray", numpy.ascontiguousarray, (a,), dict(dtype=dtype))


def _asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, DeviceArray):
        _sync("cupy.asnumpy")
        DEVICE_OPS.record("cupy.asnumpy (copy to the host)")
        host = numpy.array(_plain(a), copy=True, order=order)
    else:
        host = numpy.asarray(a, order=order)
    if out is not None:
        out[...] = host
        return out
    return host


def _get_array_module(*args):
    return sys.modules["cupy"] if any(isinstance(a, DeviceArray) for a in args) else numpy


# NumPy functions that take host data by design (creating arrays from shapes and Python values).
# NumPy functions that only make views: no work on the device.
_VIEWS = {"reshape", "transpose", "swapaxes", "moveaxis", "expand_dims", "squeeze", "broadcast_to", "shape", "ndim",
          "size", "result_type", "may_share_memory", "shares_memory", "iscomplexobj", "isrealobj"}

_CREATORS = {"zeros", "ones", "full", "arange", "linspace", "eye", "identity", "zeros_like", "ones_like",
             "full_like", "asanyarray", "fromfunction"}


class _Forward:
    """A NumPy function or ufunc as a fake CuPy one: refuses host arrays, returns device arrays."""

    def __init__(self, name, function):
        self._name, self._function = name, function
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        if self._name not in _CREATORS or self._name.endswith("_like"):
            _reject_host(list(args) + list(kwargs.values()), f"cupy.{self._name}")
        check_devices(list(args) + list(kwargs.values()), f"cupy.{self._name}")
        return _computed(f"cupy.{self._name}", self._function, args, kwargs)

    def __getattr__(self, attr):  # ufunc methods: reduce, accumulate, at, outer, ...
        method = getattr(self._function, attr)
        return _Forward(f"{self._name}.{attr}", method) if callable(method) else method

    def __repr__(self):
        return f"<emulated cupy.{self._name}>"


def _refuse_compile(*args, **kwargs):
    raise RuntimeError("the emulated cupy compiles nothing: kernels go to the host harness "
                       "(loader.get_kernel is replaced)")


class ProbeRawKernel:
    """``cupy.RawKernel`` for the backend's usability probe only: ``compile()`` checks that the source
    declares the named ``extern "C" __global__`` function (the emulation has no NVRTC to run; a
    blind spot) and raises CuPy's error type for a missing one; a launch is refused, because gpucnn's
    own kernels go through the loader to the host harness."""

    def __init__(self, code, name, options=(), backend="nvrtc", **kwargs):
        self.code, self.name, self.options = code, name, options

    def compile(self, log_stream=None):
        if f"__global__ void {self.name}(" not in self.code:
            raise CompileException(f"kernel {self.name!r} is not defined in the source")

    def __call__(self, *args, **kwargs):
        _refuse_compile()


class CompileException(Exception):
    """Stands in for cupy.cuda.compiler.CompileException."""


# What the emulated device reports about itself (an H100-like device).
DEVICE_PROPERTIES = {"name": b"Emulated GPU (host harness)", "totalGlobalMem": 80 * 2 ** 30, "major": 9,
                     "minor": 0, "multiProcessorCount": 132}
CUDA_VERSION = 13000


def make_fake_cupy():
    """A fresh stand-in ``cupy`` module (see the package docstring)."""
    fake = types.ModuleType("cupy")
    fake.__file__ = _INIT
    fake.__version__ = "emulated"
    fake.ndarray = DeviceArray
    fake.asarray = _asarray
    fake.array = _array
    fake.asnumpy = _asnumpy
    fake.ascontiguousarray = _ascontiguousarray
    fake.empty = _empty
    fake.empty_like = _empty_like
    fake.get_array_module = _get_array_module
    fake.RawModule = fake.ElementwiseKernel = fake.ReductionKernel = _refuse_compile
    fake.RawKernel = ProbeRawKernel
    fake.random = types.SimpleNamespace(RandomState=RandomState)
    fake.cuda = types.SimpleNamespace(
        Device=Device,
        runtime=types.SimpleNamespace(getDeviceCount=lambda: DEVICE_COUNT,
                                      getDevice=lambda: Device._stack[-1],
                                      runtimeGetVersion=lambda: CUDA_VERSION,
                                      driverGetVersion=lambda: CUDA_VERSION,
                                      getDeviceProperties=lambda index: dict(DEVICE_PROPERTIES),
                                      CUDARuntimeError=streams.CUDARuntimeError),
        nvrtc=types.SimpleNamespace(getVersion=lambda: (CUDA_VERSION // 1000, 0)),
        device=types.SimpleNamespace(get_cublas_handle=lambda: 1),
        cublas=types.SimpleNamespace(getVersion=lambda handle: 130000),
        compiler=types.SimpleNamespace(CompileException=CompileException),
        Stream=streams.Stream,
        Event=streams.Event,
        Graph=streams.Graph,
        get_current_stream=streams.get_current_stream,
        MemoryPool=streams.MemoryPool,
        using_allocator=streams.using_allocator,
        memory=types.SimpleNamespace(MemoryPool=streams.MemoryPool, using_allocator=streams.using_allocator),
    )
    fake.get_default_memory_pool = streams.get_default_memory_pool
    for dtype_name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_",
                       "dtype", "newaxis", "inf", "nan", "pi", "e"):
        setattr(fake, dtype_name, getattr(numpy, dtype_name))

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(numpy, name, None)
        if value is None or not callable(value) or isinstance(value, type):
            raise AttributeError(f"emulated cupy has no attribute {name!r}")
        forward = _Forward(name, value)
        setattr(fake, name, forward)
        return forward

    fake.__getattr__ = __getattr__
    return fake
