"""The fused max pool (gpucnn/kernels/fused_pool_body.cuh) follows the readable op's one convention
(gpucnn/ops/pool.py): an all -inf padded window names its first real element, and overlapping windows
add in the reference's order, so the fused gradient equals the reference's bit for bit on the host."""
import numpy
import pytest

from gpucnn.compile.cuda_graph import reference
from gpucnn.ops.geometry import pool_window
from support.cuda_cases import pool_geometry
from support.kernel_harness import run_kernel

pytestmark = pytest.mark.kernels


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (2, 1, 1), (3, 1, (1, 0))])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_dead_windows_and_overlapping_sums_follow_the_reference(harness, kernel, stride, padding, dtype):
    rng = numpy.random.default_rng(kernel + stride)
    x = rng.standard_normal((2, 2, 6, 5)).astype(dtype)
    x[0, 0] = -numpy.inf                 # a whole map: every window dead
    x[1, 1, :2, :2] = -numpy.inf         # a corner: windows partly padding
    window = pool_window(kernel, stride, padding)
    geometry, oh, ow = pool_geometry(6, 5, window)
    y = numpy.zeros((2, 2, oh, ow), dtype=dtype)
    argmax = numpy.full(y.shape, 77, dtype=numpy.uint8)
    run_kernel(harness, "fused_pool.cu", "max_pool_u8_fwd", dtype, (x, y, argmax) + geometry + (y.size,))
    y_ref, argmax_ref = reference.max_pool2d_forward(x, window)
    numpy.testing.assert_array_equal(y, y_ref)
    numpy.testing.assert_array_equal(argmax, argmax_ref)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    grad_x = numpy.full(x.shape, numpy.nan, dtype=dtype)
    run_kernel(harness, "fused_pool.cu", "max_pool_u8_bwd", dtype,
               (grad_y, argmax, x, grad_x) + geometry + (0, grad_x.size))
    want = reference.max_pool2d_backward(grad_y, argmax_ref, x, window, False)
    numpy.testing.assert_array_equal(grad_x, want)  # the same order of additions: the same bits
    numpy.testing.assert_allclose(grad_x.sum(), grad_y.sum(), rtol=1e-5)  # nothing lost to the padding
