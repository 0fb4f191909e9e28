"""An emulated CUDA device for gpucnn's CuPy path, on a machine without a GPU.

``make_fake_cupy()`` builds a stand-in ``cupy`` module over NumPy whose ``ndarray`` is
``DeviceArray``, a distinct subclass of ``numpy.ndarray``. ``installed(harness)`` puts it
in ``sys.modules``, re-probes ``gpucnn.backend`` (which then reports 'cuda:0' usable),
re-imports the real launchers ``gpucnn.ops.cuda.{loader,conv,pool,update,fused}`` over it, and
sends every kernel launch to ``FakeKernel`` of tests/kernels/test_host_harness.py, which
checks the launch and runs the kernel's body on the CPU in the nvcc-built harness.

What the emulation holds gpucnn to, as CuPy would:

- Device arrays stay device arrays: ufuncs, reductions, indexing, methods and the fake
  module's functions return ``DeviceArray``; reductions to one value and scalar indexing
  give 0-d device arrays (never NumPy scalars), as in CuPy.
- Mixing a host ``numpy.ndarray`` with device arrays in a ufunc, a NumPy function or a
  fake ``cupy`` function raises ``TypeError`` (CuPy: "Unsupported type").
- Two devices: an array lives on the device that was current when its memory was allocated
  (views: their base's device); a ufunc, reduction, advanced index, assignment, fill or kernel
  launch that touches an array of another device than the current one raises ValueError, as
  CuPy does without peer access (``DEVICE_MISMATCHES``; ``reset(strict=False)`` only records).
  ``cupy.asarray`` of another device's array copies it to the current device, as CuPy does.
- Every operation that would put work on the GPU counts as one launch (``DEVICE_OPS``): a ufunc
  or reduction (NumPy's ``mean`` is two: a sum and a division; CuPy's is one kernel, so the count
  errs high there), a NumPy or fake ``cupy`` function that computes or copies, an advanced index,
  an assignment, ``fill``, ``astype``/``copy``, ``argmax``/``argmin``, a host<->device copy, a
  random draw, and every RawKernel launch of gpucnn's launchers. Views (reshape, transpose,
  basic slicing) and ``cupy.empty`` count nothing, as on the GPU.
- Every read-back to the host counts as a synchronisation (``SYNCS``): ``float``, ``int``,
  ``bool``, ``complex``, ``operator.index``, ``item``, ``tolist``, ``get``, ``repr``/``str``/
  ``format`` of a device array, ``cupy.asnumpy`` of one and ``Device.synchronize``. Each
  event keeps the gpucnn source line that caused it.

- Streams, the memory pool, stream capture and graphs (``cupy.cuda.Stream``, ``begin_capture``,
  ``end_capture``, ``Graph.launch``, ``cupy.cuda.MemoryPool``, ``using_allocator``) are in
  tests/emulated_streams.py: every operation that enqueues device work goes through ``_enqueue``,
  which records it while a stream captures; what CuPy refuses during capture raises here too.

Known blind spots (an ndarray subclass cannot see them): ``numpy.asarray(device_array)``
and ``host_array[...] = device_array`` silently work here, where CuPy raises. gpucnn does
neither on device arrays (checked by reading: backend.asnumpy routes CuPy arrays through
cupy.asnumpy, losses.py calls numpy.asarray only on objects without a dtype).

The emulation's own plumbing (the harness writing kernel results back, the tests reading
values to compare them) runs under ``internal()`` and is neither counted nor checked.
"""
import contextlib
import importlib
import os
import sys
import traceback
import types

import numpy

import emulated_streams as streams

_HERE = os.path.abspath(__file__)
_TESTS = os.path.dirname(_HERE)

# ----------------------------------------------------------------------------- bookkeeping

_internal_depth = [0]


@contextlib.contextmanager
def internal():
    """Emulation plumbing: no sync counting, host arrays may meet device arrays."""
    _internal_depth[0] += 1
    try:
        yield
    finally:
        _internal_depth[0] -= 1


def _is_internal():
    return _internal_depth[0] > 0


