"""Dense (fully connected) layer math: y = x @ W.T + b, with W of shape (out, in) as in PyTorch."""

__all__ = ["linear_forward", "linear_backward"]


def linear_forward(x, weight, bias):
    """(N, in) -> (N, out)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def linear_backward(grad_y, x, weight, need_bias=True, need_input_grad=True):
    """(dx, dW, db): dx = dY @ W, dW = dY.T @ x, db = dY summed over the batch (dx None unless need_input_grad)."""
    grad_x = grad_y @ weight if need_input_grad else None
    grad_w = grad_y.T @ x
    grad_b = grad_y.sum(axis=0) if need_bias else None
    return grad_x, grad_w, grad_b
