"""The graph training step: ``fit`` over ``gpucnn.compile_step`` (fit(graph='auto')'s choice on CUDA).

Only the step differs from the eager one; ``fit``'s loop does the rest (validation, the
finiteness rules, checkpoints, resume, signals). What running whole epochs on the device changes:
- the shuffled order comes from the same ``BatchIterator`` as the eager step, so a seed visits
  the batches in the same order on both, and checkpoints are interchangeable at epoch boundaries;
- losses are read back once per epoch (the step accumulates them on the device), so the
  progress bar shows epochs, and a non-finite loss is noticed at the end of its epoch;
- a signal is honoured at the end of the running epoch; resuming a checkpoint written
  mid-epoch needs the eager step (``graph='auto'`` goes there by itself);
- a transform (``fit(..., transform=...)``) augments outside the graph, on the device, before each epoch's
  launches: the epoch's batches, in the shuffled order and drawn batch by batch as the eager step draws them,
  are written into the graph's static training-set buffer (labels beside them), and the graph then gathers
  them in order; the un-augmented set stays in a second device buffer. A seed gives both steps the same
  augmented batches, and the same transform state at every epoch's end;
- ``graph='auto'`` measures before it chooses: after the capture it times a few eager steps and a
  few graph launches on the first batch (``measure_steps``), keeps the faster and says both
  figures; ``graph=True`` runs the graph without measuring.
"""
import math
import time

import numpy

from ..compile.cuda_graph.step import compile_step
from .eager_step import EpochOutcome
from .kernels import warm_up_kernels
from .progress import ProgressBar

__all__ = ["GraphSteps", "graph_steps"]


class GraphEpochStats:
    """An epoch's totals as the graph step reads them back: the same names as ``EpochStats``."""

    def __init__(self, result):
        self.mean_loss, self.accuracy, self.seen_now = result["loss"], result["accuracy"], result["seen"]


class GraphSteps:
    """The step ``fit`` runs as one CUDA graph launch per batch."""

    name = "graph"

    def __init__(self, step, transform=None):
        self.step, self.transform = step, transform
        if transform is not None:  # the set as bound; step.x and step.y then hold each epoch's augmented batches
            with step.device:
                self.source_x, self.source_y = step.x.copy(), step.y.copy()

    def progress_bar(self, epoch, epochs, steps_per_epoch, stream, enabled, skip_steps):
        return ProgressBar(1, f"epoch {epoch + 1}/{epochs} (graph) ", stream, enabled=enabled)

    def run_epoch(self, epoch, batches, skip_steps, partial, bar, interrupt, diverged):
        started = time.perf_counter()
        order = batches.next_order()
        if self.transform is not None:
            order = self.augment_epoch(order, batches.batch_size)
        stats = GraphEpochStats(self.step.run_epoch(order))
        seconds = time.perf_counter() - started
        bar.update(1, loss=stats.mean_loss, acc=stats.accuracy, img_s=stats.seen_now / max(seconds, 1e-9))
        if not math.isfinite(stats.mean_loss):
            bar.close()
            raise diverged(f"loss became {stats.mean_loss} in epoch {epoch + 1} (graph step)")
        return EpochOutcome(stats, seconds)


    def augment_epoch(self, order, batch_size):
        """Write the epoch's augmented batches, in ``order``, into the step's training-set buffer (in place: the
        graph holds its address); returns the order that gathers them as they lie (0, 1, ...)."""
        step, cupy = self.step, self.step.cupy
        with step.device:
            order = cupy.asarray(order)  # one copy per epoch
            for start in range(0, len(order), batch_size):  # drawn batch by batch, as the eager step draws
                step.x[start:start + batch_size] = self.transform(self.source_x[order[start:start + batch_size]])
            step.y[...] = self.source_y[order]
        return numpy.arange(len(order))