class SyncCounter:
    """Host read-backs of device memory: ``count`` and ``events`` [(what, 'file:line in function')]."""

    def __init__(self):
        self.count = 0
        self.events = []

    def reset(self):
        self.count = 0
        self.events = []

    def record(self, what):
        self.count += 1
        self.events.append((what, _caller()))

    def since(self, start):
        return self.events[start:]


SYNCS = SyncCounter()


class DeviceOps:
    """Work put on the emulated GPU (see the module docstring): ``count`` and ``names``; with
    ``trace`` on, ``events`` also keeps the gpucnn source line of each."""

    def __init__(self):
        self.trace = False
        self.reset()

    def reset(self):
        self.count = 0
        self.names = []
        self.events = []

    def record(self, what):
        if _is_internal():
            return
        self.count += 1
        self.names.append(what)
        if self.trace:
            self.events.append((what, _caller()))


DEVICE_OPS = DeviceOps()


def _caller():
    """The innermost frame outside this file (and outside NumPy): where gpucnn asked for the value."""
    for frame in reversed(traceback.extract_stack(limit=40)[:-2]):
        name = os.path.abspath(frame.filename)
        if name != _HERE and f"{os.sep}numpy{os.sep}" not in name:
            return f"{os.path.relpath(name, os.path.dirname(_TESTS))}:{frame.lineno} in {frame.name}"
    return "?"


def _sync(what):
    if not _is_internal():
        streams.host_read(what)  # refused while a stream captures
        SYNCS.record(what)


def _enqueue(what, replay, counted=True):
    """Device work on the current stream: counted (DEVICE_OPS) unless CuPy would launch nothing for it, and
    recorded (``replay`` redoes it in place) while a stream captures."""
    if not _is_internal():
        if counted:
            DEVICE_OPS.record(what)
        streams.on_stream(what, replay)


def _capturing():
    """A stream captures: work is recorded, not run (a real capture executes nothing)."""
    return streams.CAPTURE.active is not None and not _is_internal()


def _poison(result):
    """New memory written by work that a capture only recorded: garbage, as on a GPU until the graph runs."""
    if isinstance(result, numpy.ndarray):
        plain = _plain(result)
        if plain.dtype.kind in "fc":
            plain.fill(numpy.nan)
        elif plain.dtype.kind in "iu":
            plain.fill(-123456 if plain.dtype.itemsize >= 4 and plain.dtype.kind == "i" else 0xAB)
    elif isinstance(result, (tuple, list)):
        for r in result:
            _poison(r)


def _zeroed_indices(value):
    """For a capture's shape-only run: integer arrays as zeros (garbage values would be out-of-range indices)."""
    if isinstance(value, numpy.ndarray) and value.dtype.kind in "iu":
        return numpy.zeros_like(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_zeroed_indices(v) for v in value)
    return value


def _run_for_shape(func, args, kwargs):
    """``func`` during a capture, whose inputs may hold garbage: only the result's shape and dtype matter."""
    with numpy.errstate(all="ignore"):
        try:
            return func(*args, **kwargs)
        except (IndexError, ValueError):
            return func(*_zeroed_indices(args), **{k: _zeroed_indices(v) for k, v in kwargs.items()})


def _copy_into(dest, new):
    """Replay helper: write a recomputed result into the memory the captured result lives in."""
    if isinstance(dest, numpy.ndarray):
        numpy.copyto(_plain(dest), _plain(new))
    elif isinstance(dest, (tuple, list)):
        for d, n in zip(dest, new):
            _copy_into(d, n)


def _replay(records):
    with internal():
        for _, replay in records:
            replay()


streams._sync_hook[0] = _sync
streams._replay_hook[0] = _replay


# ----------------------------------------------------------------------------- the device array

def _plain(a):
    """A DeviceArray as a plain ndarray view of the same memory (anything else unchanged)."""
    return a.view(numpy.ndarray) if isinstance(a, DeviceArray) else a


def _plain_nested(value):
    if isinstance(value, DeviceArray):
        return value.view(numpy.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_nested(v) for v in value)
    return value


