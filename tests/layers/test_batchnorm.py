"""BatchNorm2D / BatchNorm1D with PyTorch's semantics (eps 1e-5, momentum 0.1, unbiased running_var)."""
import numpy
import pytest

from support.helpers import (F64, assert_bad_input, assert_close, check_repeatable_and_accumulating, dev,
                             on_device, run, set_param, to_numpy)
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import BatchNorm1D, BatchNorm2D

EPS, MOMENTUM = 1e-5, 0.1


def _axes(x):
    return (0, 2, 3) if x.ndim == 4 else (0,)


def _shape(x):
    return (1, -1, 1, 1) if x.ndim == 4 else (1, -1)


def reference_train(x, gamma, beta, dy):
    """Batch statistics: returns y, dx, dgamma, dbeta, batch mean, unbiased batch var."""
    ax, sh = _axes(x), _shape(x)
    m = x.size // x.shape[1]
    mean = x.mean(axis=ax)
    var = x.var(axis=ax)
    xhat = (x - mean.reshape(sh)) / numpy.sqrt(var.reshape(sh) + EPS)
    y = gamma.reshape(sh) * xhat + beta.reshape(sh)
    dbeta = dy.sum(axis=ax)
    dgamma = (dy * xhat).sum(axis=ax)
    invstd = 1 / numpy.sqrt(var + EPS)
    dx = (gamma * invstd).reshape(sh) / m * (m * dy - dbeta.reshape(sh) - xhat * dgamma.reshape(sh))
    return y, dx, dgamma, dbeta, mean, var * m / (m - 1)


def reference_eval(x, gamma, beta, rmean, rvar, dy):
    sh, ax = _shape(x), _axes(x)
    xhat = (x - rmean.reshape(sh)) / numpy.sqrt(rvar.reshape(sh) + EPS)
    y = gamma.reshape(sh) * xhat + beta.reshape(sh)
    dx = dy * (gamma / numpy.sqrt(rvar + EPS)).reshape(sh)
    return y, dx, (dy * xhat).sum(axis=ax), dy.sum(axis=ax)


CASES = {"2d": (BatchNorm2D, (4, 3, 5, 6)), "2d-batch1": (BatchNorm2D, (1, 2, 3, 3)),
         "1d": (BatchNorm1D, (8, 5)), "1d-batch2": (BatchNorm1D, (2, 3))}


def _make(kind, rng):
    cls, shape = CASES[kind]
    layer = cls(shape[1], dtype=F64)
    gamma, beta = rng.standard_normal(shape[1]) + 1.5, rng.standard_normal(shape[1])
    set_param(layer.weight, gamma)
    set_param(layer.bias, beta)
    x = rng.standard_normal(shape) * 2 + rng.standard_normal((1, shape[1]) + (1,) * (len(shape) - 2))
    return layer, x, gamma, beta


@pytest.mark.parametrize("cls", [BatchNorm2D, BatchNorm1D])
def test_initial_state(cls):
    layer = cls(3)
    assert layer.weight.data.shape == (3,) and layer.bias.data.shape == (3,)
    numpy.testing.assert_array_equal(layer.weight.data, numpy.ones(3))
    numpy.testing.assert_array_equal(layer.bias.data, numpy.zeros(3))
    numpy.testing.assert_array_equal(to_numpy(layer.running_mean), numpy.zeros(3))
    numpy.testing.assert_array_equal(to_numpy(layer.running_var), numpy.ones(3))
    params = layer.parameters()
    assert len(params) == 2 and params[0] is layer.weight and params[1] is layer.bias
    assert layer.weight.data.dtype == numpy.float32


@pytest.mark.parametrize("kind", list(CASES))
def test_train_forward_backward_and_running_stats(kind, rng, device):
    layer, x, gamma, beta = _make(kind, rng)
    on_device(layer, device)
    layer.train()
    rmean, rvar = numpy.zeros(x.shape[1]), numpy.ones(x.shape[1])
    for step in range(2):
        xs = x + step * 0.5
        g = rng.standard_normal(x.shape)
        layer.zero_grad()
        y, dx = run(layer, xs, g, device)
        want_y, want_dx, want_dg, want_db, mean, uvar = reference_train(xs, gamma, beta, g)
        assert_close(y, want_y, what=f"y step {step}")
        assert_close(dx, want_dx, rtol=1e-8, atol=1e-10, what=f"dx step {step}")
        assert_close(layer.weight.grad, want_dg, what=f"dgamma step {step}")
        assert_close(layer.bias.grad, want_db, what=f"dbeta step {step}")
        rmean = (1 - MOMENTUM) * rmean + MOMENTUM * mean
        rvar = (1 - MOMENTUM) * rvar + MOMENTUM * uvar
        assert_close(layer.running_mean, rmean, what=f"running_mean step {step}")
        assert_close(layer.running_var, rvar, what=f"running_var (unbiased) step {step}")
        assert y.dtype == F64


