"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules (StepLR, CosineAnnealingLR).

The update rules live in gpucnn.ops.update (NumPy) and its CUDA twin; an optimizer
keeps the per-parameter state and calls them. Semantics follow torch.optim.
"""
import math

from ..backend import device_of, device_scope, get_array_module, to_device
from ..io.arrays import check_cast
from ..config import config
from ..ops.multi_update import multi_adam_update, multi_sgd_update
from ..ops.update import adam_update, sgd_update
from .flat import flat_groups
from ..parameter import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR"]


class Optimizer:
    """Base class: holds the parameters, the learning rate ``lr`` and per-parameter state arrays.

    On the GPU (with ``gpucnn.config.multi_tensor_optimizer``, the default) the first step
    gathers the parameters of each device and dtype into flat buffers and points every
    Parameter's ``data`` and ``grad`` (and the state arrays) at views of them, so that one
    launch steps them all (``gpucnn.optim.flat``). Arrays taken from a parameter before its
    first step are copies from then on: read ``param.data`` again after stepping.
    """

    #: names of the per-parameter state arrays, created lazily as zeros like the parameter
    state_names = ()

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: item {i} is a {type(p).__name__}, not a gpucnn.Parameter")
        if not float(lr) > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr!r}")
        self.lr = float(lr)
        self.state = [{} for _ in self.params]
        self._groups = None

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def step(self):
        if config.multi_tensor_optimizer and self._multi_tensor_step():
            return
        for i, p in enumerate(self.params):
            with device_scope(p.data):
                self._update(p, self._state_of(i, p))

    def multi_tensor_groups(self):
        """The current FlatGroups (``gpucnn.optim.flat``), built or rebuilt from the parameters' current
        arrays when needed; None where the multi-tensor path does not apply (parameters on the CPU)."""
        if self._groups is None or not all(g.is_current(self) for g in self._groups):
            self._groups = flat_groups(self)
        return self._groups

    def _multi_tensor_step(self):
        """One update launch per (device, dtype) group; False where that path does not apply.

        A step is, per group: ``group.prepare(lr)`` (host side: zero gradients still marked
        cleared, write a changed lr into ``hyper``), ``update_group(group)`` (device work only,
        no host read, no allocation: what a captured CUDA graph replays), then
        ``group.advance_host_state(self)`` (the host's step counts).
        """
        groups = self.multi_tensor_groups()
        if groups is None:
            return False
        for group in groups:
            group.prepare(self.lr)
            self.update_group(group)
            group.advance_host_state(self)
        return True

    def _update(self, param, state):
        raise NotImplementedError

    def update_group(self, group):
        """Launch this optimizer's multi-tensor update of ``group`` (gpucnn.ops.multi_update): two kernels,
        reading lr and the step count from ``group.hyper`` on the device."""
        raise NotImplementedError

    def _state_of(self, i, param):
        """The state dict of parameter i, its arrays created on (or moved to) the parameter's device."""
        state = self.state[i]
        xp = get_array_module(param.data)
        for name in self.state_names:
            if name not in state:
                state[name] = xp.zeros_like(param.data)
            elif device_of(state[name]) != device_of(param.data):
                state[name] = to_device(state[name], device_of(param.data))
        state.setdefault("step", 0)
        return state

    #: hyperparameters a checkpoint records and restores (besides lr), each (name, check) with check(value) -> bool
    hyper_checks = ()

    def state_arrays(self):
        """({'<i>.<name>': array}, {'lr': ..., 'steps': [...], 'hyper': {...}}) for a checkpoint."""
        arrays = {f"{i}.{name}": s[name] for i, s in enumerate(self.state) for name in self.state_names if name in s}
        hyper = {name: _to_json(getattr(self, name)) for name, _ in self.hyper_checks}
        return arrays, {"lr": self.lr, "steps": [s.get("step", 0) for s in self.state], "hyper": hyper}

    def expected_state(self, scalars, keep=()):
        """{key: shape} of the arrays a checkpoint with ``scalars`` must hold; ValueError when ``scalars`` is bad.

        Every parameter that has taken a step needs all its state arrays: missing state is refused,
        never re-created as zeros. ``keep``: hyperparameters whose current value wins over the file's.
        """
        name = type(self).__name__
        if not isinstance(scalars, dict):
            raise ValueError(f"{name}: optimizer metadata is a {type(scalars).__name__}, expected an object")
        lr = scalars.get("lr")
        if not _is_real(lr) or not math.isfinite(lr) or lr < 0:  # 0 is where a cosine schedule may end
            raise ValueError(f"{name}: learning rate {lr!r} in the checkpoint is not a finite number >= 0")
        steps = scalars.get("steps")
        if not isinstance(steps, list) or not all(_is_int(s) and s >= 0 for s in steps):
            raise ValueError(f"{name}: step counts {_short(steps)} are not a list of integers >= 0")
        if len(steps) != len(self.params):
            raise ValueError(f"{name}: state is for {len(steps)} parameters, this optimizer has {len(self.params)}")
        hyper = scalars.get("hyper", {})
        if not isinstance(hyper, dict) or set(hyper) - {n for n, _ in self.hyper_checks}:
            raise ValueError(f"{name}: unknown hyperparameters {_short(hyper)} in the checkpoint")
        for hname, check in self.hyper_checks:
            if hname in hyper and not check(hyper[hname]):
                raise ValueError(f"{name}: hyperparameter {hname}={_short(hyper[hname])} in the checkpoint is invalid")
        state_names = self._state_names_for({k: v for k, v in hyper.items() if k not in keep})
        return {f"{i}.{sname}": tuple(p.shape) for i, (p, step) in enumerate(zip(self.params, steps)) if step > 0
                for sname in state_names}

    def _state_names_for(self, hyper):
        """The state arrays the optimizer keeps once ``hyper`` (from a checkpoint) is applied."""
        return self.state_names

    def check_state_arrays(self, arrays, scalars, keep=()):
        """ValueError unless ``arrays`` and ``scalars`` form a usable state: keys, shapes, finite values, dtypes."""
        expected = self.expected_state(scalars, keep)
        missing, unexpected = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{type(self).__name__}: optimizer state does not match (missing {missing}, "
                             f"unexpected {unexpected})")
        for key, value in arrays.items():
            i = int(key.split(".", 1)[0])
            if tuple(value.shape) != expected[key]:
                raise ValueError(f"{type(self).__name__}: state {key} has shape {tuple(value.shape)}, "
                                 f"parameter has {expected[key]}")
            check_cast(value, self.params[i].dtype, f"optimizer state {key}")

    def load_state_arrays(self, arrays, scalars, keep=()):
        """Restore what ``state_arrays`` returned; checked in full first, so a bad state changes nothing.

        Arrays go to each parameter's device on the next step. ``keep`` names hyperparameters
        ('lr', 'betas', ...) whose current values win over the checkpoint's.
        """
        self.check_state_arrays(arrays, scalars, keep)
        state = [{} for _ in self.params]
        for key, value in arrays.items():
            i, name = key.split(".", 1)
            state[int(i)][name] = value.astype(self.params[int(i)].dtype)
        for s, step in zip(state, scalars["steps"]):
            s["step"] = int(step)
        for name, value in scalars.get("hyper", {}).items():
            if name not in keep:
                self._set_hyper(name, value)
        self.state = state
        if "lr" not in keep:
            self.lr = float(scalars["lr"])

    def _set_hyper(self, name, value):
        setattr(self, name, tuple(float(v) for v in value) if isinstance(value, list) else type(getattr(self, name))(
            value))


def _is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _to_json(value):
    return list(value) if isinstance(value, tuple) else value


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unit_interval(value):
    return _is_real(value) and 0 <= value < 1


def _non_negative(value):
    return _is_real(value) and math.isfinite(value) and value >= 0


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Example:
        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); model.backward(loss.backward()); opt.step()
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum and weight_decay must be >= 0, got {momentum!r}, {weight_decay!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum needs momentum > 0 and dampening 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.dampening = float(dampening)
        self.state_names = ("momentum_buffer",) if self.momentum else ()

    hyper_checks = (("momentum", _non_negative), ("dampening", _non_negative),
                    ("nesterov", lambda v: isinstance(v, bool)), ("weight_decay", _non_negative))

    def _state_names_for(self, hyper):
        return ("momentum_buffer",) if hyper.get("momentum", self.momentum) else ()

    def _set_hyper(self, name, value):
        super()._set_hyper(name, value)
        self.state_names = ("momentum_buffer",) if self.momentum else ()

    def _update(self, param, state):
        sgd_update(param.data, param.grad, state.get("momentum_buffer"), self.lr, self.momentum, self.dampening,
                   self.nesterov, self.weight_decay, state["step"] == 0)
        state["step"] += 1

    def update_group(self, group):
        multi_sgd_update(group.data, group.grad, group.states.get("momentum_buffer"), group.hyper, self.momentum,
                         self.dampening, self.nesterov, self.weight_decay)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` adds L2 to the gradient, as in torch.optim.Adam."""

    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False
    hyper_checks = (("betas", lambda v: isinstance(v, list) and len(v) == 2 and all(map(_unit_interval, v))),
                    ("eps", _non_negative), ("weight_decay", _non_negative))

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        beta1, beta2 = betas
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"{type(self).__name__}: betas must lie in [0, 1), got {betas!r}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: eps and weight_decay must be >= 0")
        self.betas = (float(beta1), float(beta2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def _update(self, param, state):
        state["step"] += 1
        adam_update(param.data, param.grad, state["exp_avg"], state["exp_avg_sq"], self.lr, self.betas[0],
                    self.betas[1], self.eps, self.weight_decay, state["step"], self.decoupled)

    def update_group(self, group):
        multi_adam_update(group.data, group.grad, group.states["exp_avg"], group.states["exp_avg_sq"], group.hyper,
                          self.betas[0], self.betas[1], self.eps, self.weight_decay, self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): param *= 1 - lr * weight_decay before the Adam step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class _Schedule:
    """Sets ``optimizer.lr`` from the epoch count; call ``step()`` once per epoch, after training it."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)
        return self.optimizer.lr

    def state(self):
        return {"type": type(self).__name__, "base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def check_state(self, state):
        """ValueError unless ``state`` (from ``state()``, e.g. out of a checkpoint) is usable by this schedule."""
        name = type(self).__name__
        if not isinstance(state, dict) or not {"base_lr", "last_epoch"} <= set(state):
            raise ValueError(f"{name}: schedule state {_short(state)} lacks base_lr and last_epoch")
        if state.get("type", name) != name:
            raise ValueError(f"{name}: the checkpoint's schedule is {state['type']}, this run uses {name}")
        base_lr, last_epoch = state["base_lr"], state["last_epoch"]
        if not _is_real(base_lr) or not math.isfinite(base_lr) or base_lr <= 0:
            raise ValueError(f"{name}: base_lr {base_lr!r} in the schedule state is not a finite number > 0")
        if not _is_int(last_epoch) or last_epoch < 0:
            raise ValueError(f"{name}: last_epoch {last_epoch!r} in the schedule state is not an integer >= 0")

    def set_state(self, state):
        """Restore what ``state()`` returned; checked first, so a bad state changes nothing."""
        self.check_state(state)
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(_Schedule):
    """lr = base_lr * gamma ** (epoch // step_size), as torch.optim.lr_scheduler.StepLR."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        if int(step_size) < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2, as torch's CosineAnnealingLR."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        if int(T_max) < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max!r}")
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
