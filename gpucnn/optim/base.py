"""The optimizer base class: parameter groups (torch.optim's ``param_groups``), per-parameter state, the
multi-tensor step, and the state a training checkpoint saves and restores.

The update rules are in gpucnn/optim/optimizers.py (SGD, Adam, AdamW).
"""
import math

from ..backend import device_of, device_scope, get_array_module, to_device
from ..config import config
from ..io.arrays import check_cast
from ..parameter import Parameter
from .flat import flat_groups

__all__ = ["Optimizer", "GroupSetting"]


class GroupSetting:
    """A hyperparameter read as the first parameter group's value; setting it sets every group's.

    ``optimizer.lr`` (and ``momentum``, ``betas``, ...) keep working as plain attributes for a
    single group; with several groups, read and write ``optimizer.param_groups[i][name]``.
    """

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return obj.param_groups[0][self.name]

    def __set__(self, obj, value):
        for group in obj.param_groups:
            group[self.name] = value


class Optimizer:
    """Base class: parameter groups, each with its own hyperparameters, and per-parameter state arrays.

    ``params`` is a list of Parameters, or a list of dicts like PyTorch's
    (``[{'params': [...], 'weight_decay': 0.0}, {'params': [...]}]``) whose missing settings come
    from the constructor's arguments. ``optimizer.param_groups`` is that list of dicts (schedules
    set each group's ``'lr'``); ``optimizer.params`` all parameters, group after group.

    On the GPU (with ``gpucnn.config.multi_tensor_optimizer``, the default) the first step
    gathers the parameters of each group, device and dtype into flat buffers and points every
    Parameter's ``data`` and ``grad`` (and the state arrays) at views of them, so that one
    launch steps them all (``gpucnn.optim.flat``). Arrays taken from a parameter before its
    first step are copies from then on: read ``param.data`` again after stepping.
    """

    lr = GroupSetting()
    #: hyperparameters of a group a checkpoint records and restores (besides lr), each (name, check)
    hyper_checks = ()

    def __init__(self, params, defaults):
        # ``defaults``: each group's settings where it gives none ({'lr': ..., ...}); a number is the lr alone
        self.defaults = dict(defaults) if isinstance(defaults, dict) else {"lr": defaults}
        if isinstance(params, Parameter) or isinstance(params, dict):
            params = [params]
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups, self.params, self.group_index = [], [], []
        for group in groups:
            self.add_param_group(group)
        self.state = [{} for _ in self.params]
        self._groups = None

    def add_param_group(self, param_group):
        """Add a group (a dict with 'params' and optional settings), as torch.optim.Optimizer.add_param_group."""
        name = type(self).__name__
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"{name}: a parameter group must be a dict with 'params', got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        if not params:
            raise ValueError(f"{name}: parameter group {len(self.param_groups)} has no parameters")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: item {i} is a {type(p).__name__}, not a gpucnn.Parameter")
        seen = {id(p) for p in self.params}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: a parameter appears in more than one group (or twice in one)")
        unknown = sorted(set(param_group) - set(self.defaults) - {"params", "initial_lr", "max_lr", "min_lr",
                                                                    "max_momentum", "base_momentum"})
        if unknown:
            raise ValueError(f"{name}: unknown settings {unknown} in a parameter group; known: {sorted(self.defaults)}")
        group = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}, "params": params}
        self.check_settings(group)
        index = len(self.param_groups)
        self.param_groups.append(group)
        self.params.extend(params)
        self.group_index.extend([index] * len(params))
        if hasattr(self, "state"):
            self.state.extend({} for _ in params)
            self._groups = None

    def check_settings(self, group):
        """ValueError unless the group's settings are valid (subclasses check their own, then call this)."""
        if not float(group["lr"]) > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {group['lr']!r}")
        group["lr"] = float(group["lr"])

    def group_of(self, i):
        """The parameter group (dict) of parameter i."""
        return self.param_groups[self.group_index[i]]

    def group_state_names(self, group):
        """Names of the per-parameter state arrays of ``group``'s parameters, created lazily as zeros."""
        return ()

    @property
    def state_names(self):
        """The first group's state names (for code that knows one group)."""
        return self.group_state_names(self.param_groups[0])

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def step(self):
        if config.multi_tensor_optimizer and self._multi_tensor_step():
            return
        for i, p in enumerate(self.params):
            with device_scope(p.data):
                self._update(p, self._state_of(i, p), self.group_of(i))

    def multi_tensor_groups(self):
        """The current FlatGroups (``gpucnn.optim.flat``), built or rebuilt from the parameters' current
        arrays when needed; None where the multi-tensor path does not apply (parameters on the CPU)."""
        if self._groups is None or not all(g.is_current(self) for g in self._groups):
            self._groups = flat_groups(self)
        return self._groups

    def _multi_tensor_step(self):
        """One update launch per (parameter group, device, dtype); False where that path does not apply.

        A step is, per flat group: ``group.prepare(lr)`` (host side: zero gradients still marked
        cleared, write a changed lr into ``hyper``), ``update_group(group)`` (device work only,
        no host read, no allocation: what a captured CUDA graph replays), then
        ``group.advance_host_state(self)`` (the host's step counts).
        """
        groups = self.multi_tensor_groups()
        if groups is None:
            return False
        for group in groups:
            group.prepare(self.param_groups[group.group_index]["lr"])
            self.update_group(group)
            group.advance_host_state(self)
        return True

    def _update(self, param, state, group):
        raise NotImplementedError

    def update_group(self, group):
        """Launch this optimizer's multi-tensor update of flat ``group`` (gpucnn.ops.multi_update): two
        kernels, reading lr and the step count from ``group.hyper`` on the device, the other settings
        from ``self.param_groups[group.group_index]``."""
        raise NotImplementedError

    def _state_of(self, i, param):
        """The state dict of parameter i, its arrays created on (or moved to) the parameter's device."""
        state = self.state[i]
        xp = get_array_module(param.data)
        for name in self.group_state_names(self.group_of(i)):
            if name not in state:
                state[name] = xp.zeros_like(param.data)
            elif device_of(state[name]) != device_of(param.data):
                state[name] = to_device(state[name], device_of(param.data))
        state.setdefault("step", 0)
        return state

    # ------------------------------------------------------------------ checkpoint state

    def _group_scalars(self, group):
        return {"lr": group["lr"], **{name: _to_json(group[name]) for name, _ in self.hyper_checks}}

    def state_arrays(self):
        """({'<i>.<name>': array}, {'lr': ..., 'steps': [...], 'hyper': {...}}) for a checkpoint; 'lr' and
        'hyper' are the first group's, and with several groups 'groups' lists each one's (with its size)."""
        arrays = {f"{i}.{name}": s[name] for i, s in enumerate(self.state)
                  for name in self.group_state_names(self.group_of(i)) if name in s}
        first = self._group_scalars(self.param_groups[0])
        scalars = {"lr": first.pop("lr"), "steps": [s.get("step", 0) for s in self.state], "hyper": first}
        if len(self.param_groups) > 1:
            scalars["groups"] = [{"size": len(g["params"]), **self._group_scalars(g)} for g in self.param_groups]
        return arrays, scalars

    def _file_groups(self, scalars):
        """Each group's settings as the checkpoint holds them ({'lr', hyper...} per group); ValueError when
        they do not fit this optimizer's groups."""
        name = type(self).__name__
        groups = scalars.get("groups")
        if groups is None:
            if len(self.param_groups) != 1:
                raise ValueError(f"{name}: the checkpoint holds one parameter group, this optimizer has "
                                 f"{len(self.param_groups)}")
            hyper = scalars.get("hyper", {})
            if not isinstance(hyper, dict):
                raise ValueError(f"{name}: unknown hyperparameters {_short(hyper)} in the checkpoint")
            return [{"lr": scalars.get("lr"), **hyper}]
        sizes = [len(g["params"]) for g in self.param_groups]
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups) \
                or [g.get("size") for g in groups] != sizes:
            raise ValueError(f"{name}: the checkpoint's parameter groups {_short(groups)} do not fit this "
                             f"optimizer's groups of sizes {sizes}")
        return [{k: v for k, v in g.items() if k != "size"} for g in groups]

    def expected_state(self, scalars, keep=()):
        """{key: shape} of the arrays a checkpoint with ``scalars`` must hold; ValueError when ``scalars`` is bad.

        Every parameter that has taken a step needs all its state arrays: missing state is refused,
        never re-created as zeros. ``keep``: hyperparameters whose current value wins over the file's.
        """
        name = type(self).__name__
        if not isinstance(scalars, dict):
            raise ValueError(f"{name}: optimizer metadata is a {type(scalars).__name__}, expected an object")
        steps = scalars.get("steps")
        if not isinstance(steps, list) or not all(_is_int(s) and s >= 0 for s in steps):
            raise ValueError(f"{name}: step counts {_short(steps)} are not a list of integers >= 0")
        if len(steps) != len(self.params):
            raise ValueError(f"{name}: state is for {len(steps)} parameters, this optimizer has {len(self.params)}")
        file_groups = self._file_groups(scalars)
        for group in file_groups:
            lr = group.get("lr")
            if not _is_real(lr) or not math.isfinite(lr) or lr < 0:  # 0 is where a cosine schedule may end
                raise ValueError(f"{name}: learning rate {lr!r} in the checkpoint is not a finite number >= 0")
            hyper = {k: v for k, v in group.items() if k != "lr"}
            if set(hyper) - {n for n, _ in self.hyper_checks}:
                raise ValueError(f"{name}: unknown hyperparameters {_short(hyper)} in the checkpoint")
            for hname, check in self.hyper_checks:
                if hname in hyper and not check(hyper[hname]):
                    raise ValueError(f"{name}: hyperparameter {hname}={_short(hyper[hname])} in the checkpoint is "
                                     f"invalid")
        applied = [self._applied(group, file_group, keep) for group, file_group in zip(self.param_groups, file_groups)]
        return {f"{i}.{sname}": tuple(p.shape) for i, (p, step) in enumerate(zip(self.params, steps)) if step > 0
                for sname in self.group_state_names(applied[self.group_index[i]])}

    def _applied(self, group, file_group, keep):
        """A copy of ``group`` with the checkpoint's settings applied, but for those in ``keep``."""
        applied = dict(group)
        for key, value in file_group.items():
            if key not in keep:
                applied[key] = float(value) if key == "lr" else _from_json(value, group[key])
        return applied

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
        ('lr', 'betas', ...) whose current values win over the checkpoint's. The groups are new
        dicts (the old ones are left as they were).
        """
        self.check_state_arrays(arrays, scalars, keep)
        state = [{} for _ in self.params]
        for key, value in arrays.items():
            i, name = key.split(".", 1)
            state[int(i)][name] = value.astype(self.params[int(i)].dtype)
        for s, step in zip(state, scalars["steps"]):
            s["step"] = int(step)
        self.param_groups = [self._applied(group, file_group, keep)
                             for group, file_group in zip(self.param_groups, self._file_groups(scalars))]
        self.state = state


def _is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _to_json(value):
    return list(value) if isinstance(value, tuple) else value


def _from_json(value, current):
    return tuple(float(v) for v in value) if isinstance(value, list) else type(current)(value)


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def unit_interval(value):
    return _is_real(value) and 0 <= value < 1


def non_negative(value):
    return _is_real(value) and math.isfinite(value) and value >= 0
