"""model.predict(): eval mode, batches, the model's device; softmax for probabilities."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.functional import softmax
from gpucnn.nn.layers import BatchNorm1D, Dense, Dropout, ReLU
from support.helpers import assert_close, dev, to_numpy


def model_with_mode_dependent_layers():
    return gpucnn.Sequential([Dense(5, 8, rng=0), BatchNorm1D(8), ReLU(), Dropout(0.5, rng=0), Dense(8, 3, rng=1)])


def test_predict_is_batched_eval_forward_and_restores_the_mode(rng):
    model = model_with_mode_dependent_layers()
    x = rng.random((23, 5), dtype=numpy.float32)
    model.forward(x)  # training step: running statistics move away from their start
    expected = model.eval().forward(x)
    model.train()
    out = model.predict(x, batch_size=4)
    assert model.training
    assert_close(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_predict_moves_inputs_to_the_model(device, rng):
    model = model_with_mode_dependent_layers().to(device)
    out = model.predict(rng.random((9, 5), dtype=numpy.float32), batch_size=4)
    assert gpucnn.backend.device_of(out) == model.device


def test_predict_refuses_bad_arguments(rng):
    model = model_with_mode_dependent_layers()
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(rng.random((4, 5)), batch_size=0)
    with pytest.raises(ValueError, match="non-empty"):
        model.predict(numpy.zeros((0, 5), numpy.float32))
    with pytest.raises(TypeError, match="array"):
        model.predict([[1.0] * 5])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_softmax_rows_sum_to_one_and_survive_huge_logits(device):
    logits = numpy.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]])
    probs = to_numpy(softmax(dev(logits, device)))
    e = numpy.exp([1.0, 2.0, 3.0])
    assert_close(probs[0], e / e.sum(), rtol=1e-12, atol=0)
    assert_close(probs[1], [0.5, 0.5, 0.0], rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="floating-point"):
        softmax(numpy.array([1, 2]))
