"""param_groups_no_decay: the usual split of a model's parameters so that weight decay skips BatchNorm and biases."""
__all__ = ["param_groups_no_decay"]


def param_groups_no_decay(model, weight_decay):
    """Two parameter groups for an optimizer: ``weight_decay`` on the weights of convolutions and dense layers,
    0 on every parameter of one dimension (biases, BatchNorm's weight and bias), as timm's
    ``param_groups_weight_decay`` splits them. An empty group is left out.

    Example:
        >>> opt = AdamW(param_groups_no_decay(model, 5e-4), lr=4e-3)
    """
    params = model.parameters() if hasattr(model, "parameters") else list(model)
    decay = [p for p in params if len(p.shape) > 1]
    no_decay = [p for p in params if len(p.shape) <= 1]
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
