"""One rank of the distributed tests, started by tests/distributed/test_distributed.py under mpirun.

    mpirun -np 2 python tests/distributed/worker.py train OUT        # SGD, Adam, resume -> OUT/rank<r>.npz
    mpirun -np 2 python tests/distributed/worker.py fault MODE       # rank 1 dies (kill), hangs or raises
    mpirun -np 2 python tests/distributed/worker.py nccl OUT         # emulated GPUs, NCCL faked over MPI
    mpirun -np 2 python tests/distributed/worker.py nccl-real OUT    # real GPUs and NCCL
    mpirun -np 2 python tests/distributed/worker.py cli DATA --out OUT --epochs 2   # gpucnn train --distributed

The models and data are built here, so that the test can train the single-process reference
from the same functions.
"""
import json
import os
import signal
import sys
import time

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE)), os.path.dirname(HERE)]

import gpucnn  # noqa: E402
import gpucnn.distributed  # noqa: E402,F401
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU  # noqa: E402
from gpucnn.nn.losses import SoftmaxCrossEntropy  # noqa: E402
from gpucnn.optim.optimizers import SGD, Adam  # noqa: E402
from gpucnn.train.loop import fit  # noqa: E402

F64 = numpy.float64
BATCH = 16  # global batch; 40 samples -> batches of 16, 16 and 8


def data(seed=7):
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((40, 1, 8, 8))
    y = rng.integers(0, 3, 40)
    return (x, y), (x[:10] * 0.5, y[:10])


def model(batchnorm=False, extra=()):
    bn = [BatchNorm2D(2, dtype=F64)] if batchnorm else []
    return gpucnn.Sequential([Conv2D(1, 2, 3, padding="same", dtype=F64, rng=1), *bn, ReLU(), MaxPool2D(2),
                              *extra, Flatten(), Dense(2 * 4 * 4, 3, dtype=F64, rng=2)])


def dense_model():
    """Matrix products and the loss's kernel only (the NCCL scenario runs that kernel in the host harness)."""
    return gpucnn.Sequential([Flatten(), Dense(64, 8, dtype=F64, rng=1), ReLU(), Dense(8, 3, dtype=F64, rng=2)])


def optimizer(name, params):
    return SGD(params, lr=0.1, momentum=0.9) if name == "sgd" else Adam(params, lr=0.01)


def train(name, epochs, distributed, batchnorm=False, checkpoint=None, resume=False, perturb_rank=None):
    """Weights ({name: array}) and history after ``epochs`` epochs. ``perturb_rank``: that rank starts from other
    weights, which the broadcast of rank 0's must overwrite."""
    (x, y), validation = data()
    net = model(batchnorm)
    if perturb_rank is not None and gpucnn.distributed.init().rank == perturb_rank:
        for p in net.parameters():
            p.data += 1.0
    opt = optimizer(name, net.parameters())
    history = fit(net, SoftmaxCrossEntropy(), opt, x, y, epochs, batch_size=BATCH, validation=validation,
                  seed=3, checkpoint=checkpoint, resume=resume, progress=False, distributed=distributed)
    return net.named_state(), history


def run_train(out):
    comm = gpucnn.distributed.init()
    results, histories = {}, {}
    for name in ("sgd", "adam"):  # each rank names its own checkpoint file: only rank 0's may appear
        state, histories[name] = train(name, 2, True, perturb_rank=1,
                                       checkpoint=os.path.join(out, f"{name}-rank{comm.rank}.npz"))
        results.update({f"{name}.{k}": v for k, v in state.items()})
    # resume: one epoch with a checkpoint, then fresh objects resume it to three; against three straight
    path = os.path.join(out, "resume.npz")
    straight, _ = train("adam", 3, True, batchnorm=True)
    train("adam", 1, True, batchnorm=True, checkpoint=path)
    comm.barrier()  # rank 0 has written the checkpoint
    resumed, _ = train("adam", 3, True, batchnorm=True, checkpoint=path, resume=True)
    results.update({f"straight.{k}": v for k, v in straight.items()})
    results.update({f"resumed.{k}": v for k, v in resumed.items()})
    numpy.savez(os.path.join(out, f"rank{comm.rank}.npz"), **results)
    with open(os.path.join(out, f"rank{comm.rank}.json"), "w") as f:
        json.dump({"histories": histories}, f)


