#!/usr/bin/env python3
"""One training step of resnet8 (or resnet20) on the CPU: gpucnn's fast and reference paths beside its PyTorch twin
(tests/nn/test_model_torch_parity.py's architecture) at PyTorch's default thread count and at 1 and 2 threads,
interleaved in one run, median of repeats after warm-up; then the fast path's time per node type (its stages
timed on the calling thread's chunk: gpucnn/compile/cpu/profile.py).

    python scripts/bench_resnet.py [--model resnet8] [--batch 64] [--repeats 7]
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gpucnn  # noqa: E402
from gpucnn.nn.losses import SoftmaxCrossEntropy  # noqa: E402
from gpucnn.nn.resnet import resnet  # noqa: E402
from gpucnn.optim import SGD  # noqa: E402


def torch_twin(blocks):
    import torch
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))

    layers, channels = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for stage, width in enumerate((16, 32, 64), start=1):
        for i in range(blocks):
            layers.append(Block(channels, width, 2 if stage > 1 and i == 0 else 1))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["resnet8", "resnet20"], default="resnet8")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    blocks = {"resnet8": 1, "resnet20": 3}[args.model]
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((args.batch, 1, 28, 28)).astype(numpy.float32)
    y = rng.integers(0, 10, args.batch)
    model, loss_fn = resnet(blocks, in_channels=1, input_size=28, rng=0), SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)

    def gpucnn_step(path):
        def step():
            gpucnn.config.path = path
            loss_fn.forward(model.forward(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward(), need_input_grad=False)
            opt.step()
        return step

    steps = {"gpucnn fast": gpucnn_step("fast"), "gpucnn reference": gpucnn_step("reference")}
    try:
        import torch
        twin, xt, yt = torch_twin(blocks), torch.from_numpy(x), torch.from_numpy(y)
        topt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
        default_threads = torch.get_num_threads()

        def torch_step(threads):
            def step():
                torch.set_num_threads(threads)
                topt.zero_grad()
                torch.nn.functional.cross_entropy(twin(xt), yt).backward()
                topt.step()
            return step
        for threads in sorted({1, 2, default_threads}):
            default = ", default" if threads == default_threads else ""
            steps[f"torch {torch.__version__} ({threads} thread{'s' if threads > 1 else ''}{default})"] = \
                torch_step(threads)
    except ImportError:
        default_threads = None
    times = {name: [] for name in steps}
    for _ in range(2):
        for step in steps.values():
            step()
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"{args.model}, batch {args.batch}, float32, one SGD-momentum training step, median of {args.repeats} "
          f"(interleaved, after 2 warm-ups); CPU: {cpu}, {os.cpu_count()} cores; torch default threads: "
          f"{default_threads}")
    fast = statistics.median(times["gpucnn fast"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<36} {median * 1e3:8.1f} ms   {args.batch / median:8.0f} img/s   "
              f"this / fast path: {median / fast:5.2f}x")
    torch_names = [name for name in times if name.startswith("torch")]
    if torch_names:
        best = min(torch_names, key=lambda name: statistics.median(times[name]))
        print(f"  best PyTorch: {best}; fast path / best PyTorch: "
              f"{fast / statistics.median(times[best]):.2f}x the time")
    gpucnn.config.path = "fast"
    node_breakdown(model, loss_fn, opt, x, y, args.repeats)


def node_breakdown(model, loss_fn, opt, x, y, repeats):
    """The fast path's time per node type and direction, per step (means over ``repeats`` steps), beside the
    step's own parts: the model's forward and backward (whose wall time less the nodes' is the threads' hand-offs,
    the BatchNorm barriers and the parameter gradients' sums), the loss, the optimizer."""
    from gpucnn.compile.cpu import profile
    walls = {"model forward + backward": 0.0, "loss": 0.0, "SGD step": 0.0}
    with profile.node_times() as times:
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = model.forward(x)
            t1 = time.perf_counter()
            loss_fn.forward(out, y)
            grad = loss_fn.backward()
            opt.zero_grad()
            t2 = time.perf_counter()
            model.backward(grad, need_input_grad=False)
            t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            walls["model forward + backward"] += (t1 - t0) + (t3 - t2)
            walls["loss"] += t2 - t1
            walls["SGD step"] += t4 - t3
    counts = {}
    for segment in model._fast.segments:
        for kind in segment.kinds:
            counts[kind] = counts.get(kind, 0) + 1
    kinds = sorted({kind for kind, _ in times.totals}, key=lambda k: -sum(times.totals.get((k, d), (0, 0))[0]
                                                                           for d in ("forward", "backward")))
    step = sum(walls.values()) / repeats
    print(f"fast path per node type, ms per step (mean of {repeats} profiled steps of {step * 1e3:.1f} ms; stages "
          f"timed on the calling thread's chunk, the other chunks run beside it):")
    print(f"  {'node type':<34} {'nodes':>5} {'forward':>8} {'backward':>9} {'total':>8} {'share':>6}")
    accounted = 0.0
    for kind in kinds:
        fwd, calls = times.totals.get((kind, "forward"), (0.0, 0))
        bwd, _ = times.totals.get((kind, "backward"), (0.0, 0))
        total = (fwd + bwd) / repeats
        accounted += total
        nodes = counts.get(kind, round(calls / repeats))
        print(f"  {kind:<34} {nodes:5d} {fwd / repeats * 1e3:8.2f} {bwd / repeats * 1e3:9.2f} {total * 1e3:8.2f} "
              f"{total / step:6.1%}")
    rest = walls["model forward + backward"] / repeats - accounted
    for name, seconds in [("threads, BN barriers, param. grads", rest), ("loss", walls["loss"] / repeats),
                          ("SGD step", walls["SGD step"] / repeats)]:
        print(f"  {name:<34} {'':>5} {'':>8} {'':>9} {seconds * 1e3:8.2f} {seconds / step:6.1%}")


if __name__ == "__main__":
    main()
