"""Softmax along one axis, as the tutorials write it, and its gradient.

    y = exp(x - max(x)) / sum(exp(x - max(x)))          (along ``axis``; the shift keeps exp finite)
    dL/dx = y * (dL/dy - sum(dL/dy * y))                (the Jacobian diag(y) - y y^T applied to dL/dy)

NumPy and CuPy alike (the array's own module).
"""
from ..backend import get_array_module

__all__ = ["softmax_forward", "softmax_backward"]


def softmax_forward(x, axis):
    """exp(x) / sum(exp(x)) along ``axis``, after subtracting the maximum."""
    xp = get_array_module(x)
    shifted = xp.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def softmax_backward(grad_y, y, axis):
    """dL/dx from dL/dy and the forward output y: y * (dL/dy - sum(dL/dy * y) along ``axis``)."""
    return y * (grad_y - (grad_y * y).sum(axis=axis, keepdims=True))
