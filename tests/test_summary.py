"""model.summary(): rows, output shapes, totals; nothing trains while it looks."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU


def test_reference_network_has_421642_parameters(capsys):
    summary = gpucnn.models.fashion_cnn().summary((1, 28, 28))
    printed = capsys.readouterr().out
    assert summary.total_params == 421_642
    assert "Total params: 421,642" in printed and printed.strip() == str(summary)
    assert [row.output_shape for row in summary.rows] == [
        (32, 28, 28), (32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 14, 14), (64, 7, 7), (3136,), (128,), (128,),
        (10,)]
    assert [row.params for row in summary.rows] == [320, 0, 0, 18_496, 0, 0, 0, 401_536, 0, 1_290]
    assert "(None, 64, 7, 7)" in printed and "Dense(3136, 128" in printed


def test_lenet5_count():
    assert gpucnn.models.lenet5().summary((1, 28, 28), print_fn=None).total_params == 61_706


def test_input_shape_is_remembered_from_the_first_forward():
    model = gpucnn.models.lenet5()
    with pytest.raises(ValueError, match="input_shape"):
        model.summary()
    model.forward(numpy.zeros((3, 1, 28, 28), numpy.float32))
    assert model.summary(print_fn=None).input_shape == (1, 28, 28)


def test_summary_changes_nothing(rng):
    model = gpucnn.Sequential([Conv2D(1, 3, 3, rng=0), BatchNorm2D(3), ReLU(), Dropout(0.5, rng=0), MaxPool2D(2),
                               Flatten(), Dense(12, 2, rng=0)])
    x = rng.random((4, 1, 6, 6), dtype=numpy.float32)
    y = model.forward(x)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    dropout_rng = model.layers[3].rng.bit_generator.state
    summary = model.summary((1, 6, 6), print_fn=None)
    assert summary.buffer_values == 6 and "Buffers (not trained): 6 values" in str(summary)
    assert model.training and all(layer.training for layer in model.layers)
    assert model.layers[3].rng.bit_generator.state == dropout_rng
    for key, value in model.state_dict().items():
        numpy.testing.assert_array_equal(value, state[key])
    model.backward(numpy.ones_like(y))  # the saved activations of the real forward are still there


def test_a_shape_the_model_cannot_take_names_the_layer():
    with pytest.raises(ValueError, match="Dense: expected 3136 input features"):
        gpucnn.models.fashion_cnn().summary((1, 32, 32))


def test_a_refused_first_input_is_not_remembered():
    model = gpucnn.models.fashion_cnn()
    with pytest.raises(ValueError):
        model.forward(numpy.zeros((1, 1, 32, 32), numpy.float32))
    assert model.input_shape is None
