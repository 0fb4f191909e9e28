"""Worker threads that split the batch, and the BLAS thread count that goes with them.

The fast path cuts a batch into one chunk per thread; each thread runs every layer of a
segment on its chunk (NumPy releases the GIL inside its loops and BLAS calls), so the
elementwise work, which NumPy runs on one core, uses every core too. Each matrix product
then runs on one BLAS thread: T threads of ours times one BLAS thread each, not T times T.

Thread count: ``gpucnn.config.num_threads``, else the environment variable
GPUCNN_NUM_THREADS, else the cores this process may use (``os.sched_getaffinity``).

BLAS threads: NumPy's wheels bundle OpenBLAS, whose thread count can be changed at run
time (``openblas_set_num_threads``; environment variables act only before NumPy loads).
We find the loaded OpenBLAS through ctypes and set it to one thread while our threads run,
restoring it after. Where NumPy uses another BLAS, threadpoolctl is used if it is
installed (optional); otherwise the BLAS keeps its own count, and ``blas_control()`` says so:
set OMP_NUM_THREADS=1 / MKL_NUM_THREADS=1 before starting Python in that case.
"""
import concurrent.futures
import contextlib
import ctypes
import glob
import os
import threading

import numpy

from ...config import config

__all__ = ["num_threads", "run_chunks", "single_threaded_blas", "blas_control", "chunk_bounds"]


def num_threads():
    """Worker threads of the fast path (>= 1)."""
    value = config.num_threads
    source = "gpucnn.config.num_threads"
    if value is None:
        value = os.environ.get("GPUCNN_NUM_THREADS", "").strip() or None
        source = "GPUCNN_NUM_THREADS"
    if value is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be a positive integer, got {value!r}") from None
    if count < 1:
        raise ValueError(f"{source} must be a positive integer, got {value!r}")
    return count


def chunk_bounds(n, chunks):
    """[(start, stop)] cutting n samples into ``chunks`` near-equal runs (the first ones one larger)."""
    chunks = max(1, min(chunks, n))
    base, extra = divmod(n, chunks)
    bounds, start = [], 0
    for i in range(chunks):
        stop = start + base + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


_pool = None
_pool_key = None  # (size, pid): a forked child has none of its parent's threads and makes its own pool
_pool_lock = threading.Lock()


def _executor(size):
    global _pool, _pool_key
    key = (size, os.getpid())
    with _pool_lock:
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key[1] == key[1]:
                _pool.shutdown(wait=True)
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="gpucnn-fast")
            _pool_key = key
        return _pool


def run_chunks(work, count):
    """[work(0), ..., work(count - 1)]: chunk 0 on the calling thread, the others on the pool.

    Every chunk finishes before this returns, also when one raises (the first error is re-raised).
    """
    if count == 1:
        return [work(0)]
    pool = _executor(max(1, count - 1))
    futures = [pool.submit(work, i) for i in range(1, count)]
    try:
        first = work(0)
    finally:
        concurrent.futures.wait(futures)
    return [first] + [f.result() for f in futures]


# ---------------------------------------------------------------------------------------------
# BLAS threads

def _loaded_libraries():
    """Paths of the shared libraries this process has loaded (Linux), else NumPy's bundled ones."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        paths = set()
    here = os.path.dirname(numpy.__file__)
    for pattern in ("../numpy.libs/*", ".dylibs/*", "../numpy.libs/*.dll"):
        paths.update(glob.glob(os.path.join(here, pattern)))
    return sorted(p for p in paths if "blas" in os.path.basename(p).lower())


_OPENBLAS_NAMES = [  # (set, get): scipy-openblas in NumPy's wheels (64-bit ints), then plain OpenBLAS
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
]


class _BlasControl:
    """How we change the BLAS thread count: 'openblas' (ctypes), 'threadpoolctl', or 'none'."""

    def __init__(self):
        self.kind, self.library = "none", None
        self._set = self._get = None
        self._limiter = None
        for path in _loaded_libraries():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for set_name, get_name in _OPENBLAS_NAMES:
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    self._set, self._get = getattr(lib, set_name), getattr(lib, get_name)
                    self._set.argtypes, self._set.restype = [ctypes.c_int], None
                    self._get.argtypes, self._get.restype = [], ctypes.c_int
                    self.kind, self.library = "openblas", path
                    return
        try:
            import threadpoolctl  # optional
        except ImportError:
            return
        self.kind, self._limiter = "threadpoolctl", threadpoolctl.threadpool_limits

    def get(self):
        return self._get() if self.kind == "openblas" else None

    @contextlib.contextmanager
    def limited(self, count):
        if self.kind == "openblas":
            before = self._get()
            if before == count:
                yield
                return
            self._set(count)
            try:
                yield
            finally:
                self._set(before)
        elif self.kind == "threadpoolctl":
            with self._limiter(limits=count, user_api="blas"):
                yield
        else:
            yield

    def describe(self):
        if self.kind == "openblas":
            return f"OpenBLAS through ctypes ({os.path.basename(self.library)})"
        if self.kind == "threadpoolctl":
            return "threadpoolctl"
        return "not controlled (no OpenBLAS found and threadpoolctl not installed)"


_blas = None


def blas_control():
    """The process-wide ``_BlasControl`` (found on first use)."""
    global _blas
    if _blas is None:
        _blas = _BlasControl()
    return _blas


def single_threaded_blas(chunks):
    """A context in which each BLAS call gets its share of the cores while ``chunks`` of ours run at once:
    num_threads() // chunks (one each when the batch is split over every thread)."""
    return blas_control().limited(max(1, num_threads() // max(1, chunks)))
