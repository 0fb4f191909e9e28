"""The eager training step: forward, loss, backward, optimizer step, one batch at a time (any device).

``EagerSteps.run_epoch`` is what ``fit`` calls once per epoch on this step. Losses stay on the
device and are read back every ``sync_every`` steps, so the GPU is not stalled once per step.
A signal is honoured after the step it arrived in (``fit`` then writes a mid-epoch checkpoint).
"""
import time

import numpy

from ..backend import asnumpy, device_scope, get_array_module, is_out_of_memory
from ..nn.losses import check_label_range
from .progress import ProgressBar

__all__ = ["EagerSteps", "EpochStats", "EpochOutcome"]


class EpochOutcome:
    """What one epoch's run gives ``fit``: ``stats`` (an EpochStats), ``seconds``, and ``stopped_at``: the
    number of steps done when a signal stopped the epoch early (None when it ran to its end)."""

    def __init__(self, stats, seconds, stopped_at=None):
        self.stats, self.seconds, self.stopped_at = stats, seconds, stopped_at


class EagerSteps:
    """The step ``fit`` runs on the CPU, under ``distributed``, and wherever the CUDA graph cannot run."""

    name = "eager"

    def __init__(self, model, loss_fn, optimizer, y, validation, batch_size, sync_every, data_parallel=None,
                 after_backward=None, after_step=None, transform=None):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        # fit's hooks (or None): clip the gradients before the optimizer step; EMA and per-step schedule after it
        self.after_backward, self.after_step = after_backward, after_step
        self.transform = transform  # fit's augmentation of each training batch (on its device), or None
        self.batch_size, self.sync_every, self.dp = batch_size, sync_every, data_parallel
        self.y, self.validation = y, validation
        # Labels on the GPU: check whole data sets once, then spare the loss a read-back per step.
        self.label_check_pending = getattr(loss_fn, "check_labels", False) and get_array_module(y) is not numpy

    def progress_bar(self, epoch, epochs, steps_per_epoch, stream, enabled, skip_steps):
        return ProgressBar(steps_per_epoch, f"epoch {epoch + 1}/{epochs} ", stream, enabled=enabled,
                           initial=skip_steps)

    def run_epoch(self, epoch, batches, skip_steps, partial, bar, interrupt, diverged):
        """Train the steps of one epoch from ``skip_steps`` on; ``diverged(message)`` gives the exception to
        raise for a non-finite loss (fit's, which says where the last good checkpoint is)."""
        model, loss_fn, optimizer, dp = self.model, self.loss_fn, self.optimizer, self.dp
        steps_per_epoch = len(batches)
        stats = EpochStats(steps_per_epoch, partial)
        started = time.perf_counter()
        for step, (xb, yb) in enumerate(batches):
            if step < skip_steps:
                continue
            if self.transform is not None:  # the whole batch, before sharding: the same for any number of ranks
                xb = self.transform(xb)
            if dp is not None:
                xb, yb = dp.shard(xb, yb)
            try:
                logits = model.forward(xb)
                loss = loss_fn.forward(logits, yb)
                optimizer.zero_grad()
                model.backward(loss_fn.backward(), need_input_grad=False)
                if dp is not None:
                    dp.average_gradients()
                if self.after_backward is not None:
                    self.after_backward()
                optimizer.step()
                if self.after_step is not None:
                    self.after_step()
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise MemoryError(f"out of GPU memory at batch size {self.batch_size} (epoch {epoch + 1}, step "
                                      f"{step + 1}); try a smaller batch, e.g. {max(self.batch_size // 2, 1)}: {exc}"
                                      ) from exc
                raise
            stats.record(step, loss, logits, yb, getattr(loss_fn, "correct", None))
            if self.label_check_pending:
                ignore = getattr(loss_fn, "ignore_index", None)
                check_label_range(self.y, logits.shape[1], "fit (training labels)", ignore)
                if self.validation is not None:
                    check_label_range(self.validation[1], logits.shape[1], "fit (validation labels)", ignore)
                loss_fn.check_labels, self.label_check_pending = False, False
            if (step + 1) % self.sync_every == 0 or step + 1 == steps_per_epoch or interrupt.hit:
                bad = stats.sync(step + 1)
                if bad is not None:
                    bar.close()
                    raise diverged(f"loss became {bad[1]} at epoch {epoch + 1}, step {bad[0] + 1} of "
                                   f"{steps_per_epoch}")
                elapsed = time.perf_counter() - started
                bar.update(step + 1, loss=stats.mean_loss, acc=stats.accuracy,
                           img_s=stats.seen_now / max(elapsed, 1e-9))
            if interrupt.hit:
                return EpochOutcome(stats, time.perf_counter() - started, stopped_at=step + 1)
        return EpochOutcome(stats, time.perf_counter() - started)


class EpochStats:
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
