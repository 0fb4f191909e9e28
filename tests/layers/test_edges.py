"""Layers and losses at the edges: each works like PyTorch or raises a ValueError/TypeError naming itself."""
import numpy
import pytest

from gpucnn.nn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU,
    MaxPool2D, ReLU, Sigmoid, Tanh)
from gpucnn.nn.losses import MSE

torch = pytest.importorskip("torch")
F32 = numpy.float32


def test_mse_without_elements_is_a_clear_error():
    for shape in [(4, 0), (0,), (0, 3)]:
        with pytest.raises(ValueError, match="MSE: got"):
            MSE().forward(numpy.zeros(shape, F32), numpy.zeros(shape, F32))


def test_avg_pool_float16_near_the_top_of_the_range_averages_like_pytorch():
    x = numpy.full((1, 2, 4, 4), 30000, numpy.float16)
    x[0, 1] = numpy.linspace(60000, 65504, 16, dtype=numpy.float16).reshape(4, 4)
    for kernel in (2, 3):
        y, _ = AvgPool2D(kernel, stride=1).forward(x), None
        expected = torch.nn.functional.avg_pool2d(torch.from_numpy(x), kernel, stride=1).numpy()
        assert y.dtype == numpy.float16 and numpy.isfinite(y).all()
        numpy.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("layer", [MaxPool2D(2), MaxPool2D(1), AvgPool2D(2), Conv2D(1, 2, 1), BatchNorm2D(1)],
                         ids=lambda layer: repr(layer)[:20])
@pytest.mark.parametrize("shape", [(1, 1, 0, 4), (1, 1, 4, 0), (2, 0, 4, 4)])
def test_zero_size_spatial_or_channel_axes_are_refused_naming_the_layer(layer, shape):
    with pytest.raises(ValueError, match=f"^{layer.name}: "):
        layer.forward(numpy.zeros(shape, F32))


def test_zero_feature_inputs_are_refused_by_dense_and_batchnorm():
    for layer in (Dense(3, 2), BatchNorm1D(3)):
        with pytest.raises(ValueError, match=f"^{layer.name}: "):
            layer.forward(numpy.zeros((2, 0), F32))
    for cls in (Conv2D, BatchNorm2D):
        with pytest.raises(ValueError, match=f"{cls.__name__}: "):
            cls(0, 3, 3) if cls is Conv2D else cls(0)


@pytest.mark.parametrize("layer", [ReLU(), Sigmoid(), Tanh(), Flatten(), Dropout(0.5, rng=0)],
                         ids=lambda layer: layer.name)
def test_elementwise_layers_pass_zero_channel_inputs_through_like_pytorch(layer):
    x = numpy.zeros((2, 0, 3, 3), F32)
    y = layer.forward(x)
    assert y.shape == ((2, 0) if isinstance(layer, Flatten) else x.shape)
    assert layer.backward(numpy.zeros(y.shape, F32)).shape == x.shape


def _layers_after_forward():
    x4 = numpy.random.default_rng(0).random((2, 1, 6, 6), dtype=F32)
    x2 = x4.reshape(2, 36)
    cases = [(Conv2D(1, 2, 3, rng=0), x4), (MaxPool2D(2), x4), (AvgPool2D(2), x4), (BatchNorm2D(1), x4),
             (Dense(36, 3, rng=0), x2), (BatchNorm1D(36), x2), (Flatten(), x4), (ReLU(), x4), (Sigmoid(), x4),
             (Tanh(), x4), (LeakyReLU(), x4), (Dropout(0.5, rng=0), x4)]
    for layer, x in cases:
        layer.forward(x)
    return [(layer, layer.forward(x).shape) for layer, x in cases]


@pytest.mark.parametrize("kind", ["int64", "complex64", "list", "bool"])
def test_backward_refuses_integer_complex_and_list_gradients(kind):
    for layer, shape in _layers_after_forward():
        grad = numpy.ones(shape, dtype=F32)
        grad = grad.tolist() if kind == "list" else grad.astype(kind)
        with pytest.raises(TypeError, match=f"^{layer.name}: backward expected a"):
            layer.backward(grad)


def test_conv_weight_gradient_is_nan_exactly_where_pytorchs_is():
    rng = numpy.random.default_rng(1)
    x = rng.random((2, 2, 5, 6)).astype(numpy.float64)
    x[0, 0, 2, 0] = numpy.inf  # the first column: stride-1 lowering's spare columns read it wrapped around
    x[1, 1, 3, 5] = numpy.nan  # the last column
    for padding in (0, 1, "same"):
        conv = Conv2D(2, 3, 3, padding=padding, dtype=numpy.float64, rng=0)
        with numpy.errstate(invalid="ignore"):  # inf * 0 in the windows that do hold the inf: NaN, as in PyTorch
            y = conv.forward(x)
            conv.backward(numpy.ones_like(y))
        tw = torch.from_numpy(conv.weight.data.copy()).requires_grad_()
        ty = torch.nn.functional.conv2d(torch.from_numpy(x), tw, torch.from_numpy(conv.bias.data), padding=padding)
        ty.backward(torch.ones_like(ty))
        expected = tw.grad.numpy()
        assert 0 < numpy.isfinite(expected).sum() < expected.size  # the case where it matters
        numpy.testing.assert_array_equal(numpy.isnan(conv.weight.grad), numpy.isnan(expected), err_msg=str(padding))
        numpy.testing.assert_allclose(conv.weight.grad, expected, rtol=1e-12, err_msg=str(padding))


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_sigmoid_is_exact_on_both_sides(dtype):
    x = numpy.array([[-100.0, -60.0, -37.5, -30.0, -10.0, -1e-8, 0.0, 1e-8, 10.0, 30.0, 37.5, 100.0]], dtype)
    y = Sigmoid().forward(x)
    expected = torch.sigmoid(torch.from_numpy(x)).numpy()
    exact = 1 / (1 + numpy.exp(-x.astype(numpy.longdouble)))
    tiny = numpy.finfo(dtype).tiny  # below it (float32 at -100) PyTorch flushes to 0; we keep the denormal
    normal = numpy.abs(expected) >= tiny
    eps = numpy.finfo(dtype).eps
    numpy.testing.assert_allclose(y[normal], expected[normal], rtol=4 * eps)  # a few ulps apart, as two libms
    numpy.testing.assert_allclose(y.astype(numpy.longdouble)[normal], exact[normal], rtol=2 * eps)
    assert y[0, 2] > 0 and y.dtype == dtype
