"""Optimizers (SGD, Adam, AdamW), each with torch.optim's update rule and parameter groups.

The update rules live in gpucnn.ops.update (NumPy) and its CUDA twin; an optimizer keeps the
per-parameter state and calls them with each parameter's group settings (gpucnn/optim/base.py).
The schedules (StepLR, CosineAnnealingLR, ...) are in gpucnn/optim/schedules.py, importable from
here too.
"""
from ..ops.multi_update import multi_adam_update, multi_sgd_update
from ..ops.update import adam_update, sgd_update
from .base import GroupSetting, Optimizer, non_negative, unit_interval
from .schedules import CosineAnnealingLR, StepLR  # noqa: F401 (importable from here, as before)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR"]


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Example:
        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); model.backward(loss.backward()); opt.step()
        >>> SGD([{'params': decay, 'weight_decay': 5e-4}, {'params': no_decay}], lr=0.1)  # parameter groups
    """

    momentum, dampening, nesterov, weight_decay = GroupSetting(), GroupSetting(), GroupSetting(), GroupSetting()
    hyper_checks = (("momentum", non_negative), ("dampening", non_negative),
                    ("nesterov", lambda v: isinstance(v, bool)), ("weight_decay", non_negative))

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening, "nesterov": nesterov,
                                  "weight_decay": weight_decay})

    def check_settings(self, group):
        super().check_settings(group)
        if group["momentum"] < 0 or group["weight_decay"] < 0:
            raise ValueError(f"SGD: momentum and weight_decay must be >= 0, got {group['momentum']!r}, "
                             f"{group['weight_decay']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov momentum needs momentum > 0 and dampening 0")
        for key in ("momentum", "dampening", "weight_decay"):
            group[key] = float(group[key])
        group["nesterov"] = bool(group["nesterov"])

    def group_state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] else ()

    def _update(self, param, state, group):
        sgd_update(param.data, param.grad, state.get("momentum_buffer"), group["lr"], group["momentum"],
                   group["dampening"], group["nesterov"], group["weight_decay"], state["step"] == 0)
        state["step"] += 1

    def update_group(self, group):
        g = self.param_groups[group.group_index]
        multi_sgd_update(group.data, group.grad, group.states.get("momentum_buffer"), group.hyper, g["momentum"],
                         g["dampening"], g["nesterov"], g["weight_decay"])


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` adds L2 to the gradient, as in torch.optim.Adam."""

    decoupled = False
    betas, eps, weight_decay = GroupSetting(), GroupSetting(), GroupSetting()
    hyper_checks = (("betas", lambda v: isinstance(v, list) and len(v) == 2 and all(map(unit_interval, v))),
                    ("eps", non_negative), ("weight_decay", non_negative))

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def check_settings(self, group):
        super().check_settings(group)
        beta1, beta2 = group["betas"]
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"{type(self).__name__}: betas must lie in [0, 1), got {group['betas']!r}")
        if group["eps"] < 0 or group["weight_decay"] < 0:
            raise ValueError(f"{type(self).__name__}: eps and weight_decay must be >= 0")
        group["betas"] = (float(beta1), float(beta2))
        group["eps"], group["weight_decay"] = float(group["eps"]), float(group["weight_decay"])

    def group_state_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _update(self, param, state, group):
        state["step"] += 1
        beta1, beta2 = group["betas"]
        adam_update(param.data, param.grad, state["exp_avg"], state["exp_avg_sq"], group["lr"], beta1, beta2,
                    group["eps"], group["weight_decay"], state["step"], self.decoupled)

    def update_group(self, group):
        g = self.param_groups[group.group_index]
        multi_adam_update(group.data, group.grad, group.states["exp_avg"], group.states["exp_avg_sq"], group.hyper,
                          g["betas"][0], g["betas"][1], g["eps"], g["weight_decay"], self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): param *= 1 - lr * weight_decay before the Adam step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
