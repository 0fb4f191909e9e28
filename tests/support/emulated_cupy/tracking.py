"""What the emulated device counts and checks (launches, syncs, the capture hooks), and its two devices.

Part of the emulated CuPy (tests/support/emulated_cupy/__init__.py says what it holds gpucnn to).
"""
import contextlib
import os
import traceback

from .. import emulated_pool, emulated_streams as streams

_PACKAGE = os.path.dirname(os.path.abspath(__file__))  # tests/support/emulated_cupy
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(_PACKAGE)))  # the repository


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
    """Work put on the emulated GPU (see the package docstring): ``count`` and ``names``; with
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
    """The innermost frame outside the emulated CuPy (and outside NumPy): where gpucnn asked for the value."""
    for frame in reversed(traceback.extract_stack(limit=40)[:-2]):
        name = os.path.abspath(frame.filename)
        if os.path.dirname(name) != _PACKAGE and f"{os.sep}numpy{os.sep}" not in name:
            return f"{os.path.relpath(name, _ROOT)}:{frame.lineno} in {frame.name}"
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


def _replay(records):
    with internal():
        for _, replay in records:
            replay()


streams._sync_hook[0] = _sync
streams._replay_hook[0] = _replay


# ----------------------------------------------------------------------------- the devices

def current_device():
    return Device._stack[-1]


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
emulated_pool._device_hook[0] = current_device  # streams, events, graphs and pool blocks belong to a device
