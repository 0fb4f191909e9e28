"""fit with the optimizer extras: per-step and plateau schedules, parameter groups, gradient clipping and EMA;
an interrupted run (Ctrl-C mid-epoch, then resume from the checkpoint) ends bitwise equal to an uninterrupted one."""
import os
import signal

import numpy
import pytest

import gpucnn
from gpucnn.io.arrays import CheckpointError
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim import (EMA, SGD, AdamW, CosineAnnealingLR, LinearWarmup, OneCycleLR, ReduceLROnPlateau,
                          SequentialLR, param_groups_no_decay)
from gpucnn.train.loop import evaluate, fit
from support.toy import quadrant_images

EPOCHS, BATCH, N = 3, 16, 96  # 6 steps an epoch


def toy_data(n=N, seed=0):
    return quadrant_images(n, seed)


def toy_model(seed=0):
    return gpucnn.Sequential([Conv2D(1, 4, 3, padding="same", rng=seed), BatchNorm2D(4), ReLU(), MaxPool2D(2),
                              Flatten(), Dense(64, 4, rng=seed)])


def recipe(name, model):
    """(optimizer, schedule, fit options) of one recipe."""
    if name == "onecycle":
        opt = AdamW(param_groups_no_decay(model, 5e-2), lr=1e-2)
        return opt, OneCycleLR(opt, max_lr=2e-2, epochs=EPOCHS, steps_per_epoch=N // BATCH), \
            {"clip_grad_norm": 0.5}
    if name == "warmup-cosine":
        opt = SGD(param_groups_no_decay(model, 1e-3), lr=0.1, momentum=0.9, nesterov=True)
        return opt, SequentialLR(opt, [LinearWarmup(opt, 1), CosineAnnealingLR(opt, EPOCHS - 1)], milestones=[1]), {}
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    return opt, ReduceLROnPlateau(opt, factor=0.5, patience=0), {}


def train(name, epochs=EPOCHS, checkpoint=None, resume=False, loss_fn=None, seed=0, with_ema=True):
    model = toy_model(seed)
    opt, sched, options = recipe(name, model)
    ema = EMA(model, decay=0.9) if with_ema else None
    x, y = toy_data()
    history = fit(model, loss_fn or SoftmaxCrossEntropy(), opt, x, y, epochs, batch_size=BATCH,
                  validation=(x[:32], y[:32]), scheduler=sched, seed=3, progress=False, checkpoint=checkpoint,
                  resume=resume, ema=ema, **options)
    return model, opt, sched, ema, history


def _bits(model, opt, ema):
    arrays = {f"m.{k}": v for k, v in model.named_state().items()}
    opt_arrays, scalars = opt.state_arrays()
    arrays.update({f"o.{k}": v for k, v in opt_arrays.items()})
    arrays.update({f"e.{k}": v for k, v in ema.state()[0].items()})
    return {k: v.tobytes() for k, v in arrays.items()}, scalars, ema.state()[1]


def test_one_cycle_steps_per_batch_in_fit_and_ends_where_its_closed_form_does():
    model, opt, sched, _, history = train("onecycle")
    assert sched.last_epoch == EPOCHS * (N // BATCH)
    reference = OneCycleLR(AdamW(toy_model().parameters()), max_lr=2e-2, total_steps=EPOCHS * (N // BATCH))
    assert [g["lr"] for g in opt.param_groups] == [reference.lrs_at(sched.last_epoch)[0]] * 2
    assert history["lr"][0] == reference.lrs_at(N // BATCH)[0]  # the rate after the first epoch's last step
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.param_groups[0]["weight_decay"] == 5e-2


def test_plateau_steps_on_the_validation_loss():
    _, opt, sched, _, history = train("plateau", epochs=4)
    assert sched.last_epoch == 4
    best = min(history["val_loss"])
    assert sched.best == best
    halvings = round(numpy.log2(0.05 / opt.lr))
    assert 0 <= halvings <= 4 and opt.lr == 0.05 * 0.5 ** halvings


@pytest.mark.parametrize("name", ["onecycle", "warmup-cosine", "plateau"])
def test_ctrl_c_mid_epoch_then_resume_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path, name):
    ckpt = str(tmp_path / "c.npz")
    calls = {"n": 0}

    class InterruptingLoss(SoftmaxCrossEntropy):
        def forward(self, logits, labels):
            if logits.shape[0] == BATCH:  # training steps only (the validation batch holds 32)
                calls["n"] += 1
                if calls["n"] == 9:  # mid-way through epoch 2
                    os.kill(os.getpid(), signal.SIGINT)
            return super().forward(logits, labels)

    with pytest.raises(KeyboardInterrupt, match="checkpoint written"):
        train(name, checkpoint=ckpt, loss_fn=InterruptingLoss())
    resumed = train(name, checkpoint=ckpt, resume=True, seed=7)  # another start: all must come from the file
    straight = train(name)
    assert _bits(*[resumed[i] for i in (0, 1, 3)]) == _bits(*[straight[i] for i in (0, 1, 3)])
    assert resumed[2].state() == straight[2].state()
    assert resumed[4]["loss"] == straight[4]["loss"] and resumed[4]["lr"] == straight[4]["lr"]


def test_resuming_with_an_ema_a_checkpoint_without_one_is_refused(tmp_path):
    ckpt = str(tmp_path / "c.npz")
    train("plateau", epochs=1, checkpoint=ckpt, with_ema=False)
    with pytest.raises(CheckpointError, match="holds no weight average"):
        train("plateau", epochs=2, checkpoint=ckpt, resume=True)
    train("plateau", epochs=2, checkpoint=ckpt, resume=True, with_ema=False)
    train("plateau", epochs=3, checkpoint=ckpt, with_ema=True)  # a new run with one
    model, _, _, _, _ = train("plateau", epochs=4, checkpoint=ckpt, resume=True, with_ema=False)  # average unread
    assert all(numpy.isfinite(v).all() for v in model.named_state().values())


def test_evaluate_and_predict_with_the_ema_use_the_average_and_put_the_weights_back():
    model, _, _, ema, history = train("onecycle")
    x, y = toy_data()
    own = {k: v.copy() for k, v in model.named_state().items()}
    with_ema = evaluate(model, x[:32], y[:32], SoftmaxCrossEntropy(), ema=ema)
    assert with_ema["loss"] == history["val_loss"][-1]  # fit validates the averaged weights
    assert all((v == own[k]).all() for k, v in model.named_state().items())
    averaged = toy_model(seed=5)
    ema.copy_to(averaged)
    numpy.testing.assert_array_equal(model.predict(x, ema=ema), averaged.predict(x))
    assert not numpy.array_equal(model.predict(x), averaged.predict(x))
    with pytest.raises(ValueError, match="another model"):
        evaluate(averaged, x, y, ema=ema)
