"""What every batch transform shares (gpucnn.data.transforms): its own seeded generator, the two steps of a
call (draw on the host, apply on the batch's device), its state as JSON, and the argument checks.

A call ``t(x)`` on a batch ``x`` of shape (N, C, H, W):

    params = t.sample(N, (C, H, W), t.rng)    # NumPy arrays on the host: one set of random draws per sample
    params = on the device of x                # one copy per array, once per batch
    return t.apply(x, params)                  # vectorised over the batch with x's module (NumPy or CuPy)

Drawing on the host from the transform's own ``numpy.random.Generator`` keeps a seed's augmentations
the same on every device, and its state is what a training checkpoint saves (``state`` / ``set_state``).
``apply`` is elementwise in the samples: the result for one sample depends only on that sample and its
parameters, so applying a whole epoch at once equals applying it batch by batch, bit for bit.
"""
import numbers

import numpy

from ..backend import device_scope, get_array_module
from .batches import rng_state_from_json, rng_state_to_json

__all__ = ["Transform", "params_to_device", "check_batch", "check_probability", "check_range"]


class Transform:
    """Base of the batch transforms: ``sample`` draws, ``apply`` transforms, ``__call__`` does both.

    Args:
        seed: None (fresh entropy), an int, or a ``numpy.random.Generator`` (used as it is) to draw from.
    """

    def __init__(self, seed=None):
        self.rng = seed if isinstance(seed, numpy.random.Generator) else numpy.random.default_rng(seed)

    def sample(self, n, image_shape, rng):
        """The random parameters of ``n`` samples of ``image_shape`` (C, H, W): a dict of host NumPy arrays
        with ``n`` rows each, drawn from ``rng``. A transform that draws nothing returns {}."""
        return {}

    def apply(self, x, params):
        """``x`` transformed with ``params`` (from ``sample``, already on x's device); x is left as it is."""
        raise NotImplementedError

    def output_shape(self, image_shape):
        """The (C, H, W) of a transformed sample."""
        return tuple(image_shape)

    def __call__(self, x):
        check_batch(x, type(self).__name__)
        with device_scope(x):
            params = params_to_device(self.sample(len(x), tuple(x.shape[1:]), self.rng), x)
            return self.apply(x, params)

    def state(self):
        """The generator's state as plain JSON-able data (128-bit integers as decimal strings)."""
        return {"transform": repr(self), "rng": rng_state_to_json(self.rng.bit_generator.state)}

    def check_state(self, state):
        """ValueError unless ``state`` (from :meth:`state`, e.g. out of a checkpoint) can be restored here."""
        if not isinstance(state, dict) or not isinstance(state.get("rng"), dict):
            raise ValueError(f"transform state is {type(state).__name__} without an 'rng' object")
        expected = type(self.rng.bit_generator).__name__
        if state["rng"].get("bit_generator") != expected:
            raise ValueError(f"transform state is for bit generator {state['rng'].get('bit_generator')!r}, "
                             f"this transform uses {expected!r}")
        try:
            type(self.rng.bit_generator)().state = rng_state_from_json(state["rng"])  # a scratch generator
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ValueError(f"transform state is malformed ({type(exc).__name__}: {exc})") from None

    def set_state(self, state):
        """Restore what :meth:`state` returned, so that the next draws repeat exactly (checked first)."""
        self.check_state(state)
        self.rng.bit_generator.state = rng_state_from_json(state["rng"])


def params_to_device(params, x):
    """The host arrays of ``params`` (a dict, or a list of dicts for Compose) on the device of ``x``."""
    xp = get_array_module(x)
    if xp is numpy:
        return params
    if isinstance(params, list):
        return [params_to_device(p, x) for p in params]
    return {key: xp.asarray(value) for key, value in params.items()}


def check_batch(x, name):
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"{name}: expects a batch of images (N, C, H, W), got "
                         f"{'shape ' + str(tuple(shape)) if shape is not None else type(x).__name__}")


def check_probability(p, name):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"{name}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


def check_range(pair, name, what, low=None, high=None):
    """A (min, max) pair of numbers with min <= max (and within [low, high] when given)."""
    try:
        a, b = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {what} must be a pair of numbers (min, max), got {pair!r}") from None
    if not a <= b or (low is not None and a < low) or (high is not None and b > high):
        bounds = f" within [{low:g}, {high:g}]" if low is not None and high is not None else \
            f" above {low:g}" if low is not None else ""
        raise ValueError(f"{name}: {what} must be (min, max) with min <= max{bounds}, got {pair!r}")
    return a, b
