"""Verify mode of the fast path (``gpucnn.config.verify``): what a forward changes besides its caches, put back
before the reference runs the same step, and the fast path's numbers held against the reference's by the one
verifier (gpucnn/compile/verify.py). Shared by the chain runner (runner.py) and the graph runner (graph_runner.py).
"""
import contextlib
import warnings

import numpy

from ...config import config
from ..verify import describe_difference, relative_error, tolerance

__all__ = ["FastPathMismatch", "verify_mode", "compare", "layer_state", "restore_layer_state", "reference_path"]


class FastPathMismatch(RuntimeError):
    """Verify mode found the fast path and the reference path disagreeing."""


def layer_state(layers):
    """What a forward changes besides its caches: random generators (Dropout) and buffers (BatchNorm)."""
    state = []
    for layer in layers:
        rng = getattr(layer, "rng", None)
        rng_state = rng.bit_generator.state if isinstance(rng, numpy.random.Generator) else None
        state.append((rng_state, {name: getattr(layer, name).copy() for name in layer.buffer_names}))
    return state


def restore_layer_state(layers, state):
    for layer, (rng_state, buffers) in zip(layers, state):
        if rng_state is not None:
            layer.rng.bit_generator.state = rng_state
        for name, value in buffers.items():
            getattr(layer, name)[...] = value


def verify_mode():
    """None (verify off), 'raise' or 'warn', from ``gpucnn.config.verify``."""
    mode = config.verify
    if mode in (False, None):
        return None
    if mode is True:
        return "raise"
    if mode not in ("raise", "warn"):
        raise ValueError(f"gpucnn.config.verify must be False, True, 'raise' or 'warn', got {mode!r}")
    return mode


def compare(what, fast, reference, mode, scale_floor=0.0):
    """Equal up to float rounding, by the one verifier's rule and tolerance (gpucnn/compile/verify.py)."""
    limit = tolerance(reference.dtype)
    error = relative_error(fast, reference, scale_floor)
    if error <= limit:
        return
    message = (f"gpucnn verify: the fast path's {what} differs from the reference path's: "
               f"{describe_difference(what, error, limit)}; set gpucnn.config.path = 'reference' and please report it")
    if mode == "raise":
        raise FastPathMismatch(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


@contextlib.contextmanager
def reference_path():
    """``gpucnn.config.path = 'reference'`` inside: the reference step that verify mode runs takes the reference path
    all the way down (a block nested in a Sequential would otherwise run its own fast path)."""
    before, config.path = config.path, "reference"
    try:
        yield
    finally:
        config.path = before
