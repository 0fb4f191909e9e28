"""Conv2D against the loop oracle (forward; dW by correlation; dX by full convolution, rotated kernel)."""
import numpy
import pytest

from support import oracle
from support.helpers import (F64, accepts, assert_bad_input, assert_close, check_repeatable_and_accumulating,
                             grads, on_device, run, set_param)
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import Conv2D

# (N, C, H, W, O, kernel_size, stride, padding)
EDGE_CONFIGS = [
    (2, 3, 6, 6, 4, 3, 1, 0),                       # the textbook case
    (2, 2, 7, 8, 3, (3, 2), (2, 3), (1, 2)),         # non-square kernel, stride and padding tuples, no tiling
    (1, 3, 7, 5, 2, (2, 4), 1, "same"),              # 'same' with even kernel sizes: extra zero bottom/right
    (2, 2, 6, 6, 3, 4, 1, "same"),                   # even square kernel, 'same'
    (2, 3, 5, 6, 2, 3, 1, "same"),                   # odd kernel, 'same'
    (1, 2, 9, 7, 2, 3, 2, 0),                        # stride 2, windows don't tile
    (2, 1, 5, 5, 2, 5, 1, "valid"),                  # kernel as large as the input: 1x1 output
    (1, 2, 8, 8, 3, 1, 3, 0),                        # 1x1 kernel, stride 3
    (1, 2, 9, 9, 2, 2, 3, 1),                        # stride larger than the kernel (input rows skipped)
    (1, 1, 4, 6, 1, (1, 3), (2, 1), (0, 1)),         # single channel, mixed tuples
]


def _random_configs(count, seed=2024):
    r = numpy.random.default_rng(seed)
    out = []
    while len(out) < count:
        kh, kw = (int(v) for v in r.integers(1, 5, size=2))
        sy, sx = (int(v) for v in r.integers(1, 4, size=2))
        ph, pw = int(r.integers(0, kh)), int(r.integers(0, kw))
        h, w = (int(v) for v in r.integers(3, 9, size=2))
        if kh > h + 2 * ph or kw > w + 2 * pw:
            continue
        out.append((int(r.integers(1, 3)), int(r.integers(1, 4)), h, w, int(r.integers(1, 4)),
                    (kh, kw), (sy, sx), (ph, pw)))
    return out


CONFIGS = EDGE_CONFIGS + _random_configs(8)


def _ids(cfg):
    return "N{}C{}H{}W{}O{}-k{}-s{}-p{}".format(*cfg).replace(" ", "")


def _make(cfg, rng, bias=True, dtype=F64):
    n, c, h, w, o, k, s, p = cfg
    layer = Conv2D(c, o, k, stride=s, padding=p, bias=bias, dtype=dtype)
    weight = rng.standard_normal(layer.weight.data.shape)
    set_param(layer.weight, weight)
    b = None
    if bias:
        b = rng.standard_normal(o)
        set_param(layer.bias, b)
    x = rng.standard_normal((n, c, h, w))
    return layer, x, weight, b


@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_forward_backward_match_oracle(cfg, rng, device):
    n, c, h, w, o, k, s, p = cfg
    layer, x, weight, b = _make(cfg, rng)
    pad = oracle.resolve_conv_padding(k, p)
    want_y = oracle.conv2d_forward(x, weight, b, s, pad)
    grad_out = rng.standard_normal(want_y.shape)
    on_device(layer, device)
    y, dx = run(layer, x, grad_out, device)
    want_dx, want_dw, want_db = oracle.conv2d_backward(x, weight, grad_out, s, pad)
    assert_close(y, want_y, what="y")
    assert_close(dx, want_dx, what="dx")
    assert_close(layer.weight.grad, want_dw, what="dW")
    assert_close(layer.bias.grad, want_db, what="db")
    assert str(y.dtype) == "float64"


@pytest.mark.parametrize("cfg", EDGE_CONFIGS[:3], ids=_ids)
def test_without_bias(cfg, rng, device):
    layer, x, weight, _ = _make(cfg, rng, bias=False)
    assert layer.bias is None
    assert len(layer.parameters()) == 1
    pad = oracle.resolve_conv_padding(cfg[5], cfg[7])
    want_y = oracle.conv2d_forward(x, weight, None, cfg[6], pad)
    grad_out = rng.standard_normal(want_y.shape)
    on_device(layer, device)
    y, dx = run(layer, x, grad_out, device)
    want_dx, want_dw, _ = oracle.conv2d_backward(x, weight, grad_out, cfg[6], pad)
    assert_close(y, want_y, what="y")
    assert_close(dx, want_dx, what="dx")
    assert_close(layer.weight.grad, want_dw, what="dW")


