"""Streams, events, stream capture and CUDA graphs for the emulated CuPy (tests/support/emulated_cupy).

The emulated device runs every operation at once on the CPU; this module adds what a CUDA
graph needs to be checked without a GPU:

- ``Stream`` (cupy.cuda.Stream): a context manager that makes the stream current;
  ``Stream.null`` is the legacy default stream. ``begin_capture()`` / ``end_capture()`` /
  ``is_capturing()`` / ``synchronize()`` as in CuPy; ``end_capture`` returns a ``Graph``.
- While a stream captures, every device operation that would enqueue work (our kernel
  launches, CuPy elementwise and reduction kernels, copies, fills, gathers) is recorded as
  a replay closure over the same memory, and, as in a real capture, not run: in-place work
  leaves its buffers untouched, and new results hold garbage (NaN, or -123456 / 0xAB for
  integers) until the graph runs. ``Graph.launch`` runs the recorded closures, in order,
  against whatever the buffers hold then, as a real graph does with its fixed addresses.
- What CuPy (14.x) or the CUDA runtime refuses during capture raises here too:
    * a device-to-host read (``.get()``, ``cupy.asnumpy``, ``float``/``int``/``bool``/
      ``item``/``tolist``/``repr`` of a device array) and a host-to-device copy
      (``cupy.asarray(numpy_array)``, assigning a host array into a device array):
      RuntimeError('the current stream is capturing, so D2H transfers are disallowed'),
      CuPy's own check in cupy/cuda/memory.pyx; it leaves the capture valid;
    * ``Stream.synchronize`` / ``Device.synchronize`` during a capture: CUDARuntimeError
      cudaErrorStreamCaptureUnsupported, which invalidates the capture (``end_capture``
      then raises cudaErrorStreamCaptureInvalidated);
    * a cuBLAS call (``cupy.matmul``, ``@``, ``dot``, ``tensordot``, ``einsum``, ...):
      NotImplementedError('calling cuBLAS API during stream capture is currently
      unsupported'), raised by cupy_backends.cuda.libs.cublas.setStream;
    * work on a stream other than the capturing one: on the legacy default stream CUDA
      fails with cudaErrorStreamCaptureImplicit and invalidates the capture; on another
      created stream CUDA would run it outside the graph without a word, which the
      emulation refuses too (stricter than CUDA: such work is always a bug in a step);
    * ``begin_capture`` on the legacy default stream: RuntimeError('cannot capture on the
      default (legacy) stream'), as CuPy.
- Allocations go through a ``MemoryPool`` (tests/support/emulated_pool.py, re-exported here:
  ``cupy.get_default_memory_pool()``, or the one installed by ``cupy.cuda.using_allocator(pool.malloc)``).
  During a capture an allocation that the pool cannot serve from its free blocks raises
  ``CaptureAllocationError``. That is stricter than CUDA's relaxed capture mode (which
  CuPy uses, and where cudaMalloc is allowed): gpucnn holds itself to "warm the pool with
  one eager step, then capture", so that the graph's memory is settled before capture.
- Devices (the emulated machine has two; tests/support/emulated_cupy/tracking.py): as in CuPy, a
  ``Stream`` belongs to the device that was current when it was made (``device_id``; -1 for
  ``Stream.null``, which means the current device's), and the current stream is kept per device
  (``get_current_stream()`` is the current device's). Entering or ``use()``-ing a stream while
  another device is current raises CuPy's RuntimeError('The device that the stream is created on
  (1) does not match with the current device (0)') (cupy/cuda/stream.pyx, check_stream_device_match,
  called by _BaseStream.__enter__ and use). CuPy itself checks nothing more; what CUDA refuses
  raises CUDARuntimeError here: ``Stream.record(event)`` of an event made on another device than the
  stream's (cudaEventRecord, CUDA Programming Guide, "Stream and Event Behavior"), and
  ``Graph.launch`` into a stream of another device than the one the graph was captured on (a graph
  is instantiated in its stream's context). ``wait_event`` and ``synchronize`` work across devices,
  as in CUDA. A ``MemoryPool`` keeps its blocks per device (CuPy's MemoryPool holds one
  SingleDeviceMemoryPool per device and serves the current device's).

Known blind spots: one capture at a time; the pool does not coalesce neighbouring free blocks
(emulated_pool.py); memory that a graph writes and that its owner frees after capture is not detected (keep
every buffer of a graph referenced, or capture into a private pool).
"""
from .emulated_pool import (ALLOCATIONS, CaptureAllocationError, MemoryPool, current_device_id, get_default_memory_pool,
                            note_memory, using_allocator)
from .emulated_pool import _active_capture, reset as reset_pool

