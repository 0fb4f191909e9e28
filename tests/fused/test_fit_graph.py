"""fit(..., graph=True) on the emulated CuPy: the eager loop's history, one host read per epoch, resume.

The loss and update are the capture-safe stand-ins (tests/fused/standins.py), passed through
``graph_options``; the reference is fit on the CPU (eager) with the same seed and data.
"""
import numpy
import pytest

import emulated_cupy
import gpucnn
from emulated_cupy import to_host
from fused.standins import SGDStandIn, SoftmaxCrossEntropyStandIn
from gpucnn.losses import SoftmaxCrossEntropy
from gpucnn.optim import SGD, StepLR
from gpucnn.train import fit
from kernels.test_host_harness import FakeKernel, harness  # noqa: F401  (harness: the session fixture)

pytestmark = [pytest.mark.kernels, pytest.mark.graph]


@pytest.fixture
def gpu(harness):  # noqa: F811
    with emulated_cupy.installed(harness, FakeKernel) as emulated:
        yield emulated


def _data(n=5):
    rng = numpy.random.default_rng(0)
    return rng.standard_normal((n, 1, 28, 28)).astype(numpy.float32), rng.integers(0, 10, n)


def _graph_fit(gpu, x, y, epochs, **kwargs):
    cp = gpu.cupy
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    optimizer = SGD(model.parameters(), lr=0.05)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    options = {"loss": SoftmaxCrossEntropyStandIn(cp, 10), "update": SGDStandIn(cp, optimizer, numpy.float32),
               "verify": False}
    history = fit(model, SoftmaxCrossEntropy(), optimizer, cp.asarray(x), cp.asarray(y), epochs, batch_size=2,
                  scheduler=scheduler, progress=False, graph=True, graph_options=options, **kwargs)
    return model, history


def test_fit_graph_matches_the_eager_fit(gpu):
    x, y = _data()
    model, history = _graph_fit(gpu, x, y, 2)
    reference = gpucnn.models.fashion_cnn(rng=0)
    optimizer = SGD(reference.parameters(), lr=0.05)
    expected = fit(reference, SoftmaxCrossEntropy(), optimizer, x, y, 2, batch_size=2,
                   scheduler=StepLR(optimizer, step_size=1, gamma=0.5), progress=False)
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-4)
    assert history["accuracy"] == expected["accuracy"] and history["lr"] == expected["lr"] == [0.05, 0.025]
    for p, q in zip(model.parameters(), reference.parameters()):
        numpy.testing.assert_allclose(to_host(p.data), q.data, rtol=0, atol=1e-4 * max(1.0, numpy.abs(q.data).max()))


def test_fit_graph_reads_once_per_epoch_and_resumes_at_epoch_boundaries(gpu, tmp_path):
    x, y = _data(4)
    path = str(tmp_path / "ckpt.npz")
    gpu.syncs.reset()
    straight, _ = _graph_fit(gpu, x, y, 2)
    reads = [event for event in gpu.syncs.events if "gpucnn/fused/step.py" in event[1]]
    assert len(reads) == 2, gpu.syncs.events  # one per epoch (checkpoint-free, validation-free run)
    _graph_fit(gpu, x, y, 1, checkpoint=path)
    resumed, history = _graph_fit(gpu, x, y, 2, checkpoint=path, resume=True)
    assert history["epoch"] == [1, 2]
    for p, q in zip(resumed.parameters(), straight.parameters()):
        numpy.testing.assert_array_equal(to_host(p.data), to_host(q.data))
