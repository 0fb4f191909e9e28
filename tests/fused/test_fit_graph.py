"""fit(..., graph=True) on the emulated CuPy: the eager loop's history, one host read per epoch, exact resume.

The loss and the update are the real ones (SoftmaxCrossEntropy's one-launch kernel, gpucnn's
SGD and Adam through their multi-tensor launch), with a StepLR schedule whose new rate each
epoch reaches the captured update; the reference is fit on the CPU (eager) with the same seed
and data. The stand-ins still plug in through ``graph_options``.
"""
import numpy
import pytest

import gpucnn
from support.emulated_cupy import to_host
from fused.standins import SGDStandIn, SoftmaxCrossEntropyStandIn
from gpucnn.io.arrays import CheckpointError
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD, Adam, StepLR
from gpucnn.train.loop import fit

pytestmark = [pytest.mark.kernels, pytest.mark.graph]

OPTIMIZERS = {"adam": lambda params: Adam(params, lr=1e-3),
              "momentum": lambda params: SGD(params, lr=0.005, momentum=0.9)}


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
    reads = [event for event in gpu.syncs.events if "gpucnn/compile/cuda_graph/step.py" in event[1]]
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


# ---------------------------------------------------------------- graph='auto', fit's default on CUDA

def _auto_fit(gpu, model, x, y, epochs, **kwargs):
    """fit with its defaults (graph='auto', verify on) on the emulated CUDA device; returns (history, note)."""
    import io
    cp = gpu.cupy
    note = io.StringIO()
    opt = Adam(model.parameters(), lr=1e-3)
    kwargs.setdefault("progress", True)
    history = fit(model, SoftmaxCrossEntropy(), opt, cp.asarray(x), cp.asarray(y), epochs, batch_size=2,
                  stream=note, **kwargs)
    return history, note.getvalue(), opt


def _assert_same_weights(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        numpy.testing.assert_array_equal(to_host(p.data), to_host(q.data))


def test_auto_trains_a_cuda_model_as_one_graph_and_says_so(gpu):
    x, y = _data()
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    history, note, _ = _auto_fit(gpu, model, x, y, 2)
    assert "training step: one CUDA graph launch" in note and "verified against the eager step" in note
    explicit = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    expected, _, _ = _auto_fit(gpu, explicit, x, y, 2, graph=True)
    assert history["loss"] == expected["loss"]
    _assert_same_weights(model, explicit)
    # the eager loop is still one argument away, and it is what the CPU gets by default
    eager = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    _, eager_note, _ = _auto_fit(gpu, eager, x, y, 1, graph=False)
    assert "graph" not in eager_note.replace("CUDA kernels", "")
    import io
    cpu_note, cpu_model = io.StringIO(), gpucnn.models.fashion_cnn(rng=0)
    fit(cpu_model, SoftmaxCrossEntropy(), Adam(cpu_model.parameters()), x, y, 1, batch_size=2, stream=cpu_note)
    assert "training step" not in cpu_note.getvalue()


def test_auto_runs_eagerly_where_the_graph_cannot_and_says_why(gpu):
    x, y = _data()
    layers = gpucnn.models.fashion_cnn(rng=0).layers
    with_dropout = gpucnn.Sequential(layers[:-1] + [gpucnn.layers.Dropout(0.5, rng=1), layers[-1]])
    model = with_dropout.to("cuda")
    history, note, _ = _auto_fit(gpu, model, x, y, 1)
    assert "training step: eager, not a CUDA graph" in note and "Dropout" in note
    assert len(history["loss"]) == 1 and numpy.isfinite(history["loss"][0])
    with pytest.raises(NotImplementedError, match="Dropout"):  # asked for explicitly, the graph's refusal stands
        _auto_fit(gpu, gpucnn.Sequential(gpucnn.models.fashion_cnn(rng=0).layers[:-1]
                                         + [gpucnn.layers.Dropout(0.5, rng=1),
                                            gpucnn.layers.Dense(128, 10, rng=0)]).to("cuda"), x, y, 1, graph=True)
    tiny, note, _ = _auto_fit(gpu, gpucnn.models.fashion_cnn(rng=0).to("cuda"), x[:1], y[:1], 1)
    assert "eager, not a CUDA graph (1 samples do not fill one batch of 2)" in note and len(tiny["loss"]) == 1
    with pytest.raises(ValueError, match="do not fill one batch"):
        _auto_fit(gpu, gpucnn.models.fashion_cnn(rng=0).to("cuda"), x[:1], y[:1], 1, graph=True)
    with pytest.raises(ValueError, match="graph must be True, False or 'auto'"):
        _auto_fit(gpu, gpucnn.models.fashion_cnn(rng=0).to("cuda"), x, y, 1, graph="yes")


def test_auto_falls_back_when_the_capture_fails_with_the_model_untouched(gpu, monkeypatch):
    from gpucnn.compile.cuda_graph.step import GraphStep
    x, y = _data()
    original = GraphStep._train_on
    calls = {"n": 0}

    def fails_on_the_second_run(self, xb, yb):  # the first warm-up run updates the weights, then it breaks
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("cudaErrorStreamCaptureUnsupported (emulated)")
        return original(self, xb, yb)

    monkeypatch.setattr(GraphStep, "_train_on", fails_on_the_second_run)
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    history, note, opt = _auto_fit(gpu, model, x, y, 2)
    assert "eager, not a CUDA graph (the capture failed: RuntimeError: cudaErrorStreamCaptureUnsupported" in note
    monkeypatch.setattr(GraphStep, "_train_on", original)
    eager = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    expected, _, eager_opt = _auto_fit(gpu, eager, x, y, 2, graph=False)
    assert history["loss"] == expected["loss"]
    _assert_same_weights(model, eager)
    assert [s["step"] for s in opt.state] == [s["step"] for s in eager_opt.state] == [6] * len(opt.state)


def test_auto_resumes_a_mid_epoch_checkpoint_eagerly(gpu, tmp_path):
    import os
    import signal
    x, y = _data()
    path = str(tmp_path / "mid.npz")
    calls = {"n": 0}

    class InterruptingLoss(SoftmaxCrossEntropy):
        def forward(self, logits, labels):
            calls["n"] += 1
            if calls["n"] == 5:  # the second step of epoch 2 (3 steps per epoch)
                os.kill(os.getpid(), signal.SIGINT)
            return super().forward(logits, labels)

    cpu_model = gpucnn.models.fashion_cnn(rng=0)
    with pytest.raises(KeyboardInterrupt, match="checkpoint written"):
        fit(cpu_model, InterruptingLoss(), Adam(cpu_model.parameters(), lr=1e-3), x, y, 3, batch_size=2,
            progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="resume it with graph=False"):
        _auto_fit(gpu, gpucnn.models.fashion_cnn(rng=5).to("cuda"), x, y, 3, checkpoint=path, resume=True,
                  graph=True)
    model = gpucnn.models.fashion_cnn(rng=5).to("cuda")
    history, note, _ = _auto_fit(gpu, model, x, y, 3, checkpoint=path, resume=True)
    assert "eager, not a CUDA graph" in note and "mid-epoch" in note
    assert history["epoch"] == [1, 2, 3] and all(numpy.isfinite(history["loss"]))
