"""fit's one epoch loop: the eager and the graph step share its finiteness rules and its signal handling.

The eager cases run on the CPU (both CPU paths, through the suite's --gpucnn-path); the graph
cases on the emulated CuPy (tests/support/emulated_cupy), where the captured step runs through the
host harness.
"""
import os
import signal

import numpy
import pytest

import gpucnn
from fused.standins import SGDStandIn
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim import SGD, Adam
from gpucnn.train import TrainingDiverged, TrainingInterrupted, fit, load_training_checkpoint
from gpucnn.train.signals import deferred_interrupts
from test_train import toy_data, toy_model


class _SignallingLoss(SoftmaxCrossEntropy):
    """Sends ``signum`` to this process during its ``at``-th forward."""

    def __init__(self, signum, at):
        super().__init__()
        self.signum, self.at, self.calls = signum, at, 0

    def forward(self, logits, labels):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return super().forward(logits, labels)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_gets_what_ctrl_c_gets_a_checkpoint_of_the_exact_position(tmp_path, signum, status):
    ckpt = str(tmp_path / "c.npz")
    x, y = toy_data()
    model = toy_model()
    opt = Adam(model.parameters(), lr=1e-2)
    with pytest.raises(TrainingInterrupted, match="at epoch 2, step 3; checkpoint written") as caught:
        fit(model, _SignallingLoss(signum, 9), opt, x, y, 4, batch_size=16, seed=3, progress=False, checkpoint=ckpt)
    assert caught.value.signum == signum and caught.value.exit_status == status
    assert isinstance(caught.value, KeyboardInterrupt)  # what callers that catch Ctrl-C already catch
    meta = load_training_checkpoint(ckpt, toy_model(seed=4), Adam(toy_model(seed=4).parameters()))
    assert (meta["epoch"], meta["step"]) == (1, 3)

    resumed = toy_model(seed=5)
    history = fit(resumed, SoftmaxCrossEntropy(), Adam(resumed.parameters(), lr=1e-2), x, y, 4, batch_size=16,
                  seed=3, progress=False, checkpoint=ckpt, resume=True)
    reference = toy_model()
    expected = fit(reference, SoftmaxCrossEntropy(), Adam(reference.parameters(), lr=1e-2), x, y, 4,
                   batch_size=16, seed=3, progress=False)
    for p, q in zip(resumed.parameters(), reference.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-12)


def test_the_signal_handlers_come_back_after_training():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with deferred_interrupts() as interrupt:
        assert signal.getsignal(signal.SIGTERM) is interrupt
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.hit and interrupt.signum == signal.SIGTERM
    assert {s: signal.getsignal(s) for s in before} == before


# ---------------------------------------------------------------- the graph step, on the emulated CuPy

def _data(n=4):
    rng = numpy.random.default_rng(0)
    return rng.standard_normal((n, 1, 28, 28)).astype(numpy.float32), rng.integers(0, 10, n)


class _PoisoningUpdate(SGDStandIn):
    """Plain SGD that sets the last parameter to inf in the eager partial-batch step of epoch ``epoch``, the
    epoch's last step: the loss of that step was computed before the update, and is finite. (A replayed graph
    runs no Python, so the condition acts only where the update runs eagerly.)"""

    def __init__(self, cupy, optimizer, dtype, epoch):
        self.epochs_synced, self.poison_at = -1, epoch  # __init__'s own sync_from is not an epoch's
        super().__init__(cupy, optimizer, dtype)

    def sync_from(self, optimizer):
        super().sync_from(optimizer)
        self.epochs_synced += 1

    def __call__(self, params, grads):
        super().__call__(params, grads)
        if self.epochs_synced == self.poison_at:
            params[-1] *= self.cupy.asarray(numpy.inf, dtype=params[-1].dtype)