def _wrap(result):
    """Results as device arrays: ndarrays viewed as DeviceArray, NumPy scalars as 0-d DeviceArray."""
    if isinstance(result, DeviceArray):
        return result
    if isinstance(result, numpy.ndarray):
        return result.view(DeviceArray)
    if isinstance(result, numpy.generic):
        return numpy.asarray(result).view(DeviceArray)
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, list):
        return [_wrap(r) for r in result]
    return result


def _host_arrays(values):
    found = []
    for v in values:
        if isinstance(v, (list, tuple)):
            found.extend(_host_arrays(v))
        elif isinstance(v, numpy.ndarray) and not isinstance(v, DeviceArray):
            found.append(v)
    return found


def _reject_host(values, where):
    if _is_internal():
        return
    host = _host_arrays(values)
    if host:
        raise TypeError(f"{where}: Unsupported type {type(host[0])} (a host numpy.ndarray of shape "
                        f"{host[0].shape} met a device array; CuPy refuses implicit host/device mixing)")


def current_device():
    return Device._stack[-1]


def _device_arrays(values):
    if isinstance(values, DeviceArray):
        return [values]
    if isinstance(values, (list, tuple)):
        return [a for v in values for a in _device_arrays(v)]
    return []


def _has_device_array(values):
    return bool(_device_arrays(values))


class DeviceMismatches:
    """Kernels (ufuncs, reductions, indexing, copies, our launches) that touched an array on a device
    other than the current one. CuPy refuses that where the devices have no peer access (ValueError,
    "... is different from the current device"), and a RawKernel launch would read foreign memory.
    ``strict``: raise at the first one (as CuPy without peer access); else only record."""

    def __init__(self):
        self.strict = True
        self.events = []

    def reset(self, strict=True):
        self.strict = strict
        self.events = []


DEVICE_MISMATCHES = DeviceMismatches()


def check_devices(values, where):
    if _is_internal():
        return
    current = current_device()
    for a in _device_arrays(values):
        if a._device_id != current:
            site = _caller()
            DEVICE_MISMATCHES.events.append((where, a._device_id, current, site))
            if DEVICE_MISMATCHES.strict:
                raise ValueError(f"{where}: the array resides on device {a._device_id}, which is different "
                                 f"from the current device {current} (as CuPy without peer access); "
                                 f"at {site}")
            return


class Device:
    """cupy.cuda.Device: a context manager that makes device ``id`` current."""

    _stack = [0]

    def __init__(self, device=None):
        self.id = Device._stack[-1] if device is None else int(device)
        if not 0 <= self.id < DEVICE_COUNT:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")

    def __enter__(self):
        Device._stack.append(self.id)
        return self

    def __exit__(self, *exc):
        Device._stack.pop()
        return False

    def synchronize(self):
        if not _is_internal():
            streams.device_synchronize()
        _sync("Device.synchronize")

    def use(self):
        Device._stack[-1] = self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


DEVICE_COUNT = 2  # two devices, so that 'cuda:1' and device mismatches can be exercised


