"""Number-for-number parity with PyTorch (CPU), weights copied across, float64 unless stated: the layers.

The losses, optimizers, schedules and a whole model step are in tests/test_torch_parity_training.py.
"""
import warnings

import numpy
import pytest

import gpucnn
from gpucnn.nn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, LeakyReLU, MaxPool2D, ReLU, Sigmoid,
    Tanh)
from support.helpers import F64, assert_close, dev, on_device, set_param, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional


def T(a, grad=False):
    return torch.tensor(numpy.asarray(a), dtype=torch.float64, requires_grad=grad)


def _torch_call(fn, *args, **kwargs):
    """PyTorch warns about 'same' with even kernels; warnings are errors in this suite."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


# ----------------------------------------------------------------------------------------
# layers


@pytest.fixture(params=["layers", "fast"])
def run(request, device):
    """``run(layers, x, g) -> (y, dx)``: the layers forward on x and backward from g, either one by one on
    ``device`` (each layer calls the readable ops: the reference path), or as a Sequential on the CPU fast
    path (gpucnn/fast), which must take them (its conv/pool chains in the channel-major layout)."""
    if request.param == "layers":
        def run_layers(layers, x, g):
            h, grad = dev(x, device), dev(g, device)
            for layer in layers:
                h = on_device(layer, device).forward(h)
            for layer in reversed(layers):
                grad = layer.backward(grad)
            return h, grad
        return run_layers
    if device != "cpu":
        pytest.skip("the fast path is the CPU's")
    gpucnn.config.path, gpucnn.config.num_threads = "fast", 2

    def run_fast(layers, x, g):
        model = gpucnn.Sequential(layers)
        y = model.forward(x)
        dx = model.backward(g)
        assert model._fast is not None, "the model did not take the fast path"
        return y, dx
    return run_fast


CONV_CONFIGS = [   # (N, C, H, W, O, kernel, stride, padding)
    (2, 3, 7, 7, 4, 3, 1, 1),
    (2, 2, 8, 9, 3, (3, 2), (2, 3), (1, 2)),
    (1, 3, 7, 6, 2, (2, 4), 1, "same"),
    (2, 2, 6, 5, 3, 4, 1, "same"),
    (1, 2, 9, 8, 2, 3, 2, "valid"),
    (2, 1, 10, 10, 2, 2, 3, 0),
]


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chain", ["conv", "conv-relu-maxpool"])
def test_conv2d(cfg, bias, chain, rng, run):
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
    if chain == "conv-relu-maxpool":  # the chain the fast path rewrites (max-pool before bias and ReLU)
        if min(yt.shape[2:]) < 2:
            pytest.skip("output too small to pool")
        yt = F.max_pool2d(F.relu(yt), 2)
        layers += [ReLU(), MaxPool2D(2)]
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(g))
    y, dx = run(layers, x, g)
    assert_close(y, yt.detach().numpy(), what="y")
    assert_close(dx, xt.grad.numpy(), what="dx")
    assert_close(layer.weight.grad, wt.grad.numpy(), what="dW")
    if bias:
        assert_close(layer.bias.grad, bt.grad.numpy(), what="db")


POOL_CONFIGS = [   # (N, C, H, W, kernel, stride, padding)
    (2, 3, 8, 8, 2, None, 0),
    (2, 2, 7, 7, 3, 2, 1),
    (1, 2, 7, 6, (3, 2), (1, 2), (1, 1)),
    (1, 2, 9, 7, 3, 3, 0),
    (2, 1, 5, 6, 2, 1, 1),
    (1, 1, 6, 6, 4, 3, 2),
]


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
@pytest.mark.parametrize("kind", ["max", "avg", "max-ties"])
def test_pool(cfg, kind, rng, run):
    n, c, h, w, k, s, p = cfg
    if kind == "max-ties":
        x = rng.integers(-1, 2, (n, c, h, w)).astype(F64)
    else:
        x = rng.standard_normal((n, c, h, w))
    layer = (AvgPool2D if kind == "avg" else MaxPool2D)(k, stride=s, padding=p)
    fn = F.avg_pool2d if kind == "avg" else F.max_pool2d
    xt = T(x, True)
    yt = fn(xt, k, stride=s, padding=p)
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(g))
    y, dx = run([layer], x, g)
    assert_close(y, yt.detach().numpy(), what="y")
    assert_close(dx, xt.grad.numpy(), what="dx")


@pytest.mark.parametrize("k, s, p", [(3, 1, 1), (2, 2, 1), ((3, 2), (2, 1), (1, 1))], ids=str)
def test_max_pool_all_minus_inf_windows_send_the_gradient_to_the_first_real_element(k, s, p, rng, device):
    """PyTorch starts each window's search at its first real element: a window of only -inf
    (and padding) gives that element the gradient, never the padding."""
    x = rng.standard_normal((2, 2, 6, 5))
    x[0, 0] = -numpy.inf                      # every window of this plane is all -inf
    x[1, 1, :2, :] = -numpy.inf               # the top windows of this one
    x[1, 0, :, 0] = -numpy.inf                # the left column
    xt = T(x, True)
    yt = F.max_pool2d(xt, k, stride=s, padding=p)
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(g))
    layer = MaxPool2D(k, stride=s, padding=p)
    y = layer.forward(dev(x, device))
    dx = layer.backward(dev(g, device))
    numpy.testing.assert_array_equal(to_numpy(y), yt.detach().numpy())
    assert_close(dx, xt.grad.numpy(), what="dx")


@pytest.mark.parametrize("n, i, o", [(4, 6, 3), (1, 10, 1), (5, 3, 8)])
def test_dense(n, i, o, rng, run):
    layer = Dense(i, o, dtype=F64)
    w, b, x = rng.standard_normal((o, i)), rng.standard_normal(o), rng.standard_normal((n, i))
    set_param(layer.weight, w)
    set_param(layer.bias, b)
    xt, wt, bt = T(x, True), T(w, True), T(b, True)
    yt = F.linear(xt, wt, bt)
    g = rng.standard_normal((n, o))
    yt.backward(T(g))
    y, dx = run([layer], x, g)
    assert_close(y, yt.detach().numpy(), what="y")
    assert_close(dx, xt.grad.numpy(), what="dx")
    assert_close(layer.weight.grad, wt.grad.numpy(), what="dW")
    assert_close(layer.bias.grad, bt.grad.numpy(), what="db")


@pytest.mark.parametrize("kind, shape", [("2d", (4, 3, 5, 5)), ("2d", (1, 2, 3, 4)), ("1d", (6, 4)),
                                         ("1d", (2, 3))])
def test_batchnorm(kind, shape, rng, device):
    c = shape[1]
    layer = (BatchNorm2D if kind == "2d" else BatchNorm1D)(c, dtype=F64)
    ref = (torch.nn.BatchNorm2d if kind == "2d" else torch.nn.BatchNorm1d)(c, dtype=torch.float64)
    gamma, beta = rng.standard_normal(c) + 1, rng.standard_normal(c)
    set_param(layer.weight, gamma)
    set_param(layer.bias, beta)
    with torch.no_grad():
        ref.weight.copy_(T(gamma))
        ref.bias.copy_(T(beta))
    on_device(layer, device)
    for step, mode in enumerate(["train", "train", "eval", "train"]):
        getattr(layer, mode)()
        getattr(ref, mode)()
        x = rng.standard_normal(shape) * (1 + step) + step
        g = rng.standard_normal(shape)
        xt = T(x, True)
        yt = ref(xt)
        yt.backward(T(g))
        y = layer.forward(dev(x, device))
        dx = layer.backward(dev(g, device))
        where = f"step {step} ({mode})"
        assert_close(y, yt.detach().numpy(), rtol=1e-9, atol=1e-11, what=f"y {where}")
        assert_close(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-10, what=f"dx {where}")
        # both accumulate the parameter gradients over the steps
        assert_close(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-9, atol=1e-11,
                     what=f"dgamma {where}")
        assert_close(layer.bias.grad, ref.bias.grad.numpy(), rtol=1e-9, atol=1e-11, what=f"dbeta {where}")
        assert_close(layer.running_mean, ref.running_mean.numpy(), what=f"running_mean {where}")
        assert_close(layer.running_var, ref.running_var.numpy(), what=f"running_var {where}")


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_nan_propagates(kind, device):
    """A window holding NaN gives NaN (PyTorch), and max pooling sends that window's gradient to the NaN."""
    x = numpy.arange(32, dtype=F64).reshape(1, 2, 4, 4)
    x[0, 0, 1, 0] = numpy.nan
    x[0, 1, 2, 3] = numpy.nan
    layer = (MaxPool2D if kind == "max" else AvgPool2D)(2)
    xt = T(x, True)
    yt = (F.max_pool2d if kind == "max" else F.avg_pool2d)(xt, 2)
    yt.backward(torch.ones_like(yt))
    y = layer.forward(dev(x, device))
    dx = layer.backward(dev(numpy.ones((1, 2, 2, 2)), device))
    numpy.testing.assert_array_equal(numpy.isnan(to_numpy(y)), numpy.isnan(yt.detach().numpy()))
    assert_close(y, yt.detach().numpy(), what="y with NaN")
    assert_close(dx, xt.grad.numpy(), what="dx with NaN")


