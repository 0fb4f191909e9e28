"""Rebuild a run's report.html from the run's files (``gpucnn train`` writes it at the end of every run).

    gpucnn report runs/fashion_cnn                     # -> runs/fashion_cnn/report.html
    gpucnn report runs/fashion_cnn --out /tmp/r.html --data-dir ~/data/fashion-mnist

What a report is built from (all in the run directory): metrics.json (the per-epoch history),
predictions.npz (written by ``gpucnn train``: the test set's class probabilities and labels, and in its
metadata the command line, options, environment and results of the run, the data directory, and which
weights file the predictions came from), those weights (model.npz, or checkpoint.npz for an interrupted
run: filters and feature maps), and the test images, read again from the data set. The predictions are
saved rather than recomputed so that a rebuilt report shows exactly what the run measured, whatever
path or device rebuilds it; a run without predictions.npz has them recomputed from its weights.
"""
import argparse
import json
import os
import sys

import numpy

from .. import report
from ..backend import asnumpy, resolve_device, to_device
from ..data import CorruptDataError, DataNotFoundError
from ..data.cifar import find_cifar10
from ..data.datasets import find_dataset
from ..io.arrays import CheckpointError, load_arrays, save_arrays
from ..nn import architecture
from ..report import analysis
from ..train.checkpoint import FORMAT as TRAINING_FORMAT
from .train_data import DATASETS, build_model

__all__ = ["main", "write_run_report", "PREDICTIONS", "PREDICTIONS_FORMAT"]

PREDICTIONS = "predictions.npz"
PREDICTIONS_FORMAT = "gpucnn.predictions/1"


def write_run_report(out, args, model, test, history, device, data_dir, summary=None, interrupted=False,
                     training_step=None):
    """predictions.npz and report.html for a run of ``gpucnn train`` that has ``history``; None with
    --no-report. Never raises: a report that cannot be built is one warning line, and the run stands."""
    if getattr(args, "no_report", False) or not history or not history.get("epoch"):
        return None
    try:
        x_test, y_test = test
        probs = analysis.probabilities(model, x_test)
        weights = "checkpoint.npz" if interrupted else "model.npz"
        if interrupted and getattr(args, "checkpoint", None):
            weights = os.path.relpath(os.path.abspath(args.checkpoint), os.path.abspath(out))
        info = _train_info(args, history, probs, y_test, device, summary, interrupted, training_step)
        meta = {"format": PREDICTIONS_FORMAT, "info": info, "data_dir": str(data_dir), "weights": weights}
        save_arrays(os.path.join(out, PREDICTIONS), {"probabilities": probs,
                                                     "labels": asnumpy(y_test).astype(numpy.int64)}, meta)
        path = report.write(os.path.join(out, "report.html"),
                            report.render(history, info, model, x_test, y_test, probs))
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 (the run is written; its report is extra)
        print(f"warning: report.html not written ({type(exc).__name__}: {exc}); the run's files are complete",
              file=sys.stderr)
        return None
    print(f"wrote {path}", file=sys.stderr if interrupted else sys.stdout)
    return path


def _train_info(args, history, probs, y_test, device, summary, interrupted, training_step):
    options = {k: v for k, v in vars(args).items() if k not in ("command", "explicit")}
    options = json.loads(json.dumps(options, default=str))
    labels = asnumpy(y_test)
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    done, total = len(history["epoch"]), args.epochs
    results = {"test accuracy": f"{100 * accuracy:.2f}%", "epochs": f"{done} of {total}"}
    if summary:
        results["test loss"] = f"{summary['test_loss']:.4f}"
        results["wall time"] = f"{summary['wall_seconds']:.1f} s (the run, evaluation included)"
    results["training time"] = f"{sum(history.get('seconds', [])):.1f} s (sum of the epochs)"
    if interrupted:
        results["interrupted"] = f"after epoch {history['epoch'][-1]}; the weights at the interruption"
    env = report.environment(device)
    if summary and summary.get("path"):
        env["CPU path"] = summary["path"]
    title = (f"{args.model} on {args.dataset}: {100 * accuracy:.2f}% test accuracy"
             + (f" (interrupted, {done} of {total} epochs)" if interrupted
                else f" after {done} epoch{'s' if done != 1 else ''}"))
    return {"title": title, "subtitle": f"gpucnn run report of {os.path.abspath(args.out or '.')}",
            "dataset": args.dataset, "command": getattr(args, "command", None), "options": options,
            "recipe": getattr(args, "recipe", None), "environment": env, "results": results,
            "batch_size": args.batch_size, "training_step": training_step}


