"""EMA: an exponential moving average of a model's weights, to evaluate with (torch.optim.swa_utils' EMA).

Semantics: those of ``torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
use_buffers=True)``. The first ``update()`` copies the model's parameters and buffers; each later one
moves every floating-point array towards the model's, ``avg <- lerp(avg, current, 1 - decay)``
(BatchNorm's running statistics included); integer buffers are copied. The averages are arrays of
the model's device and dtype, one per entry of ``model.named_state()``.
"""
import contextlib

from ..backend import device_of, device_scope, get_array_module, to_device

__all__ = ["EMA"]


class EMA:
    """An exponential moving average of ``model``'s parameters and buffers, ``decay`` per ``update()``.

    Args:
        model: the network whose weights to average (a Sequential or Model).
        decay: the weight of the old average, in [0, 1] (e.g. 0.999; a run of N steps averages over
            about the last 1 / (1 - decay) of them).

    Example:
        >>> ema = EMA(model, decay=0.999)
        >>> for ...: opt.step(); ema.update()
        >>> with ema.average_parameters():      # the model holds the averages inside
        ...     evaluate(model, x_test, y_test)
        >>> fit(..., ema=ema); evaluate(model, x_test, y_test, ema=ema)
    """

    def __init__(self, model, decay=0.999):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
            raise ValueError(f"EMA: decay must be a number in [0, 1], got {decay!r}")
        self.model, self.decay = model, float(decay)
        self.num_updates = 0
        self.averages = None  # {name: array}, from the first update on

    def update(self):
        """Fold the model's current weights into the average (the first call copies them)."""
        state = self.model.named_state()
        if self.averages is None or self.num_updates == 0:
            self.averages = {}
            for name, value in state.items():
                with device_scope(value):
                    self.averages[name] = value.copy()
        else:
            weight = 1.0 - self.decay
            for name, value in state.items():
                avg = self.averages[name]
                if device_of(avg) != device_of(value):
                    avg = self.averages[name] = to_device(avg, device_of(value))
                with device_scope(value):
                    if avg.dtype.kind != "f":
                        avg[...] = value
                    elif weight < 0.5:  # torch.lerp's two forms, for its rounding
                        avg += weight * (value - avg)
                    else:
                        avg[...] = value - (value - avg) * (1.0 - weight)
        self.num_updates += 1

    def _checked(self):
        if self.averages is None:
            raise RuntimeError("EMA: no average yet; call update() after an optimizer step first")
        state = self.model.named_state()
        if set(state) != set(self.averages):
            raise ValueError(f"EMA: the model's arrays {sorted(set(state) ^ set(self.averages))[:4]} do not match "
                             f"the average's")
        return state

    def copy_to(self, model=None):
        """Write the averages into ``model``'s arrays in place (default: the averaged model itself)."""
        target = self.model if model is None else model
        state = self._checked() if model is None else target.named_state()
        for name, value in state.items():
            with device_scope(value):
                value[...] = get_array_module(value).asarray(to_device(self.averages[name], device_of(value)))

    @contextlib.contextmanager
    def average_parameters(self):
        """Inside, the model holds the averaged weights; its own come back at the end (also on an error)."""
        state = self._checked()
        saved = {}
        for name, value in state.items():
            with device_scope(value):
                saved[name] = value.copy()
        self.copy_to()
        try:
            yield self.model
        finally:
            for name, value in state.items():
                with device_scope(value):
                    value[...] = saved[name]

    # ------------------------------------------------------------------ checkpoint state

    def state(self):
        """({name: array}, {'decay', 'num_updates'}): what a training checkpoint saves."""
        return dict(self.averages or {}), {"decay": self.decay, "num_updates": self.num_updates}

    def expected_state(self, meta):
        """{name: shape} of the arrays a checkpoint with EMA metadata ``meta`` holds; ValueError when bad."""
        if not isinstance(meta, dict) or set(meta) != {"decay", "num_updates"}:
            raise ValueError(f"EMA: metadata {meta!r} is not {{'decay', 'num_updates'}}")
        count = meta["num_updates"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"EMA: num_updates {count!r} is not an integer >= 0")
        if count == 0:
            return {}
        return {name: tuple(value.shape) for name, value in self.model.named_state().items()}

    def load(self, arrays, meta):
        """Restore what ``state()`` returned (the decay stays this EMA's own), on the model's devices."""
        expected = self.expected_state(meta)
        if set(arrays) != set(expected) or any(tuple(arrays[k].shape) != s for k, s in expected.items()):
            raise ValueError(f"EMA: the saved averages do not match the model ({sorted(arrays)[:4]}...)")
        state = self.model.named_state()
        averages = {}
        for name, value in arrays.items():
            target = state[name]
            with device_scope(target):
                averages[name] = get_array_module(target).array(to_device(value, device_of(target)),
                                                                dtype=target.dtype)
        self.averages = averages if expected else None
        self.num_updates = meta["num_updates"]
