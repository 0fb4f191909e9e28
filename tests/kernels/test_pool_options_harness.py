"""pool.cu's kernels for the new pooling geometry (issue 18, /work/pool_spec.md), replayed by the host harness.

Dilation, padding before/after per axis, ceil mode (windows past the padded input: taps there ignored),
count_include_pad both ways, overlapping windows, ties, NaN and all -inf windows, float32 and float64,
32-bit and 64-bit indices. Each kernel is held against ``contract``: a NumPy computation of the
contract written here from the spec (tap (i, j) of window (oy, ox) reads row oy*sy - pt + i*dy,
column ox*sx - pl + j*dx), and in float64 against PyTorch where it has the option (symmetric pads).
The launchers over the emulated CuPy against the NumPy reference are in tests/test_pool_options_cuda.py.
"""
import numpy
import pytest

from gpucnn.ops.geometry import Window2D
from support.kernel_harness import run_kernel

pytestmark = pytest.mark.kernels


def window_args(h, w, window):
    """pool.cu's geometry arguments: H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow."""
    oh, ow = window.output_size(h, w)
    return (h, w, window.kh, window.kw, window.sy, window.sx, window.dy, window.dx, window.pt, window.pb,
            window.pl, window.pr, oh, ow), oh, ow


def tap_coordinates(h, w, window):
    """rows (oh, kh) and cols (ow, kw) each tap reads, and the padded-input extent they may fall in."""
    oh, ow = window.output_size(h, w)
    rows = numpy.arange(oh)[:, None] * window.sy - window.pt + numpy.arange(window.kh)[None, :] * window.dy
    cols = numpy.arange(ow)[:, None] * window.sx - window.pl + numpy.arange(window.kw)[None, :] * window.dx
    return rows, cols


def contract_taps(x, window):
    """(N, C, oh, ow, K) tap values (0 where not real) and (oh, ow, K) real-element mask, K = kh*kw row-major."""
    n, c, h, w = x.shape
    rows, cols = tap_coordinates(h, w, window)
    real_r, real_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    r = numpy.clip(rows, 0, h - 1)[:, None, :, None]
    q = numpy.clip(cols, 0, w - 1)[None, :, None, :]
    taps = x[:, :, r, q]  # (N, C, oh, ow, kh, kw)
    real = real_r[:, None, :, None] & real_c[None, :, None, :]
    shape = taps.shape[:4] + (-1,)
    return taps.reshape(shape), real.reshape(real.shape[:2] + (-1,))


def contract_max(x, window):
    """y and argmax by the contract: real taps compete; ties the first k, NaN the last NaN, all -inf the first real."""
    taps, real = contract_taps(x, window)
    k_count = taps.shape[-1]
    masked = numpy.where(real, taps, -numpy.inf)
    is_nan = numpy.isnan(masked)
    any_nan = is_nan.any(axis=-1)
    y = numpy.where(any_nan, numpy.nan, numpy.max(numpy.where(is_nan, -numpy.inf, masked), axis=-1))
    first_equal = numpy.argmax(real & (masked == y[..., None]), axis=-1)
    last_nan = k_count - 1 - numpy.argmax(is_nan[..., ::-1], axis=-1)
    argmax = numpy.where(any_nan, last_nan, first_equal)
    argmax = numpy.where(real.any(axis=-1), argmax, 0)  # no real element: k = 0
    return y.astype(x.dtype), argmax.astype(numpy.int32)


def contract_divisors(h, w, window, count_include_pad):
    rows, cols = tap_coordinates(h, w, window)
    if count_include_pad:
        nr = ((rows >= -window.pt) & (rows < h + window.pb)).sum(axis=1)
        nc = ((cols >= -window.pl) & (cols < w + window.pr)).sum(axis=1)
    else:
        nr = ((rows >= 0) & (rows < h)).sum(axis=1)
        nc = ((cols >= 0) & (cols < w)).sum(axis=1)
    return nr[:, None] * nc[None, :]


def contract_avg(x, window, count_include_pad):
    """The real taps summed in ascending k, times 1/divisor rounded to the dtype."""
    taps, real = contract_taps(x, window)
    acc = numpy.zeros(taps.shape[:4], dtype=x.dtype)
    for k in range(taps.shape[-1]):
        acc += numpy.where(real[..., k], taps[..., k], x.dtype.type(0))
    scale = (1.0 / contract_divisors(*x.shape[2:], window, count_include_pad)).astype(x.dtype)
    return acc * scale


def contract_scatter(shares, x_shape, window):
    """grad_x from per-window, per-tap shares (N, C, oh, ow, K), added in ascending k; non-real taps dropped."""
    n, c, h, w = x_shape
    rows, cols = tap_coordinates(h, w, window)
    grad = numpy.zeros(x_shape, dtype=shares.dtype)
    oh, ow = rows.shape[0], cols.shape[0]
    for k in range(window.kh * window.kw):
        i, j = divmod(k, window.kw)
        r, q = rows[:, i], cols[:, j]
        keep_r, keep_c = (r >= 0) & (r < h), (q >= 0) & (q < w)
        if keep_r.any() and keep_c.any():
            block = shares[:, :, :, :, k][:, :, keep_r][:, :, :, keep_c]
            grad[:, :, r[keep_r][:, None], q[keep_c][None, :]] += block
    assert oh == shares.shape[2] and ow == shares.shape[3]
    return grad


