"""Every CUDA op (gpucnn.ops.cuda.*) equals its NumPy twin (gpucnn.ops.*), forward and backward.

The tests here need a usable GPU (``@pytest.mark.gpu``; skipped elsewhere by
tests/conftest.py). The checks themselves are plain functions of a ``dev`` object
(``asarray``, ``asnumpy``, the launcher modules ``conv``/``pool``/``update`` and a list
``launches`` that records every kernel launch), so tests/kernels/test_host_harness.py
runs the very same checks without a GPU: there ``dev`` holds the same launchers imported
over a NumPy stand-in for CuPy, and each launch runs the kernel bodies in the CPU harness.

What is checked, on fixed and random configurations (non-square kernels, strides > 1,
asymmetric 'same' padding, dilated and grouped (depthwise included) convolutions,
overlapping pool windows, sizes that do not tile; float32 and float64):
- forward and backward equal the NumPy reference (float64 to 1e-10, float32 to 1e-4),
  argmax exactly, output dtypes and shapes;
- inputs given as transposed, sliced or flipped (non-contiguous) views work;
- forward leaves its inputs unmodified;
- two backward passes are bitwise identical;
- a wrong dtype or shape raises TypeError / ValueError before anything is launched.
"""
import types

import numpy
import pytest

from emulated_cupy import record_launches
from gpucnn.ops import conv as np_conv
from gpucnn.ops import pool as np_pool
from gpucnn.ops import update as np_update
from gpucnn.ops.geometry import Window2D, conv_window, pool_window

DTYPES = [numpy.float32, numpy.float64]
LAYOUTS = ["contiguous", "transposed", "sliced", "flipped"]


# ----------------------------------------------------------------------------- helpers

def tolerance(dtype):
    return 1e-4 if numpy.dtype(dtype) == numpy.float32 else 1e-10


def assert_close(actual, expected, dtype, what=""):
    """Relative agreement, scaled by the largest expected magnitude (sums may cancel to ~0)."""
    assert actual.dtype == numpy.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {numpy.dtype(dtype)}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    tol = tolerance(dtype)
    finite = numpy.isfinite(expected)
    scale = max(1.0, float(numpy.max(numpy.abs(expected[finite])))) if finite.any() else 1.0
    numpy.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, equal_nan=True, err_msg=what)


def device_view(dev, a, layout):
    """A device array equal to ``a``: contiguous, or a transposed / sliced / flipped view."""
    a = numpy.asarray(a)
    if layout == "contiguous" or a.ndim == 0:
        return dev.asarray(numpy.ascontiguousarray(a))
    if layout == "transposed":
        axes = tuple(reversed(range(a.ndim)))
        return dev.asarray(numpy.ascontiguousarray(a.transpose(axes))).transpose(axes)
    if layout == "sliced":
        big = numpy.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), dtype=a.dtype)
        big[..., 1::2] = a
        return dev.asarray(big)[..., 1::2]
    if layout == "flipped":
        return dev.asarray(numpy.ascontiguousarray(a[..., ::-1]))[..., ::-1]
    raise AssertionError(layout)


def random_conv_window(rng, dilated=False):
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    sy, sx = (int(v) for v in rng.integers(1, 4, size=2))
    dy, dx = (int(v) for v in rng.integers(1, 4, size=2)) if dilated else (1, 1)
    pt, pb = (int(v) for v in rng.integers(0, dy * (kh - 1) + 1, size=2))
    pl, pr = (int(v) for v in rng.integers(0, dx * (kw - 1) + 1, size=2))
    return Window2D(kh, kw, sy, sx, pt, pb, pl, pr, "Conv2D", dy, dx)


def conv_case(case):
    """(n, c, h, w, o, window, with_bias, groups) of a conv case; groups is 1 when the case leaves it out."""
    _, n, c, h, w, o, window, with_bias, *rest = case
    return n, c, h, w, o, window, with_bias, (rest[0] if rest else 1)


