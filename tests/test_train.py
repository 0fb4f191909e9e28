import io
import os
import signal

import numpy
import pytest

import gpucnn
from gpucnn.nn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import Adam, StepLR
from gpucnn.train.loop import TrainingDiverged, evaluate, fit
from support.toy import quadrant_images


def toy_data(n=96, seed=0):
    """Images whose class is the quadrant holding the bright square: learnable in a few epochs."""
    return quadrant_images(n, seed)


def toy_model(seed=0):
    return gpucnn.Sequential([Conv2D(1, 4, 3, padding="same", rng=seed), ReLU(), MaxPool2D(2), Flatten(),
                              Dropout(0.2, rng=seed), Dense(64, 4, rng=seed)])


def run(model, epochs, **kwargs):
    x, y = toy_data()
    opt = Adam(model.parameters(), lr=1e-2)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    history = fit(model, SoftmaxCrossEntropy(), opt, x, y, epochs, batch_size=16, validation=(x, y),
                  scheduler=sched, seed=3, progress=False, **kwargs)
    return history, opt


def test_fit_learns_and_reports_history():
    history, _ = run(toy_model(), 4)
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    assert history["lr"] == [1e-2, 1e-2, 5e-3, 5e-3]
    assert all(s > 0 for s in history["images_per_second"])


def test_evaluate_restores_mode():
    model = toy_model()
    x, y = toy_data()
    result = evaluate(model, x, y, SoftmaxCrossEntropy(), batch_size=10)
    assert 0 <= result["accuracy"] <= 1 and result["loss"] > 0
    assert model.training


def test_resume_between_epochs_is_exact(tmp_path):
    ckpt = str(tmp_path / "c.npz")
    straight, _ = run(toy_model(), 4)
    first = toy_model()
    run(first, 2, checkpoint=ckpt)
    resumed_model = toy_model(seed=9)  # different start: everything must come from the checkpoint
    resumed, _ = run(resumed_model, 4, checkpoint=ckpt, resume=True)
    reference = toy_model()
    run(reference, 4)
    for p, q in zip(resumed_model.parameters(), reference.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)
    assert resumed["loss"] == straight["loss"]


def test_ctrl_c_saves_exact_position_and_resume_finishes_identically(tmp_path):
    ckpt = str(tmp_path / "c.npz")
    calls = {"n": 0}

    class InterruptingLoss(SoftmaxCrossEntropy):
        def forward(self, logits, labels):
            calls["n"] += 1
            if calls["n"] == 9:  # mid-way through epoch 2 (6 steps per epoch)
                os.kill(os.getpid(), signal.SIGINT)
            return super().forward(logits, labels)

    x, y = toy_data()
    model = toy_model()
    opt = Adam(model.parameters(), lr=1e-2)
    with pytest.raises(KeyboardInterrupt, match="checkpoint written"):
        fit(model, InterruptingLoss(), opt, x, y, 4, batch_size=16, seed=3, progress=False, checkpoint=ckpt)
    assert os.path.exists(ckpt)

    resumed = toy_model(seed=5)
    opt2 = Adam(resumed.parameters(), lr=1e-2)
    history = fit(resumed, SoftmaxCrossEntropy(), opt2, x, y, 4, batch_size=16, seed=3, progress=False,
                  checkpoint=ckpt, resume=True)
    reference = toy_model()
    opt3 = Adam(reference.parameters(), lr=1e-2)
    expected = fit(reference, SoftmaxCrossEntropy(), opt3, x, y, 4, batch_size=16, seed=3, progress=False)
    for p, q in zip(resumed.parameters(), reference.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-12)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(tmp_path):
    ckpt = str(tmp_path / "c.npz")
    x, y = toy_data()
    model = toy_model()
    run(model, 1, checkpoint=ckpt)
    saved = (tmp_path / "c.npz").read_bytes()
    calls = {"n": 0}

    class PoisonedLoss(SoftmaxCrossEntropy):
        def forward(self, logits, labels):
            calls["n"] += 1
            if calls["n"] == 4:
                logits = logits * numpy.float32("nan")
            return super().forward(logits, labels)

    opt = Adam(model.parameters(), lr=1e-2)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 4 of 6.*c.npz"):
        fit(model, PoisonedLoss(), opt, x, y, 3, batch_size=16, seed=3, progress=False, checkpoint=ckpt,
            resume=True)
    assert (tmp_path / "c.npz").read_bytes() == saved


