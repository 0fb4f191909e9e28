"""The fused max pool (gpucnn/kernels/fused_pool_body.cuh) follows the readable op's one convention
(gpucnn/ops/pool.py): an all -inf padded window names its first real element, and overlapping windows
add in the reference's order, so the fused gradient equals the reference's bit for bit on the host.

With the ReLU mask (GPUCNN_FUSED_MASK on the forward) the argmax holds 255 where not y > 0 and the
backward reads no x; that equals the old product relu_backward(max_pool_backward(grad_y), x) exactly."""
import numpy
import pytest

from gpucnn.compile.cuda_graph import reference
from gpucnn.ops import activation, pool
from gpucnn.ops.geometry import pool_window
from support import cuda_cases as cases
from support.cuda_cases import pool_geometry
from support.kernel_harness import run_kernel

pytestmark = pytest.mark.kernels

MASK = 4  # GPUCNN_FUSED_MASK
WINDOWS = [(3, 1, 1), (3, 2, 1), (2, 1, 1), (3, 1, (1, 0)), (2, 2, 0)]


def _run_pool(harness, x, window, flags, grad_y=None):
    """(y, argmax, grad_x) of the harness's kernels, grad_y drawn when not given."""
    dtype = x.dtype.type
    geometry, oh, ow = pool_geometry(x.shape[2], x.shape[3], window)
    y = numpy.zeros(x.shape[:2] + (oh, ow), dtype=dtype)
    argmax = numpy.full(y.shape, 77, dtype=numpy.uint8)
    run_kernel(harness, "fused_pool.cu", "max_pool_u8_fwd", dtype, (x, y, argmax) + geometry + (flags, y.size))
    if grad_y is None:
        grad_y = numpy.random.default_rng(7).standard_normal(y.shape).astype(dtype)
    grad_x = numpy.full(x.shape, numpy.nan, dtype=dtype)
    run_kernel(harness, "fused_pool.cu", "max_pool_u8_bwd", dtype, (grad_y, argmax, grad_x) + geometry + (x.size,))
    return y, argmax, grad_x, grad_y


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", cases.POOL_CASES, ids=cases.case_ids(cases.POOL_CASES))
@pytest.mark.parametrize("masked", [False, True])
def test_fused_max_pool_kernels_match_twins(harness, case, dtype, masked):
    """The geometry cases of tests/support/cuda_cases.py on a ReLU output (ties at 0), with and without the mask."""
    _, n, c, h, w, window = case
    x = numpy.maximum(numpy.random.default_rng(3).standard_normal((n, c, h, w)), 0).astype(dtype)
    y, argmax, grad_x, grad_y = _run_pool(harness, x, window, MASK if masked else 0)
    y_ref, argmax_ref = reference.max_pool2d_forward(x, window, masked)
    numpy.testing.assert_array_equal(y, y_ref)
    numpy.testing.assert_array_equal(argmax, argmax_ref)
    numpy.testing.assert_array_equal(grad_x, reference.max_pool2d_backward(grad_y, argmax_ref, x.shape, window))


@pytest.mark.parametrize("masked", [False, True])
def test_fused_max_pool_nan_and_ties(harness, masked):
    """PyTorch's rule, as the readable op: first maximum wins ties, the last NaN wins, all -inf keeps 0; masked,
    the NaN and -inf windows are 255."""
    x = numpy.array([[[[1.0, 1.0, numpy.nan, 2.0], [-numpy.inf, -numpy.inf, 5.0, numpy.nan]]]])
    window = pool_window((1, 2), 1, 0)
    y, argmax, _, _ = _run_pool(harness, x, window, MASK if masked else 0)
    y_ref, argmax_ref = reference.max_pool2d_forward(x, window, masked)
    numpy.testing.assert_array_equal(y, y_ref)
    numpy.testing.assert_array_equal(argmax, argmax_ref)
    no = reference.POOL_NO_GRAD
    numpy.testing.assert_array_equal(argmax, [[[[0, no, no], [no, 1, no]]]] if masked else [[[[0, 1, 0], [0, 1, 1]]]])