def _conv_cases():
    cases = [
        # name, N, C, H, W, O, window, with_bias[, groups]
        ("fmnist1_same3x3", 2, 1, 28, 28, 4, conv_window(3, 1, "same"), True),        # direct kernel
        ("fmnist2_same3x3", 2, 6, 14, 14, 5, conv_window(3, 1, "same"), True),        # im2col + GEMM
        ("even_same_4x2", 2, 3, 7, 6, 4, conv_window((4, 2), 1, "same"), True),       # asymmetric pad
        ("even_same_4x4_gemm", 1, 3, 6, 7, 3, conv_window(4, 1, "same"), False),
        ("stride2_pad1_gemm", 3, 4, 9, 8, 2, conv_window(3, 2, 1), True),
        ("stride_gt_kernel", 2, 2, 10, 11, 3, conv_window((2, 1), (3, 4), 0), True),
        ("nonsquare_strided", 2, 5, 8, 9, 3, conv_window((3, 2), (2, 1), (1, 0)), False),
        ("nonsquare_strided_gemm", 2, 7, 8, 9, 3, conv_window((3, 2), (1, 2), (2, 1)), True),
        ("asym_custom", 2, 3, 5, 6, 2, Window2D(3, 3, 2, 1, 0, 2, 1, 0, "Conv2D"), True),
        ("asym_custom_gemm", 2, 4, 5, 6, 2, Window2D(3, 3, 2, 1, 2, 0, 0, 1, "Conv2D"), True),
        ("kernel_is_input", 2, 4, 3, 3, 2, conv_window(3, 1, 0), True),
        ("one_by_one_gemm", 2, 40, 4, 5, 3, conv_window(1, 1, 0), True),
        ("wide_pad", 1, 2, 2, 3, 2, conv_window(3, 1, 2), False),
        ("dilated_same", 2, 2, 9, 8, 3, conv_window(3, 1, "same", dilation=2), True),             # direct
        ("dilated_same_even_gemm", 2, 5, 7, 9, 3, conv_window((2, 4), 1, "same", dilation=(3, 1)), True),
        ("dilated_strided_gemm", 2, 6, 11, 10, 4, conv_window(3, (2, 3), (1, 2), dilation=(2, 3)), False),
        ("depthwise_same", 2, 4, 7, 6, 4, conv_window(3, 1, "same"), True, 4),                   # direct
        ("depthwise_multiplier_strided", 2, 3, 9, 8, 6, conv_window(3, 2, 1, dilation=2), True, 3),
        ("grouped_gemm", 2, 12, 6, 7, 8, conv_window(3, 1, 1), True, 2),                        # K/group = 54
        ("grouped_dilated_gemm", 1, 8, 9, 9, 4, conv_window((3, 2), (1, 2), (2, 1), dilation=(2, 2)), False, 2),
        ("grouped_1x1", 2, 36, 4, 5, 6, conv_window(1, 1, 0), True, 3),
    ]
    rng = numpy.random.default_rng(2024)
    fixed = len(cases)
    while len(cases) < fixed + 20:
        dilated = len(cases) >= fixed + 12  # 12 plain random windows, then 8 dilated and grouped ones
        window = random_conv_window(rng, dilated)
        h = int(rng.integers(max(1, window.extent_h - window.pt - window.pb), 10))
        w = int(rng.integers(max(1, window.extent_w - window.pl - window.pr), 10))
        groups = int(rng.integers(1, 4)) if dilated else 1
        c = groups * int(rng.integers(1, 7 if groups == 1 else 4))
        n, o, with_bias = int(rng.integers(1, 4)), groups * int(rng.integers(1, 5)), bool(rng.integers(0, 2))
        cases.append((f"random{len(cases)}", n, c, h, w, o, window, with_bias, groups))
    return cases


CONV_CASES = _conv_cases()


