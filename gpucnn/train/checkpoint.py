"""The training checkpoint: everything needed to resume exactly.

It holds the model, the optimizer state, the schedule, the weight average (gpucnn.optim.EMA) when
there is one, the epoch and step, the shuffling RNG and every layer's RNG, in one file written
atomically by ``checkpoint.save_arrays``.

Loading checks the whole file (names, shapes and dtypes from the array headers before any
data is read; then finite values, optimizer state, schedule, progress and RNG states) and
only then changes the model, the optimizer and the schedule: a file that fails any check
leaves every parameter, buffer and optimizer state exactly as it was.
"""
import math

import numpy

from ..io.arrays import CheckpointError, CheckpointReader, save_arrays
from ..data.batches import BatchIterator
from .rng_state import generator_state_from_json, generator_state_to_json

__all__ = ["save_training_checkpoint", "load_training_checkpoint", "read_training_meta", "same_run_check", "FORMAT"]

FORMAT = "gpucnn.training/1"
_HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second")


def _layer_rngs(model):
    """{layer index: numpy Generator} for layers that draw random numbers (Dropout)."""
    return {i: layer.rng for i, layer in enumerate(model.leaf_layers())  # nested networks' layers too
            if isinstance(getattr(layer, "rng", None), numpy.random.Generator)}


def save_training_checkpoint(path, model, optimizer, scheduler, progress, ema=None):
    """Atomically write everything needed to resume: weights, optimizer, schedule, EMA, RNGs and ``progress``."""
    arrays = {f"model.{k}": v for k, v in model.named_state().items()}
    ema_meta = None
    if ema is not None:
        ema_arrays, ema_meta = ema.state()
        arrays.update({f"ema.{k}": v for k, v in ema_arrays.items()})
    opt_arrays, opt_scalars = optimizer.state_arrays()
    arrays.update({f"optimizer.{k}": v for k, v in opt_arrays.items()})
    meta = {
        "format": FORMAT,
        "architecture": model.architecture(),  # lets `gpucnn export` rebuild the model
        "optimizer": {"type": type(optimizer).__name__, **opt_scalars},
        "scheduler": scheduler.state() if scheduler is not None else None,
        **({"ema": ema_meta} if ema_meta is not None else {}),
        "layer_rngs": {str(i): generator_state_to_json(rng.bit_generator.state)
                       for i, rng in _layer_rngs(model).items()},
        **progress,
    }
    save_arrays(path, arrays, meta)


def read_training_meta(path):
    """The metadata of a training checkpoint (epoch, step, optimizer settings, ...), without reading its arrays.

    Raises CheckpointError when the file is unusable or not a training checkpoint.
    """
    with CheckpointReader(path) as reader:
        _check_format(reader.meta, path)
        return reader.meta


def load_training_checkpoint(path, model, optimizer, scheduler=None, check=None, keep=(), ema=None):
    """Restore a checkpoint written by ``save_training_checkpoint``; returns its metadata (the progress).

    Args:
        path: the file. model, optimizer, scheduler: what to restore into.
        check: optional callable(meta) raising CheckpointError, run after the file's own checks
            and before anything changes (``fit`` uses it to compare batch size and data set).
        keep: optimizer hyperparameters ('lr', 'betas', ...) whose current values win over the file's.
        ema: the run's gpucnn.optim.EMA, restored from the file's average (which must be there); without one,
            an average in the file is left unread.

    Raises:
        CheckpointError: the file is unusable or does not fit; nothing was changed.
    """
    with CheckpointReader(path) as reader:
        meta = reader.meta
        _check_format(meta, path)
        opt_meta = meta.get("optimizer")
        if not isinstance(opt_meta, dict) or opt_meta.get("type") != type(optimizer).__name__:
            held = opt_meta.get("type") if isinstance(opt_meta, dict) else opt_meta
            raise CheckpointError(f"{path}: holds {held!r} optimizer state, the optimizer is "
                                  f"{type(optimizer).__name__}")
        try:
            opt_expected = optimizer.expected_state(opt_meta, keep)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        expected = {f"model.{k}": v for k, v in model.expected_state().items()}
        expected.update({f"optimizer.{k}": (shape, None) for k, shape in opt_expected.items()})
        expected.update({f"ema.{k}": (shape, None) for k, shape in _ema_expected(meta, path, model, ema).items()})
        reader.check_members(expected)  # names and shapes, from the headers: nothing inflated yet
        _check_progress(meta, path, scheduler, model)
        if check is not None:
            check(meta)
        arrays = reader.read_all()
    model_state = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    opt_state = {k[len("optimizer."):]: v for k, v in arrays.items() if k.startswith("optimizer.")}
    ema_state = {k[len("ema."):]: v for k, v in arrays.items() if k.startswith("ema.")}
    model.check_state(model_state, source=str(path))
    if ema is not None and ema_state:
        model.check_state(ema_state, source=f"{path} (the weight average)")  # finite, castable
    try:
        optimizer.check_state_arrays(opt_state, opt_meta, keep)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    _apply(path, meta, model, model_state, optimizer, opt_state, opt_meta, scheduler, keep)
    if ema is not None:  # checked in full above: cannot fail now
        ema.load(ema_state, meta["ema"])
    return meta


