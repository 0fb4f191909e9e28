"""Data-parallel training over MPI (NumPy arrays) and NCCL (CuPy arrays).

Launch one process per GPU (or per group of CPU cores) with an MPI launcher::

    mpirun -np 2 python scripts/train.py --distributed ...

Every rank builds the same model; ``fit(..., distributed=True)`` then broadcasts rank 0's
weights, gives each rank its shard of every global batch, and averages the gradients in one
all-reduce per step (``data_parallel.py`` says exactly what happens). Checkpoints, the progress
bar and the CLI's logs and files come from rank 0.

- ``init()`` -> the job's Communicator (rank, size, local rank; sum and broadcast of arrays).
- ``local_device(requested, local_rank, local_size)`` -> this rank's device ('cuda:<local rank>').
- ``run_job(main, *args)``: the CLI's wrapper; a failing rank ends the whole job.
"""
from .communicator import DEFAULT_TIMEOUT, Communicator, init, run_job
from .data_parallel import DataParallel
from .launch import DistributedError, launched_by_mpi, local_device, not_launched_message
from .mpi import DistributedTimeout

__all__ = ["Communicator", "DataParallel", "DistributedError", "DistributedTimeout", "DEFAULT_TIMEOUT", "init",
           "run_job", "local_device", "launched_by_mpi", "not_launched_message", "data_parallel"]


def data_parallel(distributed, model, batch_size, num_samples):
    """fit()'s hooks: ``distributed`` is True (the job's communicator, from ``init()``) or a Communicator."""
    comm = distributed if isinstance(distributed, Communicator) else init()
    return DataParallel(comm, model, batch_size, num_samples)
