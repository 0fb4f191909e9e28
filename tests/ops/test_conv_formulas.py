"""gpucnn.ops.conv's two input gradients agree: col2im of W.T @ dY, and the full convolution with the rotated kernel.

Also: col2im is im2col's adjoint, and im2col's columns are the windows of the definition.
(Both are held against the loop oracle and PyTorch through the layer in tests/layers and tests/test_torch_parity.py.)
"""
import numpy
import pytest

from gpucnn.ops import conv
from gpucnn.ops.geometry import conv_window

# (N, C, H, W, O, kernel_size, stride, padding, dilation, groups)
CASES = [
    (2, 3, 6, 6, 4, 3, 1, 0, 1, 1),                     # the textbook case
    (2, 2, 7, 8, 3, (3, 2), (2, 3), (1, 2), 1, 1),      # strides and padding pairs, windows don't tile
    (1, 2, 9, 9, 2, 2, 3, 1, 1, 1),                     # stride larger than the kernel: rows skipped
    (1, 3, 7, 5, 2, (2, 4), 1, "same", 1, 1),           # 'same' with an odd total: extra bottom/right
    (2, 2, 9, 9, 3, 3, 1, 0, 2, 1),                     # dilated
    (2, 3, 11, 10, 2, 3, (2, 3), (1, 2), (2, 3), 1),    # dilated, strided, padded
    (2, 4, 6, 7, 6, 3, 1, 1, 1, 2),                     # two groups
    (1, 3, 9, 8, 6, 3, 2, 1, 2, 3),                     # depthwise x2, strided, dilated
    (2, 6, 9, 9, 4, (3, 2), (1, 2), (2, 1), (2, 2), 2),  # grouped, dilated, strided, non-square
    (2, 1, 5, 5, 2, 5, 1, "valid", 1, 1),               # kernel as large as the input
]


def _ids(case):
    return "N{}C{}H{}W{}O{}-k{}-s{}-p{}-d{}-g{}".format(*case).replace(" ", "")


def _setup(case, dtype=numpy.float64, seed=0):
    n, c, h, w, o, k, s, p, d, g = case
    rng = numpy.random.default_rng(seed)
    window = conv_window(k, s, p, dilation=d)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c // g, window.kh, window.kw)).astype(dtype)
    return x, weight, window, g


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_full_convolution_with_the_rotated_kernel_equals_col2im(case, dtype):
    x, weight, window, groups = _setup(case, dtype)
    y, saved = conv.conv2d_forward(x, weight, None, window, groups)
    grad_y = numpy.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    grad_x, _, _ = conv.conv2d_backward(grad_y, saved, need_bias=False)
    rotated = conv.conv2d_input_grad(grad_y, weight, x.shape, window, groups)
    assert rotated.shape == grad_x.shape == x.shape and rotated.dtype == grad_x.dtype == dtype
    tol = 1e-12 if dtype == numpy.float64 else 1e-4
    numpy.testing.assert_allclose(rotated, grad_x, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_col2im_is_the_adjoint_of_im2col(case):
    """<im2col(x), c> == <x, col2im(c)> for every x and c: col2im is im2col's transpose."""
    x, _, window, _ = _setup(case)
    oh, ow = window.output_size(*x.shape[2:])
    cols = conv.im2col(x, window, oh, ow)
    other = numpy.random.default_rng(2).standard_normal(cols.shape)
    back = conv.col2im(other, x.shape, window, oh, ow)
    assert back.shape == x.shape
    numpy.testing.assert_allclose(numpy.vdot(cols, other), numpy.vdot(x, back), rtol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_im2col_columns_are_the_windows(case):
    """Column (n, oy, ox), rows (c, i, j): x_pad[n, c, sy*oy + dy*i, sx*ox + dx*j], read with plain loops."""
    x, _, window, _ = _setup(case)
    n, c, h, w = x.shape
    oh, ow = window.output_size(h, w)
    cols = conv.im2col(x, window, oh, ow).reshape(c, window.kh, window.kw, n, oh, ow)
    padded = numpy.pad(x, ((0, 0), (0, 0), (window.pt, window.pb), (window.pl, window.pr)))
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                rows = slice(window.sy * oy, window.sy * oy + window.extent_h, window.dy)
                columns = slice(window.sx * ox, window.sx * ox + window.extent_w, window.dx)
                numpy.testing.assert_array_equal(cols[:, :, :, b, oy, ox], padded[b, :, rows, columns])


def test_forward_is_weight_times_columns_plus_bias():
    x, weight, window, _ = _setup(CASES[5])
    bias = numpy.arange(weight.shape[0], dtype=x.dtype)
    y, _ = conv.conv2d_forward(x, weight, bias, window)
    oh, ow = window.output_size(*x.shape[2:])
    want = weight.reshape(weight.shape[0], -1) @ conv.im2col(x, window, oh, ow) + bias[:, None]
    numpy.testing.assert_allclose(y, want.reshape(-1, x.shape[0], oh, ow).transpose(1, 0, 2, 3), rtol=1e-12)
    assert y.flags.c_contiguous


def test_backward_writes_into_the_given_buffers():
    x, weight, window, groups = _setup(CASES[8])
    y, saved = conv.conv2d_forward(x, weight, numpy.zeros(weight.shape[0]), window, groups)
    grad_y = numpy.random.default_rng(3).standard_normal(y.shape)
    want = conv.conv2d_backward(grad_y, saved)
    w_out, b_out = numpy.full(weight.shape, numpy.nan), numpy.full(weight.shape[0], numpy.nan)
    got = conv.conv2d_backward(grad_y, saved, grad_weight_out=w_out, grad_bias_out=b_out, need_input_grad=False)
    assert got[0] is None and got[1] is w_out and got[2] is b_out
    numpy.testing.assert_allclose(w_out, want[1], rtol=1e-12)
    numpy.testing.assert_allclose(b_out, want[2], rtol=1e-12)
    numpy.testing.assert_allclose(b_out, grad_y.sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c[7] != "same"], ids=_ids)
def test_rotated_kernel_formula_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, weight, window, groups = _setup(case)
    y, _ = conv.conv2d_forward(x, weight, None, window, groups)
    grad_y = numpy.random.default_rng(4).standard_normal(y.shape)
    want = torch.nn.grad.conv2d_input(x.shape, torch.from_numpy(weight), torch.from_numpy(grad_y),
                                      stride=(window.sy, window.sx), padding=(window.pt, window.pl),
                                      dilation=(window.dy, window.dx), groups=groups)
    numpy.testing.assert_allclose(conv.conv2d_input_grad(grad_y, weight, x.shape, window, groups), want.numpy(),
                                  rtol=1e-12, atol=1e-12)
