"""The PyTorch parity cases of tests/test_torch_parity.py, layer by layer, run through Sequential on the fast
path (the layer tests there call layers directly, which is the reference path; its model test runs on both
paths through ``pytest --gpucnn-path``)."""
import pytest

import gpucnn
from helpers import F64, assert_close, set_param
from gpucnn.layers import AvgPool2D, Conv2D, Dense, MaxPool2D, ReLU
from test_torch_parity import ACTIVATIONS, CONV_CONFIGS, POOL_CONFIGS, T, _torch_call

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(autouse=True)
def fast_path():
    gpucnn.config.path = "fast"
    gpucnn.config.num_threads = 2


def _run_fast(layers, x, g):
    model = gpucnn.Sequential(layers)
    y = model.forward(x)
    dx = model.backward(g)
    assert model._fast is not None, "the model did not take the fast path"
    return y, dx


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chain", ["conv", "conv-relu-maxpool"])
def test_conv2d(cfg, bias, chain, rng):
    n, c, h, w, o, k, s, p = cfg
    layer = Conv2D(c, o, k, stride=s, padding=p, bias=bias, dtype=F64)
    weight = rng.standard_normal(layer.weight.data.shape)
    set_param(layer.weight, weight)
    b = rng.standard_normal(o) if bias else None
    if bias:
        set_param(layer.bias, b)
    x = rng.standard_normal((n, c, h, w))
    xt, wt = T(x, True), T(weight, True)
    bt = T(b, True) if bias else None
    yt = _torch_call(F.conv2d, xt, wt, bt, stride=s, padding=p)
    layers = [layer]
    if chain == "conv-relu-maxpool":
        if min(yt.shape[2:]) < 2:
            pytest.skip("output too small to pool")
        yt = F.max_pool2d(F.relu(yt), 2)
        layers += [ReLU(), MaxPool2D(2)]
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(g))
    y, dx = _run_fast(layers, x, g)
    assert_close(y, yt.detach().numpy(), what="y")
    assert_close(dx, xt.grad.numpy(), what="dx")
    assert_close(layer.weight.grad, wt.grad.numpy(), what="dW")
    if bias:
        assert_close(layer.bias.grad, bt.grad.numpy(), what="db")


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
@pytest.mark.parametrize("kind", ["max", "avg", "max-ties"])
def test_pool(cfg, kind, rng):
    n, c, h, w, k, s, p = cfg
    x = rng.integers(-1, 2, (n, c, h, w)).astype(F64) if kind == "max-ties" else rng.standard_normal((n, c, h, w))
    layer = (AvgPool2D if kind == "avg" else MaxPool2D)(k, stride=s, padding=p)
    fn = F.avg_pool2d if kind == "avg" else F.max_pool2d
    xt = T(x, True)
    yt = fn(xt, k, stride=s, padding=p)
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(g))
    y, dx = _run_fast([layer], x, g)
    assert_close(y, yt.detach().numpy(), what="y")
    assert_close(dx, xt.grad.numpy(), what="dx")


@pytest.mark.parametrize("n, i, o", [(4, 6, 3), (1, 10, 1), (5, 3, 8)])
def test_dense(n, i, o, rng):
    layer = Dense(i, o, dtype=F64)
    w, b, x = rng.standard_normal((o, i)), rng.standard_normal(o), rng.standard_normal((n, i))
    set_param(layer.weight, w)
    set_param(layer.bias, b)
    xt, wt, bt = T(x, True), T(w, True), T(b, True)
    yt = F.linear(xt, wt, bt)
    g = rng.standard_normal((n, o))
    yt.backward(T(g))
    y, dx = _run_fast([layer], x, g)
    assert_close(y, yt.detach().numpy(), what="y")
    assert_close(dx, xt.grad.numpy(), what="dx")
    assert_close(layer.weight.grad, wt.grad.numpy(), what="dW")
    assert_close(layer.bias.grad, bt.grad.numpy(), what="db")


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(3, 2, 4, 4), (5, 6)])
def test_activation(name, shape, rng):
    ours, theirs = ACTIVATIONS[name]
    x = rng.standard_normal(shape) * 4
    x.flat[::7] = 0.0
    x.flat[1] = 1e4
    x.flat[2] = -1e4
    xt = T(x, True)
    yt = theirs(xt)
    g = rng.standard_normal(shape)
    yt.backward(T(g))
    y, dx = _run_fast([ours()], x, g)
    assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=1e-15, what="y")
    assert_close(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-15, what="dx")
