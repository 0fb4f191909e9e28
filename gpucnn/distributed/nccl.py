"""Collectives on CuPy arrays through NCCL, one communicator per job, its id shared over MPI.

The calls into NCCL itself are the few lines of ``CupyNccl``; everything around them (the
device, the stream, the deadline) is in ``NcclBackend``, so that tests can put a stand-in
at exactly that boundary (``open_nccl``) and run the rest on the emulated GPU.
NCCL works asynchronously on the stream: completion is awaited by polling an event, so that
a dead peer ends in ``DistributedTimeout`` (and the communicator is aborted) instead of a hang.
"""
import time

from .. import backend
from .mpi import DistributedTimeout

__all__ = ["NcclBackend", "CupyNccl", "open_nccl"]


class CupyNccl:
    """The NCCL calls: ``cupy.cuda.nccl.NcclCommunicator`` over raw device pointers."""

    def __init__(self, mpi, device_id):
        from cupy.cuda import nccl
        self.nccl = nccl
        unique_id = mpi.broadcast_object(nccl.get_unique_id() if mpi.rank == 0 else None)
        with backend.cupy_or_none().cuda.Device(device_id):
            self.comm = nccl.NcclCommunicator(mpi.size, unique_id, mpi.rank)
        self.types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "float16": nccl.NCCL_FLOAT16}

    def all_reduce_sum(self, array, stream):
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self.types[array.dtype.name],
                            self.nccl.NCCL_SUM, stream.ptr)

    def broadcast(self, array, root, stream):
        self.comm.bcast(array.data.ptr, array.size, self.types[array.dtype.name], root, stream.ptr)

    def check_error(self):
        self.comm.check_async_error()

    def abort(self):
        self.comm.abort()


def open_nccl(mpi, device_id):
    """The NCCL communicator of this job on ``device_id`` (a collective: every rank calls it)."""
    return CupyNccl(mpi, device_id)


class NcclBackend:
    """Sum and broadcast of contiguous CuPy arrays, in place, over NCCL.

    Args:
        mpi: the job's MpiBackend (shares the NCCL id, gives rank and size).
        device_id: this rank's GPU.
        timeout: seconds a collective may take before ``DistributedTimeout``.
    """

    def __init__(self, mpi, device_id, timeout, opener=None):
        self.rank, self.size, self.device_id, self.timeout = mpi.rank, mpi.size, device_id, float(timeout)
        self.cupy = backend.cupy_or_none()
        self.calls = (opener or open_nccl)(mpi, device_id)

    def all_reduce_sum(self, array):
        """array <- the sum of ``array`` over all ranks (in place)."""
        self._run(array, lambda stream: self.calls.all_reduce_sum(array, stream), f"all-reduce of {array.size}")

    def broadcast(self, array, root=0):
        """array <- rank ``root``'s ``array`` (in place)."""
        self._run(array, lambda stream: self.calls.broadcast(array, root, stream), f"broadcast of {array.size}")

    def _run(self, array, call, what):
        if not isinstance(array, self.cupy.ndarray) or not array.flags.c_contiguous:
            raise TypeError(f"NCCL collectives take contiguous CuPy arrays, got {type(array).__name__}")
        if array.device.id != self.device_id:
            raise ValueError(f"rank {self.rank}: array on cuda:{array.device.id}, this rank's GPU is "
                             f"cuda:{self.device_id}")
        with self.cupy.cuda.Device(self.device_id):
            stream = self.cupy.cuda.get_current_stream()
            call(stream)
            done = self.cupy.cuda.Event(block=False, disable_timing=True)
            done.record(stream)
            deadline = time.monotonic() + self.timeout
            pause = 1e-5
            while not done.done:
                self.calls.check_error()
                if time.monotonic() > deadline:
                    self.calls.abort()
                    raise DistributedTimeout(f"rank {self.rank} of {self.size}: NCCL {what} did not complete within "
                                             f"{self.timeout:g} s; another rank has died or hangs")
                time.sleep(pause)
                pause = min(2 * pause, 1e-3)
