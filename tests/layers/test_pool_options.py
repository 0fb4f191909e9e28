"""Pooling options (dilation, ceil_mode, count_include_pad, 'same'/'valid'/asymmetric padding) and Conv2D's
asymmetric and strided 'same' padding: against PyTorch in float64 on the reference and the CPU fast path
(forward, input gradient, parameter gradients), refused options, architecture records and ONNX export."""
import numpy
import pytest

import gpucnn
from gpucnn.nn import architecture
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import AvgPool2D, Conv2D, MaxPool2D, ReLU
from gpucnn.nn.sequential import Sequential
from gpucnn.ops.geometry import SameWindow2D, Window2D

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (kernel_size, stride, padding, dilation, ceil_mode) for MaxPool2D, all PyTorch-expressible (symmetric pads)
MAX_CASES = [(3, 2, 1, 1, True), (3, 2, 0, 2, True), (2, 2, 1, 1, True), (3, 3, 1, 1, True),
             (3, 1, 1, (2, 1), False), ((3, 2), (2, 1), (1, 1), 2, True), (4, 3, 2, 1, True)]
# (kernel_size, stride, padding, ceil_mode, count_include_pad) for AvgPool2D
AVG_CASES = [(3, 2, 1, True, True), (3, 2, 1, True, False), (2, 2, 1, True, True), (2, 2, 1, False, False),
             (3, 3, 1, True, False), ((3, 2), (2, 1), (1, 1), True, True), (4, 3, 2, True, False)]


def _on_path(path, fn, *args):
    before, gpucnn.config.path = gpucnn.config.path, path
    try:
        return fn(*args)
    finally:
        gpucnn.config.path = before


def _conv_torch(x, conv, weight, bias, pads):
    """PyTorch's conv2d on x padded (top, bottom, left, right) by hand."""
    t, b, l, r = pads
    xp = F.pad(x, (l, r, t, b))
    return F.conv2d(xp, weight, bias, stride=(conv.window.sy, conv.window.sx), dilation=conv.dilation)


