"""Streams, a memory pool, stream capture and CUDA graphs for the emulated CuPy (tests/support/emulated_cupy).

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
- Allocations go through a ``MemoryPool`` (``cupy.get_default_memory_pool()``, or the one
  installed by ``cupy.cuda.using_allocator(pool.malloc)``): blocks are rounded to 512
  bytes, freed blocks (the owning array collected) return to the pool, and an allocation
  takes the smallest free block that fits (splitting it), else grows the pool. During a
  capture an allocation that the pool cannot serve from its free blocks raises
  ``CaptureAllocationError``. That is stricter than CUDA's relaxed capture mode (which
  CuPy uses, and where cudaMalloc is allowed): gpucnn holds itself to "warm the pool with
  one eager step, then capture", so that the graph's memory is settled before capture.

Known blind spots: one capture at a time; streams are not tied to a device; the pool does
not coalesce neighbouring free blocks (CuPy does), so it may refuse a capture-time
allocation that CuPy would serve from two merged blocks (never the other way round);
memory that a graph writes and that its owner frees after capture is not detected (keep
every buffer of a graph referenced, or capture into a private pool).
"""
import contextlib
import weakref

_ROUND = 512  # CuPy's allocation unit


class CUDARuntimeError(RuntimeError):
    """cupy_backends.cuda.api.runtime.CUDARuntimeError, emulated."""


class CaptureAllocationError(RuntimeError):
    """An allocation during stream capture that the memory pool could not serve from free blocks."""


# ----------------------------------------------------------------------------- memory pool

class MemoryPool:
    """cupy.cuda.MemoryPool, emulated for its bookkeeping (see the module docstring)."""

    def __init__(self):
        self._free = []  # sizes of free blocks
        self._used = 0
        self._total = 0
        self.grown = 0  # how many times the pool grew (a cudaMalloc)

    def malloc(self, nbytes):
        """Take a block of ``nbytes`` (rounded up); returns its size. Raises during capture if it must grow."""
        size = max(_ROUND, -(-int(nbytes) // _ROUND) * _ROUND)
        fitting = [s for s in self._free if s >= size]
        if fitting:
            best = min(fitting)
            self._free.remove(best)
            if best > size:
                self._free.append(best - size)
        else:
            if CAPTURE.active is not None:
                CAPTURE.active.invalidate(f"an allocation of {nbytes} bytes")
                raise CaptureAllocationError(
                    f"an allocation of {nbytes} bytes during stream capture, which the memory pool cannot serve "
                    f"from its free blocks ({sorted(self._free)}): warm the pool with one eager step before "
                    f"capturing (emulation rule; CUDA's relaxed mode would cudaMalloc inside the capture)")
            self._total += size
            self.grown += 1
        self._used += size
        return size

    def _release(self, size):
        self._used -= size
        self._free.append(size)

    def used_bytes(self):
        return self._used

    def free_bytes(self):
        return self._total - self._used

    def total_bytes(self):
        return self._total

    def free_all_blocks(self, stream=None):
        self._total -= sum(self._free)
        self._free = []


_DEFAULT_POOL = MemoryPool()
_allocators = [_DEFAULT_POOL]


def get_default_memory_pool():
    return _DEFAULT_POOL


@contextlib.contextmanager
def using_allocator(allocator=None):
    """cupy.cuda.using_allocator: allocations inside come from ``allocator`` (an emulated pool's ``malloc``)."""
    pool = _DEFAULT_POOL if allocator is None else getattr(allocator, "__self__", None)
    if not isinstance(pool, MemoryPool):
        raise TypeError("the emulated cupy.cuda.using_allocator takes an emulated MemoryPool's malloc")
    _allocators.append(pool)
    try:
        yield
    finally:
        _allocators.pop()


_owners = {}  # id(root ndarray) -> [pool, size, live device arrays over it]
ALLOCATIONS = [0]  # serial number of the latest allocation: an op that moved it made new memory


def _drop(key):
    entry = _owners[key]
    entry[2] -= 1
    if entry[2] == 0:  # the last device array over this memory is gone: its block returns to the pool
        del _owners[key]
        entry[0]._release(entry[1])


def note_memory(array):
    """Called for every new device array: the memory it views is taken from the pool when it is new, and
    returns to the pool when the last device array over it is collected (as CuPy's MemoryPointer).
    Replays hold plain views only, so a captured temporary is freed when the step drops it, as on a GPU."""
    root = array
    while root.base is not None and hasattr(root.base, "base") and hasattr(root.base, "nbytes"):
        root = root.base
    key = id(root)
    entry = _owners.get(key)
    if entry is None:
        pool = _allocators[-1]
        entry = _owners[key] = [pool, pool.malloc(root.nbytes), 0]
        ALLOCATIONS[0] += 1
    entry[2] += 1
    weakref.finalize(array, _drop, key)


# ----------------------------------------------------------------------------- streams

class Stream:
    """cupy.cuda.Stream, emulated (see the module docstring)."""

    _next_ptr = [2]

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        if null:
            self.ptr = 0
        else:
            self.ptr = Stream._next_ptr[0]
            Stream._next_ptr[0] += 1
        self.non_blocking = non_blocking

    def __enter__(self):
        _streams.append(self)
        return self

    def __exit__(self, *exc):
        _streams.pop()
        return False

    def use(self):
        _streams[-1] = self
        return self

    def record(self, event=None):
        """Record ``event`` (a new one when None) on this stream; the emulation runs in order, so it only marks."""
        event = Event() if event is None else event
        event.stream = self
        return event

    def wait_event(self, event):
        """Later work on this stream waits for ``event`` (in order here anyway)."""
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
        return Graph._from_capture(capture.records)

    def __repr__(self):
        return f"<emulated Stream {self.ptr}>"


class Event:
    """cupy.cuda.Event: a marker in a stream (ordering only; the emulation runs everything in order)."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.stream = None

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
_streams = [Stream.null]
_sync_hook = [lambda what: None]  # emulated_cupy counts synchronisations through this


def get_current_stream():
    return _streams[-1]


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


def reset():
    """Forget any capture and current stream (between tests)."""
    CAPTURE.active = None
    _streams[:] = [Stream.null]
    del _allocators[1:]
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
    def _from_capture(cls, records):
        graph = cls.__new__(cls)
        graph._records = list(records)
        return graph

    @property
    def captured(self):
        """Names of the captured operations, in order (emulation only: a real graph has nodes)."""
        return [what for what, _ in self._records]

    def launch(self, stream=None):
        """Replay the captured work, in order, on the buffers it was captured on."""
        if CAPTURE.active is not None:
            # A graph launched into a capture would become a child graph; gpucnn never does that.
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: graph launch during a capture "
                                   "(not emulated)")
        GRAPH_LAUNCHES[0] += 1
        _replay_hook[0](self._records)

    def upload(self, stream=None):
        pass


_replay_hook = [lambda records: [replay() for _, replay in records]]
