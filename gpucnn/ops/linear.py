"""Dense (fully connected) layer math: y = x @ W.T + b, with W of shape (out, in) as in PyTorch."""

from ..backend import get_array_module

__all__ = ["linear_forward", "linear_backward"]


def linear_forward(x, weight, bias):
    """(N, in) -> (N, out)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def linear_backward(grad_y, x, weight, need_bias=True, need_input_grad=True, grad_weight_out=None,
                    grad_bias_out=None):
    """(dx, dW, db): dx = dY @ W, dW = dY.T @ x, db = dY summed over the batch (dx None unless need_input_grad).

    ``grad_weight_out`` / ``grad_bias_out``: optional C-contiguous arrays that dW / db are
    written into (and returned), instead of new ones.
    """
    xp = get_array_module(grad_y)
    grad_x = grad_y @ weight if need_input_grad else None
    grad_w = xp.matmul(grad_y.T, x, out=grad_weight_out)
    grad_b = grad_y.sum(axis=0, out=grad_bias_out) if need_bias else None
    return grad_x, grad_w, grad_b
