"""The memory pool of the emulated CuPy (tests/support/emulated_cupy), used by tests/support/emulated_streams.py.

- ``MemoryPool`` (cupy.cuda.MemoryPool): blocks are rounded to 512 bytes, freed blocks (the
  owning array collected) return to the pool, and an allocation takes the smallest free block
  that fits (splitting it), else grows the pool. Blocks are kept per device: CuPy's MemoryPool
  holds one SingleDeviceMemoryPool per device and serves the current device's. During a capture
  an allocation that the pool cannot serve from its free blocks raises ``CaptureAllocationError``
  (stricter than CUDA's relaxed capture mode, which CuPy uses; see emulated_streams.py).
- ``get_default_memory_pool()``, and ``using_allocator(pool.malloc)``: allocations inside come from
  that pool.
- ``note_memory(array)``: every new device array takes its memory from the pool in use, and gives
  it back when the last device array over it is collected (as CuPy's MemoryPointer).
- ``current_device_id()``: the current device of the emulated machine (the hook is set by
  tests/support/emulated_cupy/tracking.py), which the pool and the streams are bound to.

Blind spot: the pool does not coalesce neighbouring free blocks (CuPy does), so it may refuse a
capture-time allocation that CuPy would serve from two merged blocks (never the other way round).
"""
import contextlib
import weakref

__all__ = ["ALLOCATIONS", "CaptureAllocationError", "MemoryPool", "current_device_id", "get_default_memory_pool",
           "note_memory", "reset", "using_allocator"]

_ROUND = 512  # CuPy's allocation unit

_device_hook = [lambda: 0]  # the current device's id: set by tests/support/emulated_cupy/tracking.py
_active_capture = [lambda: None]  # the capture in progress (or None): set by tests/support/emulated_streams.py


def current_device_id():
    return _device_hook[0]()


class CaptureAllocationError(RuntimeError):
    """An allocation during stream capture that the memory pool could not serve from free blocks."""


class MemoryPool:
    """cupy.cuda.MemoryPool, emulated for its bookkeeping (see the module docstring)."""

    def __init__(self):
        self._free_by_device = {}  # device id -> sizes of its free blocks (CuPy: one pool per device)
        self._used = 0
        self._total = 0
        self.grown = 0  # how many times the pool grew (a cudaMalloc)

    @property
    def _free(self):
        """The free blocks of the current device."""
        return self._free_by_device.setdefault(current_device_id(), [])

    def malloc(self, nbytes):
        """Take a block of ``nbytes`` (rounded up) on the current device; returns its size. Raises during
        capture if it must grow."""
        size = max(_ROUND, -(-int(nbytes) // _ROUND) * _ROUND)
        free = self._free
        fitting = [s for s in free if s >= size]
        if fitting:
            best = min(fitting)
            free.remove(best)
            if best > size:
                free.append(best - size)
        else:
            capture = _active_capture[0]()
            if capture is not None:
                capture.invalidate(f"an allocation of {nbytes} bytes")
                raise CaptureAllocationError(
                    f"an allocation of {nbytes} bytes during stream capture, which the memory pool cannot serve "
                    f"from its free blocks ({sorted(free)}): warm the pool with one eager step before "
                    f"capturing (emulation rule; CUDA's relaxed mode would cudaMalloc inside the capture)")
            self._total += size
            self.grown += 1
        self._used += size
        return size

    def _release(self, size, device_id):
        self._used -= size
        self._free_by_device.setdefault(device_id, []).append(size)

    def used_bytes(self):
        return self._used

    def free_bytes(self):
        return self._total - self._used

    def total_bytes(self):
        return self._total

    def free_all_blocks(self, stream=None):
        self._total -= sum(self._free)
        self._free[:] = []


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


_owners = {}  # id(root ndarray) -> [pool, size, live device arrays over it, device id]
ALLOCATIONS = [0]  # serial number of the latest allocation: an op that moved it made new memory


def _drop(key):
    entry = _owners[key]
    entry[2] -= 1
    if entry[2] == 0:  # the last device array over this memory is gone: its block returns to the pool
        del _owners[key]
        entry[0]._release(entry[1], entry[3])


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
        entry = _owners[key] = [pool, pool.malloc(root.nbytes), 0, current_device_id()]
        ALLOCATIONS[0] += 1
    entry[2] += 1
    weakref.finalize(array, _drop, key)


def reset():
    """Allocations from the default pool again (between tests)."""
    del _allocators[1:]