def test_progress_bar_writes_a_line_per_epoch(capsys):
    import io
    stream = io.StringIO()
    x, y = toy_data()
    model = toy_model()
    fit(model, SoftmaxCrossEntropy(), Adam(model.parameters()), x, y, 2, batch_size=32, progress=True,
        stream=stream)
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2 [") and "img/s" in lines[0] and "3/3" in lines[0]


def test_out_of_gpu_memory_names_the_batch_size():
    OutOfMemoryError = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory"})

    class Exploding(SoftmaxCrossEntropy):
        def forward(self, logits, labels):
            raise OutOfMemoryError("out of memory allocating 1,234,567 bytes")

    x, y = toy_data()
    model = toy_model()
    with pytest.raises(MemoryError, match=r"batch size 32.*e\.g\. 16"):
        fit(model, Exploding(), Adam(model.parameters()), x, y, 1, batch_size=32, progress=False)


def test_evaluate_without_a_loss_gives_accuracy_alone():
    model = toy_model()
    x, y = toy_data()
    with_loss = evaluate(model, x, y, SoftmaxCrossEntropy(), batch_size=10)
    alone = evaluate(model, x, y, batch_size=7)
    assert set(alone) == {"accuracy"}
    assert alone["accuracy"] == with_loss["accuracy"]


def test_evaluate_refuses_mismatched_labels():
    x, y = toy_data()
    with pytest.raises(ValueError, match="96 inputs but 95 labels"):
        evaluate(toy_model(), x, y[:-1])


def test_evaluate_progress_writes_its_own_bar():
    stream = io.StringIO()
    x, y = toy_data()
    evaluate(toy_model(), x, y, batch_size=10, progress=True, stream=stream)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("eval [") and " 10/10 " in lines[-1]


def test_fit_prints_validation_metrics_per_epoch_in_a_log():
    stream = io.StringIO()
    x, y = toy_data()
    model = toy_model()
    fit(model, SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-2), x, y, 2, batch_size=8,
        validation=(x, y), seed=3, sync_every=1, stream=stream)
    lines = stream.getvalue().splitlines()
    ends = [line for line in lines if " 12/12 " in line]
    assert [line.split(" [")[0] for line in ends] == ["epoch 1/2", "epoch 2/2"]
    assert all("val_loss " in line and "val_acc " in line for line in ends)
    assert len(lines) == 2 * 10  # 9 lines at the tenths of 12 steps, one at the end, per epoch
    assert "validating" not in stream.getvalue()  # the validation bar shows on terminals only


class PoisonAt(SoftmaxCrossEntropy):
    """Multiplies the logits by NaN at the given forward calls (1-based)."""

    def __init__(self, calls):
        super().__init__()
        self.calls, self.n = set(calls), 0

    def forward(self, logits, labels):
        self.n += 1
        if self.n in self.calls:
            logits = logits * numpy.float32("nan")
        return super().forward(logits, labels)


def test_divergence_before_any_checkpoint_says_none_was_written(tmp_path):
    ckpt = tmp_path / "c.npz"
    x, y = toy_data()
    model = toy_model()
    with pytest.raises(TrainingDiverged, match="epoch 1, step 2 of 6; training stopped; no good checkpoint was "
                                               "written$"):
        fit(model, PoisonAt([2]), Adam(model.parameters()), x, y, 2, batch_size=16, progress=False,
            checkpoint=str(ckpt))
    assert not ckpt.exists()
    ckpt.write_bytes(b"an earlier run's")
    with pytest.raises(TrainingDiverged, match="is from an earlier run, not this one"):
        fit(model, PoisonAt([2]), Adam(model.parameters()), x, y, 2, batch_size=16, progress=False,
            checkpoint=str(ckpt))


def test_divergence_names_the_last_good_checkpoint(tmp_path):
    ckpt = str(tmp_path / "c.npz")
    x, y = toy_data()
    model = toy_model()
    with pytest.raises(TrainingDiverged, match=r"the last good checkpoint \(after epoch 1\) is .*c.npz"):
        fit(model, PoisonAt([8]), Adam(model.parameters()), x, y, 3, batch_size=16, progress=False,
            checkpoint=ckpt)


