#!/usr/bin/env python3
"""Time to accuracy: one recipe trained with gpucnn and with PyTorch, in the same run, on the same data order.

    python scripts/speedrun.py                          # --recipe fast, to its target (91% Fashion-MNIST)
    python scripts/speedrun.py --torch-threads default,1   # PyTorch at its default thread count and at 1
    python scripts/speedrun.py --recipe best --frameworks gpucnn
    python scripts/speedrun.py --augment crop,flip      # any other option goes to both, after the recipe's

Each framework trains the recipe (gpucnn/commands/recipes.py) from the same initial weights (gpucnn's, copied
into the PyTorch twin), on the same batches in the same order (gpucnn's shuffle for the seed), with the same
optimizer, schedule, loss and augmentation (the same gpucnn.data.transforms, seeded alike, applied to the
NumPy batch), and stops after the first epoch whose test accuracy reaches the target. It prints, for each,
the epochs and the training wall time to the target (training only: the per-epoch test evaluation is
timed apart), and the CPU model. gpucnn trains through ``gpucnn train`` itself (``--stop-at``), so the
figure is what a user of the command gets.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpucnn.commands import train as train_command  # noqa: E402
from gpucnn.commands.recipes import RECIPES  # noqa: E402
from gpucnn.commands.train_data import DATASETS, build_model  # noqa: E402
from gpucnn.commands.train_options import parse_args  # noqa: E402
from gpucnn.data import BatchIterator  # noqa: E402
from gpucnn.data.datasets import find_dataset  # noqa: E402
from gpucnn.nn import layers as L  # noqa: E402


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def run_gpucnn(recipe_argv, target, workdir):
    out = os.path.join(workdir, "gpucnn")
    status = train_command.main(recipe_argv + ["--stop-at", str(target), "--out", out, "--no-progress",
                                               "--no-report"], prog="gpucnn train")
    if status != 0:
        raise SystemExit(f"gpucnn train ended with status {status}")
    with open(os.path.join(out, "metrics.json")) as f:
        history = json.load(f)
    return {"framework": "gpucnn", "threads": "-", "epochs": history["epoch"][-1],
            "train_seconds": sum(history["seconds"]), "accuracy": history["val_accuracy"][-1],
            "reached": history["val_accuracy"][-1] >= target, "per_epoch": history["val_accuracy"]}


def torch_twin(torch, model):
    """A torch.nn.Sequential computing what the gpucnn Sequential ``model`` computes, with its weights."""
    nn = torch.nn
    modules = []
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            w = layer.window
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, tuple(layer.weight.shape[2:]),
                             stride=(w.sy, w.sx), dilation=tuple(layer.dilation), groups=layer.groups,
                             bias=layer.bias is not None)
            if (w.pt, w.pl) != (w.pb, w.pr):
                modules.append(nn.ZeroPad2d((w.pl, w.pr, w.pt, w.pb)))
            else:
                conv.padding = (w.pt, w.pl)
            modules.append(conv)
        elif isinstance(layer, L.Dense):
            modules.append(nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None))
        elif isinstance(layer, (L.MaxPool2D, L.AvgPool2D)):
            w = layer.window
            if (w.pt, w.pl) != (w.pb, w.pr) or getattr(layer, "ceil_mode", False) or w.dilated:
                raise SystemExit(f"speedrun: no PyTorch twin for {layer!r} yet")
            pool = nn.MaxPool2d if isinstance(layer, L.MaxPool2D) else nn.AvgPool2d
            modules.append(pool((w.kh, w.kw), (w.sy, w.sx), (w.pt, w.pl)))
        else:
            simple = {L.ReLU: nn.ReLU, L.Tanh: nn.Tanh, L.Sigmoid: nn.Sigmoid, L.Flatten: nn.Flatten}
            if type(layer) not in simple:
                raise SystemExit(f"speedrun: no PyTorch twin for {type(layer).__name__} (a Sequential of conv, "
                                 f"pool, dense and activations only); use --frameworks gpucnn")
            modules.append(simple[type(layer)]())
    net = nn.Sequential(*modules)
    with torch.no_grad():
        ours = [m for m in model.layers if isinstance(m, (L.Conv2D, L.Dense))]
        theirs = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
        for a, b in zip(ours, theirs):
            b.weight.copy_(torch.from_numpy(numpy.array(a.weight.data)))
            if a.bias is not None:
                b.bias.copy_(torch.from_numpy(numpy.array(a.bias.data)))
    return net


def torch_optimizer(torch, args, net):
    decay = (1e-2 if args.optimizer == "adamw" else 0.0) if args.weight_decay is None else args.weight_decay
    params = list(net.parameters())
    if getattr(args, "no_decay_bn_bias", False):
        params = [{"params": [p for p in params if p.ndim > 1]},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr, betas=args.betas, weight_decay=decay)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.lr, betas=args.betas, weight_decay=decay)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=decay)


def torch_schedule(torch, args, opt, steps_per_epoch):
    """(schedule, steps per batch?) as gpucnn's make_schedule builds it for the same options."""
    sched = torch.optim.lr_scheduler
    if args.schedule == "onecycle":
        return sched.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch), True
    if args.schedule == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=args.epochs), False
    if args.schedule == "step":
        return sched.StepLR(opt, step_size=max(args.epochs // 3, 1), gamma=0.1), False
    if args.schedule == "none":
        return None, False
    raise SystemExit(f"speedrun: no PyTorch twin for --schedule {args.schedule} yet")


def run_torch(args, target, threads, data, transform_factory):
    import torch
    (x_train, y_train), (x_test, y_test) = data
    default_threads = torch.get_num_threads()
    torch.set_num_threads(default_threads if threads == "default" else int(threads))
    try:
        torch.manual_seed(args.seed)
        net = torch_twin(torch, build_model(args.model, args.dataset, args.seed))
        batches = BatchIterator(x_train, y_train, args.batch_size, shuffle=True, seed=args.seed)
        opt = torch_optimizer(torch, args, net)
        schedule, per_step = torch_schedule(torch, args, opt, len(batches))
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        transform = transform_factory()
        xt, yt = torch.from_numpy(x_test), torch.from_numpy(y_test.astype(numpy.int64))
        seconds, accuracy = 0.0, []
        for epoch in range(args.epochs):
            net.train()
            start = time.perf_counter()
            for xb, yb in batches:
                if transform is not None:
                    xb = transform(xb)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(torch.from_numpy(numpy.ascontiguousarray(xb))),
                               torch.from_numpy(yb.astype(numpy.int64)))
                loss.backward()
                opt.step()
                if per_step:
                    schedule.step()
            if schedule is not None and not per_step:
                schedule.step()
            seconds += time.perf_counter() - start
            net.eval()
            with torch.no_grad():
                correct = sum(int((net(xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum())
                              for i in range(0, len(xt), 1000))
            accuracy.append(correct / len(xt))
            print(f"  torch ({threads} threads) epoch {epoch + 1}: test accuracy {100 * accuracy[-1]:.2f}%, "
                  f"training {seconds:.1f} s so far", flush=True)
            if accuracy[-1] >= target:
                break
        return {"framework": "pytorch", "threads": threads if threads != "default" else f"default ({default_threads})",
                "epochs": epoch + 1, "train_seconds": seconds, "accuracy": accuracy[-1],
                "reached": accuracy[-1] >= target, "per_epoch": accuracy, "version": torch.__version__}
    finally:
        torch.set_num_threads(default_threads)


def transform_factory_for(args, image_shape):
    """A callable that builds a fresh training transform, the one gpucnn train builds for ``args`` (or None)."""
    from gpucnn.commands.train_augment import make_transform
    return lambda: make_transform(args.augment, image_shape, args.seed)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="fast")
    p.add_argument("--target", type=float, default=None, help="test accuracy to reach; default: the recipe's")
    p.add_argument("--frameworks", default="gpucnn,torch", help="comma-separated: gpucnn, torch")
    p.add_argument("--torch-threads", default="default", help="comma-separated thread counts for PyTorch")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=None, help="the most epochs to train; default: the recipe's")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (a quick check)")
    p.add_argument("--json", default=None, help="write the results to this file")
    opts, train_options = p.parse_known_args(argv)  # the rest: gpucnn train options, after the recipe's
    recipe = RECIPES[opts.recipe]
    target = recipe.target if opts.target is None else opts.target
    recipe_argv = ["--recipe", opts.recipe, "--device", "cpu"]
    if opts.data_dir:
        recipe_argv += ["--data-dir", opts.data_dir]
    if opts.epochs:
        recipe_argv += ["--epochs", str(opts.epochs)]
    if opts.limit:
        recipe_argv += ["--limit", str(opts.limit)]
    recipe_argv += train_options
    args = parse_args(recipe_argv, prog="gpucnn train")
    frameworks = [f.strip() for f in opts.frameworks.split(",") if f.strip()]
    print(f"speedrun: recipe {opts.recipe} ({recipe.command()}) to {100 * target:.1f}% test accuracy")
    print(f"CPU: {cpu_model()}; Python {platform.python_version()}, NumPy {numpy.__version__}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        if "gpucnn" in frameworks:
            results.append(run_gpucnn(recipe_argv, target, workdir))
        if "torch" in frameworks:
            directory = find_dataset(args.dataset, args.data_dir)["directory"]
            (x_train, y_train), test = DATASETS[args.dataset](str(directory))
            data = ((x_train[:args.limit], y_train[:args.limit]) if args.limit else (x_train, y_train)), test
            for threads in opts.torch_threads.split(","):
                results.append(run_torch(args, target, threads.strip(), data,
                                           transform_factory_for(args, tuple(x_train.shape[1:]))))
    print(f"\n{'framework':<10} {'threads':<12} {'epochs':>6} {'train s':>9} {'test acc %':>10}  reached")
    for r in results:
        print(f"{r['framework']:<10} {r['threads']:<12} {r['epochs']:>6} {r['train_seconds']:>9.1f} "
              f"{100 * r['accuracy']:>10.2f}  {'yes' if r['reached'] else 'no'}")
    ours = [r for r in results if r["framework"] == "gpucnn" and r["reached"]]
    theirs = [r for r in results if r["framework"] == "pytorch" and r["reached"]]
    if ours and theirs:
        best = min(theirs, key=lambda r: r["train_seconds"])
        print(f"gpucnn reached {100 * target:.1f}% in {ours[0]['train_seconds']:.1f} s, PyTorch at its best thread "
              f"count ({best['threads']}) in {best['train_seconds']:.1f} s: "
              f"{best['train_seconds'] / ours[0]['train_seconds']:.2f}x")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"recipe": opts.recipe, "options": list(recipe.options), "target": target, "cpu": cpu_model(),
                       "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