def parser(prog):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by gpucnn train")
    p.add_argument("--data-dir", default=None,
                   help="where the data set is (default: the directory the run read, then the usual places)")
    p.add_argument("--out", default=None, help="the HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--device", default="cpu", help="where to run the model for the feature maps (and the "
                                                     "predictions of a run without predictions.npz)")
    return p


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    try:
        path = rebuild(args.run_dir, args.data_dir, args.out, args.device)
    except (OSError, ValueError, DataNotFoundError, CorruptDataError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # CheckpointError, ArchitectureError are ValueErrors
        return 2
    print(f"wrote {path}")
    return 0


def rebuild(run_dir, data_dir=None, out=None, device="cpu"):
    """Write the report of the run in ``run_dir`` from its files; returns the path written."""
    metrics = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(metrics):
        raise ValueError(f"{run_dir}: no metrics.json there; is it a directory written by gpucnn train?")
    with open(metrics) as f:
        history = json.load(f)
    summary = _json_or_none(os.path.join(run_dir, "summary.json"))
    saved, meta = None, {}
    if os.path.exists(os.path.join(run_dir, PREDICTIONS)):
        saved, meta = load_arrays(os.path.join(run_dir, PREDICTIONS))
        if meta.get("format") != PREDICTIONS_FORMAT:
            raise CheckpointError(f"{run_dir}/{PREDICTIONS}: not written by gpucnn train "
                                  f"(format {meta.get('format')!r})")
    info = meta.get("info") or _info_from_summary(run_dir, summary, history)
    weights = os.path.join(run_dir, meta.get("weights") or ("model.npz" if os.path.exists(
        os.path.join(run_dir, "model.npz")) else "checkpoint.npz"))
    model, checkpoint_info = _load_model(weights, info)
    dataset = info.get("dataset") or checkpoint_info.get("dataset")
    if dataset not in DATASETS:
        raise ValueError(f"{run_dir}: the run's data set is not recorded (or unknown: {dataset!r})")
    info["dataset"] = dataset
    (_, _), (x_test, y_test) = DATASETS[dataset](str(_data_directory(dataset, data_dir or meta.get("data_dir"))))
    device = resolve_device(device)
    model.to(device)
    if saved is not None and len(saved["labels"]) == len(y_test) and (saved["labels"] == y_test).all():
        probs = saved["probabilities"]
    else:
        probs = analysis.probabilities(model, to_device(x_test, device))
    html = report.render(history, info, model, x_test, y_test, probs)
    return report.write(out or os.path.join(run_dir, "report.html"), html)


def _json_or_none(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _info_from_summary(run_dir, summary, history):
    """What a run without predictions.npz records about itself (summary.json, when it finished)."""
    summary = summary or {}
    env = {k: summary[k] for k in ("device", "gpu", "gpucnn", "numpy", "cupy", "machine", "path") if k in summary}
    return {"title": f"{summary.get('model', 'gpucnn')} run {os.path.basename(os.path.abspath(run_dir))}",
            "subtitle": f"gpucnn run report of {os.path.abspath(run_dir)} (rebuilt; the run saved no predictions)",
            "dataset": summary.get("dataset"), "options": {k: summary[k] for k in (
                "model", "dataset", "epochs", "batch_size", "optimizer", "lr", "seed") if k in summary},
            "environment": env, "results": {k: summary[k] for k in ("test_accuracy", "test_loss", "wall_seconds")
                                            if k in summary},
            "batch_size": summary.get("batch_size"), "training_step": summary.get("training_step")}


def _load_model(path, info):
    """(the network of a saved model or training checkpoint, the checkpoint's 'info' or {})."""
    arrays, meta = load_arrays(path)
    if meta.get("format") == TRAINING_FORMAT:
        arrays = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    spec = meta.get("architecture")
    options = info.get("options", {})
    if spec:
        model = architecture.build(spec)
    elif options.get("model"):
        model = build_model(options["model"], options.get("dataset", info.get("dataset")), 0)
    else:
        raise CheckpointError(f"{path}: records no architecture, and the run does not name its model")
    model.load_state(arrays, source=path)
    return model, meta.get("info") or {}


def _data_directory(dataset, data_dir):
    if dataset == "cifar10":
        return find_cifar10(data_dir)["directory"]
    return find_dataset(dataset, data_dir)["directory"]
