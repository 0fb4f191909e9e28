"""The emulated ``cupy.ndarray``, ``DeviceArray``, and the rules it keeps: device arrays stay device arrays,
host arrays are refused, the devices must match, device work is counted and recorded in a capture.

Part of the emulated CuPy (tests/support/emulated_cupy/__init__.py says what it holds gpucnn to).
"""
import contextlib

import numpy

from .. import emulated_streams as streams
from .readback import HostReads
from .tracking import (DEVICE_MISMATCHES, DEVICE_OPS, Device, _caller, _capturing, _enqueue, _is_internal,
                       current_device)


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


def _device_arrays(values):
    if isinstance(values, DeviceArray):
        return [values]
    if isinstance(values, (list, tuple)):
        return [a for v in values for a in _device_arrays(v)]
    return []


def _has_device_array(values):
    return bool(_device_arrays(values))


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


class DeviceArray(HostReads, numpy.ndarray):
    """cupy.ndarray, emulated: NumPy memory, CuPy's rules (see the package docstring)."""

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
