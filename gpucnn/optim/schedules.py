"""Learning-rate schedules with torch.optim.lr_scheduler's names and semantics.

A schedule sets every parameter group's ``'lr'`` (``optimizer.param_groups``) from a count of
its own ``step()`` calls, ``last_epoch``. ``interval`` says what one step is: ``'epoch'`` (``fit``
steps the schedule after each epoch) or ``'step'`` (after each optimizer step; OneCycleLR's
default, in gpucnn/optim/onecycle.py). Every schedule but ReduceLROnPlateau (gpucnn/optim/plateau.py)
is a closed form of ``last_epoch``, so ``state()`` (``state_dict()``) is a few numbers and a resumed
run continues on the very same floats.

Example:
    >>> sched = OneCycleLR(opt, max_lr=4e-3, epochs=4, steps_per_epoch=235)   # steps per batch
    >>> warm = SequentialLR(opt, [LinearWarmup(opt, 2), CosineAnnealingLR(opt, T_max=8)], milestones=[2])
"""
import bisect
import math

__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR", "LinearWarmup", "SequentialLR", "INTERVALS",
           "check_interval", "positive_int"]

INTERVALS = ("epoch", "step")


def _is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def positive_int(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
    return value


def check_interval(interval, owner):
    if interval not in INTERVALS:
        raise ValueError(f"{owner}: interval must be 'epoch' or 'step', got {interval!r}")
    return interval


class LRScheduler:
    """Base class: ``base_lrs`` (each group's ``'initial_lr'``, set from its lr the first time a schedule sees
    it, as PyTorch does), ``last_epoch`` (steps taken), ``lrs_at(epoch)`` (the closed form)."""

    interval = "epoch"

    def __init__(self, optimizer, interval=None):
        self.optimizer = optimizer
        if interval is not None:
            self.interval = check_interval(interval, type(self).__name__)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0

    def _start(self):
        """Set the learning rates of epoch 0 (PyTorch's initial step), once the subclass is set up."""
        self.apply(0)

    @property
    def base_lr(self):
        return self.base_lrs[0]

    def lr_at(self, epoch):
        """The first group's learning rate at ``epoch``."""
        return self.lrs_at(epoch)[0]

    def lrs_at(self, epoch):
        return [self.lr_from(base, epoch) for base in self.base_lrs]

    def lr_from(self, base_lr, epoch):
        raise NotImplementedError

    def apply(self, epoch):
        """Set every group's learning rate (and whatever else the schedule drives) for ``epoch``."""
        for group, lr in zip(self.optimizer.param_groups, self.lrs_at(epoch)):
            group["lr"] = lr

    def step(self):
        self.last_epoch += 1
        self.apply(self.last_epoch)
        return self.optimizer.lr

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------ state

    #: the settings ``state()`` records besides base_lrs and last_epoch (for the reader: a resumed run takes its
    #: own, so that, say, more epochs stretch a cosine)
    settings = ()

    def state(self):
        """What a checkpoint records (JSON-able): type, base_lr(s), last_epoch and the schedule's settings."""
        state = {"type": type(self).__name__, "base_lr": self.base_lrs[0], "base_lrs": list(self.base_lrs),
                 "last_epoch": self.last_epoch}
        state.update({name: getattr(self, name) for name in self.settings})
        return state

    def keep_lr(self, state):
        """A copy of ``state`` (a checkpoint's) with this schedule's own base learning rates: a resumed run
        given ``--lr`` keeps it."""
        return {**state, "base_lr": self.base_lrs[0], "base_lrs": list(self.base_lrs)}

    def check_state(self, state):
        """ValueError unless ``state`` (from ``state()``, e.g. out of a checkpoint) is usable by this schedule."""
        name = type(self).__name__
        if not isinstance(state, dict) or not {"base_lr", "last_epoch"} <= set(state):
            raise ValueError(f"{name}: schedule state {_short(state)} lacks base_lr and last_epoch")
        if state.get("type", name) != name:
            raise ValueError(f"{name}: the checkpoint's schedule is {state['type']}, this run uses {name}")
        base_lrs, last_epoch = state.get("base_lrs", [state["base_lr"]] * len(self.base_lrs)), state["last_epoch"]
        if not isinstance(base_lrs, list) or len(base_lrs) != len(self.base_lrs):
            raise ValueError(f"{name}: the schedule state's base_lrs {_short(base_lrs)} are not one per parameter "
                             f"group ({len(self.base_lrs)})")
        for base_lr in [state["base_lr"]] + base_lrs:
            if not _is_real(base_lr) or not math.isfinite(base_lr) or base_lr <= 0:
                raise ValueError(f"{name}: base_lr {base_lr!r} in the schedule state is not a finite number > 0")
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < 0:
            raise ValueError(f"{name}: last_epoch {last_epoch!r} in the schedule state is not an integer >= 0")

    def set_state(self, state):
        """Restore what ``state()`` returned and set the learning rates it gives; checked first, so a bad state
        changes nothing."""
        self.check_state(state)
        self.base_lrs = [float(b) for b in state.get("base_lrs", [state["base_lr"]] * len(self.base_lrs))]
        self.last_epoch = int(state["last_epoch"])
        self.apply(self.last_epoch)

    def state_dict(self):
        """PyTorch's name for ``state()``."""
        return self.state()

    def load_state_dict(self, state_dict):
        """PyTorch's name for ``set_state()``."""
        self.set_state(state_dict)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size), as torch.optim.lr_scheduler.StepLR."""

    settings = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1, interval=None):
        super().__init__(optimizer, interval)
        if isinstance(step_size, bool) or int(step_size) < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        self._start()

    def lr_from(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2, as torch's CosineAnnealingLR."""

    settings = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, interval=None):
        super().__init__(optimizer, interval)
        if isinstance(T_max, bool) or int(T_max) < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max!r}")
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)
        self._start()

    def lr_from(self, base_lr, epoch):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class LinearLR(LRScheduler):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters), as
    torch.optim.lr_scheduler.LinearLR: from ``start_factor`` times the base to ``end_factor`` times it."""

    settings = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, interval=None):
        super().__init__(optimizer, interval)
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must lie in (0, 1], got {start_factor!r}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must lie in [0, 1], got {end_factor!r}")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = positive_int(total_iters, "total_iters", "LinearLR")
        self._start()

    def lr_from(self, base_lr, epoch):
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                          * min(self.total_iters, epoch) / self.total_iters)


class LinearWarmup(LinearLR):
    """A linear warm-up over ``warmup_steps`` steps of the schedule: LinearLR(optimizer, start_factor,
    end_factor=1.0, total_iters=warmup_steps). The default ``start_factor`` is 1 / (warmup_steps + 1), so the
    rate climbs base/(W+1), 2 base/(W+1), ... and reaches the base at step W.

    Compose it with a decay through SequentialLR, the warm-up's length as the milestone:
        >>> SequentialLR(opt, [LinearWarmup(opt, 2), CosineAnnealingLR(opt, T_max=8)], milestones=[2])
    """

    def __init__(self, optimizer, warmup_steps, start_factor=None, interval=None):
        warmup_steps = positive_int(warmup_steps, "warmup_steps", "LinearWarmup")
        start_factor = 1.0 / (warmup_steps + 1) if start_factor is None else start_factor
        super().__init__(optimizer, start_factor, 1.0, warmup_steps, interval)


class SequentialLR(LRScheduler):
    """``schedulers[i]`` drives the learning rate from ``milestones[i-1]`` on, counting its own steps from 0 there,
    as torch.optim.lr_scheduler.SequentialLR. Its ``interval`` is its schedules' (they must agree)."""

    def __init__(self, optimizer, schedulers, milestones, interval=None):
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR: expects at least one scheduler, got none")
        for i, scheduler in enumerate(schedulers):
            if getattr(scheduler, "optimizer", None) is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {i} ({type(scheduler).__name__}) belongs to another "
                                 f"optimizer")
            if not isinstance(scheduler, LRScheduler):
                raise ValueError(f"SequentialLR: scheduler {i} is a {type(scheduler).__name__}; it takes closed-form "
                                 f"schedules (not ReduceLROnPlateau, whose step needs a metric)")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: expects one milestone fewer than schedulers, got {len(schedulers)} "
                             f"schedulers and {len(milestones)} milestones")
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones) \
                or milestones != sorted(milestones):
            raise ValueError(f"SequentialLR: milestones must be increasing integers >= 1, got {milestones!r}")
        intervals = {s.interval for s in schedulers}
        if interval is None and len(intervals) != 1:
            raise ValueError(f"SequentialLR: its schedulers step per {' and per '.join(sorted(intervals))}; give "
                             f"them one interval")
        super().__init__(optimizer, interval or intervals.pop())
        self.schedulers, self.milestones = schedulers, milestones
        self._start()

    def _active(self, epoch):
        idx = bisect.bisect_right(self.milestones, epoch)
        return self.schedulers[idx], epoch - (self.milestones[idx - 1] if idx else 0)

    def lrs_at(self, epoch):
        scheduler, local = self._active(epoch)
        return scheduler.lrs_at(local)

    def apply(self, epoch):
        scheduler, local = self._active(epoch)
        scheduler.last_epoch = local
        scheduler.apply(local)

    def state(self):
        return {**super().state(), "milestones": list(self.milestones),
                "schedulers": [s.state() for s in self.schedulers]}

    def keep_lr(self, state):
        children = state.get("schedulers")
        if isinstance(children, list) and len(children) == len(self.schedulers):
            children = [s.keep_lr(c) if isinstance(c, dict) else c for s, c in zip(self.schedulers, children)]
        return {**super().keep_lr(state), "schedulers": children}

    def check_state(self, state):
        super().check_state(state)
        name = type(self).__name__
        if state.get("milestones", self.milestones) != self.milestones:
            raise ValueError(f"{name}: the checkpoint's milestones {state['milestones']} differ from this run's "
                             f"{self.milestones}")
        children = state.get("schedulers")
        if not isinstance(children, list) or len(children) != len(self.schedulers):
            raise ValueError(f"{name}: the checkpoint's schedule holds {_short(children)} where this run has "
                             f"{len(self.schedulers)} schedulers")
        for scheduler, child in zip(self.schedulers, children):
            scheduler.check_state(child)

    def set_state(self, state):
        self.check_state(state)
        for scheduler, child in zip(self.schedulers, state["schedulers"]):
            scheduler.base_lrs = [float(b) for b in child.get("base_lrs", [child["base_lr"]] * len(self.base_lrs))]
            scheduler.last_epoch = int(child["last_epoch"])
        super().set_state(state)
