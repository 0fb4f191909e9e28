"""Optimizer update rules, applied in place to one parameter, with PyTorch's semantics.

NumPy twin of the fused CUDA update kernels (``gpucnn.ops.cuda.update``); CuPy arrays
go there with the same arguments. Scalars are Python floats and ints.
"""
import math

import numpy

from ..backend import get_array_module

__all__ = ["sgd_update", "adam_update"]


def sgd_update(param, grad, momentum_buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    """One SGD step (torch.optim.SGD):

        g = grad + weight_decay * param
        buf = g on the first step, else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
        param -= lr * g

    ``momentum_buf`` is unused (may be None) when momentum == 0.
    """
    if get_array_module(param) is not numpy:
        from .cuda import update as cuda_update
        return cuda_update.sgd_update(param, grad, momentum_buf, lr, momentum, dampening, nesterov,
                                      weight_decay, first_step)
    g = grad + weight_decay * param if weight_decay else grad
    if momentum:
        if first_step:
            momentum_buf[...] = g
        else:
            momentum_buf *= momentum
            momentum_buf += (1.0 - dampening) * g
        g = g + momentum * momentum_buf if nesterov else momentum_buf
    param -= lr * g


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """One Adam step (torch.optim.Adam), or AdamW when ``decoupled`` (torch.optim.AdamW):

        AdamW: param *= 1 - lr * weight_decay;   Adam: g = grad + weight_decay * param
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g**2
        param -= lr / (1 - beta1**step) * m / (sqrt(v / (1 - beta2**step)) + eps)

    ``step`` counts from 1.
    """
    if get_array_module(param) is not numpy:
        from .cuda import update as cuda_update
        return cuda_update.adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps,
                                       weight_decay, step, decoupled)
    g = grad
    if weight_decay:
        if decoupled:
            param *= 1.0 - lr * weight_decay
        else:
            g = grad + weight_decay * param
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * g * g
    bias1 = 1.0 - beta1 ** step
    bias2_sqrt = math.sqrt(1.0 - beta2 ** step)
    denom = numpy.sqrt(exp_avg_sq) / bias2_sqrt + eps
    param -= (lr / bias1) * exp_avg / denom