def residual_model():
    """A Model with a BatchNorm nested in a Sequential inside it: its running statistics must be averaged too."""
    x = gpucnn.Input((1, 8, 8), dtype=F64)
    h = Conv2D(1, 2, 3, padding="same", dtype=F64, rng=1)(x)
    h = gpucnn.Sequential([BatchNorm2D(2, dtype=F64), ReLU()], name="block")(h)
    h = ReLU()(gpucnn.nn.layers.Add()([h, Conv2D(1, 2, 1, dtype=F64, rng=3)(x)]))
    return gpucnn.Model(x, Dense(2 * 8 * 8, 3, dtype=F64, rng=2)(Flatten()(h)))


def run_model(out):
    """A Model trained data-parallel: every rank ends with the same state, nested buffers included."""
    comm = gpucnn.distributed.init()
    (x, y), validation = data()
    net = residual_model()
    fit(net, SoftmaxCrossEntropy(), optimizer("adam", net.parameters()), x, y, 2, batch_size=BATCH,
        validation=validation, seed=3, progress=False, distributed=True)
    numpy.savez(os.path.join(out, f"model-rank{comm.rank}.npz"), **net.named_state())


class Fault(Layer):
    """Identity, except that on rank 1 its ``at``-th forward kills the process, hangs or raises."""

    def __init__(self, mode, rank, at=2):
        super().__init__()
        self.mode, self.rank, self.at, self.calls = mode, rank, at, 0

    def forward(self, x):
        self.calls += 1
        if self.rank == 1 and self.calls == self.at:
            print(f"rank 1: fault '{self.mode}' now", file=sys.stderr, flush=True)
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif self.mode == "hang":
                time.sleep(120)
            else:
                raise RuntimeError("injected fault")
        return x

    def backward(self, grad_out, need_input_grad=True):
        return grad_out


def run_fault(mode):
    comm = gpucnn.distributed.init()
    (x, y), _ = data()
    net = model(extra=[Fault(mode, comm.rank)])
    fit(net, SoftmaxCrossEntropy(), Adam(net.parameters()), x, y, 5, batch_size=BATCH, progress=False,
        distributed=True)
    print(f"rank {comm.rank}: finished", flush=True)


class NcclOverMpi:
    """Stands in for the NCCL calls (gpucnn.distributed.nccl.CupyNccl) on the emulated GPU: the same
    arguments are checked, and the sums travel through MPI on host copies of the device arrays."""

    def __init__(self, mpi, device_id):
        from support import emulated_cupy
        self.emulated, self.mpi, self.device_id = emulated_cupy, mpi, device_id
        self.unique_id = mpi.broadcast_object(b"id-from-rank-0" if mpi.rank == 0 else None)
        self.calls = []

    def _host(self, array, stream):
        assert isinstance(array, self.emulated.DeviceArray) and array.flags.c_contiguous
        assert array.device.id == self.device_id == self.emulated.current_device(), "NCCL call off this rank's GPU"
        assert stream is not None
        return self.emulated.to_host(array)

    def all_reduce_sum(self, array, stream):
        self.calls.append(("all_reduce_sum", array.dtype.name, array.size))
        with self.emulated.internal():  # device -> host, MPI, host -> device
            host = self._host(array, stream)
            self.mpi.all_reduce_sum(host)
            array[...] = host

    def broadcast(self, array, root, stream):
        self.calls.append(("broadcast", array.dtype.name, array.size))
        with self.emulated.internal():
            host = self._host(array, stream)
            self.mpi.broadcast(host, root)
            array[...] = host

    def check_error(self):
        pass

    def abort(self):
        pass


def _kernels_to_the_host_harness():
    """Our kernel launches (the loss is one) run in the host harness the test built ($GPUCNN_TEST_HARNESS)."""
    import importlib
    import tempfile

    from support.kernel_harness import FakeKernel, Harness

    harness = Harness(os.environ["GPUCNN_TEST_HARNESS"], tempfile.mkdtemp(prefix="gpucnn-harness-rank"))
    loader = importlib.import_module("gpucnn.ops.cuda.loader")
    loader.get_kernel = lambda file, expression: FakeKernel(loader, harness, file, expression)