def contract_max_backward(grad_y, argmax, x_shape, window):
    k = numpy.arange(window.kh * window.kw)
    shares = numpy.where(argmax[..., None] == k, grad_y[..., None], grad_y.dtype.type(0))
    return contract_scatter(shares, x_shape, window)


def contract_avg_backward(grad_y, x_shape, window, count_include_pad):
    scale = (1.0 / contract_divisors(*x_shape[2:], window, count_include_pad)).astype(grad_y.dtype)
    share = grad_y * scale
    shares = numpy.repeat(share[..., None], window.kh * window.kw, axis=-1)
    return contract_scatter(shares, x_shape, window)


def random_window(rng, dilation=True):
    """A random valid window (pads at most half the kernel, PyTorch's rule) and an input size that fits it."""
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    sy, sx = (int(v) for v in rng.integers(1, 4, 2))
    dy, dx = (int(v) for v in rng.integers(1, 4, 2)) if dilation else (1, 1)
    pt, pb = (int(v) for v in rng.integers(0, kh // 2 + 1, 2))
    pl, pr = (int(v) for v in rng.integers(0, kw // 2 + 1, 2))
    ceil_mode = bool(rng.integers(0, 2))
    eh, ew = dy * (kh - 1) + 1, dx * (kw - 1) + 1
    h = int(rng.integers(max(1, eh - pt - pb), eh + 7))
    w = int(rng.integers(max(1, ew - pl - pr), ew + 7))
    return Window2D(kh, kw, sy, sx, pt, pb, pl, pr, "Pool", dy, dx, ceil_mode), h, w


def special_input(rng, shape, dtype):
    """Small integers (ties), NaN, -inf, and a whole channel of -inf (all -inf windows)."""
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=max(2, flat.size // 10), replace=False)
    flat[picks[0::2]] = -numpy.inf
    flat[picks[1::3]] = numpy.nan
    x[0, -1] = -numpy.inf
    return x


SEEDS = list(range(24))


@pytest.mark.parametrize("index", ["int", "long long"])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("seed", SEEDS)
def test_max_pool_kernels_equal_the_contract(harness, seed, dtype, index):
    rng = numpy.random.default_rng(seed)
    window, h, w = random_window(rng)
    x = special_input(rng, (2, 2, h, w), dtype)
    geometry, oh, ow = window_args(h, w, window)
    y_ref, argmax_ref = contract_max(x, window)
    y = numpy.full((2, 2, oh, ow), 7.0, dtype=dtype)
    argmax = numpy.full(y.shape, -1, dtype=numpy.int32)
    run_kernel(harness, "pool.cu", "max_pool_fwd", dtype, (x, y, argmax) + geometry + (y.size,), index)
    numpy.testing.assert_array_equal(y, y_ref)
    numpy.testing.assert_array_equal(argmax, argmax_ref)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    grad_x = numpy.full(x.shape, numpy.nan, dtype=dtype)
    run_kernel(harness, "pool.cu", "max_pool_bwd", dtype, (grad_y, argmax, grad_x) + geometry + (grad_x.size,),
               index)
    numpy.testing.assert_array_equal(grad_x, contract_max_backward(grad_y, argmax_ref, x.shape, window))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("seed", SEEDS)
def test_avg_pool_kernels_equal_the_contract(harness, seed, dtype, count_include_pad):
    rng = numpy.random.default_rng(100 + seed)
    window, h, w = random_window(rng, dilation=seed % 3 == 0)  # AvgPool2D has none; the kernel handles it
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    geometry, oh, ow = window_args(h, w, window)
    flag = int(count_include_pad)
    y = numpy.full((2, 3, oh, ow), numpy.nan, dtype=dtype)
    run_kernel(harness, "pool.cu", "avg_pool_fwd", dtype, (x, y) + geometry + (flag, y.size), "int")
    numpy.testing.assert_array_equal(y, contract_avg(x, window, count_include_pad))
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    grad_x = numpy.full(x.shape, numpy.nan, dtype=dtype)
    run_kernel(harness, "pool.cu", "avg_pool_bwd", dtype, (grad_y, grad_x) + geometry + (flag, grad_x.size),
               "long long")
    numpy.testing.assert_array_equal(grad_x, contract_avg_backward(grad_y, x.shape, window, count_include_pad))


def test_a_ceil_mode_overhang_is_neither_input_nor_padding(harness):
    """5 wide, kernel 2, stride 2, ceil mode: the last window holds x[4] and one tap past the input."""
    window = Window2D(1, 2, 1, 2, 0, 0, 0, 0, "Pool", 1, 1, True)
    x = numpy.array([[[[1.0, 2.0, 3.0, 4.0, -numpy.inf]]]])
    geometry, oh, ow = window_args(1, 5, window)
    assert (oh, ow) == (1, 3)
    y = numpy.zeros((1, 1, 1, 3))
    argmax = numpy.zeros(y.shape, dtype=numpy.int32)
    run_kernel(harness, "pool.cu", "max_pool_fwd", numpy.float64, (x, y, argmax) + geometry + (3,), "int")
    numpy.testing.assert_array_equal(y[0, 0, 0], [2.0, 4.0, -numpy.inf])
    numpy.testing.assert_array_equal(argmax[0, 0, 0], [1, 1, 0])  # the all -inf window names its real element
    x[0, 0, 0, 4] = 6.0
    for flag, last in ((1, 6.0), (0, 6.0)):  # the overhang is counted neither way: divisor 1
        run_kernel(harness, "pool.cu", "avg_pool_fwd", numpy.float64, (x, y) + geometry + (flag, 3), "int")
        numpy.testing.assert_array_equal(y[0, 0, 0], [1.5, 3.5, last])


def test_dilated_window_gradient_goes_to_each_covering_tap(harness):
    """3x3 kernel dilated by 2, stride 1, on 5x5: every window's centre tap; the gradient adds over windows."""
    window = Window2D(3, 3, 1, 1, 0, 0, 0, 0, "Pool", 2, 2)
    x = numpy.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0  # the centre of the only window wins
    geometry, oh, ow = window_args(5, 5, window)
    assert (oh, ow) == (1, 1)
    y = numpy.zeros((1, 1, 1, 1))
    argmax = numpy.zeros(y.shape, dtype=numpy.int32)
    run_kernel(harness, "pool.cu", "max_pool_fwd", numpy.float64, (x, y, argmax) + geometry + (1,), "int")
    assert y.item() == 1.0 and argmax.item() == 4
    grad_x = numpy.full(x.shape, numpy.nan)
    run_kernel(harness, "pool.cu", "max_pool_bwd", numpy.float64,
               (numpy.full((1, 1, 1, 1), 3.0), argmax, grad_x) + geometry + (25,), "int")
    expected = numpy.zeros((1, 1, 5, 5))
    expected[0, 0, 2, 2] = 3.0
    numpy.testing.assert_array_equal(grad_x, expected)


@pytest.mark.parametrize("seed", range(16))
def test_kernels_match_pytorch_in_float64(harness, seed):
    """Symmetric pads (PyTorch's): max with dilation and ceil mode (values, indices, input gradient), and
    average with ceil mode and count_include_pad both ways."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = numpy.random.default_rng(500 + seed)
    win, h, w = random_window(rng)
    window = Window2D(win.kh, win.kw, win.sy, win.sx, win.pt, win.pt, win.pl, win.pl, "Pool", win.dy, win.dx,
                      win.ceil_mode)
    h, w = max(h, window.extent_h), max(w, window.extent_w)
    x = rng.standard_normal((2, 2, h, w))
    geometry, oh, ow = window_args(h, w, window)
    y = numpy.zeros((2, 2, oh, ow))
    argmax = numpy.zeros(y.shape, dtype=numpy.int32)
    run_kernel(harness, "pool.cu", "max_pool_fwd", numpy.float64, (x, y, argmax) + geometry + (y.size,), "int")
    xt = torch.tensor(x, requires_grad=True)
    kernel, stride, pad = (window.kh, window.kw), (window.sy, window.sx), (window.pt, window.pl)
    yt, it = F.max_pool2d(xt, kernel, stride, pad, (window.dy, window.dx), window.ceil_mode, return_indices=True)
    numpy.testing.assert_array_equal(y, yt.detach().numpy())
    oy, ox = numpy.indices((oh, ow))
    i, j = argmax // window.kw, argmax % window.kw
    flat = (oy * window.sy - window.pt + i * window.dy) * w + (ox * window.sx - window.pl + j * window.dx)
    numpy.testing.assert_array_equal(flat, it.numpy())
    grad_y = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(grad_y))
    grad_x = numpy.zeros(x.shape)
    run_kernel(harness, "pool.cu", "max_pool_bwd", numpy.float64, (grad_y, argmax, grad_x) + geometry
               + (grad_x.size,), "int")
    numpy.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-12, atol=1e-12)

    avg = Window2D(window.kh, window.kw, window.sy, window.sx, window.pt, window.pb, window.pl, window.pr, "Pool",
                   1, 1, window.ceil_mode)
    geometry, oh, ow = window_args(h, w, avg)
    for include in (True, False):
        xt = torch.tensor(x, requires_grad=True)
        yt = F.avg_pool2d(xt, kernel, stride, pad, avg.ceil_mode, include)
        y = numpy.zeros((2, 2, oh, ow))
        run_kernel(harness, "pool.cu", "avg_pool_fwd", numpy.float64, (x, y) + geometry + (int(include), y.size),
                   "int")
        numpy.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
        grad_y = rng.standard_normal(y.shape)
        yt.backward(torch.tensor(grad_y))
        grad_x = numpy.zeros(x.shape)
        run_kernel(harness, "pool.cu", "avg_pool_bwd", numpy.float64, (grad_y, grad_x) + geometry
                   + (int(include), grad_x.size), "int")
        numpy.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
