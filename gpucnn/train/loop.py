"""Training and evaluation loops: fit() and evaluate(), with checkpoints that survive a crash.

The checkpoint format is in ``training_checkpoint.py``: resuming continues exactly where
training stopped, mid-epoch included. Losses are kept on the device and read
back every ``sync_every`` steps, so the GPU is not stalled once per step.
"""
import contextlib
import math
import os
import signal
import sys
import threading
import time

import numpy

from ..backend import asnumpy, device_scope, get_array_module, is_out_of_memory
from ..data.batches import BatchIterator
from ..nn.losses import check_label_range
from .progress import ProgressBar
from ..io.arrays import CheckpointError
from .checkpoint import load_training_checkpoint, save_training_checkpoint

__all__ = ["fit", "evaluate", "TrainingDiverged", "save_training_checkpoint", "load_training_checkpoint"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def evaluate(model, x, y, loss_fn=None, batch_size=1024, progress=False, stream=None):
    """Accuracy of ``model`` on (x, y), and the mean loss when ``loss_fn`` is given; in eval mode (restored after).

    Args:
        model: a Sequential. x, y: inputs and integer labels (NumPy or CuPy).
        loss_fn: optional, e.g. SoftmaxCrossEntropy(); without it only the accuracy is computed.
        batch_size: samples per forward pass. progress: show a bar ("eval [###...]"). stream: default stderr.

    Returns:
        {'accuracy': float}, plus 'loss' when ``loss_fn`` is given.

    Example:
        >>> evaluate(model, x_test, y_test)["accuracy"]
        0.9187
    """
    bar = ProgressBar(math.ceil(len(x) / batch_size), "eval ", stream, enabled=progress)
    return _evaluate(model, x, y, loss_fn, batch_size, bar)


def _evaluate(model, x, y, loss_fn, batch_size, bar):
    was_training = model.training
    model.eval()
    try:
        total = len(x)
        if total == 0:
            raise ValueError("evaluate: got no samples (len(x) == 0)")
        if len(y) != total:
            raise ValueError(f"evaluate: {total} inputs but {len(y)} labels")
        loss_sum, correct = 0.0, 0
        for i, start in enumerate(range(0, total, batch_size)):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = model.forward(xb)
            batch_correct = None
            if loss_fn is not None:
                loss_sum += float(loss_fn.forward(logits, yb)) * len(xb)
                batch_correct = getattr(loss_fn, "correct", None)  # the loss's own count, when it makes one
            if batch_correct is None:
                with device_scope(logits):
                    batch_correct = (logits.argmax(axis=1) == get_array_module(logits).asarray(yb)).sum()
            correct += int(batch_correct)
            bar.update(i + 1)
        bar.close()
        result = {"accuracy": correct / total}
        if loss_fn is not None:
            result["loss"] = loss_sum / total
        return result
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn Ctrl-C into a flag checked between steps, so a step is never cut in half."""
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["hit"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def fit(model, loss_fn, optimizer, x, y, epochs, batch_size=128, validation=None, scheduler=None, seed=0,
        checkpoint=None, resume=False, progress=True, sync_every=10, stream=None, on_epoch_end=None,
        keep_optimizer_settings=(), checkpoint_info=None, distributed=False, graph="auto",
        graph_options=None, notes=None):
    """Train ``model`` on (x, y) for ``epochs`` epochs; returns the history (a dict of per-epoch lists).

    Args:
        model: a Sequential. loss_fn: e.g. SoftmaxCrossEntropy(). optimizer: e.g. Adam(model.parameters()).
        x, y: training inputs and integer labels (NumPy or CuPy; batches stay on their device).
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: samples per step. validation: optional (x_val, y_val), evaluated after each epoch.
        scheduler: optional learning-rate schedule, stepped after each epoch.
        seed: seed of the shuffling.
        checkpoint: path of a training checkpoint, written atomically after every epoch and on Ctrl-C.
        resume: continue from ``checkpoint`` when it exists.
        progress: show a progress bar per epoch (elapsed time and ETA; where the output is not a terminal, one
            line per tenth of an epoch); its last line gives the validation loss and accuracy when there is
            validation data. sync_every: read losses back every this many steps.
        on_epoch_end: optional callable(history) after each epoch (for tables, plots).
        distributed: train data-parallel over the ranks of an MPI job (True, or a gpucnn.distributed
            Communicator): each rank takes its shard of every batch of ``batch_size``, gradients are
            averaged; only rank 0 writes ``checkpoint`` and shows progress (see gpucnn/distributed/).
        keep_optimizer_settings: on resume, the optimizer settings ('lr', 'betas', ...) whose current values
            win over the checkpoint's (by default the checkpoint's win, for an exact resume).
        checkpoint_info: optional JSON-able dict stored in every checkpoint under "info" (e.g. the data set).
        graph: run each step as one captured CUDA graph on the fused kernels (gpucnn.compile_step);
            ``graph_options`` go to compile_step. See gpucnn/compile/cuda_graph/fit.py for what differs. 'auto' (the
            default): the graph for a model on a CUDA device whose layers, loss and optimizer the fused
            step supports, the eager step otherwise (on the CPU, under ``distributed``, when resuming a
            checkpoint written mid-epoch, or when the capture fails), and it says which on ``notes``;
            the graph's first step is verified against the eager step, and a disagreement sends training
            back to the eager step with a GraphMismatchWarning. True: the graph, or an error saying why
            not. False: the eager step.
        notes: a stream for one-line notes (the kernels' compile time, which training step runs); by default
            the progress stream while ``progress`` is on, else none.

    A checkpoint is written only while the weights and the epoch's losses are finite. Resuming
    refuses (CheckpointError, nothing changed) a checkpoint taken with another batch size or data-set size.

    Raises:
        TrainingDiverged: the training or validation loss, or a weight, became NaN or infinite; the message
            says whether a good checkpoint exists and where.
        KeyboardInterrupt: after Ctrl-C, once a checkpoint of the exact position is written.

    Example:
        >>> history = fit(model, SoftmaxCrossEntropy(), Adam(model.parameters()), x_train, y_train,
        ...               epochs=10, validation=(x_test, y_test), checkpoint='run/ckpt.npz')
    """
    if not (graph is True or graph is False or graph == "auto"):
        raise ValueError(f"fit: graph must be True, False or 'auto', got {graph!r}")
    if notes is None and progress:
        notes = stream or sys.stderr
    if graph is True and distributed:
        raise ValueError("fit: graph=True and distributed=True together are not supported yet; drop one")
    if graph is True or (graph == "auto" and _on_cuda(model) and not distributed):
        from ..compile.cuda_graph.fit import fit_graph
        with _deferred_interrupt() as interrupt:
            history = fit_graph(model, loss_fn, optimizer, x, y, epochs, batch_size, validation, scheduler, seed,
                                checkpoint, resume, progress, stream, on_epoch_end, graph_options, interrupt,
                                keep_optimizer_settings, checkpoint_info, fallback=graph == "auto", notes=notes)
        if history is not None:
            return history
    batches = BatchIterator(x, y, batch_size, shuffle=True, seed=seed)
    history = {key: [] for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                                   "images_per_second")}
    start_epoch, skip_steps, partial = 0, 0, None
    good = _GoodCheckpoint(checkpoint)
    if resume and checkpoint is not None:
        if os.path.exists(checkpoint):
            meta = load_training_checkpoint(checkpoint, model, optimizer, scheduler,
                                            check=_same_run(checkpoint, batch_size, len(batches), batches),
                                            keep=keep_optimizer_settings)
            start_epoch, skip_steps = meta["epoch"], meta["step"]
            good.written(start_epoch, skip_steps)
            batches.set_state(meta["batches"])
            history = meta["history"]
            partial = meta.get("partial")
    dp = None
    if distributed:
        from ..distributed import data_parallel
        dp = data_parallel(distributed, model, batch_size, len(x))
        dp.start(start_epoch, skip_steps)
        validation = dp.shard_validation(validation)
        if not dp.is_root:  # rank 0 alone writes the checkpoint and keeps the partial epoch's totals
            checkpoint, progress, partial, notes = None, False, None, None
        if graph == "auto" and _on_cuda(model) and notes is not None:
            print("training step: eager (the graph-captured step does not run data-parallel yet)", file=notes,
                  flush=True)

    model.train()
    _warm_up_kernels(model, notes)
    steps_per_epoch = len(batches)
    label_check_pending = getattr(loss_fn, "check_labels", False) and get_array_module(y) is not numpy
    with _deferred_interrupt() as interrupt, _restored_label_check(loss_fn):
        for epoch in range(start_epoch, epochs):
            epoch_start_state = batches.state()
            stats = _EpochStats(steps_per_epoch, partial)
            bar = ProgressBar(steps_per_epoch, f"epoch {epoch + 1}/{epochs} ", stream, enabled=progress,
                              initial=skip_steps)
            started = time.perf_counter()
            for step, (xb, yb) in enumerate(batches):
                if step < skip_steps:
                    continue
                if dp is not None:
                    xb, yb = dp.shard(xb, yb)
                try:
                    logits = model.forward(xb)
                    loss = loss_fn.forward(logits, yb)
                    optimizer.zero_grad()
                    model.backward(loss_fn.backward(), need_input_grad=False)
                    if dp is not None:
                        dp.average_gradients()
                    optimizer.step()
                except Exception as exc:
                    if is_out_of_memory(exc):
                        raise MemoryError(f"out of GPU memory at batch size {batch_size} (epoch {epoch + 1}, step "
                                          f"{step + 1}); try a smaller batch, e.g. {max(batch_size // 2, 1)}: {exc}"
                                          ) from exc
                    raise
                stats.record(step, loss, logits, yb, getattr(loss_fn, "correct", None))
                if label_check_pending:
                    # Labels on the GPU: check whole data sets once, then spare the loss a read-back per step.
                    check_label_range(y, logits.shape[1], "fit (training labels)")
                    if validation is not None:
                        check_label_range(validation[1], logits.shape[1], "fit (validation labels)")
                    loss_fn.check_labels, label_check_pending = False, False
                if (step + 1) % sync_every == 0 or step + 1 == steps_per_epoch or interrupt["hit"]:
                    bad = stats.sync(step + 1)
                    if bad is not None:
                        bar.close()
                        raise TrainingDiverged(
                            f"loss became {bad[1]} at epoch {epoch + 1}, step {bad[0] + 1} of {steps_per_epoch}; "
                            f"training stopped; {good.describe()}")
                    elapsed = time.perf_counter() - started
                    bar.update(step + 1, loss=stats.mean_loss, acc=stats.accuracy,
                               img_s=stats.seen_now / max(elapsed, 1e-9))
                if interrupt["hit"]:
                    bar.close()
                    saved = checkpoint is not None and _all_finite(model)
                    if saved:
                        save_training_checkpoint(checkpoint, model, optimizer, scheduler, {
                            "epoch": epoch, "step": step + 1, "batches": epoch_start_state,
                            "history": history, "partial": stats.as_partial(), "batch_size": batch_size,
                            "num_samples": batches.num_samples, "info": checkpoint_info})
                        good.written(epoch, step + 1)
                    raise KeyboardInterrupt(
                        f"training interrupted at epoch {epoch + 1}, step {step + 1}"
                        + (f"; checkpoint written to {checkpoint} (resume to continue exactly)" if saved else
                           f"; the weights are not finite, so no checkpoint was written; {good.describe()}"
                           if checkpoint else ""))
            skip_steps, partial = 0, None
            seconds = time.perf_counter() - started
            if dp is not None:
                totals = dp.end_epoch(stats.loss_sum, stats.correct_sum, stats.seen, stats.seen_now)
                stats.loss_sum, stats.correct_sum, stats.seen, stats.seen_now = totals
            history["epoch"].append(epoch + 1)
            history["loss"].append(stats.mean_loss)
            history["accuracy"].append(stats.accuracy)
            history["lr"].append(optimizer.lr)
            history["seconds"].append(seconds)
            history["images_per_second"].append(stats.seen_now / max(seconds, 1e-9))
            if validation is not None:
                val_batch = max(batch_size, 1000)
                # On a terminal the validation pass shows its own bar, erased when done; elsewhere it stays quiet.
                val_bar = ProgressBar(math.ceil(len(validation[0]) / val_batch), f"epoch {epoch + 1}/{epochs} "
                                      f"validating ", stream, enabled=bar.interactive, leave=False)
                bar.clear()
                result = _evaluate(model, validation[0], validation[1], loss_fn, val_batch, val_bar)
                if dp is not None:
                    result = dp.reduce_evaluation(result, len(validation[0]))
                history["val_loss"].append(result["loss"])
                history["val_accuracy"].append(result["accuracy"])
                if not math.isfinite(result["loss"]):
                    bar.close()
                    raise TrainingDiverged(f"validation loss became {result['loss']} after epoch {epoch + 1}; "
                                           f"training stopped; {good.describe()}")
                bar.update(steps_per_epoch, loss=stats.mean_loss, acc=stats.accuracy,
                           img_s=stats.seen_now / max(seconds, 1e-9), val_loss=result["loss"],
                           val_acc=result["accuracy"])
            bar.close()
            if not _all_finite(model):
                raise TrainingDiverged(f"a weight became NaN or infinite in epoch {epoch + 1}; training stopped; "
                                       f"{good.describe()}")
            if scheduler is not None:
                scheduler.step()
            if checkpoint is not None:
                save_training_checkpoint(checkpoint, model, optimizer, scheduler, {
                    "epoch": epoch + 1, "step": 0, "batches": batches.state(), "history": history,
                    "partial": None, "batch_size": batch_size, "num_samples": batches.num_samples,
                    "info": checkpoint_info})
                good.written(epoch + 1, 0)
            if on_epoch_end is not None:
                on_epoch_end(history)
    return history


def _on_cuda(model):
    params = model.parameters()
    return bool(params) and get_array_module(params[0].data) is not numpy


def _warm_up_kernels(model, stream=None):
    """Compile (or load from CuPy's disk cache) the CUDA kernels of the model's float type before the
    first epoch's timer starts, so that epoch 1 reports training speed, not compile time. Returns the
    seconds it took (0.0 on the CPU); says so on ``stream`` when given."""
    params = model.parameters()
    if not params or get_array_module(params[0].data) is numpy:
        return 0.0
    from ..ops.cuda import loader

    data = params[0].data
    started = time.perf_counter()
    loader.compile_all(data.dtype, data.device.id)
    seconds = time.perf_counter() - started
    if stream is not None:
        print(f"CUDA kernels ready in {seconds:.1f} s (compiled once, then cached in {loader.kernel_cache_dir()})",
              file=stream, flush=True)
    return seconds


def _all_finite(model):
    """True when every parameter and buffer is finite: one read-back per epoch, of one flag."""
    values = list(model.named_state().values())
    if not values:
        return True
    with device_scope(values[0]):
        xp = get_array_module(values[0])
        return bool(xp.stack([xp.isfinite(v).all() for v in values]).all())


class _GoodCheckpoint:
    """Where the last checkpoint with finite weights and losses is, to say so truthfully when training stops."""

    def __init__(self, path):
        self.path, self.position = path, None

    def written(self, epoch, step):
        self.position = (epoch, step)

    def describe(self):
        if self.path is None:
            return "no checkpoint was asked for"
        if self.position is None:
            earlier = (f"; {self.path} is from an earlier run, not this one" if os.path.exists(self.path) else "")
            return f"no good checkpoint was written{earlier}"
        epoch, step = self.position
        where = f"after epoch {epoch}" if step == 0 else f"at epoch {epoch + 1}, step {step}"
        return f"the last good checkpoint ({where}) is {self.path}"


def _same_run(path, batch_size, steps_per_epoch, batches):
    """A check for load_training_checkpoint: the checkpoint's batch size, data-set size and step fit this run."""
    def check(meta):
        for key, ours in (("batch_size", batch_size), ("num_samples", batches.num_samples)):
            theirs = meta.get(key)
            if theirs is not None and theirs != ours:
                what = key.replace("_", " ").replace("num samples", "data-set size")
                raise CheckpointError(f"{path}: was written with {what} {theirs}, this run has {ours}; "
                                      f"refusing to resume on other terms")
        if meta["step"] > steps_per_epoch:
            raise CheckpointError(f"{path}: step {meta['step']} is past the {steps_per_epoch} steps of an epoch")
    return check


@contextlib.contextmanager
def _restored_label_check(loss_fn):
    saved = getattr(loss_fn, "check_labels", None)
    try:
        yield
    finally:
        if saved is not None:
            loss_fn.check_labels = saved


class _EpochStats:
    """Per-step losses and correct counts, kept on the device until ``sync`` reads them."""

    def __init__(self, steps, partial):
        self.steps = steps
        self.losses = self.correct = None
        self.sizes = numpy.zeros(steps, dtype=numpy.int64)
        self.loss_sum, self.correct_sum, self.seen, self.seen_now, self.synced = 0.0, 0, 0, 0, 0
        if partial:
            self.loss_sum, self.correct_sum, self.seen = partial["loss_sum"], partial["correct"], partial["seen"]

    def record(self, step, loss, logits, labels, correct=None):
        """Keep step ``step``'s loss and correct count (``correct``: the loss's own count, when it made one)."""
        xp = get_array_module(logits)
        with device_scope(logits):
            if self.losses is None:  # on the device of the logits, created at the first step
                self.losses = xp.zeros(self.steps, dtype=numpy.float64)
                self.correct = xp.zeros(self.steps, dtype=numpy.int64)
            self.losses[step] = loss
            if correct is None:
                correct = (logits.argmax(axis=1) == xp.asarray(labels)).sum()
            self.correct[step] = correct
        self.sizes[step] = len(labels)

    def sync(self, upto):
        """Fold steps [synced, upto) into the totals; returns (step, value) of the first non-finite loss."""
        losses = asnumpy(self.losses[self.synced:upto])
        finite = numpy.isfinite(losses)
        if not finite.all():
            first = int(numpy.argmin(finite))
            return self.synced + first, float(losses[first])
        sizes = self.sizes[self.synced:upto]
        self.loss_sum += float((losses * sizes).sum())
        self.correct_sum += int(asnumpy(self.correct[self.synced:upto]).sum())
        self.seen += int(sizes.sum())
        self.seen_now += int(sizes.sum())
        self.synced = upto
        return None

    @property
    def mean_loss(self):
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self):
        return self.correct_sum / max(self.seen, 1)

    def as_partial(self):
        return {"loss_sum": self.loss_sum, "correct": self.correct_sum, "seen": self.seen}
