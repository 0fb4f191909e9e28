#!/usr/bin/env python3
"""One training step of resnet8 (or resnet20) on the CPU: gpucnn's fast and reference paths beside its PyTorch twin
(tests/nn/test_model_torch_parity.py's architecture), interleaved in one run, median of repeats after warm-up.

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
        for threads in sorted({1, default_threads}):
            steps[f"torch {torch.__version__} ({threads} thread{'s' if threads > 1 else ''})"] = torch_step(threads)
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
        print(f"  {name:<28} {median * 1e3:8.1f} ms   {args.batch / median:8.0f} img/s   "
              f"fast path / this: {median / fast:5.2f}x")


if __name__ == "__main__":
    main()
