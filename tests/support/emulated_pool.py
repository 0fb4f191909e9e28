"""The memory pool of the emulated CuPy (tests/support/emulated_cupy), used by tests/support/emulated_streams.py.

- ``MemoryPool`` (cupy.cuda.MemoryPool): blocks are rounded to 512 bytes, freed blocks (the
  owning array collected) return to the pool and merge with free neighbours of the same growth
  (CuPy's chunks merge with their free neighbours of the same cudaMalloc), and an allocation takes
  the smallest free block that fits (splitting it), else grows the pool by a new allocation of
  its size. Blocks are kept per device: CuPy's MemoryPool
  holds one SingleDeviceMemoryPool per device and serves the current device's. During a capture
  an allocation that the pool cannot serve from its free blocks raises ``CaptureAllocationError``
  (stricter than CUDA's relaxed capture mode, which CuPy uses; see emulated_streams.py).
- ``get_default_memory_pool()``, and ``using_allocator(pool.malloc)``: allocations inside come from
  that pool.
- ``note_memory(array)``: every new device array takes its memory from the pool in use, and gives
  it back when the last device array over it is collected (as CuPy's MemoryPointer).
- ``current_device_id()``: the current device of the emulated machine (the hook is set by
  tests/support/emulated_cupy/tracking.py), which the pool and the streams are bound to.

Blind spot: CuPy picks among the free chunks by size bins (``SingleDeviceMemoryPool._malloc``), the
emulation by the smallest that fits, so their blocks may split differently.
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
        self._free_by_device = {}  # device id -> free blocks [(growth, offset, size)] (CuPy: one pool per device)
        self._used = 0
        self._total = 0
        self.grown = 0  # how many times the pool grew (a cudaMalloc)

    @property
    def _free(self):
        """The free blocks of the current device."""
        return self._free_by_device.setdefault(current_device_id(), [])

    def malloc(self, nbytes):
        """Take a block of ``nbytes`` (rounded up) on the current device; returns (growth, offset, size). Raises
        during capture if it must grow."""
        size = max(_ROUND, -(-int(nbytes) // _ROUND) * _ROUND)
        free = self._free
        fitting = [b for b in free if b[2] >= size]
        if fitting:
            best = min(fitting, key=lambda b: (b[2], b[0], b[1]))
            free.remove(best)
            growth, offset, whole = best
            if whole > size:
                free.append((growth, offset + size, whole - size))
            block = (growth, offset, size)
        else:
            capture = _active_capture[0]()
            if capture is not None:
                capture.invalidate(f"an allocation of {nbytes} bytes")
                raise CaptureAllocationError(
                    f"an allocation of {nbytes} bytes during stream capture, which the memory pool cannot serve "
                    f"from its free blocks ({sorted(b[2] for b in free)}): warm the pool with one eager step before "
                    f"capturing (emulation rule; CUDA's relaxed mode would cudaMalloc inside the capture)")
            self._total += size
            self.grown += 1
            block = (self.grown, 0, size)
        self._used += size
        return block

    def _release(self, block, device_id):
        """The block is free again, merged with its free neighbours of the same growth."""
        growth, offset, size = block
        self._used -= size
        free = self._free_by_device.setdefault(device_id, [])
        for neighbour in [b for b in free if b[0] == growth and (b[1] + b[2] == offset or offset + size == b[1])]:
            free.remove(neighbour)
            offset, size = min(offset, neighbour[1]), size + neighbour[2]
        free.append((growth, offset, size))

    def used_bytes(self):
        return self._used

    def free_bytes(self):
        return self._total - self._used

    def total_bytes(self):
        return self._total

    def free_all_blocks(self, stream=None):
        """Give back every growth that is wholly free (CuPy frees the chunks that are not split)."""
        whole = {b[0] for b in self._free}
        live = {entry[1][0] for entry in _owners.values() if entry[0] is self}
        for block in [b for b in self._free if b[0] in whole - live]:
            self._total -= block[2]
            self._free.remove(block)


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
