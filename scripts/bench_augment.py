#!/usr/bin/env python3
"""Does preparing batch k+1 (gather + augmentation) in a background thread while step k trains pay on the CPU?

    python scripts/bench_augment.py [--steps 40] [--repeats 5] [--batch-size 128]

Times the reference network's training step on the CPU (fit's eager step: forward, loss, backward, Adam)
three ways over the same batches: without augmentation, with ``--augment crop,flip,erase`` applied inline
before each step (what fit does), and with the next batch gathered and augmented by a background thread
(one worker, one batch ahead) while the current step runs. Prints the median seconds per step of each
repeat's steps (median and fastest of the repeats), after one warm-up repeat, and checks that both augmented ways train on the same batches
bit for bit. Figures: docs/benchmarks.md ("Augmentation and the CPU step").
"""
import argparse
import concurrent.futures
import os
import statistics
import sys
import time

import numpy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gpucnn  # noqa: E402
from gpucnn.commands.train_augment import make_transform  # noqa: E402
from gpucnn.nn.losses import SoftmaxCrossEntropy  # noqa: E402


def batches(x, y, order, batch_size, steps):
    for k in range(steps):
        idx = order[k * batch_size:(k + 1) * batch_size]
        yield x[idx], y[idx]


def inline(x, y, order, batch_size, steps, transform):
    for xb, yb in batches(x, y, order, batch_size, steps):
        yield (transform(xb) if transform is not None else xb), yb


def prefetched(x, y, order, batch_size, steps, transform):
    """The next batch prepared by one background thread while the caller trains on the current one."""
    source = batches(x, y, order, batch_size, steps)

    def prepare():
        item = next(source, None)
        return None if item is None else (transform(item[0]), item[1])

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare)
        while True:
            item = pending.result()
            if item is None:
                return
            pending = pool.submit(prepare)
            yield item


def run(mode, x, y, order, args, record=None):
    model = gpucnn.models.fashion_cnn(rng=0)
    opt = gpucnn.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = SoftmaxCrossEntropy()
    transform = None if mode == "none" else make_transform("crop,flip,erase", x.shape[1:], 0)
    feed = (prefetched if mode == "prefetch" else inline)(x, y, order, args.batch_size, args.steps, transform)
    times = []
    started = time.perf_counter()
    for xb, yb in feed:
        if record is not None:
            record.append(xb.copy())
        loss_fn.forward(model.forward(xb), yb)
        opt.zero_grad()
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
        now = time.perf_counter()
        times.append(now - started)
        started = now
    return statistics.median(times), model


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    rng = numpy.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.random((n, 1, 28, 28), dtype=numpy.float32)
    y = rng.integers(0, 10, n)
    order = rng.permutation(n)
    seen = {"inline": [], "prefetch": []}
    _, a = run("inline", x, y, order, args, seen["inline"])
    _, b = run("prefetch", x, y, order, args, seen["prefetch"])
    same = all(numpy.array_equal(u, v) for u, v in zip(*seen.values())) and all(
        numpy.array_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters()))
    print(f"inline and prefetched augmentation train on the same batches, to the same weights: {same}")
    modes = ("none", "inline", "prefetch")
    for mode in modes:  # warm-up
        run(mode, x, y, order, args)
    results = {mode: [] for mode in modes}
    for _ in range(args.repeats):
        for mode in modes:  # interleaved, so that drifting load from elsewhere hits each alike
            results[mode].append(run(mode, x, y, order, args)[0])
    print(f"{os.cpu_count()} cpus, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats; "
          f"ms per step: median and fastest of the repeats' medians (each repeat's median)")
    for mode in modes:
        ms = [1e3 * t for t in results[mode]]
        print(f"  {mode:9s} {statistics.median(ms):7.2f} {min(ms):7.2f}   ({', '.join(f'{v:.2f}' for v in ms)})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
