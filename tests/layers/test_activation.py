"""ReLU, LeakyReLU, Sigmoid, Tanh: forward and derivative against the textbook formulas."""
import numpy
import pytest

from support.helpers import F64, assert_bad_input, assert_close, check_repeatable_and_accumulating, run
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import LeakyReLU, ReLU, Sigmoid, Tanh


def _sigmoid(x):
    return 0.5 * (1.0 + numpy.tanh(0.5 * x))   # exact and overflow-free


# name -> (factory, f(x), f'(x))
CASES = {
    "ReLU": (ReLU, lambda x: numpy.maximum(x, 0), lambda x: (x > 0).astype(F64)),
    "LeakyReLU": (LeakyReLU, lambda x: numpy.where(x > 0, x, 0.01 * x),
                  lambda x: numpy.where(x > 0, 1.0, 0.01)),
    "LeakyReLU(0.2)": (lambda: LeakyReLU(0.2), lambda x: numpy.where(x > 0, x, 0.2 * x),
                       lambda x: numpy.where(x > 0, 1.0, 0.2)),
    "LeakyReLU(negative_slope=0.3)": (lambda: LeakyReLU(negative_slope=0.3),
                                      lambda x: numpy.where(x > 0, x, 0.3 * x),
                                      lambda x: numpy.where(x > 0, 1.0, 0.3)),
    "Sigmoid": (Sigmoid, _sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    "Tanh": (Tanh, numpy.tanh, lambda x: 1 - numpy.tanh(x) ** 2),
}
LAYER_NAME = {"ReLU": "ReLU", "LeakyReLU": "LeakyReLU", "LeakyReLU(0.2)": "LeakyReLU",
              "LeakyReLU(negative_slope=0.3)": "LeakyReLU", "Sigmoid": "Sigmoid", "Tanh": "Tanh"}


def _away_from_zero(x):
    return numpy.where(numpy.abs(x) < 0.05, x + numpy.sign(x + 1e-3) * 0.1, x)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 5)], ids=["2d", "4d"])
def test_forward_backward(name, shape, rng, device):
    make, f, df = CASES[name]
    x = _away_from_zero(rng.standard_normal(shape) * 3)
    g = rng.standard_normal(shape)
    y, dx = run(make(), x, g, device)
    assert_close(y, f(x), what=f"{name} forward")
    assert_close(dx, g * df(x), what=f"{name} backward")
    assert y.dtype == F64 and dx.dtype == F64


@pytest.mark.parametrize("name", list(CASES))
def test_float32_stays_float32(name, rng, device):
    make, f, df = CASES[name]
    x = _away_from_zero(rng.standard_normal((4, 6))).astype(numpy.float32)
    g = rng.standard_normal((4, 6)).astype(numpy.float32)
    y, dx = run(make(), x, g, device)
    assert y.dtype == numpy.float32 and dx.dtype == numpy.float32
    assert_close(y, f(x.astype(F64)), rtol=1e-5, atol=1e-6, what=f"{name} float32 forward")
    assert_close(dx, g * df(x.astype(F64)), rtol=1e-5, atol=1e-6, what=f"{name} float32 backward")


@pytest.mark.parametrize("dtype", [numpy.float32, F64])
def test_sigmoid_is_stable_for_huge_inputs(dtype, device):
    """No overflow warning (warnings are errors here) and exact limits for |x| ~ 1e4."""
    x = numpy.array([[-1e4, -1000.0, -50.0, 0.0, 50.0, 1000.0, 1e4]], dtype=dtype)
    y, dx = run(Sigmoid(), x, numpy.ones_like(x), device)
    assert numpy.all(numpy.isfinite(y)) and numpy.all(numpy.isfinite(dx))
    assert y[0, 0] == 0.0 or y[0, 0] < 1e-300
    assert y[0, -1] == 1.0 and y[0, 3] == 0.5
    assert numpy.all(dx >= 0) and dx[0, 0] < 1e-20 and dx[0, -1] < 1e-20


def test_tanh_is_stable_for_huge_inputs(device):
    x = numpy.array([[-1e4, 0.0, 1e4]])
    y, dx = run(Tanh(), x, numpy.ones_like(x), device)
    numpy.testing.assert_array_equal(y, [[-1.0, 0.0, 1.0]])
    numpy.testing.assert_array_equal(dx, [[0.0, 1.0, 0.0]])


def test_leaky_relu_default_slope():
    assert LeakyReLU().forward(numpy.array([[-2.0, 3.0]])).tolist() == [[-0.02, 3.0]]


@pytest.mark.parametrize("name", list(CASES))
def test_check_layer(name, rng):
    make = CASES[name][0]
    check_layer(make(), _away_from_zero(rng.standard_normal((2, 3, 4, 3))))


@pytest.mark.parametrize("name", list(CASES))
def test_no_parameters_and_modes(name, rng):
    layer = CASES[name][0]()
    assert list(layer.parameters()) == []
    x = rng.standard_normal((2, 4))
    y = layer.forward(x).copy()
    layer.eval()
    numpy.testing.assert_array_equal(layer.forward(x), y)
    layer.train()
    layer.zero_grad()


@pytest.mark.parametrize("name", list(CASES))
def test_input_untouched_backward_repeatable(name, rng, device):
    x = rng.standard_normal((3, 2, 4, 4))
    y1, y2 = check_repeatable_and_accumulating(CASES[name][0](), x, rng.standard_normal(x.shape), device)
    numpy.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("name", list(CASES))
def test_non_float_input(name):
    layer = CASES[name][0]()
    assert_bad_input(lambda: layer.forward(numpy.arange(6).reshape(2, 3)), LAYER_NAME[name], "int")


@pytest.mark.parametrize("name", list(CASES))
def test_empty_batch(name):
    layer = CASES[name][0]()
    assert_bad_input(lambda: layer.forward(numpy.zeros((0, 3))), LAYER_NAME[name])


def test_relu_and_leaky_relu_gradient_at_zero():
    """The subgradient at exactly 0: 0 for ReLU, negative_slope for LeakyReLU (PyTorch's choice)."""
    x = numpy.array([[0.0, -0.0, 1.0]])
    relu, leaky = ReLU(), LeakyReLU(0.2)
    relu.forward(x)
    leaky.forward(x)
    numpy.testing.assert_array_equal(relu.backward(numpy.ones_like(x)), [[0.0, 0.0, 1.0]])
    numpy.testing.assert_allclose(leaky.backward(numpy.ones_like(x)), [[0.2, 0.2, 1.0]])
