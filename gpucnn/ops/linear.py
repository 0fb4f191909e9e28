"""Dense (fully connected) layer math: y = x @ W.T + b, with W of shape (out, in) as in PyTorch.

Also the matrix product that a grouped convolution lowers to (``grouped_matmul``), shared by
``gpucnn.ops.conv`` and its CUDA twin ``gpucnn.ops.cuda.conv``: it lives here, beside the
dense-layer math, so that neither of those two modules imports the other.

CuPy arrays go to ``gpucnn.ops.cuda.linear`` (the fused GEMM kernels), which takes the same arguments and
returns the same results.
"""
import numpy

from ..backend import get_array_module

__all__ = ["linear_forward", "linear_backward", "grouped_matmul"]


def linear_forward(x, weight, bias):
    """(N, in) -> (N, out)."""
    if get_array_module(x) is not numpy:
        from .cuda import linear as cuda_linear
        return cuda_linear.linear_forward(x, weight, bias)
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
    if xp is not numpy:
        from .cuda import linear as cuda_linear
        return cuda_linear.linear_backward(grad_y, x, weight, need_bias, need_input_grad, grad_weight_out,
                                           grad_bias_out)
    grad_x = grad_y @ weight if need_input_grad else None
    grad_w = xp.matmul(grad_y.T, x, out=grad_weight_out)
    grad_b = grad_y.sum(axis=0, out=grad_bias_out) if need_bias else None
    return grad_x, grad_w, grad_b


def grouped_matmul(a, b, out=None):
    """One matrix product per group, stacked: a (G, m, k) and b (G, k, n) give (G*m, n), rows (g, m).

    Works on NumPy and CuPy arrays alike (views are fine); one group is the plain 2-D ``a[0] @ b[0]``.
    ``out``: an optional C-contiguous array of G*m*n elements (any shape) written instead of a new one.
    """
    xp = get_array_module(a)
    g, m, n = a.shape[0], a.shape[1], b.shape[2]
    if g == 1:
        return xp.matmul(a[0], b[0], out=None if out is None else out.reshape(m, n))
    return xp.matmul(a, b, out=None if out is None else out.reshape(g, m, n)).reshape(-1, n)