ACTIVATIONS = {"ReLU": (ReLU, F.relu), "LeakyReLU": (lambda: LeakyReLU(0.1), lambda t: F.leaky_relu(t, 0.1)),
               "Sigmoid": (Sigmoid, torch.sigmoid), "Tanh": (Tanh, torch.tanh)}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(3, 2, 4, 4), (5, 6)])
def test_activation(name, shape, rng, run):
    """Includes exact zeros and huge values, where the conventions and the numerics show."""
    ours, theirs = ACTIVATIONS[name]
    x = rng.standard_normal(shape) * 4
    x.flat[::7] = 0.0
    x.flat[1] = 1e4
    x.flat[2] = -1e4
    xt = T(x, True)
    yt = theirs(xt)
    g = rng.standard_normal(x.shape)
    yt.backward(T(g))
    y, dx = run([ours()], x, g)
    assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=1e-15, what="y")
    assert_close(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-15, what="dx")


# (N, C, H, W, O, kernel, stride, padding, dilation, groups)
DILATED_GROUPED_CONFIGS = [
    (2, 2, 9, 9, 3, 3, 1, 0, 2, 1),
    (2, 3, 8, 9, 2, 3, 1, "same", 2, 1),
    (1, 2, 7, 8, 2, 2, 1, "same", 3, 1),                # odd total pad d*(k-1) = 3
    (2, 2, 7, 9, 3, (2, 4), 1, "same", (3, 1), 1),
    (2, 3, 11, 10, 2, 3, (2, 3), (1, 2), (2, 3), 1),
    (2, 4, 6, 7, 6, 3, 1, 1, 1, 2),
    (2, 4, 7, 6, 4, 3, 1, "same", 1, 4),                # depthwise
    (2, 4, 8, 8, 4, 4, 1, "same", 2, 4),                # depthwise, even kernel, dilated 'same'
    (1, 3, 9, 8, 6, 3, 2, 1, 2, 3),                     # depthwise, multiplier 2, strided, dilated
    (2, 6, 9, 9, 4, (3, 2), (1, 2), (2, 1), (2, 2), 2),
    (2, 12, 6, 7, 8, 3, 1, 1, 1, 2),                    # K per group 54: im2col + GEMM on the GPU
]