class DeviceArray(numpy.ndarray):
    """cupy.ndarray, emulated: NumPy memory, CuPy's rules (see the module docstring)."""

    _device_id = 0

    def __array_finalize__(self, obj):
        # A view stays on the device of its base; new memory is allocated on the current device (CuPy's rule).
        source = getattr(obj, "_device_id", None) if self.base is not None else None
        self._device_id = current_device() if source is None else source
        if not _is_internal():
            streams.note_memory(self)  # new memory comes from the pool (refused in a capture if it must grow)

    @property
    def device(self):
        return Device(self._device_id)

    # --- NumPy protocols: stay on the device, refuse host arrays
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"cupy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        out = kwargs.get("out")
        _reject_host(inputs + (tuple(out) if out else ()), where)
        check_devices(inputs + (tuple(out) if out else ()) + (kwargs.get("where"),), where)
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        if "where" in kwargs:
            kwargs["where"] = _plain(kwargs["where"])
        if ufunc.__name__ in streams.CUBLAS_FUNCTIONS and not _is_internal():
            streams.cublas(where)
        plain_inputs = tuple(_plain(a) for a in inputs)
        if method == "at" or out is not None:  # in place: a capture records it and runs nothing
            if not _capturing():
                getattr(ufunc, method)(*plain_inputs, **kwargs)
            _enqueue(where, lambda: getattr(ufunc, method)(*plain_inputs, **kwargs))
            if method == "at":
                return None
            return out[0] if len(out) == 1 else tuple(out)
        with numpy.errstate(all="ignore") if _capturing() else contextlib.nullcontext():
            result = getattr(ufunc, method)(*plain_inputs, **kwargs)
        wrapped = _wrap(result)
        if _capturing():
            _poison(wrapped)
        dest = _plain_nested(wrapped)  # replays hold memory, not device arrays (those free their pool block)
        _enqueue(where, lambda: _copy_into(dest, getattr(ufunc, method)(*plain_inputs, **kwargs)))
        return wrapped

    def __array_function__(self, func, types_, args, kwargs):
        _reject_host(list(args) + list(kwargs.values()), f"numpy.{func.__name__} on a device array")
        check_devices(list(args) + list(kwargs.values()), f"numpy.{func.__name__}")
        return _computed(f"cupy.{func.__name__}", func, args, kwargs)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        return array.view(DeviceArray)  # a 0-d device array, never a scalar

    def __getitem__(self, key):
        if _has_device_array(key):  # advanced indexing: a gather kernel on the current device
            check_devices([self, key], "advanced indexing (take)")
        if _host_arrays(key if isinstance(key, tuple) else (key,)) and not _is_internal():
            streams.host_write("a host index array")  # CuPy copies it to the device first
        before = streams.ALLOCATIONS[0]
        plain_self, plain_key = self.view(numpy.ndarray), _plain_nested(key)
        with Device(self._device_id):  # a scalar index is a 0-d view in CuPy: on this array's device
            if _capturing():
                result = _wrap(_run_for_shape(plain_self.__getitem__, (plain_key,), {}))
            else:
                result = _wrap(super().__getitem__(plain_key))
        if streams.ALLOCATIONS[0] != before:  # a gather (or a scalar copy), not a view
            if _capturing():
                _poison(result)
            dest = _plain(result)
            # A scalar index is a 0-d view in CuPy (no kernel), a 0-d copy here: replayed, not counted.
            _enqueue("advanced indexing (take)", lambda: _copy_into(dest, plain_self[plain_key]),
                     counted=_has_device_array(key) or _host_arrays(key if isinstance(key, tuple) else (key,)))
        return result

    def __setitem__(self, key, value):
        # CuPy copies a host value in (``a[...] = numpy_array`` works there too); the copy (or scatter) kernel
        # runs on the current device.
        check_devices([self, key, value], "assignment into a device array")
        if isinstance(value, numpy.ndarray) and not isinstance(value, DeviceArray) and not _is_internal():
            streams.host_write("assigning a host array into a device array")
        plain_self, plain_key, plain_value = self.view(numpy.ndarray), _plain_nested(key), _plain(value)
        if not _capturing():
            plain_self[plain_key] = plain_value
        _enqueue("assignment into a device array", lambda: plain_self.__setitem__(plain_key, plain_value))

    def fill(self, value):
        check_devices([self], "fill")
        plain_self = self.view(numpy.ndarray)
        if not _capturing():
            plain_self.fill(value)
        _enqueue("fill", lambda: plain_self.fill(value))

    # --- methods NumPy implements without ufuncs (CuPy: kernels; dot: cuBLAS)
    def argmax(self, *args, **kwargs):
        check_devices([self], "argmax")
        return _computed("argmax", numpy.ndarray.argmax, (self,) + args, kwargs)

    def argmin(self, *args, **kwargs):
        check_devices([self], "argmin")
        return _computed("argmin", numpy.ndarray.argmin, (self,) + args, kwargs)

    def astype(self, *args, **kwargs):
        return _computed("astype", numpy.ndarray.astype, (self,) + args, kwargs)

    def copy(self, *args, **kwargs):
        return _computed("copy", numpy.ndarray.copy, (self,) + args, kwargs)

    def flatten(self, *args, **kwargs):
        return _computed("flatten", numpy.ndarray.flatten, (self,) + args, kwargs)

    def ravel(self, *args, **kwargs):
        return _computed("ravel", numpy.ndarray.ravel, (self,) + args, kwargs)

    def reshape(self, *args, **kwargs):
        return _computed("reshape", numpy.ndarray.reshape, (self,) + args, kwargs)

    def take(self, *args, **kwargs):
        check_devices([self] + list(args), "take")
        return _computed("take", numpy.ndarray.take, (self,) + args, kwargs)

    def dot(self, *args, **kwargs):
        if not _is_internal():
            streams.cublas("ndarray.dot")
        return _computed("dot", numpy.ndarray.dot, (self,) + args, kwargs)

    # --- read-backs to the host: each one is a synchronisation
    def __float__(self):
        _sync("__float__")
        return float(self.view(numpy.ndarray))

    def __int__(self):
        _sync("__int__")
        return int(self.view(numpy.ndarray))

    def __index__(self):
        _sync("__index__")
        return self.view(numpy.ndarray).__index__()

    def __bool__(self):
        _sync("__bool__")
        return bool(self.view(numpy.ndarray))

    def __complex__(self):
        _sync("__complex__")
        return complex(self.view(numpy.ndarray))

    def item(self, *args):
        _sync("item")
        return self.view(numpy.ndarray).item(*args)

    def tolist(self):
        _sync("tolist")
        return self.view(numpy.ndarray).tolist()

    def get(self, stream=None, order="C", out=None, blocking=True):
        _sync("get")
        host = numpy.array(self.view(numpy.ndarray), copy=True, order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    def __repr__(self):
        _sync("__repr__")
        with internal():
            return "device:" + repr(self.view(numpy.ndarray))

    def __str__(self):
        _sync("__str__")
        with internal():
            return str(self.view(numpy.ndarray))

    def __format__(self, spec):
        _sync("__format__")
        with internal():
            return format(self.view(numpy.ndarray), spec)

    def __iter__(self):
        # CuPy yields 0-d / sliced device arrays; NumPy's iterator would bypass __getitem__.
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))


