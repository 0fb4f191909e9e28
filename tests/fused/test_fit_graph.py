"""fit(..., graph=True) on the emulated CuPy: the eager loop's history, one host read per epoch, exact resume.

The loss and the update are the real ones (SoftmaxCrossEntropy's one-launch kernel, gpucnn's
SGD and Adam through their multi-tensor launch), with a StepLR schedule whose new rate each
epoch reaches the captured update; the reference is fit on the CPU (eager) with the same seed
and data. The stand-ins still plug in through ``graph_options``.
"""
import numpy
import pytest

import emulated_cupy
import gpucnn
from emulated_cupy import to_host
from fused.standins import SGDStandIn, SoftmaxCrossEntropyStandIn
from gpucnn.checkpoint import CheckpointError
from gpucnn.losses import SoftmaxCrossEntropy
from gpucnn.optim import SGD, Adam, StepLR
from gpucnn.train import fit
from kernels.test_host_harness import FakeKernel, harness  # noqa: F401  (harness: the session fixture)

pytestmark = [pytest.mark.kernels, pytest.mark.graph]

OPTIMIZERS = {"adam": lambda params: Adam(params, lr=1e-3),
              "momentum": lambda params: SGD(params, lr=0.005, momentum=0.9)}


@pytest.fixture
def gpu(harness):  # noqa: F811
    with emulated_cupy.installed(harness, FakeKernel) as emulated:
        yield emulated


def _data(n=5):
    rng = numpy.random.default_rng(0)
    return rng.standard_normal((n, 1, 28, 28)).astype(numpy.float32), rng.integers(0, 10, n)


def _graph_fit(gpu, x, y, epochs, optimizer="adam", graph_options=None, batch_size=2, **kwargs):
    cp = gpu.cupy
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    opt = OPTIMIZERS[optimizer](model.parameters())
    scheduler = StepLR(opt, step_size=1, gamma=0.5)
    history = fit(model, SoftmaxCrossEntropy(), opt, cp.asarray(x), cp.asarray(y), epochs, batch_size=batch_size,
                  scheduler=scheduler, progress=False, graph=True,
                  graph_options=graph_options if graph_options is not None else {"verify": False}, **kwargs)
    return model, opt, history


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_fit_graph_matches_the_eager_fit(gpu, optimizer):
    x, y = _data()
    model, opt, history = _graph_fit(gpu, x, y, 2, optimizer, graph_options={"verify": True})
    reference = gpucnn.models.fashion_cnn(rng=0)
    ref_opt = OPTIMIZERS[optimizer](reference.parameters())
    expected = fit(reference, SoftmaxCrossEntropy(), ref_opt, x, y, 2, batch_size=2,
                   scheduler=StepLR(ref_opt, step_size=1, gamma=0.5), progress=False)
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-4)
    assert history["accuracy"] == expected["accuracy"] and history["lr"] == expected["lr"]
    steps = [s["step"] for s in opt.state]
    assert opt.lr == ref_opt.lr and steps == [s["step"] for s in ref_opt.state] == [6] * len(opt.state)
    for p, q in zip(model.parameters(), reference.parameters()):
        numpy.testing.assert_allclose(to_host(p.data), q.data, rtol=0, atol=1e-4 * max(1.0, numpy.abs(q.data).max()))
    for state, expected_state in zip(opt.state, ref_opt.state):
        for key in ref_opt.state_names:
            numpy.testing.assert_allclose(to_host(state[key]), expected_state[key], rtol=0,
                                          atol=1e-4 * max(1.0, numpy.abs(expected_state[key]).max()))


def test_fit_graph_reads_once_per_epoch_and_resumes_at_epoch_boundaries_exactly(gpu, tmp_path):
    x, y = _data(4)
    path = str(tmp_path / "ckpt.npz")
    gpu.syncs.reset()
    straight, straight_opt, straight_history = _graph_fit(gpu, x, y, 2)
    reads = [event for event in gpu.syncs.events if "gpucnn/fused/step.py" in event[1]]
    assert len(reads) == 2, gpu.syncs.events  # one per epoch (checkpoint-free, validation-free run)
    _graph_fit(gpu, x, y, 1, checkpoint=path)
    resumed, resumed_opt, history = _graph_fit(gpu, x, y, 2, checkpoint=path, resume=True)
    assert history["epoch"] == [1, 2] and history["lr"] == straight_history["lr"] == [1e-3, 5e-4]
    assert history["loss"] == straight_history["loss"]
    for p, q in zip(resumed.parameters(), straight.parameters()):
        numpy.testing.assert_array_equal(to_host(p.data), to_host(q.data))
    assert resumed_opt.lr == straight_opt.lr
    for state, expected in zip(resumed_opt.state, straight_opt.state):
        assert state["step"] == expected["step"] == 4
        for key in ("exp_avg", "exp_avg_sq"):
            numpy.testing.assert_array_equal(to_host(state[key]), to_host(expected[key]))
    with pytest.raises(CheckpointError, match="batch size 2, this run has 4"):  # checked as the eager loop does
        _graph_fit(gpu, x, y, 3, checkpoint=path, resume=True, batch_size=4)


def test_fit_graph_with_the_stand_ins(gpu):
    x, y = _data(4)
    cp = gpu.cupy
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    opt = SGD(model.parameters(), lr=0.05)
    options = {"loss": SoftmaxCrossEntropyStandIn(cp, 10), "update": SGDStandIn(cp, opt, numpy.float32)}
    history = fit(model, SoftmaxCrossEntropy(), opt, cp.asarray(x), cp.asarray(y), 2, batch_size=2,
                  scheduler=StepLR(opt, step_size=1, gamma=0.5), progress=False, graph=True, graph_options=options)
    assert history["lr"] == [0.05, 0.025] and all(numpy.isfinite(history["loss"]))