def test_infinite_weights_with_finite_losses_write_no_checkpoint(tmp_path):
    ckpt = tmp_path / "c.npz"
    x, y = toy_data()
    model = toy_model()
    opt = Adam(model.parameters())
    real_step, calls = opt.step, {"n": 0}

    def step():
        real_step()
        calls["n"] += 1
        if calls["n"] == 6:  # the last step of epoch 1: its loss was computed before, and is finite
            model.layers[-1].bias.data[0] = numpy.inf

    opt.step = step
    with pytest.raises(TrainingDiverged, match="a weight became NaN or infinite in epoch 1.*no good checkpoint"):
        fit(model, SoftmaxCrossEntropy(), opt, x, y, 2, batch_size=16, progress=False, checkpoint=str(ckpt))
    assert not ckpt.exists()


def test_nan_validation_loss_stops_training(tmp_path):
    x, y = toy_data()
    x_val = x.copy()
    x_val[0] = numpy.nan
    model = toy_model()
    with pytest.raises(TrainingDiverged, match="validation loss became nan after epoch 1; training stopped"):
        fit(model, SoftmaxCrossEntropy(), Adam(model.parameters()), x, y, 2, batch_size=16, progress=False,
            validation=(x_val, y), checkpoint=str(tmp_path / "c.npz"))
    assert not (tmp_path / "c.npz").exists()


def test_resume_refuses_another_batch_size_or_data_set_and_changes_nothing(tmp_path):
    ckpt = str(tmp_path / "c.npz")
    run(toy_model(), 1, checkpoint=ckpt)
    x, y = toy_data()
    model = toy_model(seed=4)
    before = [p.data.copy() for p in model.parameters()]
    from gpucnn.io.arrays import CheckpointError
    with pytest.raises(CheckpointError, match="batch size 16, this run has 32"):
        fit(model, SoftmaxCrossEntropy(), Adam(model.parameters()), x, y, 2, batch_size=32, progress=False,
            checkpoint=ckpt, resume=True)
    with pytest.raises(CheckpointError, match="data-set size 96, this run has 80"):
        fit(model, SoftmaxCrossEntropy(), Adam(model.parameters()), x[:80], y[:80], 2, batch_size=16,
            progress=False, checkpoint=ckpt, resume=True)
    assert all(numpy.array_equal(p.data, q) for p, q in zip(model.parameters(), before))


def test_resume_keeps_the_given_learning_rate_and_betas_when_asked(tmp_path):
    ckpt = str(tmp_path / "c.npz")
    run(toy_model(), 1, checkpoint=ckpt)  # lr 1e-2, betas (0.9, 0.999), StepLR(2, 0.5)
    x, y = toy_data()
    model = toy_model()
    opt = Adam(model.parameters(), lr=0.5, betas=(0.5, 0.6))
    sched = StepLR(opt, step_size=2, gamma=0.5)
    history = fit(model, SoftmaxCrossEntropy(), opt, x, y, 3, batch_size=16, scheduler=sched, seed=3,
                  progress=False, checkpoint=ckpt, resume=True, keep_optimizer_settings=("lr", "betas"))
    assert history["lr"] == [1e-2, 0.5, 0.25] and opt.betas == (0.5, 0.6)
    fresh = str(tmp_path / "fresh.npz")
    run(toy_model(), 1, checkpoint=fresh)
    opt2 = Adam(toy_model().parameters(), lr=0.5, betas=(0.5, 0.6))
    fit(toy_model(), SoftmaxCrossEntropy(), opt2, x, y, 1, batch_size=16, progress=False, checkpoint=fresh,
        resume=True)
    assert opt2.betas == (0.9, 0.999)  # by default the checkpoint's settings win, for an exact resume


def test_a_checkpoint_whose_schedule_reached_lr_0_resumes(tmp_path):
    """CosineAnnealingLR over one epoch ends on lr 0 (eta_min): a legitimate state that resume must accept."""
    from gpucnn.optim.optimizers import CosineAnnealingLR
    ckpt = str(tmp_path / "c.npz")
    x, y = toy_data()
    model = toy_model()
    opt = Adam(model.parameters(), lr=1e-2)
    fit(model, SoftmaxCrossEntropy(), opt, x, y, 1, batch_size=16, scheduler=CosineAnnealingLR(opt, T_max=1),
        progress=False, checkpoint=ckpt)
    assert opt.lr == 0.0
    resumed = toy_model()
    opt2 = Adam(resumed.parameters(), lr=1e-2)
    history = fit(resumed, SoftmaxCrossEntropy(), opt2, x, y, 2, batch_size=16,
                  scheduler=CosineAnnealingLR(opt2, T_max=1), progress=False, checkpoint=ckpt, resume=True)
    assert history["epoch"] == [1, 2]
