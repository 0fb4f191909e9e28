"""``fit(..., graph=True)`` (and ``graph='auto'``, fit's default, for a CUDA model): the training loop over the
graph-captured step (gpucnn/compile/cuda_graph/step.py).

Same contract as ``gpucnn.train.fit`` (history, validation, scheduler, checkpoints), with
these differences, all of them from running whole epochs on the device:
- the shuffled order comes from the same ``BatchIterator`` as the eager loop, so a seed
  visits the batches in the same order on both paths, and checkpoints are interchangeable
  at epoch boundaries;
- losses are read back once per epoch (the step accumulates them on the device), so a
  progress bar shows epochs, and a non-finite loss is noticed at the end of its epoch;
- Ctrl-C is honoured at the end of the running epoch (a checkpoint is written there);
  resuming a checkpoint written mid-epoch by the eager loop needs the eager loop (``graph='auto'``
  goes there by itself).
"""
import math
import time

from ...data.batches import BatchIterator
from ...train.progress import ProgressBar
from ...train.checkpoint import load_training_checkpoint, save_training_checkpoint
from .step import compile_step

__all__ = ["fit_graph"]


def fit_graph(model, loss_fn, optimizer, x, y, epochs, batch_size=128, validation=None, scheduler=None, seed=0,
              checkpoint=None, resume=False, progress=True, stream=None, on_epoch_end=None, graph_options=None,
              interrupt=None, keep_optimizer_settings=(), checkpoint_info=None, fallback=False, notes=None):
    """The body of ``fit(..., graph=True)``; ``graph_options`` go to ``compile_step`` (loss, update, verify,
    verify_every). ``interrupt``: a dict whose 'hit' turns true on Ctrl-C (train.py's deferred interrupt).
    Checkpoints carry what the eager loop's do (batch size, data-set size, ``checkpoint_info``), and resuming
    checks them and keeps ``keep_optimizer_settings`` as it does.

    ``fallback`` (``fit(graph='auto')``): where the graph cannot run this training (a layer, loss or optimizer
    without a fused form, a checkpoint written mid-epoch, a capture that fails), say why on ``notes`` (a
    stream, or None) and return None, with the model and optimizer as they were, for the eager loop to run
    instead; without it those cases raise. Kernels are compiled and the step captured before the first
    epoch's timer starts."""
    from ...train.loop import TrainingDiverged, _same_run, _warm_up_kernels, evaluate  # train imports us lazily

    def eager_instead(reason):
        if notes is not None:
            print(f"training step: eager, not a CUDA graph ({reason})", file=notes, flush=True)

    try:
        step = compile_step(model, loss_fn, optimizer, batch_size, **(graph_options or {}))
    except (NotImplementedError, ValueError) as exc:
        if not fallback:
            raise
        return eager_instead(exc)
    if scheduler is not None and not hasattr(step.update, "sync_from"):
        if fallback:
            return eager_instead("the captured update cannot take a scheduler's learning rate")
        raise ValueError("fit(graph=True): a scheduler changes the learning rate, but the captured update has no "
                         "sync_from(optimizer) to take the new rate between epochs")
    batches = BatchIterator(x, y, batch_size, shuffle=True, seed=seed)
    history = {key: [] for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                                   "images_per_second")}
    start_epoch = 0
    if resume and checkpoint is not None:
        import os
        if os.path.exists(checkpoint):
            meta = load_training_checkpoint(checkpoint, model, optimizer, scheduler,
                                            check=_same_run(checkpoint, batch_size, len(batches), batches),
                                            keep=keep_optimizer_settings)
            if meta["step"] != 0:
                if fallback:
                    return eager_instead(f"{checkpoint} was written mid-epoch; the graph resumes at epoch "
                                         f"boundaries")
                raise ValueError(f"fit(graph=True): {checkpoint} was written in the middle of epoch "
                                 f"{meta['epoch'] + 1}; resume it with graph=False (the graph path resumes at "
                                 f"epoch boundaries)")
            start_epoch = meta["epoch"]
            batches.set_state(meta["batches"])
            history = meta["history"]
    if len(x) < batch_size and fallback:
        return eager_instead(f"{len(x)} samples do not fill one batch of {batch_size}")
    step.bind(x, y)
    model.train()
    _warm_up_kernels(model, notes)
    snapshot = step._snapshot()
    try:
        step.capture()
    except Exception as exc:  # noqa: BLE001 - under fallback any capture failure means the eager loop
        if not fallback:
            raise
        step._restore(snapshot)
        return eager_instead(f"the capture failed: {type(exc).__name__}: {exc}")
    if notes is not None:
        print("training step: one CUDA graph launch (gpucnn.compile_step"
              + (", its first step verified against the eager step)" if step.verify_first else ")"),
              file=notes, flush=True)
    for epoch in range(start_epoch, epochs):
        bar = ProgressBar(1, f"epoch {epoch + 1}/{epochs} (graph) ", stream, enabled=progress)
        started = time.perf_counter()
        stats = step.run_epoch(batches.next_order())
        seconds = time.perf_counter() - started
        bar.update(1, loss=stats["loss"], acc=stats["accuracy"], img_s=stats["seen"] / max(seconds, 1e-9))
        bar.close()
        if not math.isfinite(stats["loss"]):
            raise TrainingDiverged(f"loss became {stats['loss']} in epoch {epoch + 1} (graph step); training "
                                   f"stopped" + (f", the last good checkpoint {checkpoint} is kept" if checkpoint
                                                 else ""))
        history["epoch"].append(epoch + 1)
        history["loss"].append(stats["loss"])
        history["accuracy"].append(stats["accuracy"])
        history["lr"].append(optimizer.lr)
        history["seconds"].append(seconds)
        history["images_per_second"].append(stats["seen"] / max(seconds, 1e-9))
        if validation is not None:
            result = evaluate(model, validation[0], validation[1], loss_fn, batch_size=max(batch_size, 1000))
            history["val_loss"].append(result["loss"])
            history["val_accuracy"].append(result["accuracy"])
        if scheduler is not None:
            scheduler.step()
        if checkpoint is not None:
            save_training_checkpoint(checkpoint, model, optimizer, scheduler, {
                "epoch": epoch + 1, "step": 0, "batches": batches.state(), "history": history, "partial": None,
                "batch_size": batch_size, "num_samples": batches.num_samples, "info": checkpoint_info})
        if on_epoch_end is not None:
            on_epoch_end(history)
        if interrupt is not None and interrupt["hit"]:
            raise KeyboardInterrupt(f"training interrupted after epoch {epoch + 1}"
                                    + (f"; checkpoint written to {checkpoint}" if checkpoint else ""))
    return history
