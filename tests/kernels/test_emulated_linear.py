"""The eager CUDA Dense math (gpucnn/ops/cuda/linear.py) on the fused GEMM kernels, over a NumPy stand-in for CuPy
whose kernel launches run in the host harness: equal to gpucnn.ops.linear's NumPy reference (float64 to 1e-10,
float32 to 1e-4) at odd sizes, with split-K forward and weight gradient, the gradient buffers written in place,
two backward passes bitwise equal; mixed dtypes fall back to the reference's products. Also the eager Conv2D's
fused path writing its weight and bias gradients into given buffers.

Skipped only where nvcc is not on PATH.
"""
import importlib
import types

import numpy
import pytest

from gpucnn.ops import conv as np_conv
from gpucnn.ops import linear as np_linear
from gpucnn.ops.geometry import conv_window
from support.cuda_parity import assert_close
from support.kernel_harness import launchers_over_numpy

pytestmark = pytest.mark.kernels

DTYPES = (numpy.float32, numpy.float64)
# (N, in, out): odd sizes across tile edges; K = in >= 512 splits the forward, K = N >= 512 the weight gradient
CASES = [(3, 7, 5), (33, 65, 17), (2, 600, 3), (600, 6, 4)]


@pytest.fixture
def emulated(harness, monkeypatch):
    with launchers_over_numpy(harness, monkeypatch) as (_, launches):
        yield types.SimpleNamespace(linear=importlib.import_module("gpucnn.ops.cuda.linear"),
                                    conv=importlib.import_module("gpucnn.ops.cuda.conv"), launches=launches)


def _case(n, i, o, dtype, seed=0):
    rng = numpy.random.default_rng(seed)
    return (rng.standard_normal((n, i)).astype(dtype), rng.standard_normal((o, i)).astype(dtype),
            rng.standard_normal(o).astype(dtype), rng.standard_normal((n, o)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,i,o", CASES)
def test_dense_on_the_fused_kernels_equals_numpy(emulated, n, i, o, dtype):
    x, weight, bias, grad_y = _case(n, i, o, dtype)
    assert_close(emulated.linear.linear_forward(x, weight, bias), np_linear.linear_forward(x, weight, bias), dtype,
                 "y")
    assert_close(emulated.linear.linear_forward(x, weight, None), x @ weight.T, dtype, "y without bias")
    expected = np_linear.linear_backward(grad_y, x, weight)
    first = emulated.linear.linear_backward(grad_y, x, weight)
    second = emulated.linear.linear_backward(grad_y, x, weight)
    for name, got, again, want in zip(("grad_x", "grad_w", "grad_b"), first, second, expected):
        assert_close(got, want, dtype, name)
        assert got.tobytes() == again.tobytes(), f"{name} differs between two backward passes"
    assert {file for file, _ in emulated.launches} == {"fused_dense.cu"}
    names = {name for _, name in emulated.launches}
    assert ("dense_fwd_partial_fused" in names) == (i >= 512) and ("dense_wgrad_partial_fused" in names) == (n >= 512)


def test_dense_gradients_go_into_the_given_buffers(emulated):
    x, weight, _, grad_y = _case(5, 9, 4, numpy.float64)
    grad_w_out, grad_b_out = numpy.full((4, 9), numpy.nan), numpy.full(4, numpy.nan)
    grad_x, grad_w, grad_b = emulated.linear.linear_backward(grad_y, x, weight, need_input_grad=False,
                                                             grad_weight_out=grad_w_out, grad_bias_out=grad_b_out)
    assert grad_x is None and grad_w is grad_w_out and grad_b is grad_b_out
    assert_close(grad_w, grad_y.T @ x, numpy.float64, "grad_w")
    assert_close(grad_b, grad_y.sum(axis=0), numpy.float64, "grad_b")
    _, grad_w, grad_b = emulated.linear.linear_backward(grad_y, x, weight, need_bias=False)
    assert grad_b is None
    with pytest.raises(ValueError, match="grad_weight_out must be a C-contiguous float64"):
        emulated.linear.linear_backward(grad_y, x, weight, grad_weight_out=numpy.zeros((9, 4)))


def test_mixed_dtypes_take_the_reference_products(emulated):
    x, weight, bias, grad_y = _case(3, 7, 5, numpy.float64)
    y = emulated.linear.linear_forward(x.astype(numpy.float32), weight, bias)
    assert y.dtype == numpy.float64 and not emulated.launches
    assert_close(y, x.astype(numpy.float32).astype(numpy.float64) @ weight.T + bias, numpy.float64, "y")


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_fused_gradients_go_into_the_given_buffers(emulated, dtype):
    rng = numpy.random.default_rng(1)
    window = conv_window(3, 1, "same")
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    y, saved = emulated.conv.conv2d_forward(x, weight, bias, window.resolve(6, 5))
    y_ref, saved_ref = np_conv.conv2d_forward(x, weight, bias, window)
    assert_close(y, y_ref, dtype, "y")
    x[:] = 0  # the saved input is the launcher's own copy
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    w_out, b_out = numpy.full(weight.shape, numpy.nan, dtype), numpy.full(4, numpy.nan, dtype)
    grad_x, grad_w, grad_b = emulated.conv.conv2d_backward(grad_y, saved, grad_weight_out=w_out, grad_bias_out=b_out)
    gx_ref, gw_ref, gb_ref = np_conv.conv2d_backward(grad_y, saved_ref)
    assert grad_w is w_out and grad_b is b_out
    for name, got, want in (("grad_x", grad_x, gx_ref), ("grad_w", grad_w, gw_ref), ("grad_b", grad_b, gb_ref)):
        assert_close(got, want, dtype, name)
    assert {file for file, _ in emulated.launches} == {"fused_conv.cu"}
