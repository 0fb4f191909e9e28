"""Mini-batches over (x, y) pairs, on NumPy or CuPy arrays alike.

Shuffling draws one permutation per epoch with NumPy's RNG (so the order for a
seed is the same on every device) and indexes the arrays with slices of it on
their own device.
"""
import numbers

import numpy

from ..backend import device_scope, get_array_module

__all__ = ["iterate_batches", "BatchIterator", "rng_state_to_json", "rng_state_from_json"]


def iterate_batches(x, y, batch_size, shuffle=True, seed=None, drop_last=False):
    """Yield ``(xb, yb)`` mini-batches covering every sample once.

    Args:
        x: inputs, a NumPy or CuPy array indexed along its first axis.
        y: targets with ``len(y) == len(x)``; may live on another device than x.
        batch_size: samples per batch, an int >= 1. The last batch is smaller
            when ``len(x)`` is not a multiple, unless ``drop_last``.
        shuffle: visit the samples in a random order; False gives contiguous
            slices (views, no copies) in order.
        seed: None (fresh entropy), an int, or a ``numpy.random.Generator``
            (advanced by one permutation per call).
        drop_last: leave out the final, smaller batch.

    Returns:
        A generator of ``(xb, yb)``; each batch is on the same device as its source.

    Raises:
        ValueError: batch_size is not an int >= 1, x and y differ in length, or
            they are empty (raised by this call, before iterating).

    Example:
        >>> x, y = numpy.arange(10).reshape(5, 2), numpy.arange(5)
        >>> [yb.tolist() for _, yb in iterate_batches(x, y, 2, shuffle=False)]
        [[0, 1], [2, 3], [4]]
    """
    num_samples = _validate(x, y, batch_size)
    order = None
    if shuffle:
        rng = seed if isinstance(seed, numpy.random.Generator) else numpy.random.default_rng(seed)
        order = rng.permutation(num_samples)
    return _batches(x, y, batch_size, order, drop_last, num_samples)


class BatchIterator:
    """Re-iterable mini-batches, one fresh shuffle per epoch, resumable exactly.

    Args:
        x, y, batch_size, shuffle, drop_last: as for :func:`iterate_batches`.
        seed: int, None, or a ``numpy.random.Generator`` to draw the shuffles from.

    Each ``iter()`` is one epoch; its permutation is drawn when ``iter()`` is
    called, so ``state()`` taken between epochs (e.g. in a checkpoint) and given
    to ``set_state()`` later makes the following epochs repeat exactly.

    Example:
        >>> batches = BatchIterator(x_train, y_train, batch_size=64, seed=0)
        >>> for epoch in range(3):
        ...     for xb, yb in batches:
        ...         train_step(xb, yb)
        ...     checkpoint["batches"] = batches.state()   # JSON-able
        >>> batches.set_state(checkpoint["batches"])      # later, to resume
    """

    def __init__(self, x, y, batch_size, shuffle=True, seed=0, drop_last=False):
        self.num_samples = _validate(x, y, batch_size)
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.rng = seed if isinstance(seed, numpy.random.Generator) else numpy.random.default_rng(seed)
        self.epoch = 0

    def __len__(self):
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self):
        order = self.next_order()
        return _batches(self.x, self.y, self.batch_size, order, self.drop_last, self.num_samples)

    def next_order(self):
        """Start the next epoch and return its sample order (None without shuffling), as ``iter()`` does:
        for loops that gather their batches themselves (the graph-captured step)."""
        order = self.rng.permutation(self.num_samples) if self.shuffle else None
        self.epoch += 1
        return order

    def state(self):
        """The RNG state and epoch count as plain JSON-able data (128-bit integers as decimal strings)."""
        return {"epoch": self.epoch, **rng_state_to_json(self.rng.bit_generator.state)}

    def check_state(self, state):
        """ValueError unless ``state`` (from :meth:`state`, e.g. out of a checkpoint) can be restored."""
        if not isinstance(state, dict):
            raise ValueError(f"shuffling state is a {type(state).__name__}, expected an object")
        expected_generator = type(self.rng.bit_generator).__name__
        if state.get("bit_generator") != expected_generator:
            raise ValueError(f"state is for bit generator {state.get('bit_generator')!r}, "
                             f"this iterator uses {expected_generator!r}")
        epoch = state.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"shuffling state: epoch {epoch!r} is not an integer >= 0")
        try:
            type(self.rng.bit_generator)().state = rng_state_from_json(state)  # a scratch generator checks it
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ValueError(f"shuffling state is malformed ({type(exc).__name__}: {exc})") from None

    def set_state(self, state):
        """Restore what :meth:`state` returned, so the next epochs repeat exactly (checked first)."""
        self.check_state(state)
        self.rng.bit_generator.state = rng_state_from_json(state)
        self.epoch = int(state["epoch"])

    def __repr__(self):
        return (f"BatchIterator(num_samples={self.num_samples}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, epoch={self.epoch})")


def rng_state_to_json(state):
    """A ``bit_generator.state`` as plain JSON-able data: the 128-bit integers as decimal strings (JSON readers
    outside Python turn big integers into doubles; strings survive)."""
    return {"bit_generator": state["bit_generator"],
            "state": {key: str(value) for key, value in state["state"].items()},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def rng_state_from_json(state):
    """The ``bit_generator.state`` that :func:`rng_state_to_json` wrote (extra keys, like an epoch, ignored)."""
    return {
        "bit_generator": state["bit_generator"],
        "state": {key: int(value) for key, value in state["state"].items()},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def _validate(x, y, batch_size):
    """Number of samples, after checking the arguments every entry point shares."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    num_samples, num_targets = len(x), len(y)
    if num_samples != num_targets:
        raise ValueError(f"x and y must hold the same number of samples, got len(x)={num_samples} "
                         f"and len(y)={num_targets}")
    if num_samples == 0:
        raise ValueError("x and y are empty: there is nothing to make batches of")
    return num_samples


def _batches(x, y, batch_size, order, drop_last, num_samples):
    stop = num_samples - num_samples % batch_size if drop_last else num_samples
    if order is None:
        for start in range(0, stop, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        return
    # one transfer per epoch, not per batch
    order_x = _order_beside(x, order)
    order_y = order_x if _same_device(x, y) else _order_beside(y, order)
    for start in range(0, stop, batch_size):
        # Gather on each array's own device (CuPy works on the current one); never across the yield.
        with device_scope(x):
            xb = x[order_x[start:start + batch_size]]
        with device_scope(y):
            yb = y[order_y[start:start + batch_size]]
        yield xb, yb


def _order_beside(array, order):
    """The NumPy permutation ``order`` as an index array on the device of ``array``."""
    xp = get_array_module(array)
    if xp is numpy:
        return order
    with array.device:
        return xp.asarray(order)


def _same_device(a, b):
    xp = get_array_module(a)
    if xp is not get_array_module(b):
        return False
    return xp is numpy or a.device.id == b.device.id