# NumPy functions that write into their arguments (a capture must not run them).
_IN_PLACE = frozenset({"copyto", "put", "place", "putmask", "fill_diagonal", "put_along_axis"})


def _computed(where, func, args, kwargs):
    """``func`` on the plain memory of ``args``, its result as device arrays; work that wrote memory (new
    memory, or in place when the result is None) is enqueued on the current stream for capture."""
    if func.__name__ in streams.CUBLAS_FUNCTIONS and not _is_internal():
        streams.cublas(where)
    plain_args = _plain_nested(tuple(args))
    plain_kwargs = {k: _plain_nested(v) for k, v in kwargs.items()}
    if _capturing() and (func.__name__ in _IN_PLACE or plain_kwargs.get("out") is not None):
        _enqueue(where, lambda: func(*plain_args, **plain_kwargs))  # a capture records it and runs nothing
        return kwargs.get("out")
    before = streams.ALLOCATIONS[0]
    if _capturing():
        result = _wrap(_run_for_shape(func, plain_args, plain_kwargs))
    else:
        result = _wrap(func(*plain_args, **plain_kwargs))
    if _capturing() and streams.ALLOCATIONS[0] != before:
        _poison(result)
    if result is None:
        _enqueue(where, lambda: func(*plain_args, **plain_kwargs))
    elif plain_kwargs.get("out") is not None:  # in place into ``out``: device work, nothing to replay
        DEVICE_OPS.record(where)
        if isinstance(kwargs["out"], DeviceArray):
            return kwargs["out"]  # CuPy returns the very ``out`` array
    elif streams.ALLOCATIONS[0] != before:
        dest = _plain_nested(result)
        _enqueue(where, lambda: _copy_into(dest, func(*plain_args, **plain_kwargs)))
    return result


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
    """A fresh stand-in ``cupy`` module (see the module docstring)."""
    fake = types.ModuleType("cupy")
    fake.__file__ = _HERE
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


