"""Train the reference CNN (the Keras tutorial's Fashion-MNIST classifier) and record the run.

    gpucnn train                       # 10 epochs of Adam, lr 1e-3, batch 128, device auto
    gpucnn train --device cuda --epochs 20 --out runs/gpu
    gpucnn train --resume              # continue runs/fashion_cnn/checkpoint.npz exactly
    gpucnn train --dataset cifar10 --model resnet20   # ResNet-20 on CIFAR-10 (binary version), built for 3x32x32
    mpirun -np 2 gpucnn train --distributed   # data-parallel over 2 processes (one GPU each, or the CPU)

Writes to --out: metrics.csv, metrics.json, curves.png (when matplotlib is installed),
model.npz (the final weights), checkpoint.npz (updated after every epoch and on Ctrl-C), and
report.html with predictions.npz (the run report, also on Ctrl-C; gpucnn report RUN_DIR rebuilds it).
While a run writes there, --out holds its lock (.gpucnn-train.lock, gpucnn/commands/run_lock.py):
a second run into the same directory is refused, naming the process that holds it; the lock of
a process that has ended is taken over. Under --distributed, rank 0 holds it.
Expected failures (bad arguments, missing or damaged data, a bad checkpoint, a full disk,
out of memory, an --out in use) end with one line, "error: ...", and exit status 2.
"""
import json
import os
import platform
import sys
import tempfile
import time

import numpy

import gpucnn
from .. import backend
from ..io.arrays import CheckpointError
from ..config import config
from ..data import CorruptDataError, DataNotFoundError
from ..data.cifar import find_cifar10
from ..data.datasets import find_dataset
from ..train.loop import TrainingDiverged, evaluate, fit
from . import run_lock
# The pieces of the command, in modules of their own; their names stay importable from here.
from .errors import CommandError, os_error, out_of_memory
from .train_data import DATASETS, build_model, check_model
from .train_loss import make_loss
from .train_record import Notes, plot_curves, print_row, write_metrics
from .recipes import RECIPES
from .report import write_run_report
from .train_options import make_optimizer, make_schedule, parse_args  # the options: train_options.py
from .train_augment import adopt_augment, make_transform
from .train_extras import adopt_extras, extras_info, make_ema, steps_per_epoch
from .train_resume import OPTIMIZER_SETTINGS, resume_plan  # noqa: F401 (OPTIMIZER_SETTINGS: importable from here)



def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    if args.path:
        config.path = args.path
    if args.distributed:
        from .. import distributed
        return distributed.run_job(run, args)  # every rank; a rank that fails ends the job
    return run(args)