def test_float32_default(rng, device):
    layer = Conv2D(2, 3, (3, 2), stride=(1, 2), padding=1)
    assert layer.weight.data.dtype == numpy.float32
    assert layer.bias.data.dtype == numpy.float32
    assert layer.weight.grad.dtype == numpy.float32
    weight = layer.weight.data.astype(F64)
    b = layer.bias.data.astype(F64)
    x = rng.standard_normal((2, 2, 5, 6)).astype(numpy.float32)
    want = oracle.conv2d_forward(x, weight, b, (1, 2), (1, 1, 1, 1))
    g = rng.standard_normal(want.shape).astype(numpy.float32)
    on_device(layer, device)
    y, dx = run(layer, x, g, device)
    assert y.dtype == numpy.float32 and dx.dtype == numpy.float32
    assert_close(y, want, rtol=1e-4, atol=1e-5, what="y float32")
    want_dx, want_dw, want_db = oracle.conv2d_backward(x, weight, g, (1, 2), (1, 1, 1, 1))
    assert_close(dx, want_dx, rtol=1e-4, atol=1e-5, what="dx float32")
    assert_close(layer.weight.grad, want_dw, rtol=1e-4, atol=1e-4, what="dW float32")
    assert_close(layer.bias.grad, want_db, rtol=1e-4, atol=1e-4, what="db float32")


def test_float64_end_to_end(rng):
    layer = Conv2D(2, 3, 3, dtype=F64)
    assert layer.weight.data.dtype == F64 and layer.bias.data.dtype == F64
    assert layer.weight.grad.dtype == F64 and layer.bias.grad.dtype == F64
    y = layer.forward(rng.standard_normal((1, 2, 4, 4)))
    assert y.dtype == F64
    assert layer.backward(numpy.ones_like(y)).dtype == F64
    assert layer.weight.grad.dtype == F64


@pytest.mark.parametrize("k", [1, 2, 3, 4, (2, 5), (4, 1)])
def test_same_padding_keeps_the_size(k, rng):
    layer = Conv2D(2, 3, k, padding="same", dtype=F64)
    y = layer.forward(rng.standard_normal((2, 2, 7, 6)))
    assert y.shape == (2, 3, 7, 6)


def test_parameter_shapes_and_output_size():
    layer = Conv2D(3, 5, (2, 4), stride=(2, 3), padding=(1, 2))
    assert layer.weight.data.shape == (5, 3, 2, 4)
    assert layer.bias.data.shape == (5,)
    assert layer.weight.grad.shape == (5, 3, 2, 4) and not layer.weight.grad.any()
    params = layer.parameters()
    assert len(params) == 2 and params[0] is layer.weight and params[1] is layer.bias
    y = layer.forward(numpy.zeros((1, 3, 9, 10), dtype=numpy.float32))
    assert y.shape == (1, 5, (9 + 2 - 2) // 2 + 1, (10 + 4 - 4) // 3 + 1)


@pytest.mark.skipif(not accepts(Conv2D, "rng"), reason="Conv2D takes no rng argument")
def test_rng_initialisation_is_reproducible():
    a = Conv2D(3, 4, 3, rng=7)
    b = Conv2D(3, 4, 3, rng=numpy.random.default_rng(7))
    c = Conv2D(3, 4, 3, rng=8)
    numpy.testing.assert_array_equal(a.weight.data, Conv2D(3, 4, 3, rng=7).weight.data)
    numpy.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not numpy.array_equal(a.weight.data, c.weight.data)
    assert numpy.all(numpy.isfinite(a.weight.data)) and a.weight.data.std() > 0


@pytest.mark.parametrize("cfg", EDGE_CONFIGS[:6] + _random_configs(3, seed=99), ids=_ids)
def test_check_layer(cfg, rng):
    layer, x, _, _ = _make(cfg, rng)
    check_layer(layer, x)


def test_check_layer_without_bias(rng):
    layer, x, _, _ = _make(EDGE_CONFIGS[1], rng, bias=False)
    check_layer(layer, x)


@pytest.mark.parametrize("cfg", EDGE_CONFIGS[:3], ids=_ids)
def test_input_untouched_backward_repeatable_grads_accumulate(cfg, rng, device):
    layer, x, weight, b = _make(cfg, rng)
    y = oracle.conv2d_forward(x, weight, b, cfg[6], oracle.resolve_conv_padding(cfg[5], cfg[7]))
    on_device(layer, device)
    y1, y2 = check_repeatable_and_accumulating(layer, x, rng.standard_normal(y.shape), device)
    numpy.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0)])
def test_non_contiguous_input_and_gradient(stride, padding, rng, device):
    """Strided / transposed views must give the same numbers as contiguous copies."""
    layer, _, weight, b = _make((2, 3, 5, 5, 2, 3, stride, padding), rng)
    x = rng.standard_normal((2, 11, 9, 3)).transpose(0, 3, 1, 2)[:, :, ::2, 1::2]     # (2, 3, 6, 4)
    assert not x.flags.c_contiguous
    pad = (padding,) * 4
    want = oracle.conv2d_forward(x, weight, b, stride, pad)
    g = rng.standard_normal(want.shape[::-1]).T                                       # Fortran-ordered
    on_device(layer, device)
    y, dx = run(layer, x, g, device)
    want_dx, want_dw, want_db = oracle.conv2d_backward(x, weight, g, stride, pad)
    assert_close(y, want, what="y")
    assert_close(dx, want_dx, what="dx")
    assert_close(layer.weight.grad, want_dw, what="dW")
    assert_close(layer.bias.grad, want_db, what="db")


