"""conv_fwd_pool_fused (gpucnn/kernels/fused_conv.cu: the max-pool in the convolution's epilogue) equals its NumPy
twin, ``reference.conv2d_pool_forward`` = max_pool2d_forward(conv2d_forward(...)), in the host harness: every tile
it runs on (RN a multiple of the run of 4 columns it stores), float32 and float64, pools of 2x2, 1x2, 2x1 and 1x1,
sizes the windows do not cover evenly (floor mode: the last row or column dropped), ties (all-negative windows
under the ReLU are all 0: the first wins), NaN, the ReLU mask in the argmax; and its launcher's checks."""

import numpy
import pytest

from gpucnn.compile.cuda_graph import reference
from gpucnn.ops.cuda import gemm_plan
from gpucnn.ops.geometry import conv_window, pool_window
from support import cuda_cases as cases
from support import cuda_parity as parity
from support.kernel_harness import run_kernel

pytestmark = pytest.mark.kernels

RUN_TILES = [t for t, shape in enumerate(gemm_plan.GEMM_TILES) if shape[4] % 4 == 0]
# name, N, C, H, W, O, conv window, pool (kh, kw)
CASES = [
    ("fmnist_conv1", 2, 1, 28, 28, 32, conv_window(3, 1, "same"), (2, 2)),
    ("odd_9x9_over_tiles", 3, 3, 9, 9, 70, conv_window(3, 1, "same"), (2, 2)),
    ("valid_strided_7x8", 2, 4, 15, 17, 5, conv_window(3, 2, 0), (1, 2)),
    ("pool_2x1", 1, 2, 6, 5, 33, conv_window(2, 1, 1), (2, 1)),
    ("pool_1x1", 2, 3, 5, 5, 4, conv_window(3, 1, 1), (1, 1)),
]