def _compare(model, torch_fn, x, path):
    """Forward, dx and the conv's parameter gradients of ``model`` on ``path`` against ``torch_fn`` (float64)."""
    rng = numpy.random.default_rng(1)
    conv = model.layers[0]
    y = _on_path(path, model.forward, x)
    g = rng.standard_normal(y.shape)
    model.zero_grad()
    dx = _on_path(path, model.backward, g)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(conv.weight.data, requires_grad=True)
    tb = torch.tensor(conv.bias.data, requires_grad=True)
    ty = torch_fn(tx, tw, tb)
    ty.backward(torch.tensor(g))
    assert y.shape == tuple(ty.shape)
    numpy.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(conv.weight.grad, tw.grad.numpy(), rtol=1e-10, atol=1e-11)
    numpy.testing.assert_allclose(conv.bias.grad, tb.grad.numpy(), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool_options_match_torch(case, path):
    k, s, p, d, c = case
    x = numpy.random.default_rng(0).standard_normal((3, 2, 9, 8))
    model = Sequential([Conv2D(2, 3, 3, padding=1, dtype=numpy.float64, rng=0), ReLU(), MaxPool2D(k, s, p, d, c)])
    _compare(model, lambda tx, tw, tb: F.max_pool2d(F.relu(F.conv2d(tx, tw, tb, padding=1)), k, s, p, d, c),
             x, path)


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_avg_pool_options_match_torch(case, path):
    k, s, p, c, cip = case
    x = numpy.random.default_rng(0).standard_normal((3, 2, 9, 8))
    model = Sequential([Conv2D(2, 3, 3, dtype=numpy.float64, rng=0), AvgPool2D(k, s, p, c, cip)])
    _compare(model, lambda tx, tw, tb: F.avg_pool2d(F.conv2d(tx, tw, tb), k, s, p, c, cip), x, path)


def _same_split(n, k, s, d=1):
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("size", [(9, 8), (10, 7)])
def test_pools_same_padding_at_stride_2(size, path):
    """TensorFlow's 'same': out = ceil(n / s), the extra row/column at the bottom/right, per input size."""
    h, w = size
    x = numpy.random.default_rng(0).standard_normal((2, 2, h, w))
    pads = _same_split(h, 3, 2) + _same_split(w, 3, 2)
    pool = MaxPool2D(3, 2, "same")
    assert isinstance(pool.window, SameWindow2D)
    model = Sequential([Conv2D(2, 3, 1, dtype=numpy.float64, rng=0), pool])

    def torch_max(tx, tw, tb):
        y = F.conv2d(tx, tw, tb)
        return F.max_pool2d(F.pad(y, (pads[2], pads[3], pads[0], pads[1]), value=-numpy.inf), 3, 2)
    _compare(model, torch_max, x, path)
    assert model.forward(x).shape[2:] == (-(-h // 2), -(-w // 2))
    avg = Sequential([Conv2D(2, 3, 1, dtype=numpy.float64, rng=0), AvgPool2D(3, 2, "same", count_include_pad=False)])
    ones = F.pad(torch.ones(1, 1, h, w, dtype=torch.float64), (pads[2], pads[3], pads[0], pads[1]))
    count = F.avg_pool2d(ones, 3, 2) * 9

    def torch_avg(tx, tw, tb):
        y = F.pad(F.conv2d(tx, tw, tb), (pads[2], pads[3], pads[0], pads[1]))
        return F.avg_pool2d(y, 3, 2, divisor_override=1) / count
    _compare(avg, torch_avg, x, path)


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_pools_asymmetric_padding(pool, path):
    x = numpy.random.default_rng(0).standard_normal((2, 2, 9, 8))
    pads = (0, 1, 1, 0)  # top, bottom, left, right
    layer = MaxPool2D(2, 2, ((0, 1), (1, 0))) if pool == "max" else AvgPool2D(3, 2, ((0, 1), (1, 0)))
    model = Sequential([Conv2D(2, 3, 1, dtype=numpy.float64, rng=0), layer])

    def torch_fn(tx, tw, tb):
        y = F.conv2d(tx, tw, tb)
        if pool == "max":
            return F.max_pool2d(F.pad(y, (1, 0, 0, 1), value=-numpy.inf), 2, 2)
        return F.avg_pool2d(F.pad(y, (1, 0, 0, 1)), 3, 2)
    assert layer.window.asymmetric and (layer.window.pt, layer.window.pb, layer.window.pl, layer.window.pr) == pads
    _compare(model, torch_fn, x, path)


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("case", [(3, 2, "same", 1, (9, 8)), (4, 2, "same", 1, (10, 7)), (3, 3, "same", 2, (11, 9)),
                                  (3, 1, ((0, 2), (1, 0)), 1, (7, 8)), (2, 2, ((1, 0), (0, 1)), 2, (8, 9))], ids=str)
def test_conv_same_at_stride_and_asymmetric_padding(case, path):
    k, s, padding, d, (h, w) = case
    x = numpy.random.default_rng(0).standard_normal((2, 2, h, w))
    conv = Conv2D(2, 3, k, stride=s, padding=padding, dilation=d, dtype=numpy.float64, rng=0)
    if padding == "same":
        pads = _same_split(h, k, s, d) + _same_split(w, k, s, d)
    else:
        (t, b), (l, r) = padding
        pads = (t, b, l, r)
    model = Sequential([conv, ReLU()])
    _compare(model, lambda tx, tw, tb: F.relu(_conv_torch(tx, conv, tw, tb, pads)), x, path)
    if padding == "same":
        assert model.forward(x).shape[2:] == (-(-h // s), -(-w // s))


def test_same_at_stride_1_is_a_fixed_window():
    assert MaxPool2D(3, 1, "same").window == Window2D(3, 3, 1, 1, 1, 1, 1, 1, "MaxPool2D")
    assert Conv2D(1, 1, 4, padding="same").window.pb == 2 and Conv2D(1, 1, 4, padding="same").window.pt == 1


@pytest.mark.parametrize("build, word", [
    (lambda: MaxPool2D(3, padding=2), "padding"),
    (lambda: MaxPool2D(4, padding=((0, 3), (0, 0))), "padding"),
    (lambda: AvgPool2D(2, padding=((1, 2), (0, 0))), "padding"),
    (lambda: MaxPool2D(3, padding=(1, 2, 3)), "padding"),
    (lambda: MaxPool2D(3, padding="full"), "padding"),
    (lambda: MaxPool2D(3, padding=((1, -1), (0, 0))), "padding"),
    (lambda: MaxPool2D(3, dilation=0), "dilation"),
    (lambda: MaxPool2D(3, ceil_mode="yes"), "ceil_mode"),
    (lambda: AvgPool2D(3, count_include_pad=1), "count_include_pad"),
    (lambda: Conv2D(1, 1, 3, padding=((1, 1), (1,))), "padding"),
    (lambda: Conv2D(1, 1, 3, padding="half"), "padding"),
])
def test_wrong_options_are_refused_in_one_line(build, word):
    with pytest.raises((ValueError, TypeError)) as info:
        build()
    message = str(info.value)
    assert word in message and "\n" not in message


def test_torch_refuses_the_same_padding():
    """Our half-the-kernel rule is PyTorch's (on kernel_size, whatever the dilation)."""
    with pytest.raises(RuntimeError):
        F.max_pool2d(torch.zeros(1, 1, 9, 9), 3, 1, 2, dilation=2)
    with pytest.raises(ValueError, match="padding"):
        MaxPool2D(3, 1, 2, dilation=2)


@pytest.mark.parametrize("layer", [
    MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True), MaxPool2D(2, 2, ((0, 1), (1, 0))), MaxPool2D(3, 2, "same"),
    AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False), AvgPool2D(3, padding="valid"),
    Conv2D(2, 3, 3, stride=2, padding="same"), Conv2D(2, 3, 2, padding=((0, 1), (1, 0)))], ids=repr)
def test_architecture_records_rebuild_the_options(layer):
    rebuilt = architecture.build(architecture.describe(Sequential([layer]))).layers[0]
    assert type(rebuilt) is type(layer) and rebuilt.window == layer.window
    assert getattr(rebuilt, "count_include_pad", None) == getattr(layer, "count_include_pad", None)
    x = numpy.random.default_rng(0).standard_normal((1, 2, 9, 8))
    if isinstance(layer, Conv2D):
        rebuilt.weight.data[...] = layer.weight.data
    numpy.testing.assert_array_equal(rebuilt.forward(x.astype(numpy.float32)), layer.forward(x.astype(numpy.float32)))


@pytest.mark.parametrize("build", [
    lambda: MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True), lambda: MaxPool2D(2, 2, ((0, 1), (1, 0)), ceil_mode=True),
    lambda: MaxPool2D(3, 2, "same"), lambda: AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda: AvgPool2D(3, 2, "same", ceil_mode=True), lambda: Conv2D(2, 2, 3, stride=2, padding="same",
                                                                   dtype=numpy.float64, rng=0),
    lambda: Conv2D(2, 2, 2, padding=((0, 1), (1, 0)), dilation=2, dtype=numpy.float64, rng=0)], ids=range(7))
def test_gradcheck(build):
    """Central differences in float64 (distinct values, so no max is near a tie)."""
    x = numpy.random.default_rng(3).permutation(2 * 2 * 9 * 8).reshape(2, 2, 9, 8) / 7.0
    check_layer(build(), x)
