"""After gpucnn.onnx.load, fit trains the imported model as it trains the original: on the CPU's reference and
fast paths, and on the emulated GPU."""
import functools

import numpy
import pytest

import gpucnn
from gpucnn import backend
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import Adam
from gpucnn.train.loop import fit

from .support import warm_up

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'gpucnn[onnx]')")

SHAPE = (2, 12, 12)
make_resnet = functools.partial(gpucnn.models.resnet8, in_channels=2, input_size=12, num_classes=3)


def data(n=24):
    rng = numpy.random.default_rng(5)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n,) + SHAPE).astype(numpy.float32) + y[:, None, None, None].astype(numpy.float32)
    return x, y


def train(model, x, y, device="cpu"):
    model.to(device)
    x, y = backend.to_device(x, device), backend.to_device(y, device)
    history = fit(model, SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-2), x, y, 3, batch_size=8,
                  progress=False, seed=1)
    return history["loss"]


def twins():
    model = make_resnet(rng=2)
    x, y = data()
    warm_up(model, x)
    return model, gpucnn.onnx.load(gpucnn.onnx.to_onnx(model, SHAPE)), x, y


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_an_imported_model_trains_as_its_original_on_the_cpu(path):
    gpucnn.config.path = path
    model, loaded, x, y = twins()
    want, got = train(model, x, y), train(loaded, x, y)
    assert got[-1] < got[0]
    numpy.testing.assert_allclose(got, want, rtol=1e-4)
    for p, q in zip(loaded.parameters(), model.parameters()):
        numpy.testing.assert_allclose(p.data, q.data, rtol=1e-3, atol=1e-5)


def test_an_imported_model_trains_on_the_emulated_gpu(gpu):
    model, loaded, x, y = twins()
    want, got = train(model, x, y), train(loaded, x, y, "cuda")
    assert loaded.device == "cuda:0" and got[-1] < got[0]
    # on the device it trains as one CUDA graph (fused kernels, Welford batch statistics): 9 Adam steps in float32
    # from other summation orders than the CPU's move the losses by up to about 2e-4
    numpy.testing.assert_allclose(got, want, rtol=1e-3)
