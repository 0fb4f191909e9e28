"""OneCycleLR: the 1cycle learning-rate policy, with the momentum (or Adam's beta1) cycled the other way."""
import math

from .schedules import LRScheduler, positive_int

__all__ = ["OneCycleLR"]


def _is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin), as torch.optim.lr_scheduler.OneCycleLR, stepped after every batch.

    The rate climbs from max_lr / div_factor to ``max_lr`` over ``pct_start`` of ``total_steps`` (or
    ``epochs * steps_per_epoch``), then anneals to initial_lr / final_div_factor (``three_phase``: back to the
    initial rate first, then down). With ``cycle_momentum`` the momentum (SGD) or beta1 (Adam, AdamW) goes the
    other way, from ``max_momentum`` down to ``base_momentum`` and back. Stepping past ``total_steps`` is an error.

    Example:
        >>> sched = OneCycleLR(opt, max_lr=0.01, epochs=10, steps_per_epoch=len(batches))
        >>> fit(model, loss, opt, x, y, epochs=10, scheduler=sched)   # fit steps it after each batch
    """

    interval = "step"
    settings = ("total_steps", "pct_start", "anneal_strategy", "cycle_momentum", "div_factor", "final_div_factor",
                "three_phase")

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, interval=None):
        if total_steps is not None:
            self.total_steps = positive_int(total_steps, "total_steps", "OneCycleLR")
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (positive_int(epochs, "epochs", "OneCycleLR")
                                * positive_int(steps_per_epoch, "steps_per_epoch", "OneCycleLR"))
        else:
            raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
        if not _is_real(pct_start) or not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must lie in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        groups = optimizer.param_groups
        self.pct_start, self.anneal_strategy, self.three_phase = float(pct_start), anneal_strategy, bool(three_phase)
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)
        self.cycle_momentum = bool(cycle_momentum)
        self.max_lrs = self._per_group(max_lr, "max_lr", groups)
        for group, top in zip(groups, self.max_lrs):
            group["initial_lr"] = top / self.div_factor
        super().__init__(optimizer, interval)
        self.min_lrs = [base / self.final_div_factor for base in self.base_lrs]
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError("OneCycleLR: cycle_momentum needs an optimizer with momentum or betas; give "
                                 "cycle_momentum=False")
            self.use_beta1 = "betas" in optimizer.defaults
            self.max_momentums = self._per_group(max_momentum, "max_momentum", groups)
            self.base_momentums = self._per_group(base_momentum, "base_momentum", groups)
        end_up = self.pct_start * self.total_steps - 1
        if self.three_phase:  # (end step, lr from, lr to, momentum from, momentum to) of each phase; see _at
            self.phases = [(end_up, "i", "x", "x", "b"),
                           (2 * self.pct_start * self.total_steps - 2, "x", "i", "b", "x"),
                           (self.total_steps - 1, "i", "n", "x", "x")]
        else:
            self.phases = [(end_up, "i", "x", "x", "b"), (self.total_steps - 1, "x", "n", "b", "x")]
        self._start()

    @staticmethod
    def _per_group(value, name, groups):
        values = list(value) if isinstance(value, (list, tuple)) else [value] * len(groups)
        if len(values) != len(groups):
            raise ValueError(f"OneCycleLR: expected {len(groups)} values of {name} (one per group), got {len(values)}")
        return [float(v) for v in values]

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, epoch):
        """(names, pct): the phase of ``epoch`` as the names of its start and end lr ('i' initial, 'x' max,
        'n' min) and momentum ('x' max, 'b' base), and how far into the phase ``epoch`` is."""
        if epoch > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {epoch} times; total_steps is {self.total_steps}")
        start_step = 0.0
        for i, (end_step, *names) in enumerate(self.phases):
            if epoch <= end_step or i == len(self.phases) - 1:
                pct = (epoch - start_step) / (end_step - start_step)
                return names, pct
            start_step = end_step

    def lrs_at(self, epoch):
        (start, end, _, _), pct = self._at(epoch)
        return [self._anneal({"i": i, "x": x, "n": n}[start], {"i": i, "x": x, "n": n}[end], pct)
                for i, x, n in zip(self.base_lrs, self.max_lrs, self.min_lrs)]

    def momenta_at(self, epoch):
        """Each group's momentum (or beta1) at ``epoch``."""
        (_, _, start, end), pct = self._at(epoch)
        return [self._anneal({"x": x, "b": b}[start], {"x": x, "b": b}[end], pct)
                for x, b in zip(self.max_momentums, self.base_momentums)]

    def apply(self, epoch):
        super().apply(epoch)
        if self.cycle_momentum:
            for group, momentum in zip(self.optimizer.param_groups, self.momenta_at(epoch)):
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum

    def state(self):
        state = {**super().state(), "max_lrs": list(self.max_lrs)}
        if self.cycle_momentum:
            state.update(max_momentums=list(self.max_momentums), base_momentums=list(self.base_momentums))
        return state

    def keep_lr(self, state):
        return {**super().keep_lr(state), "max_lrs": list(self.max_lrs)}

    def check_state(self, state):
        super().check_state(state)
        for key in ("max_lrs", "max_momentums", "base_momentums"):
            if key in state and (not isinstance(state[key], list) or len(state[key]) != len(self.base_lrs)
                                 or not all(_is_real(v) and math.isfinite(v) for v in state[key])):
                raise ValueError(f"OneCycleLR: {key} {_short(state[key])} in the schedule state is not one finite "
                                 f"number per parameter group")
        if state["last_epoch"] > self.total_steps:
            raise ValueError(f"OneCycleLR: the schedule state is at step {state['last_epoch']}, past total_steps "
                             f"{self.total_steps}")

    def set_state(self, state):
        self.check_state(state)
        self.max_lrs = [float(v) for v in state.get("max_lrs", self.max_lrs)]
        if self.cycle_momentum:
            self.max_momentums = [float(v) for v in state.get("max_momentums", self.max_momentums)]
            self.base_momentums = [float(v) for v in state.get("base_momentums", self.base_momentums)]
        self.base_lrs = [float(b) for b in state.get("base_lrs", [state["base_lr"]] * len(self.base_lrs))]
        self.min_lrs = [base / self.final_div_factor for base in self.base_lrs]
        super().set_state(state)
