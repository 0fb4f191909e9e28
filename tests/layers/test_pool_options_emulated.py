"""The pooling options and Conv2D's padding on the emulated GPU (the CUDA eager kernels replayed on the host)
against PyTorch in float64: forward, input gradient, the convolution's parameter gradients."""
import numpy
import pytest

from support.emulated_cupy import to_host
from gpucnn.nn.layers import AvgPool2D, Conv2D, MaxPool2D, ReLU
from gpucnn.nn.sequential import Sequential

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.kernels

CASES = {
    "max-dilated-ceil": (lambda: MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True),
                         lambda y: F.max_pool2d(y, 3, 2, 1, 2, True)),
    "max-ceil": (lambda: MaxPool2D(2, 2, 1, ceil_mode=True), lambda y: F.max_pool2d(y, 2, 2, 1, 1, True)),
    "max-asymmetric": (lambda: MaxPool2D(2, 2, ((0, 1), (1, 0))),
                       lambda y: F.max_pool2d(F.pad(y, (1, 0, 0, 1), value=-numpy.inf), 2, 2)),
    "avg-ceil": (lambda: AvgPool2D(3, 2, 1, ceil_mode=True), lambda y: F.avg_pool2d(y, 3, 2, 1, True, True)),
    "avg-exclude-ceil": (lambda: AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False),
                         lambda y: F.avg_pool2d(y, 3, 2, 1, True, False)),
    "avg-asymmetric": (lambda: AvgPool2D(3, 2, ((1, 0), (0, 1))), lambda y: F.avg_pool2d(F.pad(y, (0, 1, 1, 0)), 3, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pool_options_on_the_emulated_gpu_match_torch(gpu, name):
    build, torch_pool = CASES[name]
    cp = gpu.cupy
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((2, 2, 9, 8))
    model = Sequential([Conv2D(2, 3, 3, padding=((0, 1), (1, 0)), dtype=numpy.float64, rng=0), ReLU(), build()])
    tw, tb = (torch.tensor(p.data, requires_grad=True) for p in (model.layers[0].weight, model.layers[0].bias))
    model.to("cuda")
    y = model.forward(cp.asarray(x))
    g = rng.standard_normal(y.shape)
    model.zero_grad()
    dx = model.backward(cp.asarray(g))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch_pool(F.relu(F.conv2d(F.pad(tx, (1, 0, 0, 1)), tw, tb)))
    ty.backward(torch.tensor(g))
    numpy.testing.assert_allclose(to_host(y), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(to_host(dx), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(to_host(model.layers[0].weight.grad), tw.grad.numpy(), rtol=1e-10, atol=1e-11)
    numpy.testing.assert_allclose(to_host(model.layers[0].bias.grad), tb.grad.numpy(), rtol=1e-10, atol=1e-11)