def _pool_cases():
    cases = [
        # name, N, C, H, W, window
        ("fmnist_2x2", 2, 3, 28, 28, pool_window(2)),
        ("odd_2x2", 2, 2, 7, 5, pool_window(2)),
        ("overlap_3x3_s2", 2, 2, 9, 8, pool_window(3, 2)),
        ("overlap_3x3_s1_pad1", 1, 3, 6, 7, pool_window(3, 1, 1)),
        ("nonsquare_overlap", 2, 2, 7, 6, pool_window((3, 2), (2, 1), (1, 1))),
        ("asym_pad", 2, 2, 6, 5, Window2D(3, 2, 2, 2, 1, 0, 0, 1, "MaxPool2D")),
        ("stride_gt_kernel", 2, 2, 9, 10, pool_window(2, 3)),
        ("global", 2, 3, 4, 5, pool_window((4, 5))),
    ]
    rng = numpy.random.default_rng(7)
    while len(cases) < 18:
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        sy, sx = (int(v) for v in rng.integers(1, 4, size=2))
        pt, pb = (int(v) for v in rng.integers(0, kh // 2 + 1, size=2))
        pl, pr = (int(v) for v in rng.integers(0, kw // 2 + 1, size=2))
        window = Window2D(kh, kw, sy, sx, pt, pb, pl, pr, "Pool2D")
        h = int(rng.integers(max(1, kh - pt - pb), 9))
        w = int(rng.integers(max(1, kw - pl - pr), 9))
        cases.append((f"random{len(cases)}", int(rng.integers(1, 3)), int(rng.integers(1, 4)), h, w, window))
    return cases


POOL_CASES = _pool_cases()


def _ids(cases):
    return [case[0] for case in cases]


# ----------------------------------------------------------------------------- checks

def check_conv(dev, case, dtype, layout, seed=0):
    """conv2d forward + backward through ``dev.conv`` equals gpucnn.ops.conv (see module docstring)."""
    n, c, h, w, o, window, with_bias, groups = conv_case(case)
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c // groups, window.kh, window.kw)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if with_bias else None
    y_ref, saved_ref = np_conv.conv2d_forward(x, weight, bias, window, groups)
    grad_y = rng.standard_normal(y_ref.shape).astype(dtype)
    gx_ref, gw_ref, gb_ref = np_conv.conv2d_backward(grad_y, saved_ref, need_bias=with_bias)

    x_d, w_d = device_view(dev, x, layout), device_view(dev, weight, layout)
    b_d = device_view(dev, bias, layout) if with_bias else None
    y_d, saved = dev.conv.conv2d_forward(x_d, w_d, b_d, window, groups)
    for name, arr_d, arr in (("x", x_d, x), ("weight", w_d, weight), ("bias", b_d, bias)):
        if arr is not None:
            assert numpy.array_equal(dev.asnumpy(arr_d), arr), f"forward modified its input {name}"
    assert_close(dev.asnumpy(y_d), y_ref, dtype, "y")

    gy_d = device_view(dev, grad_y, layout)
    first = [None if g is None else dev.asnumpy(g) for g in dev.conv.conv2d_backward(gy_d, saved, with_bias)]
    second = [None if g is None else dev.asnumpy(g) for g in dev.conv.conv2d_backward(gy_d, saved, with_bias)]
    assert numpy.array_equal(dev.asnumpy(gy_d), grad_y), "backward modified grad_y"
    for name, a, b in zip(("grad_x", "grad_w", "grad_b"), first, second):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.tobytes() == b.tobytes(), f"{name} differs between two backward passes"
    gx, gw, gb = first
    assert_close(gx, gx_ref, dtype, "grad_x")
    assert_close(gw, gw_ref, dtype, "grad_w")
    if with_bias:
        assert_close(gb, gb_ref, dtype, "grad_b")
    else:
        assert gb is None


def pool_input(rng, shape, dtype, special):
    """Small integers (many ties), optionally with NaN and -inf sprinkled in."""
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    if special:
        flat = x.reshape(-1)
        picks = rng.choice(flat.size, size=max(1, flat.size // 12), replace=False)
        flat[picks[0::2]] = -numpy.inf
        flat[picks[1::2]] = numpy.nan
    return x


def window_elements(x, window, index):
    """x_pad[n, c, oy*sy + k // kw, ox*sx + k % kw] for k = index[n, c, oy, ox] (padding = -inf)."""
    n, c, h, w = x.shape
    padded_shape = (n, c, h + window.pt + window.pb, w + window.pl + window.pr)
    padded = numpy.full(padded_shape, -numpy.inf, dtype=x.dtype)
    padded[:, :, window.pt:window.pt + h, window.pl:window.pl + w] = x
    ni, ci, oy, ox = numpy.indices(index.shape)
    return padded[ni, ci, oy * window.sy + index // window.kw, ox * window.sx + index % window.kw]


def check_max_pool(dev, case, dtype, layout, special=False, seed=0):
    _, n, c, h, w, window = case
    rng = numpy.random.default_rng(seed)
    x = pool_input(rng, (n, c, h, w), dtype, special)
    y_ref, saved_ref = np_pool.max_pool2d_forward(x, window)
    grad_y = rng.standard_normal(y_ref.shape).astype(dtype)
    # Which element of a window holding NaN is "the" argmax is a convention: the kernels
    # follow PyTorch (the last NaN), the NumPy reference may pick another. Such windows
    # give y = NaN either way; their argmax is not compared and their gradient is zeroed.
    defined = ~numpy.isnan(y_ref)
    grad_y[~defined] = 0
    gx_ref = np_pool.max_pool2d_backward(grad_y, saved_ref)

    x_d = device_view(dev, x, layout)
    y_d, saved = dev.pool.max_pool2d_forward(x_d, window)
    assert numpy.array_equal(dev.asnumpy(x_d), x, equal_nan=True), "forward modified x"
    y = dev.asnumpy(y_d)
    assert y.dtype == numpy.dtype(dtype)
    numpy.testing.assert_array_equal(y, y_ref)  # a selection: exact, NaN where NaN
    argmax = dev.asnumpy(saved[0])
    assert argmax.dtype == numpy.int32 and argmax.shape == y_ref.shape
    numpy.testing.assert_array_equal(argmax[defined], saved_ref[0][defined])
    assert ((argmax >= 0) & (argmax < window.kh * window.kw)).all()
    # PyTorch's rule for NaN windows: the argmax names a NaN (the last one in the window).
    winner = window_elements(x, window, argmax)
    numpy.testing.assert_array_equal(winner[defined], y[defined])
    assert numpy.isnan(winner[~defined]).all()

    gy_d = device_view(dev, grad_y, layout)
    first = dev.asnumpy(dev.pool.max_pool2d_backward(gy_d, saved))
    second = dev.asnumpy(dev.pool.max_pool2d_backward(gy_d, saved))
    assert first.tobytes() == second.tobytes(), "max pool backward is not repeatable"
    assert_close(first, gx_ref, dtype, "grad_x")


def check_avg_pool(dev, case, dtype, layout, seed=0):
    _, n, c, h, w, window = case
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    y_ref, saved_ref = np_pool.avg_pool2d_forward(x, window)
    grad_y = rng.standard_normal(y_ref.shape).astype(dtype)
    gx_ref = np_pool.avg_pool2d_backward(grad_y, saved_ref)

    x_d = device_view(dev, x, layout)
    y_d, saved = dev.pool.avg_pool2d_forward(x_d, window)
    assert numpy.array_equal(dev.asnumpy(x_d), x), "forward modified x"
    assert_close(dev.asnumpy(y_d), y_ref, dtype, "y")
    gy_d = device_view(dev, grad_y, layout)
    first = dev.asnumpy(dev.pool.avg_pool2d_backward(gy_d, saved))
    second = dev.asnumpy(dev.pool.avg_pool2d_backward(gy_d, saved))
    assert first.tobytes() == second.tobytes(), "avg pool backward is not repeatable"
    assert_close(first, gx_ref, dtype, "grad_x")


SGD_CASES = [
    # lr, momentum, dampening, nesterov, weight_decay
    (0.1, 0.0, 0.0, False, 0.0),
    (0.05, 0.0, 0.0, False, 1e-2),
    (0.1, 0.9, 0.0, False, 0.0),
    (0.02, 0.9, 0.1, False, 5e-3),
    (0.1, 0.8, 0.0, True, 1e-3),
]

ADAM_CASES = [
    # lr, beta1, beta2, eps, weight_decay, decoupled
    (1e-3, 0.9, 0.999, 1e-8, 0.0, False),
    (1e-2, 0.8, 0.99, 1e-6, 1e-2, False),
    (1e-2, 0.9, 0.999, 1e-8, 5e-2, True),
]


def check_sgd(dev, case, dtype, layout, steps=3, seed=0):
    lr, momentum, dampening, nesterov, weight_decay = case
    rng = numpy.random.default_rng(seed)
    shape = (7, 5)
    param = rng.standard_normal(shape).astype(dtype)
    buf = numpy.zeros(shape, dtype=dtype)
    p_d = device_view(dev, param, layout)
    b_d = device_view(dev, buf, layout) if momentum else None
    for step in range(steps):
        grad = rng.standard_normal(shape).astype(dtype)
        g_d = device_view(dev, grad, layout)
        np_update.sgd_update(param, grad, buf if momentum else None, lr, momentum, dampening, nesterov,
                             weight_decay, step == 0)
        dev.update.sgd_update(p_d, g_d, b_d, lr, momentum, dampening, nesterov, weight_decay, step == 0)
        assert numpy.array_equal(dev.asnumpy(g_d), grad), "sgd_update modified grad"
        assert_close(dev.asnumpy(p_d), param, dtype, f"param after step {step + 1}")
        if momentum:
            assert_close(dev.asnumpy(b_d), buf, dtype, f"momentum_buf after step {step + 1}")


def check_adam(dev, case, dtype, layout, steps=3, seed=0):
    lr, beta1, beta2, eps, weight_decay, decoupled = case
    rng = numpy.random.default_rng(seed)
    shape = (4, 3, 2)
    param = rng.standard_normal(shape).astype(dtype)
    m = numpy.zeros(shape, dtype=dtype)
    v = numpy.zeros(shape, dtype=dtype)
    p_d, m_d, v_d = (device_view(dev, a, layout) for a in (param, m, v))
    for step in range(1, steps + 1):
        grad = rng.standard_normal(shape).astype(dtype)
        g_d = device_view(dev, grad, layout)
        np_update.adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled)
        dev.update.adam_update(p_d, g_d, m_d, v_d, lr, beta1, beta2, eps, weight_decay, step, decoupled)
        assert numpy.array_equal(dev.asnumpy(g_d), grad), "adam_update modified grad"
        assert_close(dev.asnumpy(p_d), param, dtype, f"param after step {step}")
        assert_close(dev.asnumpy(m_d), m, dtype, f"exp_avg after step {step}")
        assert_close(dev.asnumpy(v_d), v, dtype, f"exp_avg_sq after step {step}")


def _raises_before_launch(dev, error, call):
    before = len(dev.launches)
    with pytest.raises(error):
        call()
    assert len(dev.launches) == before, "an invalid call launched a kernel before raising"


def check_errors(dev):
    """Wrong dtypes raise TypeError, wrong shapes ValueError, both before any launch."""
    f32, f64 = numpy.float32, numpy.float64
    win = conv_window(3, 1, 1)
    x = dev.asarray(numpy.zeros((2, 3, 5, 5), f32))
    w = dev.asarray(numpy.zeros((4, 3, 3, 3), f32))
    b = dev.asarray(numpy.zeros(4, f32))
    conv, pool, upd = dev.conv.conv2d_forward, dev.pool, dev.update
    _raises_before_launch(dev, TypeError, lambda: conv(x, w.astype(f64), b, win))
    _raises_before_launch(dev, TypeError, lambda: conv(x, w, b.astype(f64), win))
    for bad in (numpy.int32, numpy.float16):
        _raises_before_launch(dev, TypeError, lambda: conv(x.astype(bad), w.astype(bad), None, win))
    if not isinstance(x, numpy.ndarray):  # (under the CPU emulation NumPy arrays stand for device arrays)
        _raises_before_launch(dev, TypeError, lambda: conv(numpy.zeros((2, 3, 5, 5), f32), w, b, win))
    _raises_before_launch(dev, ValueError, lambda: conv(x[0], w, b, win))
    _raises_before_launch(dev, ValueError, lambda: conv(x, w[:, :2], b, win))
    _raises_before_launch(dev, ValueError, lambda: conv(x, w, b[:3], win))
    _raises_before_launch(dev, ValueError, lambda: conv(x, w, b, conv_window(7, 1, 0)))
    _raises_before_launch(dev, ValueError, lambda: conv(x, w, b, conv_window(3, 1, 0, dilation=3)))  # extent 7
    _raises_before_launch(dev, ValueError, lambda: conv(x, w, b, win, 2))  # 2 groups do not divide 3 channels
    _raises_before_launch(dev, ValueError, lambda: conv(x, w, b, win, 3))  # weights (4, 3, ...) need (4, 1, ...)
    _, saved = conv(x, w, b, win)
    n_launches = len(dev.launches)
    gy = dev.asarray(numpy.zeros((2, 4, 5, 5), f32))
    _raises_before_launch(dev, TypeError, lambda: dev.conv.conv2d_backward(gy.astype(f64), saved))
    _raises_before_launch(dev, ValueError, lambda: dev.conv.conv2d_backward(gy[:, :3], saved))
    assert len(dev.launches) == n_launches

    pwin = pool_window(2)
    for fwd, bwd in ((pool.max_pool2d_forward, pool.max_pool2d_backward),
                     (pool.avg_pool2d_forward, pool.avg_pool2d_backward)):
        _raises_before_launch(dev, TypeError, lambda: fwd(x.astype(numpy.int32), pwin))
        _raises_before_launch(dev, ValueError, lambda: fwd(x[0], pwin))
        _raises_before_launch(dev, ValueError, lambda: fwd(x, pool_window(6)))
        _, psaved = fwd(x, pwin)
        gy = dev.asarray(numpy.zeros((2, 3, 2, 2), f32))
        _raises_before_launch(dev, TypeError, lambda: bwd(gy.astype(numpy.int64), psaved))
        _raises_before_launch(dev, ValueError, lambda: bwd(gy[:, :, :1], psaved))

    p = dev.asarray(numpy.zeros((3, 2), f32))
    g = dev.asarray(numpy.zeros((3, 2), f32))

    def sgd(grad, buf, momentum):
        return lambda: upd.sgd_update(p, grad, buf, 0.1, momentum, 0.0, False, 0.0, True)

    def adam(m, v, step=1):
        return lambda: upd.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, step, False)

    _raises_before_launch(dev, TypeError, sgd(g.astype(f64), None, 0.0))
    _raises_before_launch(dev, ValueError, sgd(g[:2], None, 0.0))
    _raises_before_launch(dev, TypeError, sgd(g, None, 0.9))  # momentum needs a buffer
    _raises_before_launch(dev, ValueError, sgd(g, g[:1], 0.9))
    _raises_before_launch(dev, TypeError, adam(g.astype(f64), g))
    _raises_before_launch(dev, ValueError, adam(g, g.reshape(6)))
    _raises_before_launch(dev, ValueError, adam(g.copy(), g.copy(), step=0))


# ----------------------------------------------------------------------------- GPU tests

@pytest.fixture
def gpu(monkeypatch):
    """``dev`` for the real GPU: CuPy arrays and the launchers, launches recorded."""
    import cupy

    from gpucnn.ops.cuda import conv, loader, pool, update

    launches = record_launches(loader, monkeypatch.setattr)
    return types.SimpleNamespace(asarray=cupy.asarray, asnumpy=cupy.asnumpy, conv=conv, pool=pool,
                                 update=update, loader=loader, launches=launches)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv_parity(gpu, case, dtype, layout):
    check_conv(gpu, case, dtype, layout)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=_ids(POOL_CASES))
def test_max_pool_parity(gpu, case, dtype, layout):
    check_max_pool(gpu, case, dtype, layout, special=(layout == "flipped"))


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=_ids(POOL_CASES))
def test_avg_pool_parity(gpu, case, dtype, layout):
    check_avg_pool(gpu, case, dtype, layout)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_parity(gpu, case, dtype, layout):
    check_sgd(gpu, case, dtype, layout)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADAM_CASES)
def test_adam_parity(gpu, case, dtype, layout):
    check_adam(gpu, case, dtype, layout)


@pytest.mark.gpu
def test_errors_raise_before_launch(gpu):
    check_errors(gpu)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_ops_dispatch_to_cuda(gpu, dtype):
    """gpucnn.ops.* given CuPy arrays run our kernels and return CuPy arrays equal to NumPy's."""
    import cupy

    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((3, 2, 9, 8)).astype(dtype)
    weight = rng.standard_normal((4, 2, 3, 3)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    win = conv_window(3, 1, "same")
    y_ref, _ = np_conv.conv2d_forward(x, weight, bias, win)
    y, saved = np_conv.conv2d_forward(cupy.asarray(x), cupy.asarray(weight), cupy.asarray(bias), win)
    assert isinstance(y, cupy.ndarray)
    assert_close(cupy.asnumpy(y), y_ref, dtype, "y")
    grads = np_conv.conv2d_backward(cupy.ones_like(y), saved)
    assert all(isinstance(g, cupy.ndarray) for g in grads)
    p_ref, p_saved = np_pool.max_pool2d_forward(y_ref, pool_window(2))
    p, psaved = np_pool.max_pool2d_forward(y, pool_window(2))
    assert_close(cupy.asnumpy(p), p_ref, dtype, "pool")
    assert isinstance(np_pool.max_pool2d_backward(cupy.ones_like(p), psaved), cupy.ndarray)
    assert len(gpu.launches) > 0


@pytest.mark.gpu
def test_large_fmnist_shapes_float32(gpu):
    """The target network's real shapes (batch 256) once, both conv paths and the pool."""
    check_conv(gpu, ("fmnist1_b256", 256, 1, 28, 28, 32, conv_window(3, 1, "same"), True), numpy.float32,
               "contiguous")
    check_conv(gpu, ("fmnist2_b256", 256, 32, 14, 14, 64, conv_window(3, 1, "same"), True), numpy.float32,
               "contiguous")
    check_max_pool(gpu, ("fmnist_pool_b256", 256, 32, 28, 28, pool_window(2)), numpy.float32, "contiguous")


@pytest.mark.gpu
def test_kernels_compile_on_this_device(gpu):
    """Every name expression of every kernel file loads on the current device."""
    for file in gpu.loader.SIGNATURES:
        for expression in gpu.loader.name_expressions(file):
            assert gpu.loader.get_kernel(file, expression) is not None