def graph_steps(model, loss_fn, optimizer, x, y, batch_size, scheduler, graph_options, resumed_mid_epoch,
                checkpoint, fallback, notes, transform=None):
    """The captured step for this training, or None where it cannot run it and ``fallback`` is on (then a note
    on ``notes`` says why, and the model and optimizer are as they were); without ``fallback`` those cases
    raise. Kernels are compiled and the step captured here, before the first epoch's timer starts."""
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
    if resumed_mid_epoch is not None:
        if fallback:
            return eager_instead(f"{checkpoint} was written mid-epoch; the graph resumes at epoch boundaries")
        raise ValueError(f"fit(graph=True): {checkpoint} was written in the middle of epoch "
                         f"{resumed_mid_epoch + 1}; resume it with graph=False (the graph path resumes at "
                         f"epoch boundaries)")
    if len(x) < batch_size and fallback:
        return eager_instead(f"{len(x)} samples do not fill one batch of {batch_size}")
    if transform is not None and tuple(transform.output_shape(tuple(x.shape[1:]))) != tuple(x.shape[1:]):
        reason = (f"the transform makes {tuple(transform.output_shape(tuple(x.shape[1:])))} samples of "
                  f"{tuple(x.shape[1:])}; the graph's training-set buffer keeps the shape")
        if fallback:
            return eager_instead(reason)
        raise ValueError(f"fit(graph=True): {reason}")
    step.bind(x, y)
    model.train()
    warm_up_kernels(model, notes)
    snapshot = step.snapshot()
    try:
        step.capture()
    except Exception as exc:  # noqa: BLE001 - under fallback any capture failure means the eager step
        if not fallback:
            raise
        step.restore(snapshot)
        return eager_instead(f"the capture failed: {type(exc).__name__}: {exc}")
    measured = ""
    if fallback:  # graph='auto': the faster of the two on this device, as cuDNN's benchmark mode chooses
        eager_s, graph_s = measure_steps(step, model, loss_fn, optimizer, x, y, batch_size)
        measured = f"measured {graph_s * 1e3:.3g} ms a step against {eager_s * 1e3:.3g} ms eager"
        if eager_s < graph_s:
            return eager_instead(f"measured {eager_s * 1e3:.3g} ms a step eager against {graph_s * 1e3:.3g} ms "
                                 f"as a graph")
    if notes is not None:
        said = [measured] if measured else []
        if step.verify_first:
            said.append("its first step verified against the eager step")
        print("training step: one CUDA graph launch (gpucnn.compile_step" + "".join(f"; {s}" for s in said) + ")",
              file=notes, flush=True)
    return GraphSteps(step, transform)


#: timed steps of each kind in graph='auto''s measurement, after one untimed warm-up step
MEASURED_STEPS = 3


def measure_steps(step, model, loss_fn, optimizer, x, y, batch_size, repeats=MEASURED_STEPS):
    """(eager, graph): the median seconds of one training step each way on the first batch, each step
    synchronised with the device; the parameters and the optimizer are put back as they were after each."""
    cupy = step.cupy
    device = model.parameters()[0].data.device
    with device:  # the batch on the model's device, whichever is current
        xb, yb = cupy.asarray(x[:batch_size]), cupy.asarray(y[:batch_size])

    def eager():
        with device:
            loss_fn.forward(model.forward(xb), yb)
            optimizer.zero_grad()
            model.backward(loss_fn.backward(), need_input_grad=False)
            optimizer.step()

    def timed(run):
        times = []
        for k in range(repeats + 1):
            device.synchronize()
            started = time.perf_counter()
            run()
            device.synchronize()
            if k:  # the first one warms up
                times.append(time.perf_counter() - started)
        return sorted(times)[len(times) // 2]

    saved = step.snapshot()
    try:
        eager_s = timed(eager)
        step.restore(saved)
        step.start(numpy.arange(step.num_samples))
        graph_s = timed(lambda: (step.launch(), step.synchronize()))
    finally:
        step.restore(saved)
    return eager_s, graph_s