def test_eval_mode_same_as_train(rng):
    layer, x, _, _ = _make(EDGE_CONFIGS[0], rng)
    y_train = layer.forward(x).copy()
    layer.eval()
    numpy.testing.assert_array_equal(layer.forward(x), y_train)
    layer.train()


def test_grads_are_added_not_overwritten(rng):
    layer, x, weight, b = _make(EDGE_CONFIGS[0], rng)
    g = numpy.ones((2, 4, 4, 4))
    layer.forward(x)
    layer.backward(g)
    first = grads(layer)
    x2 = rng.standard_normal(x.shape)
    layer.forward(x2)
    layer.backward(g)
    _, dw2, db2 = oracle.conv2d_backward(x2, weight, g, 1, (0, 0, 0, 0))
    assert_close(layer.weight.grad, first[0] + dw2, what="dW accumulated over two batches")
    assert_close(layer.bias.grad, first[1] + db2, what="db accumulated over two batches")


# ----------------------------------------------------------------------------------------
# bad input

def test_wrong_channel_count():
    layer = Conv2D(3, 2, 3)
    assert_bad_input(lambda: layer.forward(numpy.zeros((1, 5, 6, 6), numpy.float32)), "Conv2D", "3", "5")


@pytest.mark.parametrize("shape", [(3, 6, 6), (1, 1, 3, 6, 6), (6,)])
def test_wrong_rank(shape):
    layer = Conv2D(3, 2, 3)
    assert_bad_input(lambda: layer.forward(numpy.zeros(shape, numpy.float32)), "Conv2D", "4", str(shape))


@pytest.mark.parametrize("dtype", [numpy.int64, numpy.int32, numpy.bool_])
def test_non_float_input(dtype):
    layer = Conv2D(3, 2, 3)
    assert_bad_input(lambda: layer.forward(numpy.zeros((1, 3, 6, 6), dtype)), "Conv2D",
                     numpy.dtype(dtype).name)


def test_empty_batch():
    layer = Conv2D(3, 2, 3)
    assert_bad_input(lambda: layer.forward(numpy.zeros((0, 3, 6, 6), numpy.float32)), "Conv2D")


@pytest.mark.parametrize("k, padding, hw", [(5, 0, (4, 6)), ((2, 7), 1, (6, 4)), (7, 1, (4, 4))])
def test_kernel_larger_than_padded_input(k, padding, hw):
    layer = Conv2D(1, 1, k, padding=padding)
    assert_bad_input(lambda: layer.forward(numpy.zeros((1, 1) + hw, numpy.float32)), "Conv2D")


@pytest.mark.parametrize("stride", [0, -1, (1, 0), (0, 2)])
def test_stride_below_one(stride):
    assert_bad_input(lambda: Conv2D(1, 1, 3, stride=stride), "Conv2D", "stride")


@pytest.mark.parametrize("word", ["full", "SAMEISH", ""])
def test_unknown_padding_word(word):
    assert_bad_input(lambda: Conv2D(1, 1, 3, padding=word), "Conv2D", "padding")


def test_same_padding_at_stride_two_gives_ceil_of_the_input_over_the_stride():
    """TensorFlow's 'same' (tests/layers/test_pool_options.py holds it against PyTorch)."""
    assert Conv2D(1, 1, 3, stride=2, padding="same").forward(numpy.zeros((1, 1, 7, 8), numpy.float32)).shape == \
        (1, 1, 4, 4)


@pytest.mark.parametrize("padding", [-1, (0, -2)])
def test_negative_padding(padding):
    assert_bad_input(lambda: Conv2D(1, 1, 3, padding=padding), "Conv2D", "padding")


@pytest.mark.parametrize("k", [0, (3, 0), -2])
def test_kernel_size_below_one(k):
    assert_bad_input(lambda: Conv2D(1, 1, k), "Conv2D", "kernel")


@pytest.mark.parametrize("padding", [1.5, (1, 2, 3), None])
def test_padding_of_the_wrong_type(padding):
    assert_bad_input(lambda: Conv2D(1, 1, 3, padding=padding), "Conv2D", "padding")


@pytest.mark.parametrize("channels", [0, -3])
def test_channel_counts_below_one(channels):
    assert_bad_input(lambda: Conv2D(channels, 2, 3), "Conv2D")
    assert_bad_input(lambda: Conv2D(2, channels, 3), "Conv2D")


def test_same_padding_with_anisotropic_stride():
    y = Conv2D(1, 1, 3, stride=(1, 2), padding="same").forward(numpy.zeros((1, 1, 5, 5), numpy.float32))
    assert y.shape == (1, 1, 5, 3)
