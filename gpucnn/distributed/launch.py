"""Where this process stands in an MPI job: launched by mpirun or not, its rank on its node, its device.

Read from the launcher's environment before MPI is touched, so that a process started without
mpirun gets a clear error instead of a silent one-rank "job".
"""
import os
import socket

from .. import backend

__all__ = ["DistributedError", "launched_by_mpi", "not_launched_message", "local_device"]

# Variables that MPI launchers set in every process they start: Open MPI, PMIx (Open MPI 5, srun --mpi=pmix),
# MPICH/Intel MPI (Hydra) and Slurm's PMI-2.
_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    """Distributed training cannot start or cannot go on (not under MPI, a missing package, a lost rank)."""


def launched_by_mpi(environ=None):
    """True when an MPI launcher (mpirun, mpiexec, srun) started this process."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in _LAUNCHER_VARIABLES)


def not_launched_message(what="training"):
    return (f"distributed {what} needs an MPI launcher, and this process was not started by one; launch one "
            f"process per GPU (or per CPU socket), e.g.\n"
            f"    mpirun -np 2 python scripts/train.py --distributed ...\n"
            f"    mpirun -np 2 python -m gpucnn train --distributed ...\n"
            f"(as root add --allow-run-as-root; with more processes than cores add --oversubscribe)")


def local_device(requested, local_rank, local_size, gpu_count=None):
    """The device of the rank with index ``local_rank`` among the ``local_size`` ranks of its node.

    'cpu' stays 'cpu'; 'cuda' and 'auto' (when a GPU is usable) give every rank its own GPU,
    'cuda:<local rank>'. Fewer GPUs than ranks on the node is an error that says so.
    """
    name = (requested or "auto").strip().lower()
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda:"):
        raise DistributedError(f"device {requested!r}: with --distributed every rank uses the GPU of its local "
                               f"rank; ask for 'cuda' (or 'auto') and start one process per GPU")
    if name not in ("cuda", "auto"):
        return backend.resolve_device(requested)  # raises its own error for a bad name
    if gpu_count is None:
        reason = backend.gpu_unavailable_reason()
        if reason is not None:
            if name == "auto":
                return "cpu"
            raise DistributedError(f"device 'cuda' was requested but {reason}")
        gpu_count = backend.cupy_or_none().cuda.runtime.getDeviceCount()
    if gpu_count < local_size:
        raise DistributedError(
            f"{local_size} ranks run on node {socket.gethostname()} but it has only {gpu_count} CUDA GPU(s): each "
            f"rank needs its own GPU; start at most {gpu_count} process(es) per node (e.g. mpirun -np {gpu_count}, "
            f"or --map-by ppr:{gpu_count}:node) or train on the CPU with --device cpu")
    return f"cuda:{local_rank}"
