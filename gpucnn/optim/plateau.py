"""ReduceLROnPlateau: lower the learning rate when a metric stops improving (torch.optim.lr_scheduler's)."""
import math

from .schedules import check_interval

__all__ = ["ReduceLROnPlateau"]


class ReduceLROnPlateau:
    """Multiply every group's lr by ``factor`` once the metric given to ``step(metric)`` has not improved for
    ``patience`` epochs, as torch.optim.lr_scheduler.ReduceLROnPlateau (same arguments and rules).

    ``fit`` steps it after each epoch with the validation loss (the training loss without validation data).
    Its state (best value, bad epochs, cooldown) is in the checkpoint; the learning rates themselves are
    the optimizer's, restored with it.

    Example:
        >>> sched = ReduceLROnPlateau(opt, mode='min', factor=0.5, patience=2)
        >>> sched.step(val_loss)
    """

    interval = "epoch"
    settings = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs", "eps")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0, eps=1e-8, interval=None):
        if not factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1.0, got {factor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.optimizer = optimizer
        if interval is not None:
            self.interval = check_interval(interval, "ReduceLROnPlateau")
        groups = optimizer.param_groups
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(groups):
                raise ValueError(f"ReduceLROnPlateau: expected {len(groups)} min_lrs, got {len(min_lr)}")
            self.min_lrs = [float(v) for v in min_lr]
        else:
            self.min_lrs = [float(min_lr)] * len(groups)
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.eps = int(cooldown), float(eps)
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.cooldown_counter = self.num_bad_epochs = 0

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def is_better(self, a, best):
        if self.mode == "min":
            return a < best * (1.0 - self.threshold) if self.threshold_mode == "rel" else a < best - self.threshold
        return a > best * (self.threshold + 1.0) if self.threshold_mode == "rel" else a > best + self.threshold

    def step(self, metrics):
        """One epoch's ``metrics`` (a number, or a 0-d array): count it, and lower the rates when it is time."""
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                old_lr = float(group["lr"])
                new_lr = max(old_lr * self.factor, min_lr)
                if old_lr - new_lr > self.eps:
                    group["lr"] = new_lr
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        return self.optimizer.lr

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state(self):
        """What a checkpoint records: the counters, the best value (inf as a string, for JSON), the settings."""
        best = self.best if math.isfinite(self.best) else repr(self.best)
        return {"type": "ReduceLROnPlateau", "last_epoch": self.last_epoch, "best": best,
                "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter,
                **{name: getattr(self, name) for name in self.settings}}

    def keep_lr(self, state):
        return dict(state)  # the rates are the optimizer's

    def check_state(self, state):
        """ValueError unless ``state`` (from ``state()``) is usable by this schedule."""
        if not isinstance(state, dict) or state.get("type") != "ReduceLROnPlateau":
            held = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"ReduceLROnPlateau: the checkpoint's schedule is {held}, this run uses ReduceLROnPlateau")
        for key in ("last_epoch", "num_bad_epochs", "cooldown_counter"):
            value = state.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ReduceLROnPlateau: {key} {value!r} in the schedule state is not an integer >= 0")
        best = state.get("best")
        if not (isinstance(best, (int, float)) and not isinstance(best, bool) and math.isfinite(best)) \
                and best not in ("inf", "-inf"):
            raise ValueError(f"ReduceLROnPlateau: best {best!r} in the schedule state is not a number")

    def set_state(self, state):
        """Restore what ``state()`` returned (checked first); the learning rates are left to the optimizer."""
        self.check_state(state)
        self.last_epoch, self.best = state["last_epoch"], float(state["best"])
        self.num_bad_epochs, self.cooldown_counter = state["num_bad_epochs"], state["cooldown_counter"]

    def state_dict(self):
        return self.state()

    def load_state_dict(self, state_dict):
        self.set_state(state_dict)
