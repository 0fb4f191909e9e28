"""gpucnn.gradcheck itself (it must catch wrong gradients), and gradient checks of random float64 models."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.gradcheck import check_layer, check_loss, numerical_grad
from gpucnn.nn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU,
    MaxPool2D, ReLU, Sigmoid, Tanh)
from gpucnn.nn.losses import MSE, SoftmaxCrossEntropy

F64 = numpy.float64


# ----------------------------------------------------------------------------------------
# numerical_grad

def test_numerical_grad_of_known_functions(rng):
    x = rng.standard_normal((3, 4))
    numpy.testing.assert_allclose(numerical_grad(lambda: numpy.sum(x ** 2), x), 2 * x, rtol=1e-8, atol=1e-9)
    numpy.testing.assert_allclose(numerical_grad(lambda: numpy.sum(numpy.sin(x)), x), numpy.cos(x),
                                  rtol=1e-7, atol=1e-9)
    a = rng.standard_normal((3, 4))
    numpy.testing.assert_allclose(numerical_grad(lambda: float(numpy.sum(a * x)), x), a, rtol=1e-8, atol=1e-9)


def test_numerical_grad_restores_x_and_returns_float64(rng):
    x = rng.standard_normal((2, 3, 2))
    before = x.copy()
    g = numerical_grad(lambda: numpy.prod(x), x)
    numpy.testing.assert_array_equal(x, before)
    assert g.shape == x.shape and g.dtype == F64


def test_numerical_grad_uses_central_differences(rng):
    """For a cubic, central differences have error eps**2 (one-sided ones would be off by ~3 x eps)."""
    x = numpy.array([0.7, -1.3])
    g = numerical_grad(lambda: numpy.sum(x ** 3), x, eps=1e-3)
    numpy.testing.assert_allclose(g, 3 * x ** 2 + 1e-6, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------------------
# check_layer must fail on wrong gradients

class _WrongInputGrad(Dense):
    def backward(self, grad_out):
        return super().backward(grad_out) * 1.001


class _WrongWeightGrad(Dense):
    def backward(self, grad_out):
        gx = super().backward(grad_out)
        self.weight.grad[0, 0] += 1e-3
        return gx


class _WrongBiasGrad(Dense):
    def backward(self, grad_out):
        gx = super().backward(grad_out)
        self.bias.grad *= -1
        return gx


class _TransposedConvGrad(Conv2D):
    """A classic mistake: forgetting to rotate the kernel (here: flipping dX spatially)."""
    def backward(self, grad_out):
        return super().backward(grad_out)[:, :, ::-1, ::-1].copy()


@pytest.mark.parametrize("cls, word", [(_WrongInputGrad, "input"), (_WrongWeightGrad, "parameter"),
                                       (_WrongBiasGrad, "parameter")])
def test_check_layer_catches_wrong_gradients(cls, word, rng):
    layer = cls(4, 3, dtype=F64, rng=0)
    layer.bias.data[...] = rng.standard_normal(3)
    with pytest.raises(AssertionError) as info:
        check_layer(layer, rng.standard_normal((2, 4)))
    assert word in str(info.value)


def test_check_layer_catches_unrotated_conv_kernel(rng):
    layer = _TransposedConvGrad(2, 2, 3, padding=1, dtype=F64, rng=0)
    with pytest.raises(AssertionError):
        check_layer(layer, rng.standard_normal((1, 2, 4, 4)))


def test_check_layer_tolerance_is_honoured(rng):
    layer = _WrongInputGrad(4, 3, dtype=F64, rng=0)
    check_layer(layer, rng.standard_normal((2, 4)), rtol=1e-2, atol=1e-6)


def test_check_layer_passes_correct_layer(rng):
    check_layer(Dense(5, 3, dtype=F64, rng=1), rng.standard_normal((3, 5)))


def test_check_loss_catches_wrong_gradient(rng):
    class Wrong(MSE):
        def backward(self):
            return super().backward() * 0.5
    with pytest.raises(AssertionError):
        check_loss(Wrong(), rng.standard_normal((3, 2)), rng.standard_normal((3, 2)))


# ----------------------------------------------------------------------------------------
# gradient checks of every layer and both losses inside random float64 models

ACTIVATIONS = [ReLU, lambda: LeakyReLU(0.1), Sigmoid, Tanh]


def _random_model(seed):
    """conv, [batchnorm], activation, pool, flatten, dense, [batchnorm1d], activation, dropout, dense."""
    r = numpy.random.default_rng(seed)
    n, c = int(r.integers(2, 4)), int(r.integers(1, 3))
    h, w = (int(v) for v in r.integers(4, 7, size=2))
    k = (int(r.integers(1, 4)), int(r.integers(1, 4)))
    padding = ["same", (int(r.integers(0, k[0])), int(r.integers(0, k[1]))), "valid"][int(r.integers(0, 3))]
    stride = 1 if padding == "same" else (int(r.integers(1, 3)), int(r.integers(1, 3)))
    o = int(r.integers(1, 3))
    layers = [Conv2D(c, o, k, stride=stride, padding=padding, dtype=F64, rng=r)]
    if r.random() < 0.5:
        layers.append(BatchNorm2D(o, dtype=F64))
    pool = [MaxPool2D, AvgPool2D][int(r.integers(0, 2))]
    # ReLU's exact zeros would make max-pool ties, where central differences see a kink
    layers.append(ACTIVATIONS[int(r.integers(1 if pool is MaxPool2D else 0, 4))]())
    x = r.standard_normal((n, c, h, w))
    y_shape = gpucnn.Sequential(layers).forward(x).shape
    pk = (int(r.integers(1, min(3, y_shape[2]) + 1)), int(r.integers(1, min(3, y_shape[3]) + 1)))
    layers += [pool(pk, stride=int(r.integers(1, 3))), Flatten()]
    features = gpucnn.Sequential(layers).forward(x).shape[1]
    hidden = int(r.integers(2, 5))
    layers.append(Dense(features, hidden, dtype=F64, rng=r))
    if r.random() < 0.5:
        layers.append(BatchNorm1D(hidden, dtype=F64))
    layers += [ACTIVATIONS[int(r.integers(0, 4))](), Dropout(0.3), Dense(hidden, 3, dtype=F64, rng=r)]
    model = gpucnn.Sequential(layers)
    for p in model.parameters():            # non-trivial gamma/beta/bias
        p.data[...] += 0.1 * r.standard_normal(p.data.shape)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.eval()                     # randomness off so that central differences see one function
    return model, x


@pytest.mark.parametrize("seed", range(8))
def test_random_model(seed):
    model, x = _random_model(seed)
    check_layer(model, x, seed=seed)


@pytest.mark.parametrize("seed", range(3))
def test_random_model_in_eval_mode(seed):
    model, x = _random_model(100 + seed)
    model.forward(x)      # gives the batchnorms non-trivial running statistics
    model.eval()
    check_layer(model, x)


@pytest.mark.parametrize("seed", range(3))
def test_model_plus_cross_entropy(seed):
    """End-to-end: d(loss)/dx of model + SoftmaxCrossEntropy by central differences."""
    model, x = _random_model(200 + seed)
    labels = numpy.random.default_rng(seed).integers(0, 3, size=x.shape[0])
    loss_fn = SoftmaxCrossEntropy()
    model.zero_grad()
    loss_fn.forward(model.forward(x), labels)
    grad_x = model.backward(loss_fn.backward())
    numeric = numerical_grad(lambda: float(loss_fn.forward(model.forward(x), labels)), x)
    numpy.testing.assert_allclose(grad_x, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("seed", range(2))
def test_model_plus_mse(seed):
    model, x = _random_model(300 + seed)
    target = numpy.random.default_rng(seed).standard_normal((x.shape[0], 3))
    loss_fn = MSE()
    model.zero_grad()
    loss_fn.forward(model.forward(x), target)
    model.backward(loss_fn.backward())
    p = model.parameters()[0]
    analytic = p.grad.copy()
    numeric = numerical_grad(lambda: float(loss_fn.forward(model.forward(x), target)), p.data)
    numpy.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_sequential_train_eval_reaches_every_layer(rng):
    """Sequential.eval() must switch Dropout off and BatchNorm to running statistics."""
    model = gpucnn.Sequential([Dense(4, 4, dtype=F64, rng=0), BatchNorm1D(4, dtype=F64), Dropout(0.5)])
    x = rng.standard_normal((8, 4))
    model.eval()
    y1, y2 = model.forward(x), model.forward(x)
    numpy.testing.assert_array_equal(y1, y2)
    bn = model.layers[1]
    want = (x @ model.layers[0].weight.data.T + model.layers[0].bias.data) / numpy.sqrt(1 + 1e-5)
    numpy.testing.assert_allclose(y1, want, rtol=1e-12)
    numpy.testing.assert_array_equal(bn.running_mean, numpy.zeros(4))
    model.train()
    assert not numpy.array_equal(model.forward(x), model.forward(x))    # dropout back on
    assert numpy.any(bn.running_mean != 0)


@pytest.mark.parametrize("seed", range(4))
def test_random_dilated_grouped_model(seed):
    """conv (random dilation, groups, stride, padding), activation, depthwise conv, flatten, dense."""
    r = numpy.random.default_rng(1000 + seed)
    groups = int(r.integers(1, 4))
    c, o = groups * int(r.integers(1, 3)), groups * int(r.integers(1, 3))
    k = (int(r.integers(1, 4)), int(r.integers(1, 4)))
    d = (int(r.integers(1, 3)), int(r.integers(1, 3)))
    padding = ["same", (int(r.integers(0, 3)), int(r.integers(0, 3)))][int(r.integers(0, 2))]
    stride = 1 if padding == "same" else (int(r.integers(1, 3)), int(r.integers(1, 3)))
    x = r.standard_normal((2, c, 7, 6))
    layers = [Conv2D(c, o, k, stride=stride, padding=padding, dilation=d, groups=groups, dtype=F64, rng=r),
              Tanh(), Conv2D(o, o, 2, padding="same", dilation=2, groups=o, dtype=F64, rng=r), Flatten()]
    features = gpucnn.Sequential(layers).forward(x).shape[1]
    model = gpucnn.Sequential(layers + [Dense(features, 3, dtype=F64, rng=r)])
    for p in model.parameters():
        p.data[...] += 0.1 * r.standard_normal(p.data.shape)
    check_layer(model, x, seed=seed)
