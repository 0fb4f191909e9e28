"""Collectives on NumPy arrays through MPI (mpi4py), each with a deadline.

Every collective is started non-blocking and polled with short sleeps until it completes or
``timeout`` seconds pass: a rank whose peer died or hangs raises ``DistributedTimeout`` instead
of waiting forever (the job then ends through ``MPI.Abort``, see ``gpucnn.distributed``). Sleeping
between polls also keeps a waiting rank from spinning on a core that a working rank needs.
"""
import pickle
import time

import numpy

from .launch import DistributedError

__all__ = ["MpiBackend", "DistributedTimeout", "import_mpi"]


class DistributedTimeout(DistributedError):
    """A collective did not complete in time: a peer rank died or hangs."""


def import_mpi():
    """``mpi4py.MPI`` (initialising MPI), or a DistributedError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"distributed training on the CPU needs mpi4py and an MPI library ({exc}); install "
                               f"them, e.g. apt-get install openmpi-bin libopenmpi-dev && pip install mpi4py"
                               ) from exc
    return MPI


class MpiBackend:
    """Sum and broadcast of contiguous NumPy arrays, in place, over an MPI communicator.

    Args:
        comm: an mpi4py communicator (e.g. ``MPI.COMM_WORLD``).
        timeout: seconds a collective may take before ``DistributedTimeout``.
    """

    def __init__(self, comm, timeout):
        self.MPI = import_mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = float(timeout)

    def all_reduce_sum(self, array):
        """array <- the sum of ``array`` over all ranks (in place)."""
        _check_contiguous(array)
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM), f"all-reduce of {array.size}")

    def broadcast(self, array, root=0):
        """array <- rank ``root``'s ``array`` (in place)."""
        _check_contiguous(array)
        self._wait(self.comm.Ibcast(array, root=root), f"broadcast of {array.size}")

    def sum_host(self, values):
        """The sums over all ranks of a few numbers (a float64 NumPy vector)."""
        local = numpy.asarray(values, dtype=numpy.float64)
        total = numpy.empty_like(local)
        self._wait(self.comm.Iallreduce(local, total, op=self.MPI.SUM), "sum of counters")
        return total

    def broadcast_object(self, value, root=0):
        """A small picklable object (e.g. the NCCL id) from rank ``root`` to all."""
        size = numpy.zeros(1, dtype=numpy.int64)
        payload = None
        if self.rank == root:
            payload = numpy.frombuffer(pickle.dumps(value), dtype=numpy.uint8)
            size[0] = payload.size
        self.broadcast(size, root)
        if self.rank != root:
            payload = numpy.empty(int(size[0]), dtype=numpy.uint8)
        self.broadcast(payload, root)
        return pickle.loads(payload.tobytes())

    def barrier(self):
        self._wait(self.comm.Ibarrier(), "barrier")

    def abort(self, status=1):
        """End every rank of the job now (MPI_Abort); does not return."""
        self.comm.Abort(status)

    def _wait(self, request, what):
        deadline = time.monotonic() + self.timeout
        pause = 1e-5
        while not request.Test():
            if time.monotonic() > deadline:
                raise DistributedTimeout(
                    f"rank {self.rank} of {self.size}: {what} did not complete within {self.timeout:g} s; another "
                    f"rank has died or hangs (the limit: $GPUCNN_DIST_TIMEOUT or gpucnn.distributed.init(timeout=))")
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)


def _check_contiguous(array):
    if not isinstance(array, numpy.ndarray) or not array.flags.c_contiguous:
        raise TypeError(f"MPI collectives take contiguous NumPy arrays, got {type(array).__name__}")
