"""CUDA twin of ``gpucnn.ops.linear``'s Dense math: same functions, same arguments, same results, for CuPy arrays.

Dense layers whose arrays are 2-D, of one float dtype (float32 or float64) and fit 32-bit indices run on
the fused GEMM kernels of the graph step (``gpucnn.ops.cuda.fused``, issue 16):

    y = x @ W.T + b           dense_fwd_fused (the bias in its epilogue); split-K where the output tiles alone
                              leave SMs idle (dense_fwd_partial_fused, then dense_fwd_reduce_fused adds b)
    dW, db = dY.T @ [x, 1]    dense_wgrad_fused: one GEMM, db its last column (split-K likewise)
    dx = dY @ W               dense_dgrad_fused

Anything else (mixed dtypes, larger tensors) runs the reference's products as they are, ``cupy.matmul``
(cuBLAS), written out here: ``gpucnn.ops.linear`` dispatches to this module, which must not import it.
"""
import cupy
import numpy

from . import fused, loader

__all__ = ["linear_forward", "linear_backward"]

_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def _runs_fused(*arrays):
    """Whether the fused kernels take these arrays (None skipped): CuPy, 2-D but the bias, one float dtype, and
    every size within the 32-bit indices."""
    arrays = [a for a in arrays if a is not None]
    dtype = arrays[0].dtype
    return (all(isinstance(a, cupy.ndarray) and a.dtype == dtype for a in arrays) and numpy.dtype(dtype) in _FLOATS
            and loader.index_type(*(a.size for a in arrays)) == "int")


@loader.on_device_of_first_argument
def linear_forward(x, weight, bias):
    """(N, in) -> (N, out); see ``gpucnn.ops.linear.linear_forward``."""
    if x.ndim == 2 and weight.ndim == 2 and _runs_fused(x, weight, bias) and \
            loader.index_type(int(x.shape[0]) * int(weight.shape[0])) == "int":
        return fused.linear_forward(x, weight, bias)
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


@loader.on_device_of_first_argument
def linear_backward(grad_y, x, weight, need_bias=True, need_input_grad=True, grad_weight_out=None,
                    grad_bias_out=None):
    """(dx or None, dW, db or None); see ``gpucnn.ops.linear.linear_backward`` (the same ``*_out`` buffers)."""
    if grad_y.ndim == 2 and x.ndim == 2 and (weight is None or weight.ndim == 2) and _runs_fused(grad_y, x, weight) \
            and (weight is not None or not need_input_grad):
        grad_w, grad_b = fused.linear_weight_grad(grad_y, x, need_bias=need_bias, grad_weight_out=grad_weight_out,
                                                  grad_bias_out=grad_bias_out)
        grad_x = fused.linear_data_grad(grad_y, weight) if need_input_grad else None
        return grad_x, grad_w, grad_b
    grad_x = grad_y @ weight if need_input_grad else None
    grad_w = cupy.matmul(grad_y.T, x, out=grad_weight_out)
    grad_b = grad_y.sum(axis=0, out=grad_bias_out) if need_bias else None
    return grad_x, grad_w, grad_b
