"""What the graph step saves and puts back in place around a capture or a verify step: the optimizer's state
(the parameters are copied by ``GraphStep.snapshot`` itself), and the names verify mode reports."""

__all__ = ["OptimizerSnapshot", "param_name"]


def param_name(model, param):
    """The name of ``param`` in ``model``'s state_dict ('conv1.weight', '0.bias'), for messages."""
    for key, value in model.named_state().items():
        if value is param.data:
            return key
    for i, layer in enumerate(model.layers):
        for name in ("weight", "bias"):
            if getattr(layer, name, None) is param:
                return f"layers.{i}.{type(layer).__name__}.{name}"
    return "parameter"


def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "copy") and not isinstance(value, (int, float))


class OptimizerSnapshot:
    """The optimizer's state (arrays, step counts, lr, the flat groups' device scalars), restored in place:
    the state dicts and arrays stay the same objects, so the flat groups stay current and the graph's
    addresses valid. Device copies only, no host read."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.lr = optimizer.lr
        self.group_lrs = [g["lr"] for g in getattr(optimizer, "param_groups", ())]
        self.states = [(s, {k: (v.copy() if _is_array(v) else v) for k, v in s.items()}) for s in optimizer.state]
        # the flat groups built so far (gpucnn/optim/flat.py); their device scalars advance with each update
        self.groups = [(g, g.hyper.copy(), g.steps, g.lr) for g in (getattr(optimizer, "_groups", None) or ())]

    def restore(self):
        for state, saved in self.states:
            for key in set(state) - set(saved):
                del state[key]
            for key, value in saved.items():
                current = state.get(key)
                if _is_array(value) and _is_array(current) and current.shape == value.shape:
                    current[...] = value
                else:
                    state[key] = value.copy() if _is_array(value) else value
        for group, hyper, steps, lr in self.groups:
            group.hyper[...] = hyper
            group.steps, group.lr = steps, lr
        self.optimizer.lr = self.lr
        for group, lr in zip(getattr(self.optimizer, "param_groups", ()), self.group_lrs):
            group["lr"] = lr  # each parameter group's own
