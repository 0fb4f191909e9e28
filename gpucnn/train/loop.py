"""fit(): the one epoch loop, whichever step trains (eager, or one CUDA graph launch), with checkpoints that
survive a crash.

The loop owns epochs, validation, the finiteness rules, checkpoints, resume and signals; the step
(``EagerSteps`` in eager_step.py, ``GraphSteps`` in graph_step.py) trains one epoch's batches.
The checkpoint format is in ``checkpoint.py``: resuming continues exactly where training
stopped, mid-epoch included (mid-epoch positions on the eager step).
"""
import contextlib
import math
import os
import sys

import numpy

from ..backend import device_scope, get_array_module
from ..data.batches import BatchIterator
from ..optim.clip import clip_grad_norm_
from ..optim.plateau import ReduceLROnPlateau
from ..io.arrays import CheckpointError
from .checkpoint import load_training_checkpoint, same_run_check, save_training_checkpoint
from .eager_step import EagerSteps
from .evaluate import evaluate, evaluate_with_bar
from .graph_step import graph_steps
from .kernels import warm_up_kernels
from .progress import ProgressBar
from .signals import TrainingInterrupted, deferred_interrupts

__all__ = ["fit", "evaluate", "TrainingDiverged", "TrainingInterrupted", "all_finite"]

HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def fit(model, loss_fn, optimizer, x, y, epochs, batch_size=128, validation=None, scheduler=None, seed=0,
        checkpoint=None, resume=False, progress=True, sync_every=10, stream=None, on_epoch_end=None,
        keep_optimizer_settings=(), checkpoint_info=None, distributed=False, graph="auto",
        graph_options=None, notes=None, clip_grad_norm=None, ema=None, transform=None):
    """Train ``model`` on (x, y) for ``epochs`` epochs; returns the history (a dict of per-epoch lists).

    Args:
        model: a Sequential. loss_fn: e.g. SoftmaxCrossEntropy(). optimizer: e.g. Adam(model.parameters()).
        x, y: training inputs and integer labels (NumPy or CuPy; batches stay on their device).
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: samples per step. validation: optional (x_val, y_val), evaluated after each epoch.
        scheduler: optional learning-rate schedule (gpucnn.optim), stepped after each epoch, or after each
            optimizer step when its ``interval`` is 'step' (OneCycleLR's default); a ReduceLROnPlateau is
            stepped after each epoch with the validation loss (the training loss without validation data).
        clip_grad_norm: optional max norm: the gradients are clipped to it before every optimizer step
            (gpucnn.optim.clip_grad_norm_, on the device, no read-back).
        ema: optional gpucnn.optim.EMA of the model, updated after every optimizer step; the validation
            evaluates the averaged weights, and the checkpoint holds the average.
        transform: optional augmentation of each training batch (gpucnn.data.transforms, e.g. a Compose), applied
            on the batch's device before the step, never to the validation data. Its generator's state is in
            the checkpoint, so a resumed run draws what the uninterrupted one would; a checkpoint without one
            leaves the transform's state as given. The graph step augments the epoch's batches, in the eager
            step's order, before the epoch's launches, into the graph's static training-set buffer
            (gpucnn/train/graph_step.py).
        seed: seed of the shuffling.
        checkpoint: path of a training checkpoint, written atomically after every epoch and on Ctrl-C or
            SIGTERM.
        resume: continue from ``checkpoint`` when it exists.
        progress: show a progress bar per epoch (elapsed time and ETA; where the output is not a terminal, one
            line per tenth of an epoch); its last line gives the validation loss and accuracy when there is
            validation data. sync_every: read losses back every this many steps.
        on_epoch_end: optional callable(history) after each epoch (for tables, plots); when it returns True,
            training stops there, after that epoch's checkpoint (early stopping, as Keras's stop_training).
        distributed: train data-parallel over the ranks of an MPI job (True, or a gpucnn.distributed
            Communicator): each rank takes its shard of every batch of ``batch_size``, gradients are
            averaged; only rank 0 writes ``checkpoint`` and shows progress (see gpucnn/distributed/).
        keep_optimizer_settings: on resume, the optimizer settings ('lr', 'betas', ...) whose current values
            win over the checkpoint's (by default the checkpoint's win, for an exact resume).
        checkpoint_info: optional JSON-able dict stored in every checkpoint under "info" (e.g. the data set).
        graph: run each step as one captured CUDA graph on the fused kernels (gpucnn.compile_step);
            ``graph_options`` go to compile_step. See gpucnn/train/graph_step.py for what differs. 'auto' (the
            default): the graph for a model on a CUDA device whose layers, loss and optimizer the fused
            step supports, the eager step otherwise (on the CPU, under ``distributed``, when resuming a
            checkpoint written mid-epoch, or when the capture fails) or where a few timed steps of each
            kind on the first batch find the eager step faster; it says which, with both figures, on
            ``notes``; the graph's first step is verified against the eager step, and a disagreement sends training
            back to the eager step with a GraphMismatchWarning. True: the graph, or an error saying why
            not. False: the eager step.
        notes: a stream for one-line notes (the kernels' compile time, which training step runs); by default
            the progress stream while ``progress`` is on, else none.

    A checkpoint is written only while the weights and the epoch's losses are finite. Resuming
    refuses (CheckpointError, nothing changed) a checkpoint taken with another batch size or data-set size.

    Raises:
        TrainingDiverged: the training or validation loss, or a weight, became NaN or infinite; the message
            says whether a good checkpoint exists and where.
        TrainingInterrupted: (a KeyboardInterrupt) after Ctrl-C or SIGTERM, once a checkpoint of the position
            reached is written; ``exit_status`` is 130 or 143.

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
    if getattr(loss_fn, "reduction", "mean") == "none":
        raise ValueError("fit: loss_fn has reduction='none' (per-sample losses); fit trains on a scalar loss: use "
                         "reduction 'mean' or 'sum'")
    batches = BatchIterator(x, y, batch_size, shuffle=True, seed=seed)
    history = {key: [] for key in HISTORY_KEYS}
    start_epoch, skip_steps, partial = 0, 0, None
    good = _GoodCheckpoint(checkpoint)
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        meta = load_training_checkpoint(checkpoint, model, optimizer, scheduler,
                                        check=_transform_check(same_run_check(checkpoint, batch_size, len(batches),
                                                                              batches), transform, checkpoint),
                                        keep=keep_optimizer_settings, ema=ema)
        start_epoch, skip_steps = meta["epoch"], meta["step"]
        good.written(start_epoch, skip_steps)
        batches.set_state(meta["batches"])
        if transform is not None and meta.get("transform") is not None:  # checked by _transform_check
            transform.set_state(meta["transform"])
        history = meta["history"]
        partial = meta.get("partial")
    steps = None
    per_step = scheduler if getattr(scheduler, "interval", "epoch") == "step" else None
    eager_only = _eager_only(per_step, clip_grad_norm, ema)
    if eager_only is not None and graph is True:
        raise ValueError(f"fit(graph=True): {eager_only}; give graph=False or 'auto'")
    if eager_only is not None and graph == "auto" and _on_cuda(model) and not distributed and notes is not None:
        print(f"training step: eager, not a CUDA graph ({eager_only})", file=notes, flush=True)
    if eager_only is None and (graph is True or (graph == "auto" and _on_cuda(model) and not distributed)):
        steps = graph_steps(model, loss_fn, optimizer, x, y, batch_size, scheduler, graph_options,
                            start_epoch if skip_steps else None, checkpoint, fallback=graph == "auto", notes=notes,
                            transform=transform)
    dp = None
    if steps is None:
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
        warm_up_kernels(model, notes)
        steps = EagerSteps(model, loss_fn, optimizer, y, validation, batch_size, sync_every, dp,
                           after_backward=_clipper(model, clip_grad_norm),
                           after_step=_after_step(per_step, ema), transform=transform)
    steps_per_epoch = len(batches)

    def save(epoch, step, batches_state, partial_stats):
        save_training_checkpoint(checkpoint, model, optimizer, scheduler, {
            "epoch": epoch, "step": step, "batches": batches_state, "history": history, "partial": partial_stats,
            "batch_size": batch_size, "num_samples": batches.num_samples, "info": checkpoint_info,
            "transform": transform.state() if transform is not None else None}, ema=ema)
        good.written(epoch, step)

    def diverged(what):
        return TrainingDiverged(f"{what}; training stopped; {good.describe()}")

    with deferred_interrupts() as interrupt, _restored_label_check(loss_fn):
        for epoch in range(start_epoch, epochs):
            epoch_start_state = batches.state()
            bar = steps.progress_bar(epoch, epochs, steps_per_epoch, stream, progress, skip_steps)
            outcome = steps.run_epoch(epoch, batches, skip_steps, partial, bar, interrupt, diverged)
            stats = outcome.stats
            if outcome.stopped_at is not None:  # a signal, mid-epoch: the exact position, if the weights are fine
                bar.close()
                saved = checkpoint is not None and all_finite(model)
                if saved:
                    save(epoch, outcome.stopped_at, epoch_start_state, stats.as_partial())
                raise interrupt.stop(
                    f"training interrupted at epoch {epoch + 1}, step {outcome.stopped_at}"
                    + (f"; checkpoint written to {checkpoint} (resume to continue exactly)" if saved else
                       f"; the weights are not finite, so no checkpoint was written; {good.describe()}"
                       if checkpoint else ""))
            skip_steps, partial = 0, None
            if dp is not None:
                totals = dp.end_epoch(stats.loss_sum, stats.correct_sum, stats.seen, stats.seen_now)
                stats.loss_sum, stats.correct_sum, stats.seen, stats.seen_now = totals
            history["epoch"].append(epoch + 1)
            history["loss"].append(stats.mean_loss)
            history["accuracy"].append(stats.accuracy)
            history["lr"].append(optimizer.lr)
            history["seconds"].append(outcome.seconds)
            history["images_per_second"].append(stats.seen_now / max(outcome.seconds, 1e-9))
            if validation is not None:
                result = _validate(model, loss_fn, validation, batch_size, epoch, epochs, stream, bar, dp, ema)
                history["val_loss"].append(result["loss"])
                history["val_accuracy"].append(result["accuracy"])
                if not math.isfinite(result["loss"]):
                    bar.close()
                    raise diverged(f"validation loss became {result['loss']} after epoch {epoch + 1}")
                bar.update(bar.total, loss=stats.mean_loss, acc=stats.accuracy,
                           img_s=stats.seen_now / max(outcome.seconds, 1e-9), val_loss=result["loss"],
                           val_acc=result["accuracy"])
            bar.close()
            if not all_finite(model):
                raise diverged(f"a weight became NaN or infinite in epoch {epoch + 1}")
            if isinstance(scheduler, ReduceLROnPlateau):  # on the validation loss, else the training loss
                scheduler.step(history["val_loss"][-1] if validation is not None else stats.mean_loss)
            elif scheduler is not None and per_step is None:
                scheduler.step()
            if checkpoint is not None:
                save(epoch + 1, 0, batches.state(), None)
            if on_epoch_end is not None and on_epoch_end(history) is True:
                break
            if interrupt.hit:  # a signal during the graph's epoch or the validation: stop at the epoch's end
                raise interrupt.stop(f"training interrupted after epoch {epoch + 1}"
                                     + (f"; checkpoint written to {checkpoint}" if checkpoint else ""))
    return history


def _validate(model, loss_fn, validation, batch_size, epoch, epochs, stream, bar, dp, ema=None):
    val_batch = max(batch_size, 1000)
    # On a terminal the validation pass shows its own bar, erased when done; elsewhere it stays quiet.
    val_bar = ProgressBar(math.ceil(len(validation[0]) / val_batch), f"epoch {epoch + 1}/{epochs} validating ",
                          stream, enabled=bar.interactive, leave=False)
    bar.clear()
    result = evaluate_with_bar(model, validation[0], validation[1], loss_fn, val_batch, val_bar, ema)
    if dp is not None:
        result = dp.reduce_evaluation(result, len(validation[0]))
    return result


def _eager_only(per_step_schedule, clip_grad_norm, ema):
    """Why the captured CUDA graph step cannot run this training, or None: what it would have to do between
    two steps of an epoch (it replays whole epochs on the device)."""
    if per_step_schedule is not None:
        return (f"{type(per_step_schedule).__name__} changes the learning rate after every step; the captured step "
                f"takes a new rate between epochs")
    if clip_grad_norm is not None:
        return "gradient clipping (clip_grad_norm) is not in the captured step"
    if ema is not None:
        return "the weight average (ema) is updated by the eager step only"
    return None


def _transform_check(check, transform, path):
    """``check`` and, where the run has a transform and the file its state, that the state can be restored."""
    def both(meta):
        check(meta)
        if transform is not None and meta.get("transform") is not None:
            try:
                transform.check_state(meta["transform"])
            except ValueError as exc:
                raise CheckpointError(f"{path}: {exc}") from None
    return both


def _clipper(model, max_norm):
    """The eager step's hook between backward and the optimizer step: clip the gradients, or None."""
    if max_norm is None:
        return None
    params = model.parameters()
    return lambda: clip_grad_norm_(params, max_norm)


def _after_step(schedule, ema):
    """The eager step's hook after each optimizer step: step a per-step schedule, update the average."""
    if schedule is None and ema is None:
        return None

    def after():
        if ema is not None:
            ema.update()
        if schedule is not None:
            schedule.step()
    return after


def _on_cuda(model):
    params = model.parameters()
    return bool(params) and get_array_module(params[0].data) is not numpy


def all_finite(model):
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


@contextlib.contextmanager
def _restored_label_check(loss_fn):
    saved = getattr(loss_fn, "check_labels", None)
    try:
        yield
    finally:
        if saved is not None:
            loss_fn.check_labels = saved
