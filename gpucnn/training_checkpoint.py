"""The training checkpoint: everything needed to resume exactly.

It holds the model, the optimizer state, the schedule, the epoch and step, the shuffling
RNG and every layer's RNG, in one file written atomically by ``checkpoint.save_arrays``.
"""
import numpy

from .architecture import describe
from .checkpoint import CheckpointError, load_arrays, save_arrays
from .rng_state import generator_state_from_json, generator_state_to_json

__all__ = ["save_training_checkpoint", "load_training_checkpoint", "FORMAT"]

FORMAT = "gpucnn.training/1"


def _layer_rngs(model):
    """{layer index: numpy Generator} for layers that draw random numbers (Dropout)."""
    return {i: layer.rng for i, layer in enumerate(model.layers)
            if isinstance(getattr(layer, "rng", None), numpy.random.Generator)}


def save_training_checkpoint(path, model, optimizer, scheduler, progress):
    """Atomically write everything needed to resume: weights, optimizer, schedule, RNGs and ``progress``."""
    arrays = {f"model.{k}": v for k, v in model.named_state().items()}
    opt_arrays, opt_scalars = optimizer.state_arrays()
    arrays.update({f"optimizer.{k}": v for k, v in opt_arrays.items()})
    meta = {
        "format": FORMAT,
        "architecture": describe(model, getattr(model, "input_shape", None)),  # lets `gpucnn export` rebuild the model
        "optimizer": {"type": type(optimizer).__name__, **opt_scalars},
        "scheduler": scheduler.state() if scheduler is not None else None,
        "layer_rngs": {str(i): generator_state_to_json(rng.bit_generator.state)
                       for i, rng in _layer_rngs(model).items()},
        **progress,
    }
    save_arrays(path, arrays, meta)


def load_training_checkpoint(path, model, optimizer, scheduler=None):
    """Restore a checkpoint written by ``save_training_checkpoint``; returns its progress dict.

    The model is checked against the file before anything changes, so a bad file leaves
    the weights as they were.
    """
    arrays, meta = load_arrays(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gpucnn training checkpoint (format {meta.get('format')!r})")
    if meta["optimizer"]["type"] != type(optimizer).__name__:
        raise CheckpointError(f"{path}: holds {meta['optimizer']['type']} state, the optimizer is "
                              f"{type(optimizer).__name__}")
    model_state = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    opt_state = {k[len("optimizer."):]: v for k, v in arrays.items() if k.startswith("optimizer.")}
    model.load_state(model_state, source=str(path))
    optimizer.load_state_arrays(opt_state, meta["optimizer"])
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.set_state(meta["scheduler"])
    rngs = _layer_rngs(model)
    for key, state in meta.get("layer_rngs", {}).items():
        if int(key) in rngs:
            rngs[int(key)].bit_generator.state = generator_state_from_json(state)
    return meta