def run(args):
    out = args.out or os.path.join("runs", args.model)
    checkpoint = args.checkpoint or os.path.join(out, "checkpoint.npz")
    created, locks = [], []
    status = 2
    try:
        status = _run(args, out, checkpoint, created, locks)
        return status
    except (CommandError, CheckpointError, DataNotFoundError, CorruptDataError, TrainingDiverged,
            NotImplementedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except MemoryError as exc:
        print(f"error: {out_of_memory(exc, args.batch_size)}", file=sys.stderr)
    except OSError as exc:
        print(f"error: {os_error(exc)}", file=sys.stderr)
    except KeyboardInterrupt:  # before training started (fit turns Ctrl-C during training into a checkpoint)
        print("\ninterrupted before training started; nothing was written", file=sys.stderr)
        return 130
    finally:
        for lock in locks:  # whatever ended the run: the next run into --out may start
            lock.release()
        # A run that failed before writing anything leaves no directory. Only a failed one: under --distributed
        # another rank may still be writing into a directory this rank created.
        for directory in reversed(created if status != 0 else []):
            try:
                os.rmdir(directory)
            except OSError:
                break  # not empty: it holds what the run wrote
    return 2


def _run(args, out, checkpoint, created, locks):
    check_model(args.model, args.dataset, getattr(args, "init_from", None))  # before anything is read or written
    if getattr(args, "recipe", None):
        print(f"recipe {args.recipe}: {RECIPES[args.recipe].command()} (options given on the command line win)",
              flush=True)
    try:
        device = _device(args)
    except (RuntimeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if args.device == "auto":
        print(backend.describe_auto_choice(device))
    if args.graph and device == "cpu":
        raise CommandError("--graph needs a CUDA device (the captured step runs on the GPU); drop --graph on the CPU")
    # the lock before anything is written into --out: a refused run changes nothing there
    _prepare_directory(out, created, "--out", before_writing=lambda: _lock_run_directory(args, out, locks))
    _prepare_directory(os.path.dirname(os.path.abspath(checkpoint)), created, "--checkpoint")
    if args.dataset == "cifar10":
        source = find_cifar10(args.data_dir)
    else:
        source = find_dataset(args.dataset, args.data_dir)
    print(f"data: {args.dataset} from {source.get('source', source['directory'])}"
          + (" (downloaded now)" if source["downloaded"] else ""), flush=True)
    (x_train, y_train), (x_test, y_test) = DATASETS[args.dataset](str(source["directory"]))
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_train, y_train, x_test, y_test = (backend.to_device(a, device) for a in (x_train, y_train, x_test, y_test))

    model = build_model(args.model, args.dataset, args.seed, getattr(args, "init_from", None)).to(device)
    if (args.resume or args.resume_or_start) and os.path.exists(checkpoint):
        adopt_extras(args, checkpoint)  # the checkpoint's --schedule, --ema, ... unless given (train_extras.py)
        adopt_augment(args, checkpoint)  # and its --augment (train_augment.py)
    optimizer = make_optimizer(args, model.parameters())
    schedule = make_schedule(args, optimizer, steps_per_epoch(len(x_train), args.batch_size))
    ema = make_ema(args, model)
    print(f"{args.model} on {args.dataset}: {len(x_train)} training images, {len(x_test)} test images, "
          f"{sum(p.data.size for p in model.parameters())} parameters, device {device}")
    resume, keep, done = resume_plan(args, checkpoint, optimizer, schedule, len(x_train))
    transform = make_transform(args.augment, tuple(x_train.shape[1:]), args.seed)
    if transform is not None:
        print(f"augmentation (--augment {args.augment}, seeded by --seed): {transform!r}", flush=True)
    loss_fn, loss_settings = make_loss(args, checkpoint if resume else None, y_train)  # train_loss.py

    def on_epoch_end(history):
        done["history"] = history
        print_row(history)
        if args.stop_at is not None and history["val_accuracy"][-1] >= args.stop_at:
            print(f"test accuracy reached --stop-at {args.stop_at:g} after epoch {history['epoch'][-1]}: stopping")
            return True
        return False

    notes = Notes(sys.stdout)
    started = time.time()
    try:
        history = fit(model, loss_fn, optimizer, x_train, y_train, args.epochs,
                      batch_size=args.batch_size, validation=(x_test, y_test), scheduler=schedule, seed=args.seed,
                      checkpoint=checkpoint, resume=resume, progress=not args.no_progress,
                      on_epoch_end=on_epoch_end, keep_optimizer_settings=keep,
                      checkpoint_info={"dataset": args.dataset, "limit": args.limit, "loss": loss_settings,
                                       "extras": extras_info(args), "augment": args.augment},
                      clip_grad_norm=args.clip_grad_norm, ema=ema, transform=transform,
                      distributed=args.distributed, graph="auto" if args.graph is None else args.graph,
                      notes=notes if not args.distributed or _distributed_root() else None)
    except KeyboardInterrupt as exc:
        print(f"\n{exc}", file=sys.stderr)
        if done["history"] and done["history"]["epoch"]:
            write_metrics(out, done["history"])
            plot = plot_curves(out, done["history"])
            print(f"wrote {out}/metrics.csv, metrics.json" + (f", {os.path.basename(plot)}" if plot else "")
                  + f" for the {len(done['history']['epoch'])} epochs done", file=sys.stderr)
            if not args.distributed or _distributed_root():  # report.html, the epochs done (gpucnn/report/)
                write_run_report(out, args, model, (x_test, y_test), done["history"], device, source["directory"],
                                 interrupted=True, training_step=notes.step)
        return getattr(exc, "exit_status", 130)  # 143 after a SIGTERM
    if args.distributed and not _distributed_root():
        return 0  # rank 0 evaluates and writes the files
    if ema is not None:
        ema.copy_to()  # from here on (test, model.npz, report) the model holds the average
        print(f"the model now holds the weights' moving average (--ema {args.ema}): the final test and model.npz "
              f"use it", flush=True)
    final = evaluate(model, x_test, y_test, loss_fn, progress=not args.no_progress)
    model.save(os.path.join(out, "model.npz"))
    write_metrics(out, history)
    plot = plot_curves(out, history)
    summary = {
        "model": args.model, "dataset": args.dataset, "device": device, "epochs": args.epochs,
        "recipe": getattr(args, "recipe", None), "loss": loss_settings, "extras": extras_info(args),
        "augment": args.augment, "transform": repr(transform) if transform is not None else None,
        "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr, "seed": args.seed,
        "test_loss": final["loss"], "test_accuracy": final["accuracy"], "wall_seconds": time.time() - started,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "gpucnn": gpucnn.__version__, "numpy": numpy.__version__,
        "path": config.path if device == "cpu" else "reference",
    }
    if notes.step:
        summary["training_step"] = notes.step
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
    write_run_report(out, args, model, (x_test, y_test), history, device, source["directory"], summary=summary,
                     training_step=notes.step)  # report.html (gpucnn/report/); a failure is a warning
    return 0


def _device(args):
    if not args.distributed:
        return backend.resolve_device(args.device)
    from .. import distributed
    comm = distributed.init()
    return distributed.local_device(args.device, comm.local_rank, comm.local_size)


def _distributed_root():
    from .. import distributed
    return distributed.init().is_root


def _lock_run_directory(args, out, locks):
    """Take the lock of --out (rank 0's alone under --distributed); RunDirectoryInUse when a live run holds it."""
    if not args.distributed or _distributed_root():
        locks.append(run_lock.acquire(out, command=getattr(args, "command", None), option="--out"))


def _prepare_directory(directory, created, option, before_writing=None):
    """Create ``directory`` (remembering what was created) and prove it writable before any training;
    ``before_writing`` runs between the two (the run directory's lock)."""
    missing = []
    probe = os.path.abspath(directory)
    while not os.path.exists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"{option} {directory}: cannot create it ({exc.strerror or exc})") from None
    finally:
        created.extend(d for d in reversed(missing) if os.path.isdir(d) and d not in created)
    if before_writing is not None:
        before_writing()
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise CommandError(f"{option} {directory}: cannot write there ({exc.strerror or exc})") from None
