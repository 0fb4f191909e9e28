"""clip_grad_norm_: scale gradients so their joint norm is at most ``max_norm`` (torch.nn.utils.clip_grad_norm_)."""
import math

import numpy

from ..backend import device_of, device_scope, get_array_module
from ..parameter import Parameter

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of ``parameters`` in place by min(1, max_norm / (total_norm + 1e-6)); returns the
    total norm (of the gradients as they were), as torch.nn.utils.clip_grad_norm_.

    The total norm is the ``norm_type``-norm of the per-parameter norms (``inf``: the largest absolute value).
    It stays a 0-d array on the gradients' device, and so does the factor: on the GPU nothing is read back
    to the host, unless ``error_if_nonfinite`` asks to check the norm (a RuntimeError when it is NaN or
    infinite, nothing scaled).

    Example:
        >>> model.backward(loss_fn.backward())
        >>> norm = clip_grad_norm_(model.parameters(), max_norm=1.0)
        >>> opt.step()
    """
    params = [parameters] if isinstance(parameters, Parameter) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"clip_grad_norm_: item {i} is a {type(p).__name__}, not a gpucnn.Parameter")
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm!r}")
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 (or inf), got {norm_type!r}")
    if not params:
        return numpy.zeros((), dtype=numpy.float32)
    grads = [p.grad for p in params]
    if len({device_of(g) for g in grads}) != 1:
        raise ValueError("clip_grad_norm_: the gradients are on several devices; clip each device's separately")
    xp = get_array_module(grads[0])
    with device_scope(grads[0]):
        total = _total_norm(xp, grads, norm_type)
        if error_if_nonfinite and not bool(xp.isfinite(total)):
            raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
                               f"{float(total)}; nothing was scaled (error_if_nonfinite=False scales anyway)")
        factor = xp.minimum(max_norm / (total + 1e-6), 1.0).astype(total.dtype)
        for g in grads:
            g *= factor.astype(g.dtype)
    return total


def _total_norm(xp, grads, norm_type):
    """The norm of the per-gradient norms, in the first gradient's dtype (a 0-d array on its device)."""
    dtype = grads[0].dtype
    if math.isinf(norm_type):
        norms = xp.stack([xp.abs(g).max().astype(dtype) if g.size else xp.zeros((), dtype) for g in grads])
        return norms.max()
    norms = xp.stack([_vector_norm(xp, g.ravel(), norm_type).astype(dtype) for g in grads])
    return _vector_norm(xp, norms, norm_type)


def _vector_norm(xp, v, p):
    if p == 2.0:
        return xp.sqrt(xp.dot(v, v)) if v.size else xp.zeros((), v.dtype)
    if p == 1.0:
        return xp.abs(v).sum()
    return (xp.abs(v) ** p).sum() ** (1.0 / p)
