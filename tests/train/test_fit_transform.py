"""fit(..., transform=...): every training batch augmented (the validation data never), the transform's state
in the checkpoint, and a run stopped mid-epoch by Ctrl-C resumed bitwise equal to an uninterrupted one."""
import os
import signal

import numpy
import pytest

import gpucnn
from gpucnn.data.batches import BatchIterator
from gpucnn.data.transforms import Compose, RandomCrop, RandomErasing, RandomHorizontalFlip
from gpucnn.io.arrays import CheckpointError
from gpucnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim import Adam
from gpucnn.train.checkpoint import read_training_meta, save_training_checkpoint
from gpucnn.train.loop import fit
from support.toy import quadrant_images

EPOCHS, BATCH, N = 3, 16, 88  # 6 steps an epoch, the last one of 8 samples


def toy_data(n=N, seed=0):
    return quadrant_images(n, seed)


def toy_model(seed=0):
    return gpucnn.Sequential([Conv2D(1, 4, 3, padding="same", rng=seed), ReLU(), MaxPool2D(2), Flatten(),
                              Dense(64, 4, rng=seed)])


def augment(seed=5):
    return Compose([RandomCrop(8, padding=1, padding_mode="reflect"), RandomHorizontalFlip(),
                    RandomErasing(p=0.5)], seed=seed)


class Recorded(Compose):
    """The augmentation, keeping every batch it was given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs = []

    def __call__(self, x):
        self.inputs.append(x.copy())
        return super().__call__(x)


def train(epochs=EPOCHS, transform=None, checkpoint=None, resume=False, loss_fn=None, validation=True):
    model = toy_model()
    opt = Adam(model.parameters(), lr=1e-2)
    x, y = toy_data()
    history = fit(model, loss_fn or SoftmaxCrossEntropy(), opt, x, y, epochs, batch_size=BATCH, seed=3,
                  validation=(x[:40], y[:40]) if validation else None, progress=False, checkpoint=checkpoint,
                  resume=resume, transform=transform if transform is not None else augment())
    return model, opt, history


def test_fit_trains_on_each_batch_as_the_transform_gives_it():
    model, opt, history = train(transform=augment())
    reference, t = toy_model(), augment()
    ref_opt = Adam(reference.parameters(), lr=1e-2)
    x, y = toy_data()
    loss_fn = SoftmaxCrossEntropy()
    batches = BatchIterator(x, y, BATCH, seed=3)
    for _ in range(EPOCHS):
        for xb, yb in batches:
            loss_fn.forward(reference.forward(t(xb)), yb)
            ref_opt.zero_grad()
            reference.backward(loss_fn.backward(), need_input_grad=False)
            ref_opt.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)
    plain = train(transform=Compose([]))[0]
    assert not numpy.array_equal(plain.parameters()[0].data, model.parameters()[0].data)


def test_only_training_batches_are_transformed():
    recorded = Recorded([RandomHorizontalFlip()], seed=0)
    train(epochs=2, transform=recorded)
    sizes = [len(b) for b in recorded.inputs]
    assert sizes == ([BATCH] * 5 + [N % BATCH]) * 2  # the 40 validation images never pass through it


def test_the_checkpoint_holds_the_transform_state_and_a_bad_one_is_refused(tmp_path):
    path = str(tmp_path / "c.npz")
    t = augment()
    train(epochs=1, transform=t, checkpoint=path)
    meta = read_training_meta(path)
    assert meta["transform"] == t.state()
    fresh = augment(seed=11)
    before = fresh.state()
    meta_bad = dict(meta, transform={"rng": {"bit_generator": "MT19937"}})
    model = toy_model()
    save_training_checkpoint(path, model, Adam(model.parameters(), lr=1e-2), None,
                             {k: meta_bad[k] for k in ("epoch", "step", "batches", "history", "partial",
                                                       "batch_size", "num_samples", "info", "transform")})
    with pytest.raises(CheckpointError, match="bit generator 'MT19937'"):
        train(epochs=2, transform=fresh, checkpoint=path, resume=True)
    assert fresh.state() == before


def test_ctrl_c_mid_epoch_then_resume_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    ckpt = str(tmp_path / "c.npz")
    calls = {"n": 0}

    class InterruptingLoss(SoftmaxCrossEntropy):
        def forward(self, logits, labels):
            if logits.shape[0] != 40:  # training steps only
                calls["n"] += 1
                if calls["n"] == 9:  # mid-way through epoch 2
                    os.kill(os.getpid(), signal.SIGINT)
            return super().forward(logits, labels)

    with pytest.raises(KeyboardInterrupt, match="checkpoint written"):
        train(checkpoint=ckpt, loss_fn=InterruptingLoss(), transform=augment())
    assert read_training_meta(ckpt)["step"] == 3
    resumed_t, straight_t = augment(seed=77), augment()  # the resumed one's state must come from the file
    resumed = train(checkpoint=ckpt, resume=True, transform=resumed_t)
    straight = train(transform=straight_t)
    for p, q in zip(resumed[0].parameters(), straight[0].parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)
    assert resumed[2]["loss"] == straight[2]["loss"] and resumed[2]["val_loss"] == straight[2]["val_loss"]
    assert resumed_t.state()["rng"] == straight_t.state()["rng"]