def run_nccl(out):
    """Emulated GPUs (this rank's own, cuda:<local rank>), NCCL faked at its calls: gradients of shards
    averaged on the device, against the full batch's gradient on the CPU."""
    from support import emulated_cupy
    from gpucnn import backend
    from gpucnn.distributed import Communicator, DataParallel, local_device
    from gpucnn.distributed.mpi import MpiBackend, import_mpi

    world = import_mpi().COMM_WORLD
    opened = []

    def opener(mpi, device_id):
        opened.append(NcclOverMpi(mpi, device_id))
        return opened[-1]

    mpi = MpiBackend(world, timeout=30)
    (x, y), _ = data()
    reference = dense_model()
    if mpi.rank == 1:  # rank 1 starts from other weights: the broadcast must replace them
        for p in reference.parameters():
            p.data += 1.0
    with emulated_cupy.cupy_replaced_by(emulated_cupy.make_fake_cupy()):
        backend._probe_cupy.cache_clear()
        try:
            _kernels_to_the_host_harness()
            comm = Communicator(mpi, local_rank=mpi.rank, local_size=mpi.size, nccl_opener=opener)
            device = local_device("cuda", comm.local_rank, comm.local_size)
            net = dense_model().to(device)
            dp = DataParallel(comm, net, BATCH, len(x))
            with emulated_cupy.Device(comm.local_rank):  # as a rank would: its own GPU made current
                for p, q in zip(net.parameters(), reference.parameters()):
                    p.data[...] = backend.to_device(q.data, device)
                dp.start(0, 0)
                xb, yb = dp.shard(backend.to_device(x[:BATCH], device), backend.to_device(y[:BATCH], device))
                loss_fn = SoftmaxCrossEntropy()
                loss_fn.forward(net.forward(xb), yb)
                net.zero_grad()
                net.backward(loss_fn.backward())
                dp.average_gradients()
            with emulated_cupy.internal():
                result = {f"{i}": emulated_cupy.to_host(p.data).copy() for i, p in enumerate(net.parameters())}
                result.update({f"grad{i}": emulated_cupy.to_host(p.grad).copy()
                               for i, p in enumerate(net.parameters())})
            calls = opened[0].calls if opened else []
            devices = sorted({type(p.data).__name__ + ":" + str(p.data.device.id) for p in net.parameters()})
        finally:
            backend._probe_cupy.cache_clear()
    numpy.savez(os.path.join(out, f"nccl{mpi.rank}.npz"), **result)
    with open(os.path.join(out, f"nccl{mpi.rank}.json"), "w") as f:
        json.dump({"device": device, "calls": calls, "devices": devices}, f)


def run_nccl_real(out):
    """Real GPUs, one per rank: a short fit through NCCL; weights saved for the test to compare."""
    from gpucnn import backend
    comm = gpucnn.distributed.init()
    device = gpucnn.distributed.local_device("cuda", comm.local_rank, comm.local_size)
    (x, y), validation = data()
    net = model().to(device)
    opt = optimizer("adam", net.parameters())
    fit(net, SoftmaxCrossEntropy(), opt, backend.to_device(x, device), backend.to_device(y, device), 2,
        batch_size=BATCH, seed=3, progress=False, distributed=True)
    numpy.savez(os.path.join(out, f"real{comm.rank}.npz"),
                **{k: backend.asnumpy(v) for k, v in net.named_state().items()})


def run_cli(data_dir, *argv):
    """``gpucnn train --distributed`` on the tiny IDX data set the test wrote (its sample counts patched in)."""
    from gpucnn.commands import train as train_command
    from gpucnn.data import datasets
    datasets._NUM_SAMPLES.update(train=64, test=32)
    return train_command.main(["--data-dir", data_dir, "--device", "cpu", "--batch-size", "16", "--no-progress",
                               "--distributed", *argv])


if __name__ == "__main__":
    if sys.argv[1] == "cli":
        sys.exit(run_cli(*sys.argv[2:]))
    scenario, arg = sys.argv[1], sys.argv[2]
    if scenario in ("train", "fault", "nccl-real", "model"):  # these call gpucnn.distributed.init(): errors end the job
        {"train": run_train, "fault": run_fault, "nccl-real": run_nccl_real, "model": run_model}[scenario](arg)
        sys.exit(0)
    try:
        run_nccl(arg)
    except BaseException:  # without gpucnn.distributed.init(), end the job here
        import traceback
        traceback.print_exc()
        from mpi4py import MPI
        MPI.COMM_WORLD.Abort(1)