@pytest.mark.parametrize("kind", list(CASES))
def test_eval_uses_running_stats(kind, rng, device):
    layer, x, gamma, beta = _make(kind, rng)
    c = x.shape[1]
    rmean, rvar = rng.standard_normal(c), rng.random(c) + 0.5
    layer.running_mean[...] = rmean
    layer.running_var[...] = rvar
    on_device(layer, device)
    layer.eval()
    g = rng.standard_normal(x.shape)
    y, dx = run(layer, x, g, device)
    want_y, want_dx, want_dg, want_db = reference_eval(x, gamma, beta, rmean, rvar, g)
    assert_close(y, want_y, what="eval y")
    assert_close(dx, want_dx, what="eval dx")
    assert_close(layer.weight.grad, want_dg, what="eval dgamma")
    assert_close(layer.bias.grad, want_db, what="eval dbeta")
    # eval never touches the running statistics
    assert_close(layer.running_mean, rmean, rtol=0, atol=0, what="running_mean in eval")
    assert_close(layer.running_var, rvar, rtol=0, atol=0, what="running_var in eval")


def test_float32_default(rng, device):
    layer = on_device(BatchNorm2D(3), device)
    x = rng.standard_normal((2, 3, 4, 4)).astype(numpy.float32)
    y = layer.forward(dev(x, device))
    assert y.dtype == numpy.float32
    assert layer.backward(dev(numpy.ones_like(x), device)).dtype == numpy.float32
    assert to_numpy(layer.running_mean).dtype == numpy.float32
    want = reference_train(x.astype(F64), numpy.ones(3), numpy.zeros(3), numpy.zeros(x.shape))[0]
    assert_close(y, want, rtol=1e-4, atol=1e-5, what="float32 y")


def test_float64_end_to_end(rng):
    layer = BatchNorm1D(4, dtype=F64)
    assert layer.weight.data.dtype == F64 and layer.weight.grad.dtype == F64
    assert to_numpy(layer.running_var).dtype == F64
    y = layer.forward(rng.standard_normal((3, 4)))
    assert y.dtype == F64 and layer.backward(numpy.ones_like(y)).dtype == F64


@pytest.mark.parametrize("kind", ["2d", "1d", "1d-batch2"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_check_layer(kind, mode, rng):
    layer, x, _, _ = _make(kind, rng)
    if mode == "eval":
        layer.running_mean[...] = rng.standard_normal(x.shape[1])
        layer.running_var[...] = rng.random(x.shape[1]) + 0.5
        layer.eval()
    check_layer(layer, x)


@pytest.mark.parametrize("kind", ["2d", "1d"])
def test_input_untouched_backward_repeatable_grads_accumulate(kind, rng, device):
    layer, x, _, _ = _make(kind, rng)
    on_device(layer, device)
    y1, y2 = check_repeatable_and_accumulating(layer, x, rng.standard_normal(x.shape), device)
    assert_close(y2, y1, rtol=1e-12, atol=1e-14, what="train forward repeated")


# ----------------------------------------------------------------------------------------
# bad input

def test_wrong_channel_count_2d():
    assert_bad_input(lambda: BatchNorm2D(3).forward(numpy.zeros((2, 4, 3, 3), numpy.float32)),
                     "BatchNorm2D", "3", "4")


def test_wrong_feature_count_1d():
    assert_bad_input(lambda: BatchNorm1D(5).forward(numpy.zeros((2, 6), numpy.float32)),
                     "BatchNorm1D", "5", "6")


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (1, 2, 3, 4, 5)])
def test_wrong_rank_2d(shape):
    assert_bad_input(lambda: BatchNorm2D(3).forward(numpy.zeros(shape, numpy.float32)), "BatchNorm2D")


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4, 4)])
def test_wrong_rank_1d(shape):
    assert_bad_input(lambda: BatchNorm1D(3).forward(numpy.zeros(shape, numpy.float32)), "BatchNorm1D")


@pytest.mark.parametrize("cls, shape", [(BatchNorm2D, (2, 3, 2, 2)), (BatchNorm1D, (2, 3))])
def test_non_float_input(cls, shape):
    assert_bad_input(lambda: cls(3).forward(numpy.zeros(shape, numpy.int64)), cls.__name__, "int64")


@pytest.mark.parametrize("cls, shape", [(BatchNorm2D, (0, 3, 2, 2)), (BatchNorm1D, (0, 3))])
def test_empty_batch(cls, shape):
    assert_bad_input(lambda: cls(3).forward(numpy.zeros(shape, numpy.float32)), cls.__name__)


def test_one_value_per_channel_in_training():
    """PyTorch refuses to train on a single value per channel (the variance is undefined); name the layer."""
    assert_bad_input(lambda: BatchNorm1D(3).forward(numpy.zeros((1, 3), numpy.float32)), "BatchNorm1D")
    assert_bad_input(lambda: BatchNorm2D(3).forward(numpy.zeros((1, 3, 1, 1), numpy.float32)), "BatchNorm2D")


def test_one_value_per_channel_is_fine_in_eval(rng):
    layer = BatchNorm1D(3, dtype=F64).eval()
    x = rng.standard_normal((1, 3))
    numpy.testing.assert_allclose(layer.forward(x), x / numpy.sqrt(1 + EPS), rtol=1e-12)
