"""The one interface training uses: a job of ``size`` ranks that sum and broadcast arrays.

Which engine moves an array is chosen by the array's device: NumPy arrays go through MPI,
CuPy arrays through NCCL (its communicator opened on first use, its id shared over MPI).
Small host-side numbers (counts, losses) always go through MPI.
"""
import os
import sys
import traceback

from .. import backend
from .launch import DistributedError, launched_by_mpi, not_launched_message
from .mpi import MpiBackend, import_mpi
from .nccl import NcclBackend

__all__ = ["Communicator", "init", "run_job", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 300.0  # seconds; $GPUCNN_DIST_TIMEOUT overrides it

_world = []


class Communicator:
    """A job of ``size`` ranks: this one is ``rank`` (``local_rank`` of ``local_size`` on its node).

    Args:
        mpi: an MpiBackend. local_rank, local_size: this rank's place on its node.
        nccl_opener: how to open the NCCL communicator (tests put a stand-in here).

    Example:
        >>> comm = gpucnn.distributed.init()       # under mpirun
        >>> comm.all_reduce_sum(flat_gradients)     # NumPy: MPI, CuPy: NCCL; in place
    """

    def __init__(self, mpi, local_rank, local_size, nccl_opener=None):
        self.mpi = mpi
        self.rank, self.size = mpi.rank, mpi.size
        self.local_rank, self.local_size = local_rank, local_size
        self.timeout = mpi.timeout
        self._nccl_opener = nccl_opener
        self._nccl = None

    @property
    def is_root(self):
        """True on rank 0, the rank that writes checkpoints, logs and metrics."""
        return self.rank == 0

    def all_reduce_sum(self, array):
        """array <- its sum over all ranks, in place (a contiguous NumPy or CuPy array)."""
        self._engine(array).all_reduce_sum(array)

    def broadcast(self, array, root=0):
        """array <- rank ``root``'s values, in place."""
        self._engine(array).broadcast(array, root)

    def sum_over_ranks(self, *values):
        """The sums over all ranks of a few host numbers, as floats (counts stay exact below 2**53)."""
        return tuple(float(v) for v in self.mpi.sum_host(values))

    def barrier(self):
        self.mpi.barrier()

    def abort(self, status=1):
        """End every rank of the job (MPI_Abort)."""
        self.mpi.abort(status)

    def _engine(self, array):
        if backend.get_array_module(array).__name__ == "numpy":
            return self.mpi
        if self._nccl is None:
            self._nccl = NcclBackend(self.mpi, array.device.id, self.timeout, opener=self._nccl_opener)
        return self._nccl

    def __repr__(self):
        return (f"Communicator(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, "
                f"local_size={self.local_size})")


def init(timeout=None):
    """The job's Communicator (created once per process). Call it in every rank, under mpirun.

    Args:
        timeout: seconds a collective may wait for the other ranks before the job is ended
            (default $GPUCNN_DIST_TIMEOUT, else 300).

    Raises:
        DistributedError: not started by an MPI launcher (the message says how), or mpi4py missing.

    With more than one rank, an uncaught exception in any rank ends the whole job (MPI_Abort),
    so that the others exit with an error instead of waiting for it.
    """
    if _world:
        return _world[0]
    if not launched_by_mpi():
        raise DistributedError(not_launched_message())
    if timeout is None:
        timeout = float(os.environ.get("GPUCNN_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    MPI = import_mpi()
    world = MPI.COMM_WORLD
    local_rank, local_size = _local_place(world, MPI)
    comm = Communicator(MpiBackend(world, timeout), local_rank, local_size)
    if comm.size > 1:
        _abort_on_uncaught_exception(comm)
    _world.append(comm)
    return comm


def _local_place(world, MPI):
    """(rank on this node, ranks on this node): from Open MPI's environment, else an MPI split by node."""
    rank, size = os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK"), os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE")
    if rank is not None and size is not None:
        return int(rank), int(size)
    node = world.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def _abort_on_uncaught_exception(comm):
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        print(f"rank {comm.rank}: uncaught {kind.__name__}: ending every rank of the job", file=sys.stderr)
        sys.stderr.flush()
        comm.abort(1)

    sys.excepthook = hook


def run_job(main, *args):
    """Run ``main(*args) -> exit status`` in every rank; an error in one rank ends them all.

    Output on stdout is kept to rank 0 (the other ranks' stdout goes to /dev/null; errors
    still reach stderr). A rank that returns a non-zero status or raises ends the job through
    MPI_Abort with that status, so no rank waits for a peer that has stopped.
    """
    try:
        comm = init()
    except DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not comm.is_root:
        sys.stdout = open(os.devnull, "w")
    try:
        status = main(*args)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        status = 1
    if status and comm.size > 1:
        print(f"rank {comm.rank}: exit status {status}: ending every rank of the job", file=sys.stderr)
        sys.stderr.flush()
        comm.abort(status)
    return status
