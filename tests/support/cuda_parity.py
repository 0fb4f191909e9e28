"""The checks that every CUDA op (gpucnn.ops.cuda.*) equals its NumPy twin (gpucnn.ops.*), forward and backward.

The checks are plain functions of a ``dev`` object (``asarray``, ``asnumpy``, the launcher
modules ``conv``/``pool``/``update`` and a list ``launches`` that records every kernel launch):
tests/ops/test_cuda_parity.py runs them on a real GPU, tests/kernels/test_emulated_launchers.py
without one, where ``dev`` holds the same launchers imported over a NumPy stand-in for CuPy and
each launch runs the kernel bodies in the CPU harness. The cases are in tests/support/cuda_cases.py.

What is checked:
- forward and backward equal the NumPy reference (float64 to 1e-10, float32 to 1e-4),
  argmax exactly, output dtypes and shapes;
- inputs given as transposed, sliced or flipped (non-contiguous) views work;
- forward leaves its inputs unmodified;
- two backward passes are bitwise identical;
- a wrong dtype or shape raises TypeError / ValueError before anything is launched.
"""
import numpy
import pytest

from gpucnn.ops import conv as np_conv
from gpucnn.ops import pool as np_pool
from gpucnn.ops import update as np_update
from gpucnn.ops.geometry import conv_window, pool_window
from support.cuda_cases import conv_case


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