__all__ = ["ALLOCATIONS", "CAPTURE", "CUBLAS_FUNCTIONS", "CUDARuntimeError", "CaptureAllocationError", "Event",
           "GRAPH_LAUNCHES", "Graph", "MemoryPool", "Stream", "check_stream_device_match", "cublas",
           "current_device_id", "device_synchronize", "get_current_stream", "get_default_memory_pool", "host_read",
           "host_write", "note_memory", "on_stream", "reset", "using_allocator"]


class CUDARuntimeError(RuntimeError):
    """cupy_backends.cuda.api.runtime.CUDARuntimeError, emulated."""


def check_stream_device_match(device_id):
    """CuPy's check_stream_device_match (cupy/cuda/stream.pyx), called by Stream.__enter__ and Stream.use:
    the device a stream was made on (-1: the current one) must be the current device. Returns that device."""
    current = current_device_id()
    if device_id == -1:
        device_id = current
    if device_id != current:
        raise RuntimeError(f"The device that the stream is created on ({device_id}) does not match with the "
                           f"current device ({current})")
    return device_id


# ----------------------------------------------------------------------------- streams

class Stream:
    """cupy.cuda.Stream, emulated (see the module docstring): it belongs to the device current at its making."""

    _next_ptr = [2]

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        if null:
            self.ptr = 0
            self.device_id = -1  # CuPy's singleton: the legacy stream of whichever device is current
        else:
            self.ptr = Stream._next_ptr[0]
            Stream._next_ptr[0] += 1
            self.device_id = current_device_id()
        self.non_blocking = non_blocking

    def _device(self):
        """The device this stream's work goes to (the null stream's is the current device's)."""
        return current_device_id() if self.device_id == -1 else self.device_id

    def __enter__(self):
        _STREAMS.push(self, check_stream_device_match(self.device_id))
        return self

    def __exit__(self, *exc):
        _STREAMS.pop()
        return False

    def use(self):
        check_stream_device_match(self.device_id)
        _STREAMS.set_current(self)
        return self

    def record(self, event=None):
        """Record ``event`` (a new one when None) on this stream; the emulation runs in order, so it only marks.
        CUDA's cudaEventRecord fails for an event and a stream of two devices."""
        event = Event() if event is None else event
        if event.device_id != self._device():
            raise CUDARuntimeError(f"cudaErrorInvalidResourceHandle: invalid resource handle (cudaEventRecord of "
                                   f"an event made on device {event.device_id} on {self}, of device "
                                   f"{self._device()})")
        event.stream = self
        return event

    def wait_event(self, event):
        """Later work on this stream waits for ``event`` (in order here anyway; CUDA allows another device's)."""
        if not isinstance(event, Event):
            raise TypeError(f"wait_event takes a cupy.cuda.Event, got {type(event).__name__}")

    def is_capturing(self):
        return CAPTURE.active is not None and CAPTURE.active.stream is self

    def synchronize(self):
        if CAPTURE.active is not None:
            CAPTURE.active.invalidate()
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: operation not permitted when stream is "
                                   "capturing")
        _sync_hook[0]("Stream.synchronize")

    def begin_capture(self, mode=None):
        if self.ptr in (0, 1):
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if CAPTURE.active is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: a stream capture is already in progress "
                                   "(the emulation captures one stream at a time)")
        CAPTURE.active = Capture(self)

    def end_capture(self):
        capture = CAPTURE.active
        if capture is None or capture.stream is not self:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        CAPTURE.active = None
        if capture.invalid:
            raise CUDARuntimeError("cudaErrorStreamCaptureInvalidated: operation failed due to a previous error "
                                   f"during capture ({capture.invalid})")
        return Graph._from_capture(capture.records, self._device())

    def __repr__(self):
        return f"<emulated Stream {self.ptr} (device {self.device_id})>"


class Event:
    """cupy.cuda.Event: a marker in a stream (ordering only; the emulation runs everything in order). It
    belongs to the device current at its making, as a CUDA event does."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.stream = None
        self.device_id = current_device_id()

    def record(self, stream=None):
        (get_current_stream() if stream is None else stream).record(self)

    @property
    def done(self):
        """A query, not a read-back: the emulation finishes every launch when it is made."""
        return True

    def synchronize(self):
        if CAPTURE.active is not None:
            CAPTURE.active.invalidate("Event.synchronize")
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: operation not permitted when stream is "
                                   "capturing")
        _sync_hook[0]("Event.synchronize")


Stream.null = Stream(null=True)
_sync_hook = [lambda what: None]  # emulated_cupy counts synchronisations through this


class _CurrentStreams:
    """CuPy's per-thread stream bookkeeping (_ThreadLocal in cupy/cuda/stream.pyx): a current stream and a
    stack of entered streams per device, and the devices in the order their streams were entered."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.current = {}  # device id -> its current stream (absent: Stream.null)
        self.stacks = {}  # device id -> [streams entered on it]
        self.entered_on = []  # device ids, one per stream entered and not yet left

    def push(self, stream, device_id):
        self.stacks.setdefault(device_id, [Stream.null]).append(stream)
        self.entered_on.append(device_id)
        self.current[device_id] = stream

    def pop(self):
        device_id = self.entered_on.pop()
        stack = self.stacks[device_id]
        stack.pop()
        self.current[device_id] = stack[-1]

    def set_current(self, stream):
        self.current[stream._device()] = stream

    def get(self, device_id=-1):
        return self.current.get(current_device_id() if device_id == -1 else device_id, Stream.null)


