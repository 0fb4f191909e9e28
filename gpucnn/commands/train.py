"""Train the reference CNN (the Keras tutorial's Fashion-MNIST classifier) and record the run.

    gpucnn train                       # 10 epochs of Adam, lr 1e-3, batch 128, device auto
    gpucnn train --device cuda --epochs 20 --out runs/gpu
    gpucnn train --resume              # continue runs/fashion_cnn/checkpoint.npz exactly

Writes to --out: metrics.csv, metrics.json, curves.png (when matplotlib is installed),
model.npz (the final weights) and checkpoint.npz (updated after every epoch and on Ctrl-C).
"""
import argparse
import csv
import json
import os
import platform
import sys
import time

import numpy

import gpucnn
from gpucnn import backend, losses, optim
from gpucnn.config import PATHS, config
from gpucnn.data import CorruptDataError, DataNotFoundError, load_fashion_mnist, load_mnist
from gpucnn.models import MODELS
from gpucnn.train import TrainingDiverged, evaluate, fit

DATASETS = {"fashion-mnist": load_fashion_mnist, "mnist": load_mnist}


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="fashion_cnn")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist")
    p.add_argument("--data-dir", default=None, help="directory holding the IDX files (default: search, then download)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", choices=["none", "step", "cosine"], default="none")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the shuffling")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (quick runs)")
    p.add_argument("--out", default=None, help="output directory (default runs/<model>)")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (default <out>/checkpoint.npz)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--path", choices=PATHS, default=None,
                   help="CPU path: fast (default) or reference, the readable per-layer ops (gpucnn.config.path)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr <= 0:
        p.error("--lr must be > 0")
    return args


def make_optimizer(args, params):
    if args.optimizer == "adam":
        return optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "adamw":
        return optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay or 1e-2)
    return optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)


def make_schedule(args, optimizer):
    if args.schedule == "step":
        return optim.StepLR(optimizer, step_size=max(args.epochs // 3, 1), gamma=0.1)
    if args.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=args.epochs)
    return None


def write_metrics(out, history):
    keys = [k for k in history if history[k]]
    with open(os.path.join(out, "metrics.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        writer.writerows(zip(*(history[k] for k in keys)))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(history, f, indent=1)


def plot_curves(out, history):
    """curves.png: loss and accuracy per epoch; skipped (with a note) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = history["epoch"]
    ax_loss.plot(epochs, history["loss"], "o-", label="train")
    ax_acc.plot(epochs, [100 * a for a in history["accuracy"]], "o-", label="train")
    if history["val_loss"]:
        ax_loss.plot(epochs, history["val_loss"], "s-", label="test")
        ax_acc.plot(epochs, [100 * a for a in history["val_accuracy"]], "s-", label="test")
    for ax, label in ((ax_loss, "cross-entropy"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_row(history):
    i = len(history["epoch"]) - 1
    if i == 0:
        print(f"{'epoch':>5} {'loss':>8} {'acc %':>7} {'test loss':>9} {'test acc %':>10} {'lr':>9} "
              f"{'seconds':>8} {'img/s':>8}")
    val_loss = f"{history['val_loss'][i]:9.4f}" if history["val_loss"] else f"{'-':>9}"
    val_acc = f"{100 * history['val_accuracy'][i]:10.2f}" if history["val_accuracy"] else f"{'-':>10}"
    print(f"{history['epoch'][i]:5d} {history['loss'][i]:8.4f} {100 * history['accuracy'][i]:7.2f} {val_loss} "
          f"{val_acc} {history['lr'][i]:9.2e} {history['seconds'][i]:8.1f} {history['images_per_second'][i]:8.0f}",
          flush=True)


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    if args.path:
        config.path = args.path
    out = args.out or os.path.join("runs", args.model)
    os.makedirs(out, exist_ok=True)
    checkpoint = args.checkpoint or os.path.join(out, "checkpoint.npz")
    try:
        device = backend.resolve_device(args.device)
        if args.device == "auto":
            why = "" if device != "cpu" else f" ({backend.gpu_unavailable_reason()})"
            print(f"device auto -> {device}{why}")
        (x_train, y_train), (x_test, y_test) = DATASETS[args.dataset](args.data_dir)
    except (RuntimeError, ValueError, DataNotFoundError, CorruptDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_train, y_train, x_test, y_test = (backend.to_device(a, device) for a in (x_train, y_train, x_test, y_test))

    model = MODELS[args.model](rng=args.seed).to(device)
    optimizer = make_optimizer(args, model.parameters())
    schedule = make_schedule(args, optimizer)
    print(f"{args.model} on {args.dataset}: {len(x_train)} training images, {len(x_test)} test images, "
          f"{sum(p.data.size for p in model.parameters())} parameters, device {device}")
    started = time.time()
    try:
        history = fit(model, losses.SoftmaxCrossEntropy(), optimizer, x_train, y_train, args.epochs,
                      batch_size=args.batch_size, validation=(x_test, y_test), scheduler=schedule, seed=args.seed,
                      checkpoint=checkpoint, resume=args.resume, progress=not args.no_progress,
                      on_epoch_end=print_row)
    except (TrainingDiverged, MemoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    final = evaluate(model, losses.SoftmaxCrossEntropy(), x_test, y_test)
    model.save(os.path.join(out, "model.npz"))
    write_metrics(out, history)
    plot = plot_curves(out, history)
    summary = {
        "model": args.model, "dataset": args.dataset, "device": device, "epochs": args.epochs,
        "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr, "seed": args.seed,
        "test_loss": final["loss"], "test_accuracy": final["accuracy"], "wall_seconds": time.time() - started,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "gpucnn": gpucnn.__version__, "numpy": numpy.__version__,
        "path": config.path if device == "cpu" else "reference",
    }
    if device != "cpu":
        cupy = backend.cupy_or_none()
        name = cupy.cuda.runtime.getDeviceProperties(int(device.split(":")[1]))["name"]
        summary["gpu"] = name.decode() if isinstance(name, bytes) else name
        summary["cupy"] = cupy.__version__
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"test accuracy {100 * final['accuracy']:.2f}%  test loss {final['loss']:.4f}  "
          f"({summary['wall_seconds']:.0f} s); wrote {out}/metrics.csv, metrics.json, model.npz"
          + (f", {os.path.basename(plot)}" if plot else " (install matplotlib for curves.png)"))
    return 0
