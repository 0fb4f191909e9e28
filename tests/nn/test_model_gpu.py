"""A Model on the emulated CUDA device (tests/support/emulated_cupy): every node on the model's device, the same
numbers as on the CPU; fit(graph='auto') trains it as one CUDA graph (its first step verified), and says so."""
import io

import numpy
import pytest

from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.nn.resnet import resnet8
from gpucnn.optim import SGD
from gpucnn.train import fit
from support.emulated_cupy import to_host

pytestmark = [pytest.mark.kernels]


def test_a_resnet_trains_on_the_device_as_on_the_cpu(gpu):
    cp = gpu.cupy
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((4, 1, 12, 12)).astype(numpy.float32)
    y = rng.integers(0, 10, 4)
    cpu = resnet8(in_channels=1, input_size=12, rng=0)
    dev = resnet8(in_channels=1, input_size=12, rng=0).to("cuda")
    note = io.StringIO()
    history = fit(dev, SoftmaxCrossEntropy(), SGD(dev.parameters(), lr=0.05), cp.asarray(x), cp.asarray(y), 1,
                  batch_size=2, stream=note, progress=True)
    expected = fit(cpu, SoftmaxCrossEntropy(), SGD(cpu.parameters(), lr=0.05), x, y, 1, batch_size=2, progress=False)
    assert "training step: one CUDA graph" in note.getvalue() and "(graph)" in note.getvalue()
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-4)
    for key, value in dev.state_dict().items():
        assert type(value).__module__ != "numpy", key  # stayed on the device
        numpy.testing.assert_allclose(to_host(value), cpu.state_dict()[key], rtol=1e-3, atol=1e-5, err_msg=key)