_STREAMS = _CurrentStreams()


def get_current_stream(device_id=-1):
    """cupy.cuda.get_current_stream: the current stream of ``device_id`` (default: the current device)."""
    return _STREAMS.get(device_id)


class Capture:
    """The capture in progress: its stream and the recorded (what, replay) operations."""

    def __init__(self, stream):
        self.stream = stream
        self.records = []
        self.invalid = None

    def invalidate(self, why="an error"):
        self.invalid = self.invalid or why


class _CaptureState:
    active = None


CAPTURE = _CaptureState()
_active_capture[0] = lambda: CAPTURE.active  # the pool refuses to grow during a capture


def reset():
    """Forget any capture and current stream (between tests)."""
    CAPTURE.active = None
    _STREAMS.reset()
    reset_pool()
    GRAPH_LAUNCHES[0] = 0


# ----------------------------------------------------------------------------- checks called by emulated_cupy

def on_stream(what, replay):
    """Device work ``what`` is being enqueued on the current stream; ``replay`` redoes it in place."""
    capture = CAPTURE.active
    if capture is None:
        return
    current = get_current_stream()
    if current is not capture.stream:
        capture.invalidate(f"{what} on {current}")
        if current.ptr in (0, 1):
            raise CUDARuntimeError(f"cudaErrorStreamCaptureImplicit: {what} on the legacy default stream while "
                                   f"{capture.stream} is capturing")
        raise CUDARuntimeError(f"{what} on {current} while {capture.stream} is capturing: CUDA would run it outside "
                               f"the graph (the emulation refuses it)")
    capture.records.append((what, replay))


def host_read(what):
    """A device-to-host transfer: refused while capturing."""
    if CAPTURE.active is None:
        return
    if get_current_stream() is CAPTURE.active.stream:
        raise RuntimeError(f"the current stream is capturing, so D2H transfers are disallowed ({what})")
    CAPTURE.active.invalidate(what)
    raise CUDARuntimeError(f"cudaErrorStreamCaptureImplicit: {what} synchronises with a capturing stream")


def host_write(what):
    """A host-to-device transfer: refused while capturing."""
    if CAPTURE.active is not None:
        raise RuntimeError(f"the current stream is capturing, so H2D transfers are disallowed ({what})")


def device_synchronize():
    if CAPTURE.active is not None:
        CAPTURE.active.invalidate("Device.synchronize")
        raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing")


CUBLAS_FUNCTIONS = frozenset({"matmul", "dot", "vdot", "inner", "tensordot", "einsum"})


def cublas(what):
    if CAPTURE.active is not None:
        raise NotImplementedError(f"calling cuBLAS API during stream capture is currently unsupported ({what})")


# ----------------------------------------------------------------------------- graphs

GRAPH_LAUNCHES = [0]


class Graph:
    """cupy.cuda.Graph: made only by ``Stream.end_capture``; ``launch`` replays the captured work."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("cupy.cuda.Graph cannot be constructed directly; it is returned by "
                                  "Stream.end_capture()")

    @classmethod
    def _from_capture(cls, records, device_id):
        graph = cls.__new__(cls)
        graph._records = list(records)
        graph.device_id = device_id  # instantiated in the capturing stream's context
        return graph

    @property
    def captured(self):
        """Names of the captured operations, in order (emulation only: a real graph has nodes)."""
        return [what for what, _ in self._records]

    def launch(self, stream=None):
        """Replay the captured work, in order, on the buffers it was captured on (into ``stream``, default the
        current one, which must belong to the graph's device)."""
        if CAPTURE.active is not None:
            # A graph launched into a capture would become a child graph; gpucnn never does that.
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: graph launch during a capture "
                                   "(not emulated)")
        target = get_current_stream() if stream is None else stream
        if target._device() != self.device_id:
            raise CUDARuntimeError(f"cudaGraphLaunch of a graph captured on device {self.device_id} into {target}, "
                                   f"of device {target._device()} (another context: CUDA refuses it)")
        GRAPH_LAUNCHES[0] += 1
        _replay_hook[0](self._records)

    def upload(self, stream=None):
        pass


_replay_hook = [lambda records: [replay() for _, replay in records]]