@pytest.mark.parametrize("cfg", DILATED_GROUPED_CONFIGS, ids=str)
def test_conv2d_dilated_grouped(cfg, rng, device):
    n, c, h, w, o, k, s, p, d, g = cfg
    layer = Conv2D(c, o, k, stride=s, padding=p, dilation=d, groups=g, dtype=F64)
    weight = rng.standard_normal(layer.weight.data.shape)
    set_param(layer.weight, weight)
    b = rng.standard_normal(o)
    set_param(layer.bias, b)
    x = rng.standard_normal((n, c, h, w))
    xt, wt, bt = T(x, True), T(weight, True), T(b, True)
    yt = _torch_call(F.conv2d, xt, wt, bt, stride=s, padding=p, dilation=d, groups=g)
    theirs = torch.nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g)
    assert tuple(theirs.weight.shape) == layer.weight.data.shape
    gy = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(gy))
    on_device(layer, device)
    y = layer.forward(dev(x, device))
    dx = layer.backward(dev(gy, device))
    assert_close(y, yt.detach().numpy(), what="y")
    assert_close(dx, xt.grad.numpy(), what="dx")
    assert_close(layer.weight.grad, wt.grad.numpy(), what="dW")
    assert_close(layer.bias.grad, bt.grad.numpy(), what="db")