@pytest.mark.kernels
@pytest.mark.graph
def test_a_graph_run_whose_weights_diverge_leaves_no_checkpoint_with_non_finite_values(gpu, tmp_path):
    cp = gpu.cupy
    x, y = _data(5)  # 2 graph steps and 1 eager partial step an epoch
    ckpt = tmp_path / "c.npz"
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    opt = SGD(model.parameters(), lr=0.01)
    update = _PoisoningUpdate(cp, opt, numpy.float32, epoch=2)
    with pytest.raises(TrainingDiverged, match=r"a weight became NaN or infinite in epoch 2.*after epoch 1"):
        fit(model, SoftmaxCrossEntropy(), opt, cp.asarray(x), cp.asarray(y), 3, batch_size=2, progress=False,
            graph=True, graph_options={"verify": False, "update": update}, checkpoint=str(ckpt))
    check = gpucnn.models.fashion_cnn(rng=1)
    meta = load_training_checkpoint(str(ckpt), check, SGD(check.parameters(), lr=0.01))
    assert meta["epoch"] == 1  # the checkpoint of epoch 1 stands; epoch 2's was never written
    assert all(numpy.isfinite(v).all() for v in check.named_state().values())


@pytest.mark.kernels
@pytest.mark.graph
def test_a_graph_run_with_a_nan_validation_loss_stops_like_the_eager_one(gpu, tmp_path):
    cp = gpu.cupy
    x, y = _data()
    x_val = x.copy()
    x_val[0, 0, 0, 0] = numpy.nan
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    opt = SGD(model.parameters(), lr=0.01)
    with pytest.raises(TrainingDiverged, match="validation loss became nan after epoch 1"):
        fit(model, SoftmaxCrossEntropy(), opt, cp.asarray(x), cp.asarray(y), 2, batch_size=2, progress=False,
            graph=True, graph_options={"verify": False}, validation=(cp.asarray(x_val), cp.asarray(y)),
            checkpoint=str(tmp_path / "c.npz"))
    assert not (tmp_path / "c.npz").exists()


# ---------------------------------------------------------------- graph='auto' measures, then chooses

def _auto_fit(gpu, monkeypatch, eager_s, graph_s):
    import io

    from gpucnn.train import graph_step
    calls, real_measure = [], graph_step.measure_steps.real  # conftest's wrapper keeps the real one

    def measure(step, model, loss_fn, optimizer, x, y, batch_size):
        before = [p.data.copy() for p in model.parameters()]
        real = real_measure(step, model, loss_fn, optimizer, x, y, batch_size)
        calls.append(real)
        for p, q in zip(model.parameters(), before):  # measuring trained nothing
            numpy.testing.assert_array_equal(gpu.cupy.asnumpy(p.data), gpu.cupy.asnumpy(q))
        return eager_s, graph_s
    monkeypatch.setattr(graph_step, "measure_steps", measure)
    cp = gpu.cupy
    x, y = _data(4)
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    note = io.StringIO()
    history = fit(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.01), cp.asarray(x), cp.asarray(y), 1,
                  batch_size=2, stream=note, progress=True)
    assert len(calls) == 1 and all(t > 0 for t in calls[0])
    return history, note.getvalue()


@pytest.mark.kernels
@pytest.mark.graph
def test_graph_auto_keeps_the_graph_when_it_measures_faster(gpu, monkeypatch):
    _, note = _auto_fit(gpu, monkeypatch, eager_s=0.002, graph_s=0.001)
    assert "training step: one CUDA graph launch (gpucnn.compile_step; measured 1 ms a step against 2 ms eager" in note


@pytest.mark.kernels
@pytest.mark.graph
def test_graph_auto_keeps_the_eager_step_when_it_measures_faster(gpu, monkeypatch):
    history, note = _auto_fit(gpu, monkeypatch, eager_s=0.001, graph_s=0.003)
    assert "training step: eager, not a CUDA graph (measured 1 ms a step eager against 3 ms as a graph)" in note
    assert numpy.isfinite(history["loss"]).all()