@pytest.mark.parametrize("kernel, stride, padding", WINDOWS[:4])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_dead_windows_and_overlapping_sums_follow_the_reference(harness, kernel, stride, padding, dtype):
    rng = numpy.random.default_rng(kernel + stride)
    x = rng.standard_normal((2, 2, 6, 5)).astype(dtype)
    x[0, 0] = -numpy.inf                 # a whole map: every window dead
    x[1, 1, :2, :2] = -numpy.inf         # a corner: windows partly padding
    window = pool_window(kernel, stride, padding)
    y, argmax, grad_x, grad_y = _run_pool(harness, x, window, 0)
    y_ref, argmax_ref = reference.max_pool2d_forward(x, window)
    numpy.testing.assert_array_equal(y, y_ref)
    numpy.testing.assert_array_equal(argmax, argmax_ref)
    want = reference.max_pool2d_backward(grad_y, argmax_ref, x.shape, window)
    numpy.testing.assert_array_equal(grad_x, want)  # the same order of additions: the same bits
    numpy.testing.assert_allclose(grad_x.sum(), grad_y.sum(), rtol=1e-5)  # nothing lost to the padding


def _relu_like_input(dtype, seed):
    """Pre-activations with every hard window: all negative, all zero (ties at 0), NaN, -inf, ties above 0."""
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    x[0, 0] = -numpy.abs(x[0, 0]) - 0.5   # a whole map negative: every window masked
    x[0, 1, :3, :3] = 0                   # ties at 0: masked (the ReLU's subgradient at 0 is 0)
    x[0, 2, 2, 2] = numpy.nan             # a NaN window: masked, relu_backward's (nan > 0) is False
    x[1, 0, 4:, 3:] = -numpy.inf
    x[1, 1, 1:4, 1:4] = 1.25              # ties above 0: the first wins
    x[1, 2, ::2, ::2] = -2.0
    return x


@pytest.mark.parametrize("kernel, stride, padding", WINDOWS)
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_masked_argmax_equals_the_twin_and_the_old_x_mask(harness, kernel, stride, padding, dtype, relu):
    """Kernel == twin bit for bit; and == relu_backward(max_pool_backward(grad_y), x), the x read it replaces,
    for a ReLU output (relu) and for raw pre-activations (the mask then is still (x > 0) at each argmax)."""
    x = _relu_like_input(dtype, kernel * 10 + stride)
    if relu:
        x = numpy.where(numpy.isnan(x), x, numpy.maximum(x, 0)).astype(dtype)  # ReLU keeping the NaN
    window = pool_window(kernel, stride, padding)
    y, argmax, grad_x, grad_y = _run_pool(harness, x, window, MASK)
    y_ref, argmax_ref = reference.max_pool2d_forward(x, window, mask=True)
    numpy.testing.assert_array_equal(y, y_ref)
    numpy.testing.assert_array_equal(argmax, argmax_ref)
    assert ((argmax == reference.POOL_NO_GRAD) == ~(y > 0)).all()
    assert (argmax[y > 0] < kernel * kernel).all()
    numpy.testing.assert_array_equal(grad_x, reference.max_pool2d_backward(grad_y, argmax_ref, x.shape, window))
    _, (plain, _, _) = pool.max_pool2d_forward(x, window)
    old = activation.relu_backward(pool.max_pool2d_backward(grad_y, (plain, x.shape, window)), x)
    numpy.testing.assert_array_equal(grad_x, old)


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_masked_window_with_an_inf_gradient_gives_zero(harness, dtype):
    """The edge the mask-in-argmax changes: acc * (x > 0) with acc = inf gave NaN; a masked window now adds
    nothing, as PyTorch's threshold_backward (where(x <= 0, 0, g)). (The unmasked window's gradient is finite: the
    readable op, grad_y * (argmax == k) per tap, spreads an inf there as NaN over the window's other taps.)"""
    x = numpy.array([[[[-1.0, -2.0, 3.0, 1.0], [-3.0, -4.0, 2.0, 0.5]]]], dtype=dtype)
    window = pool_window(2)
    grad_y = numpy.array([[[[numpy.inf, 1.5]]]], dtype=dtype)
    y, argmax, grad_x, _ = _run_pool(harness, x, window, MASK, grad_y)
    numpy.testing.assert_array_equal(argmax, [[[[reference.POOL_NO_GRAD, 0]]]])
    want = numpy.array([[[[0, 0, 1.5, 0], [0, 0, 0, 0]]]], dtype=dtype)
    numpy.testing.assert_array_equal(grad_x, want)
    numpy.testing.assert_array_equal(reference.max_pool2d_backward(grad_y, argmax, x.shape, window), want)