def _geometry(n, c, h, w, o, window):
    oh, ow = window.output_size(h, w)
    return (n, c, h, w, o, window.kh, window.kw, window.sy, window.sx, window.pt, window.pl, oh, ow), oh, ow


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_conv_pool_kernel_matches_the_twin(harness, case, dtype):
    name, n, c, h, w, o, window, (ph, pw) = case
    rng = numpy.random.default_rng(len(name))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    x[0, 0, 1, 1] = numpy.nan  # a NaN reaches the windows whose taps read it
    weight = rng.standard_normal((o, c, window.kh, window.kw)).astype(dtype)
    weight[1] = -numpy.abs(weight[1])  # mostly negative outputs: under the ReLU, windows of zeros (ties)
    bias = rng.standard_normal(o).astype(dtype)
    geometry, oh, ow = _geometry(n, c, h, w, o, window)
    pool = pool_window((ph, pw))
    for tile in RUN_TILES:
        for with_bias, relu, mask in ((True, True, True), (False, False, False), (True, True, False)):
            y = numpy.full((n, o, oh // ph, ow // pw), 7.0, dtype=dtype)
            argmax = numpy.full(y.shape, 77, dtype=numpy.uint8)
            flags = (1 if with_bias else 0) | (2 if relu else 0) | (4 if mask else 0)
            run_kernel(harness, "fused_conv.cu", "conv_fwd_pool_fused", dtype,
                       (x, weight, bias if with_bias else weight, y, argmax) + geometry + (ph, pw, flags, tile))
            want_y, want_argmax = reference.conv2d_pool_forward(x, weight, bias if with_bias else None, window, pool,
                                                                relu, mask)
            what = f"tile {tile} bias={with_bias} relu={relu} mask={mask}"
            assert numpy.array_equal(numpy.isnan(y), numpy.isnan(want_y)), what
            parity.assert_close(numpy.nan_to_num(y), numpy.nan_to_num(want_y), dtype, what)
            # the argmax of a window whose maximum is a tie within rounding may differ; elsewhere it is equal
            gap = _second_gap(reference.conv2d_forward(x, weight, bias if with_bias else None, window, relu), ph, pw)
            clear = gap > (1e-4 if dtype == numpy.float32 else 1e-10) * max(1.0, float(numpy.nanmax(numpy.abs(want_y))))
            clear |= gap == 0  # exact ties (the ReLU's zeros) are decided alike: the first wins
            assert numpy.array_equal(argmax[clear], want_argmax[clear]), what
            assert (argmax[clear] != 77).all()


def _second_gap(z, ph, pw):
    """Per window: the distance between its largest and second-largest elements (0 for a tie, inf with a NaN)."""
    n, o, oh, ow = z.shape
    win = z[:, :, :oh // ph * ph, :ow // pw * pw].reshape(n, o, oh // ph, ph, ow // pw, pw)
    win = win.transpose(0, 1, 2, 4, 3, 5).reshape(n, o, oh // ph, ow // pw, ph * pw)
    top = numpy.sort(numpy.where(numpy.isnan(win), numpy.inf, win), axis=-1)
    if ph * pw == 1:
        return numpy.full(top.shape[:-1], numpy.inf)
    with numpy.errstate(invalid="ignore"):  # inf - inf: a NaN window, decided by the same rule on both sides
        gap = top[..., -1] - top[..., -2]
    return numpy.where(numpy.isnan(gap), numpy.inf, gap)


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_the_launcher_equals_the_twin_on_a_tile_it_chooses(fused, dtype):
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((3, 2, 11, 10)).astype(dtype)
    w, b = rng.standard_normal((6, 2, 3, 3)).astype(dtype), rng.standard_normal(6).astype(dtype)
    window = conv_window(3, 1, "same")
    y, argmax = fused.conv2d_pool_forward(x, w, b, window, pool_window(2), relu=True, mask=True)
    want_y, want_argmax = reference.conv2d_pool_forward(x, w, b, window, pool_window(2), True, True)
    parity.assert_close(y, want_y, dtype, "pooled y")
    assert y.shape == (3, 6, 5, 5) and argmax.dtype == numpy.uint8
    assert numpy.array_equal(argmax, want_argmax)  # no near-ties in these random windows
    assert fused.launches == [("fused_conv.cu", "conv_fwd_pool_fused")]


def test_the_launcher_takes_only_pools_its_epilogue_can(fused):
    x = numpy.zeros((1, 1, 4, 4))
    w = numpy.zeros((2, 1, 3, 3))
    for bad in (pool_window(3), pool_window(2, stride=1), pool_window(2, padding=1)):
        assert not fused.pool_fuses(bad)
        with pytest.raises(ValueError, match="not one the epilogue takes"):
            fused.conv2d_pool_forward(x, w, None, conv_window(3, 1, 1), bad)
    assert fused.pool_fuses(pool_window(2)) and fused.pool_fuses(pool_window((1, 2)))
    assert fused.launches == []


# name, N, C, H, W, O, conv window, pool (kh, kw): pools that tile the convolution's output exactly
WGRAD_CASES = [
    ("fmnist_conv1", 2, 1, 28, 28, 32, conv_window(3, 1, "same"), (2, 2)),
    ("rect_10x6_over_tiles", 3, 3, 10, 6, 70, conv_window(3, 1, "same"), (2, 2)),
    ("strided_1x2", 2, 2, 13, 15, 5, conv_window(3, 2, 1), (1, 2)),
    ("pool_2x1", 1, 4, 7, 5, 3, conv_window(2, 1, 1), (2, 1)),
]


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("case", WGRAD_CASES, ids=[c[0] for c in WGRAD_CASES])
def test_pooled_weight_grad_kernels_match_the_twin(harness, case, dtype):
    """conv_wgrad_pooled_fused and its split-K pass equal conv2d_weight_grad of the pool's backward, on every tile,
    with and without the bias column, the argmax with the ReLU's mask codes (255) in it."""
    name, n, c, h, w, o, window, (ph, pw) = case
    rng = numpy.random.default_rng(len(name) + 1)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c, window.kh, window.kw)).astype(dtype)
    pool = pool_window((ph, pw))
    _, argmax = reference.conv2d_pool_forward(x, weight, None, window, pool, True, True)
    assert (argmax == reference.POOL_NO_GRAD).any() and (argmax != reference.POOL_NO_GRAD).any()
    grad_pool = rng.standard_normal(argmax.shape).astype(dtype)
    geometry, oh, ow = _geometry(n, c, h, w, o, window)
    assert oh % ph == 0 and ow % pw == 0
    k = n * oh * ow
    for tile in range(len(gemm_plan.GEMM_TILES)):
        for need_bias in (True, False):
            want_w, want_b = reference.conv2d_weight_grad_pooled(grad_pool, argmax, x, weight.shape, window, pool,
                                                                 need_bias)
            cols = c * window.kh * window.kw + (1 if need_bias else 0)
            grad_w = numpy.full(weight.shape, numpy.nan, dtype=dtype)
            grad_b = numpy.full(o, numpy.nan, dtype=dtype)
            run_kernel(harness, "fused_conv.cu", "conv_wgrad_pooled_fused", dtype,
                       (grad_pool, argmax, x, grad_w, grad_b) + geometry + (ph, pw, 1 if need_bias else 0, tile))
            what = f"tile {tile} bias={need_bias}"
            parity.assert_close(grad_w, want_w, dtype, what)
            if need_bias:
                parity.assert_close(grad_b, want_b, dtype, what + " (bias)")
            slices = 3 if tile % 2 else 7
            partial = numpy.full((slices, o, cols), numpy.nan, dtype=dtype)
            run_kernel(harness, "fused_conv.cu", "conv_wgrad_pooled_partial_fused", dtype,
                       (grad_pool, argmax, x, partial) + geometry + (ph, pw, 1 if need_bias else 0, slices, tile))
            bounds = reference.split_k_bounds(k, slices)
            conv_shape = (n, o, oh, ow)
            grad_y = reference.max_pool2d_backward(grad_pool, argmax, conv_shape, pool)
            want_partials = reference.conv2d_weight_grad_partials(grad_y, x, weight.shape, window, need_bias, slices)
            assert len(bounds) == slices
            parity.assert_close(partial, want_partials, dtype, what + f" partials S={slices}")


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_the_pooled_weight_grad_launcher_equals_the_twin(fused, dtype):
    rng = numpy.random.default_rng(5)
    x = rng.standard_normal((2, 1, 28, 28)).astype(dtype)
    w = rng.standard_normal((8, 1, 3, 3)).astype(dtype)
    window, pool = conv_window(3, 1, "same"), pool_window(2)
    _, argmax = reference.conv2d_pool_forward(x, w, None, window, pool, True, True)
    grad_pool = rng.standard_normal(argmax.shape).astype(dtype)
    grad_w, grad_b = fused.conv2d_weight_grad_pooled(grad_pool, argmax, x, w.shape, window, pool)
    want_w, want_b = reference.conv2d_weight_grad_pooled(grad_pool, argmax, x, w.shape, window, pool)
    parity.assert_close(grad_w, want_w, dtype, "dW")
    parity.assert_close(grad_b, want_b, dtype, "db")
    names = [name for _, name in fused.launches]
    assert names in (["conv_wgrad_pooled_fused"], ["conv_wgrad_pooled_partial_fused", "conv_wgrad_reduce_fused"])
    with pytest.raises(ValueError, match="does not tile"):  # 27 rows do not split into windows of 2
        fused.conv2d_weight_grad_pooled(grad_pool[:, :, :13], argmax[:, :, :13], x[:, :, :27], w.shape, window, pool)
    with pytest.raises(TypeError, match="argmax must be uint8"):
        fused.conv2d_weight_grad_pooled(grad_pool, argmax.astype(numpy.int32), x, w.shape, window, pool)