def _ema_expected(meta, path, model, ema):
    """{name: shape} of the weight average the file holds; CheckpointError when it does not fit ``ema``."""
    held = meta.get("ema")
    if held is None:
        if ema is not None:
            raise CheckpointError(f"{path}: holds no weight average (EMA), this run keeps one; resume without it")
        return {}
    if ema is None:
        return {k: tuple(v.shape) for k, v in model.named_state().items()} if isinstance(held, dict) and \
            held.get("num_updates") else {}
    try:
        return ema.expected_state(held)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def same_run_check(path, batch_size, steps_per_epoch, batches):
    """A ``check`` for load_training_checkpoint: the checkpoint's batch size, data-set size and step fit this
    run (a BatchIterator ``batches`` of ``steps_per_epoch`` steps); CheckpointError otherwise."""
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


def _check_format(meta, path):
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gpucnn training checkpoint (format {meta.get('format')!r})")


def _check_progress(meta, path, scheduler, model):
    """CheckpointError unless the schedule, progress, history and RNG states in ``meta`` are usable."""
    def bad(reason):
        return CheckpointError(f"{path}: {reason}")

    schedule = meta.get("scheduler")
    if scheduler is not None:
        if schedule is None:
            raise bad(f"holds no schedule state, this run uses {type(scheduler).__name__}")
        try:
            scheduler.check_state(schedule)
        except ValueError as exc:
            raise bad(str(exc)) from None
    elif schedule is not None and not isinstance(schedule, dict):
        raise bad(f"schedule state is a {type(schedule).__name__}, expected an object")
    for key in ("epoch", "step"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(f"progress: {key} is {value!r}, expected an integer >= 0")
    history = meta.get("history")
    if not isinstance(history, dict) or not set(_HISTORY_KEYS) <= set(history):
        raise bad(f"progress: history is not an object with keys {list(_HISTORY_KEYS)}")
    for key, values in history.items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values):
            raise bad(f"progress: history[{key!r}] is not a list of numbers")
        # every epoch appends the training figures; validation ones only for epochs run with validation
        every_epoch = key in ("epoch", "loss", "accuracy", "lr", "seconds", "images_per_second")
        if len(values) != meta["epoch"] if every_epoch else len(values) > meta["epoch"]:
            raise bad(f"progress: history[{key!r}] has {len(values)} entries for {meta['epoch']} epochs")
    partial = meta.get("partial")
    if partial is not None:
        if not isinstance(partial, dict) or set(partial) != {"loss_sum", "correct", "seen"} or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in partial.values()):
            raise bad(f"progress: partial-epoch totals {partial!r} are malformed")
    if not isinstance(meta.get("batches"), dict):
        raise bad("progress: no shuffling state")
    try:
        BatchIterator(numpy.zeros(1), numpy.zeros(1), 1).check_state(meta["batches"])
    except ValueError as exc:
        raise bad(f"progress: {exc}") from None
    rng_states = meta.get("layer_rngs", {})
    rngs = _layer_rngs(model)
    if not isinstance(rng_states, dict) or set(rng_states) != {str(i) for i in rngs}:
        raise bad(f"layer RNG states are for layers {sorted(rng_states) if isinstance(rng_states, dict) else '?'}, "
                  f"the model draws random numbers in layers {sorted(rngs)}")
    for key, state in rng_states.items():
        try:
            type(rngs[int(key)].bit_generator)().state = generator_state_from_json(state)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise bad(f"the RNG state of layer {key} is malformed ({type(exc).__name__}: {exc})") from None


def _apply(path, meta, model, model_state, optimizer, opt_state, opt_meta, scheduler, keep):
    """Change everything, all checks passed; should anything still fail, put every piece back."""
    saved_model = model.named_state()
    saved_opt = (optimizer.state, [dict(g) for g in optimizer.param_groups], dict(vars(optimizer)))
    saved_sched = scheduler.state() if scheduler is not None else None
    rngs = _layer_rngs(model)
    saved_rngs = {i: rng.bit_generator.state for i, rng in rngs.items()}
    try:
        model.load_state(model_state, source=str(path))
        optimizer.load_state_arrays(opt_state, opt_meta, keep)
        if scheduler is not None:
            schedule = dict(meta["scheduler"])
            if "lr" in keep:
                schedule = scheduler.keep_lr(schedule)  # the explicitly given learning rate wins
            scheduler.set_state(schedule)
        for key, state in meta.get("layer_rngs", {}).items():
            rngs[int(key)].bit_generator.state = generator_state_from_json(state)
    except BaseException:
        model.restore_state(saved_model)
        vars(optimizer).clear()
        vars(optimizer).update(saved_opt[2])
        if scheduler is not None:
            scheduler.set_state(saved_sched)
        for group, saved in zip(optimizer.param_groups, saved_opt[1]):
            group.update(saved)  # the rates and momenta as they were, whatever the schedule computes
        for i, state in saved_rngs.items():
            rngs[i].bit_generator.state = state
        raise
