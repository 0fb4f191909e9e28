"""``gpucnn bench --distributed``: data-parallel training steps against one process, same global batch.

    mpirun -np 2 python -m gpucnn bench --distributed --device cpu --batch-sizes 128,256

Every rank builds the reference network (Fashion-MNIST CNN) with Adam on random data. For each
global batch B: rank 0 times single-process steps on all B images while the other ranks
wait (sleeping, not spinning: gpucnn's collectives poll with pauses), and every rank times
distributed steps on its B/N images, the gradient all-reduce included; the two alternate in
four rounds. Each figure is the median of --repeats steps after --warmup, every distributed step
started together (a barrier outside the timed region) and the device synchronised.
Scaling efficiency = N-rank images/s / (N x one-process images/s).
"""
import json
import os
import platform
import statistics
import time

import numpy

from .. import backend, distributed
from ..nn.losses import SoftmaxCrossEntropy, check_label_range
from ..nn.models import fashion_cnn
from ..optim.optimizers import Adam
from .timing import synchronizer

__all__ = ["main"]


def main(args):
    """Run under mpirun; ``args`` are gpucnn bench's parsed options. Returns the exit status."""
    return distributed.run_job(_bench, args)


def _step(model, x, y, dp=None):
    check_label_range(y, 10, "bench labels")  # once, before timing: no read-back inside a timed step
    loss_fn, opt = SoftmaxCrossEntropy(check_labels=False), Adam(model.parameters())

    def step():
        loss_fn.forward(model.forward(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward(), need_input_grad=False)
        if dp is not None:
            dp.average_gradients()
        opt.step()

    return step


def _time_steps(comm, step, sync, count):
    """``count`` step times, each step started together on every rank (a barrier outside the timed region)."""
    times = []
    for _ in range(count):
        comm.barrier()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _bench(args):
    comm = distributed.init()
    requested = args.device[0] if args.device else "auto"
    device = distributed.local_device(requested, comm.local_rank, comm.local_size)
    sync = synchronizer(device)
    rows = []
    for batch in args.batch_sizes:
        rng = numpy.random.default_rng(batch)
        x = backend.to_device(rng.random((batch, 1, 28, 28), dtype=numpy.float32), device)
        y = backend.to_device(rng.integers(0, 10, batch), device)
        model = fashion_cnn(rng=0).to(device)
        dp = distributed.DataParallel(comm, model, batch, batch)
        dp.start(0, 0)
        xs, ys = dp.shard(x, y)
        with backend.device_scope(x):
            single = _step(fashion_cnn(rng=0).to(device), x, y) if comm.is_root else None
            parallel = _step(model, xs, ys, dp)
            for _ in range(args.warmup):
                if single is not None:
                    single()
                parallel()
            sync()
            # alternating rounds: drift in a loaded machine's speed hits both sides alike
            rounds, single_times, parallel_times = 4, [], []
            for _ in range(rounds):
                if single is not None:
                    single_times += _time_steps(_Alone(), single, sync, max(1, args.repeats // rounds))
                comm.barrier()  # the other ranks wait here, sleeping, while rank 0 runs alone
                parallel_times += _time_steps(comm, parallel, sync, max(1, args.repeats // rounds))
        single_s = statistics.median(single_times) if single_times else None
        parallel_s = statistics.median(parallel_times)
        if comm.is_root:
            rows.append({"batch": batch, "one_process_s": single_s, "distributed_s": parallel_s,
                         "one_process_img_s": batch / single_s, "distributed_img_s": batch / parallel_s,
                         "efficiency": single_s / parallel_s / comm.size})
    report = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus", "ranks": comm.size,
              "device": device if comm.size == 1 else f"{device} (rank 0)", "numpy": numpy.__version__,
              "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "results": rows}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"# {report['machine']}, {comm.size} ranks, device {report['device']}, numpy {report['numpy']}, "
          f"OMP_NUM_THREADS={report['OMP_NUM_THREADS']}")
    print(f"{'batch':>5} {'1-proc ms':>9} {'1-proc img/s':>12} {f'{comm.size}-rank ms':>9} "
          f"{f'{comm.size}-rank img/s':>12} {'speed-up':>8} {'efficiency':>10}")
    for r in rows:
        print(f"{r['batch']:5d} {1000 * r['one_process_s']:9.2f} {r['one_process_img_s']:12.0f} "
              f"{1000 * r['distributed_s']:9.2f} {r['distributed_img_s']:12.0f} "
              f"{r['distributed_img_s'] / r['one_process_img_s']:8.2f} {100 * r['efficiency']:9.1f}%")
    return 0


class _Alone:
    """A job of one: rank 0 timing by itself needs no barrier."""

    def barrier(self):
        pass
