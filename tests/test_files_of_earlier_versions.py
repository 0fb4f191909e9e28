"""Files written by gpucnn before the re-layout (commit 693b199: gpucnn/model.py, gpucnn/train.py, ...) load
in this one: a saved model, its recorded architecture, and a training checkpoint that resumes.

tests/fixtures/v0_1_*.npz were written by that version: a small Conv2D/BatchNorm2D/ReLU/MaxPool2D/
Flatten/Dense model trained 2 epochs with Adam and StepLR (seed 1), then saved; v0_1_expected.npz
holds 4 inputs and that version's logits for them in eval mode.
"""
from pathlib import Path

import numpy

import gpucnn
from gpucnn.io.arrays import CheckpointReader
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU

FIXTURES = Path(__file__).parent / "fixtures"


def _build():
    return gpucnn.Sequential([Conv2D(1, 4, 3, padding="same", rng=5), BatchNorm2D(4), ReLU(), MaxPool2D(2),
                              Flatten(), Dense(4 * 4 * 4, 3, rng=6)])


def _expected():
    with numpy.load(FIXTURES / "v0_1_expected.npz") as data:
        return data["x"], data["logits"]


def test_a_model_saved_by_the_earlier_layout_loads_and_computes_the_same():
    x, logits = _expected()
    model = _build().load(FIXTURES / "v0_1_model.npz").eval()
    numpy.testing.assert_allclose(model.forward(x), logits, rtol=1e-5, atol=1e-6)
    assert model.input_shape == (1, 8, 8)


def test_its_recorded_architecture_rebuilds_the_model():
    x, logits = _expected()
    with CheckpointReader(FIXTURES / "v0_1_model.npz") as reader:
        spec = reader.meta["architecture"]
    model = gpucnn.architecture.build(spec).load(FIXTURES / "v0_1_model.npz").eval()
    numpy.testing.assert_allclose(model.forward(x), logits, rtol=1e-5, atol=1e-6)


def test_a_training_checkpoint_of_the_earlier_layout_resumes(tmp_path):
    checkpoint = tmp_path / "c.npz"
    checkpoint.write_bytes((FIXTURES / "v0_1_checkpoint.npz").read_bytes())
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((24, 1, 8, 8)).astype(numpy.float32)
    y = rng.integers(0, 3, 24)
    model = _build()
    opt = gpucnn.optim.Adam(model.parameters(), lr=1e-2)
    history = gpucnn.train.fit(model, gpucnn.losses.SoftmaxCrossEntropy(), opt, x, y, 3, batch_size=8, seed=1,
                               progress=False, checkpoint=str(checkpoint), resume=True,
                               scheduler=gpucnn.optim.StepLR(opt, 1, 0.5))
    assert history["epoch"] == [1, 2, 3] and history["lr"] == [1e-2, 5e-3, 2.5e-3]
    assert all(numpy.isfinite(history["loss"]))
