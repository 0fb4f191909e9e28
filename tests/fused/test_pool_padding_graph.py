"""Issue 18 on the emulated GPU: the graph step refuses the pooling and padding options its fused kernels do not
take, naming the layer and the option, and fit(graph='auto') falls back to the eager step saying why; the eager CUDA
pools take every option and the CUDA convolution unequal padding before and after (held equal to NumPy)."""
import io

import numpy
import pytest

import gpucnn
from support.emulated_cupy import to_host
from fused.standins import SoftmaxCrossEntropyStandIn
from gpucnn.nn.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD, Adam
from gpucnn.train.loop import fit

pytestmark = [pytest.mark.kernels, pytest.mark.graph]

OPTIONS = [
    (lambda: MaxPool2D(2, dilation=2), "dilation"),
    (lambda: MaxPool2D(3, stride=2, ceil_mode=True), "ceil_mode=True"),
    (lambda: AvgPool2D(3, stride=2, padding=1, count_include_pad=False), "count_include_pad=False"),
    (lambda: MaxPool2D(2, padding=((1, 0), (0, 1))), "asymmetric padding"),
    (lambda: MaxPool2D(3, stride=2, padding="same"), "padding='same' at a stride above 1"),
]


def _model(pool):
    """Conv (8x8 -> 8x8), ReLU, the pool, Flatten, Dense; the Dense sized for the pool's output."""
    layers = [Conv2D(1, 2, 3, padding=1, rng=0), ReLU(), pool]
    shape = gpucnn.Sequential(layers).forward(numpy.zeros((1, 1, 8, 8), numpy.float32)).shape
    return gpucnn.Sequential(layers + [Flatten(), Dense(int(numpy.prod(shape[1:])), 3, rng=1)])


@pytest.mark.parametrize("build, option", OPTIONS, ids=[o for _, o in OPTIONS])
def test_compile_step_refuses_the_option_naming_layer_and_option(gpu, build, option):
    model = _model(build()).to("cuda")
    with pytest.raises(NotImplementedError, match=r"layer 2 \(.*Pool2D.*\) has " + option.replace("(", r"\(")):
        gpucnn.compile_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), 2,
                            loss=SoftmaxCrossEntropyStandIn(gpu.cupy, 3), update=lambda p, g: None)


def _strided_same_conv():
    """Conv2D(padding='same', stride=2): its padding depends on the input size (8x8 -> 4x4)."""
    return gpucnn.Sequential([Conv2D(1, 2, 3, stride=2, padding="same", rng=0), ReLU(), Flatten(),
                              Dense(2 * 4 * 4, 3, rng=1)])


def test_compile_step_refuses_a_conv_with_strided_same_padding(gpu):
    model = _strided_same_conv().to("cuda")
    with pytest.raises(NotImplementedError, match=r"layer 0 \(Conv2D.*\) has padding='same' at a stride above 1"):
        gpucnn.compile_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), 2,
                            loss=SoftmaxCrossEntropyStandIn(gpu.cupy, 3), update=lambda p, g: None)


def test_fit_auto_falls_back_to_the_eager_step_and_says_why(gpu):
    rng = numpy.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 8, 8)).astype(numpy.float32), rng.integers(0, 3, 4)
    model = _strided_same_conv().to("cuda")
    note = io.StringIO()
    history = fit(model, SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-3), gpu.cupy.asarray(x),
                  gpu.cupy.asarray(y), 1, batch_size=2, stream=note, progress=True)
    text = note.getvalue()
    assert "training step: eager, not a CUDA graph" in text and "padding='same' at a stride above 1" in text
    assert len(history["loss"]) == 1 and numpy.isfinite(history["loss"][0])


@pytest.mark.parametrize("padding, stride", [(((1, 0), (2, 1)), 1), (((0, 2), (1, 0)), 2), ("same", 2)])
def test_cuda_conv_with_unequal_padding_equals_numpy(gpu, padding, stride):
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((2, 2, 7, 6))
    conv = Conv2D(2, 3, 3, stride=stride, padding=padding, rng=0, dtype=numpy.float64)
    g = rng.standard_normal(conv.forward(x).shape)
    y, dx = conv.forward(x), conv.backward(g)
    dw, db = conv.weight.grad.copy(), conv.bias.grad.copy()
    conv.zero_grad()
    conv.to("cuda")
    y_gpu = conv.forward(gpu.cupy.asarray(x))
    dx_gpu = conv.backward(gpu.cupy.asarray(g))
    for a, b in [(y, y_gpu), (dx, dx_gpu), (dw, conv.weight.grad), (db, conv.bias.grad)]:
        numpy.testing.assert_allclose(to_host(b), a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("build, option", OPTIONS + [
    (lambda: AvgPool2D(2, stride=2, padding=1, ceil_mode=True, count_include_pad=True), "avg ceil"),
    (lambda: AvgPool2D(3, stride=2, padding=((0, 1), (1, 0)), count_include_pad=False), "avg asymmetric")],
    ids=[o for _, o in OPTIONS] + ["avg ceil", "avg asymmetric"])
def test_the_eager_cuda_pools_take_the_option_equal_to_numpy(gpu, build, option):
    rng = numpy.random.default_rng(7)
    x = rng.permutation(2 * 2 * 9 * 8).reshape(2, 2, 9, 8) * 0.25
    layer = build()
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    y_gpu = layer.forward(gpu.cupy.asarray(x))
    dx_gpu = layer.backward(gpu.cupy.asarray(g))
    numpy.testing.assert_allclose(to_host(y_gpu), y, rtol=1e-12)
    numpy.testing.assert_allclose(to_host(dx_gpu), dx, rtol=1e-12, atol=1e-14)
