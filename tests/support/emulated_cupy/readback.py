"""Read-backs of a device array to the host (``float``, ``item``, ``get``, ``repr``, ...): each one is a sync.

``HostReads`` is a base class of the emulated ``cupy.ndarray`` (array.py). Part of the emulated CuPy
(tests/support/emulated_cupy/__init__.py says what it holds gpucnn to).
"""
import numpy

from .tracking import _sync, internal


class HostReads:
    """DeviceArray's read-back methods: each one counts a synchronisation (SYNCS) and is refused in a capture."""

    __slots__ = ()

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