# ----------------------------------------------------------------------------- installing it

class Emulated(types.SimpleNamespace):
    """What ``installed`` yields: cupy (the fake), loader/conv/pool/update/loss/multi_update (the real launchers),
    launches (every (file, kernel) launched), syncs (the SyncCounter), device_ops (DeviceOps: every
    launch, CuPy's included)."""


# the modules that import cupy when imported: re-imported over the stand-in
_ON_CUPY = ("gpucnn.ops.cuda", "gpucnn.compile.cuda_graph.launch")


@contextlib.contextmanager
def cupy_replaced_by(fake):
    """``fake`` as the ``cupy`` module, with gpucnn.ops.cuda re-imported over it; all restored after."""
    import gpucnn.ops as ops_package

    saved_modules = {name: mod for name, mod in sys.modules.items() if name == "cupy" or name.startswith(_ON_CUPY)}
    had_attr, old_attr = hasattr(ops_package, "cuda"), getattr(ops_package, "cuda", None)
    for name in saved_modules:
        del sys.modules[name]
    sys.modules["cupy"] = fake
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n == "cupy" or n.startswith(_ON_CUPY)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        if had_attr:
            ops_package.cuda = old_attr
        elif hasattr(ops_package, "cuda"):
            del ops_package.cuda


def record_launches(loader, setattr_=setattr):
    """Wrap ``loader.launch`` so that every launch appends (file, kernel) to the returned list."""
    launches = []
    real_launch = loader.launch

    def recording_launch(*args, **kwargs):
        launches.append(args[:2])
        return real_launch(*args, **kwargs)

    setattr_(loader, "launch", recording_launch)
    return launches


@contextlib.contextmanager
def installed(harness, kernel_class):
    """Install the fake CuPy for gpucnn and route kernel launches to ``kernel_class`` (FakeKernel)."""
    from gpucnn import backend

    saved_stack = list(Device._stack)
    fake = make_fake_cupy()
    with cupy_replaced_by(fake):
        backend._probe_cupy.cache_clear()
        try:
            assert backend.gpu_unavailable_reason() is None, backend.gpu_unavailable_reason()
            assert backend.cupy_or_none() is fake
            loader = importlib.import_module("gpucnn.ops.cuda.loader")
            modules = {name: importlib.import_module(f"gpucnn.ops.cuda.{name}")
                       for name in ("conv", "pool", "update", "loss", "multi_update")}
            modules["fused"] = importlib.import_module("gpucnn.compile.cuda_graph.launch")
            launches = record_launches(loader)

            class Kernel(kernel_class):
                def __call__(self, grid, block, args, *rest, **kwargs):
                    check_devices(list(args), f"kernel {self.name}")  # a RawKernel runs on the current device
                    run = super().__call__
                    result = None
                    if not _capturing():  # a capture records the launch and runs nothing
                        with internal():  # the harness writes results back with host arrays
                            result = run(grid, block, args, *rest, **kwargs)
                    views = {id(a): _plain(a) for a in args}  # one view per array: the harness dedups by identity
                    plain_args = tuple(views[id(a)] for a in args)
                    _enqueue(f"kernel {self.name}", lambda: run(grid, block, plain_args, *rest, **kwargs))
                    return result

            loader.get_kernel = lambda file, expression: Kernel(loader, harness, file, expression)
            # "Compiling" a kernel file means the harness holds it: nvcc built the harness from the same headers.
            loader.get_module = lambda file, ctype: harness
            SYNCS.reset()
            DEVICE_MISMATCHES.reset()
            streams.reset()
            DEVICE_OPS.reset()
            yield Emulated(devices=DEVICE_MISMATCHES, device_ops=DEVICE_OPS, cupy=fake, loader=loader,
                           launches=launches, syncs=SYNCS, streams=streams, **modules)
        finally:
            Device._stack[:] = saved_stack
            backend._probe_cupy.cache_clear()  # the next probe sees the real CuPy (or its absence) again
            streams.reset()
            SYNCS.reset()
            DEVICE_MISMATCHES.reset()
