"""Two edges, as PyTorch: softmax of an array with no elements, and Dropout at p = 1 (and p = 0)."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.functional import softmax
from gpucnn.nn.layers import Conv2D, Dense, Dropout, Flatten, ReLU

torch = pytest.importorskip("torch")
F32, F64 = numpy.float32, numpy.float64


@pytest.mark.parametrize("shape, axis", [((3, 0), -1), ((3, 0), 0), ((0, 5), -1), ((0, 5), 0), ((2, 0, 4), 1),
                                         ((2, 0, 4), 2), ((0,), 0)])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_softmax_with_no_elements_is_empty_as_pytorch(shape, axis, dtype):
    y = softmax(numpy.zeros(shape, dtype), axis=axis)
    expected = torch.softmax(torch.zeros(shape, dtype=getattr(torch, numpy.dtype(dtype).name)), dim=axis)
    assert y.shape == tuple(expected.shape) and y.dtype == dtype


def test_softmax_refuses_an_axis_out_of_range_naming_it_empty_or_not():
    for shape in [(3, 0), (3, 2)]:
        with pytest.raises(ValueError, match=r"softmax: axis must be an int .* in \[-2, 2\) .* got 2"):
            softmax(numpy.zeros(shape), axis=2)
    numpy.testing.assert_allclose(softmax(numpy.zeros((2, 4)), axis=numpy.int64(1)), 0.25)


@pytest.mark.kernels
def test_softmax_with_no_elements_on_the_emulated_gpu(gpu):
    from gpucnn import backend
    from support.emulated_cupy import DeviceArray
    y = softmax(backend.to_device(numpy.zeros((4, 0), F32), "cuda"))
    assert type(y) is DeviceArray and y.shape == (4, 0) and y.dtype == F32


def torch_dropout(x, grad_y, p, training):
    t = torch.tensor(x, requires_grad=True)
    module = torch.nn.Dropout(p).train(training)
    y = module(t)
    y.backward(torch.tensor(grad_y))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("p", [0.0, 1.0])
@pytest.mark.parametrize("training", [True, False])
def test_dropout_at_p_0_and_1_equals_pytorch_in_training_and_eval(p, training):
    """At p = 1 in training PyTorch scales by 0 (not 1/0): zeros, NaN where x is inf or NaN (0 * inf), and the
    gradient likewise; in eval mode the identity. The values are deterministic at p = 0 and p = 1."""
    rng = numpy.random.default_rng(0)
    x, grad_y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    x[0, 0], x[0, 1], grad_y[1, 1] = numpy.inf, numpy.nan, numpy.nan
    y_t, dx_t = torch_dropout(x, grad_y, p, training)
    layer = Dropout(p, rng=0).train(training)
    with numpy.errstate(invalid="ignore"):  # 0 * inf is NaN, as in PyTorch
        y = layer.forward(x)
        dx = layer.backward(grad_y)
    numpy.testing.assert_array_equal(y, y_t)
    numpy.testing.assert_array_equal(dx, dx_t)
    if p == 1.0 and training:
        assert (y[numpy.isfinite(x)] == 0).all() and (dx[numpy.isfinite(grad_y)] == 0).all()


def test_dropout_at_p_1_in_a_network_trains_nothing_through_it_on_both_paths():
    x = numpy.random.default_rng(1).standard_normal((4, 2, 5, 5))
    results = []
    for path in ("reference", "fast"):
        gpucnn.config.path = path
        model = gpucnn.Sequential([Conv2D(2, 3, 3, dtype=F64, rng=0), ReLU(), Dropout(1.0, rng=0), Flatten(),
                                   Dense(27, 2, dtype=F64, rng=1)])
        y = model.forward(x)
        grad_x = model.backward(numpy.ones_like(y))
        conv_grad = model.layers[0].weight.grad
        assert (grad_x == 0).all() and (conv_grad == 0).all()
        numpy.testing.assert_array_equal(y, numpy.broadcast_to(model.layers[-1].bias.data, y.shape))
        model.eval()
        results.append(model.forward(x))
    numpy.testing.assert_allclose(results[1], results[0], rtol=1e-12, atol=1e-13)


@pytest.mark.kernels
def test_dropout_at_p_1_on_the_emulated_gpu(gpu):
    from gpucnn import backend
    from support.emulated_cupy import to_host
    x = numpy.random.default_rng(2).standard_normal((3, 5)).astype(F32)
    layer = Dropout(1.0, rng=0)
    y = layer.forward(backend.to_device(x, "cuda"))
    dx = layer.backward(backend.to_device(numpy.ones_like(x), "cuda"))
    assert (to_host(y) == 0).all() and (to_host(dx) == 0).all() and y.dtype == F32
    layer.eval()
    numpy.testing.assert_array_equal(to_host(layer.forward(backend.to_device(x, "cuda"))), x)


@pytest.mark.parametrize("p", [-0.1, 1.0000001, 2, float("nan"), "0.5", None, True])
def test_dropout_refuses_p_outside_0_1_naming_p(p):
    with pytest.raises(ValueError, match=r"Dropout: p must be a number in \[0, 1\], got"):
        Dropout(p)


def test_dropout_records_p_1_in_its_architecture():
    model = gpucnn.Sequential([Dropout(1.0)])
    rebuilt = gpucnn.architecture.build(gpucnn.architecture.describe(model))
    assert rebuilt.layers[0].p == 1.0
