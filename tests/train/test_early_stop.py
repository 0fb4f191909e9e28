"""fit's on_epoch_end may stop training: returning True ends it after that epoch, checkpoint written."""
import os
import sys

import numpy

import gpucnn
from gpucnn.optim import Adam
from gpucnn.train import fit
from gpucnn.train.checkpoint import read_training_meta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from test_train import toy_data, toy_model  # noqa: E402


def _fit(epochs, on_epoch_end, checkpoint=None):
    x, y = toy_data()
    model = toy_model()
    history = fit(model, gpucnn.losses.SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-2), x, y, epochs,
                  batch_size=32, progress=False, on_epoch_end=on_epoch_end, checkpoint=checkpoint, graph=False)
    return model, history


def test_returning_true_stops_after_that_epoch(tmp_path):
    seen = []
    model, history = _fit(6, lambda h: seen.append(len(h["epoch"])) or len(h["epoch"]) == 2,
                          checkpoint=str(tmp_path / "ckpt.npz"))
    assert seen == [1, 2] and history["epoch"] == [1, 2]
    straight, _ = _fit(2, None)
    for a, b in zip(model.parameters(), straight.parameters()):
        numpy.testing.assert_array_equal(a.data, b.data)  # the first two epochs are those of a 2-epoch run
    assert read_training_meta(str(tmp_path / "ckpt.npz"))["epoch"] == 2  # the stopping epoch's checkpoint


def test_other_return_values_do_not_stop():
    _, history = _fit(3, lambda h: 1)  # only True stops: a callback that returns something else trains on
    assert history["epoch"] == [1, 2, 3]
