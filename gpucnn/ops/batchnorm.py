"""Batch normalisation over all axes but the channel axis (1), with PyTorch's semantics.

Training: normalise with the batch mean and biased variance, and update the running
statistics with momentum, using the unbiased variance. Evaluation: use the running
statistics.
"""
from ..backend import get_array_module

__all__ = ["batch_norm_forward", "batch_norm_backward"]


def _reduce_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training):
    """Returns (y, saved); updates running_mean/running_var in place when training."""
    xp = get_array_module(x)
    axes = _reduce_axes(x)
    if training:
        count = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * count / (count - 1)) * var
    else:
        mean, var = running_mean, running_var
    inv_std = 1 / xp.sqrt(var + eps)
    x_hat = (x - _per_channel(mean, x.ndim)) * _per_channel(inv_std, x.ndim)
    y = x_hat * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)
    return y, (x_hat, inv_std, gamma, training)


def batch_norm_backward(grad_y, saved):
    """(dx, dgamma, dbeta). In training the batch statistics depend on x, which adds two terms."""
    x_hat, inv_std, gamma, training = saved
    axes = _reduce_axes(grad_y)
    ndim = grad_y.ndim
    grad_beta = grad_y.sum(axis=axes)
    grad_gamma = (grad_y * x_hat).sum(axis=axes)
    scale = _per_channel(gamma * inv_std, ndim)
    if not training:
        return grad_y * scale, grad_gamma, grad_beta
    count = grad_y.size // grad_y.shape[1]
    grad_x = scale * (grad_y - _per_channel(grad_beta / count, ndim)
                      - x_hat * _per_channel(grad_gamma / count, ndim))
    return grad_x, grad_gamma, grad_beta
