"""A saved model records its architecture; build() makes the same model from it."""
import json

import numpy
import pytest

import gpucnn
from gpucnn.nn.architecture import ArchitectureError, build, describe
from gpucnn.nn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU,
    MaxPool2D, ReLU, Sigmoid, Tanh)
from gpucnn.nn.layers.base import Layer


def every_layer(dtype=numpy.float32):
    return gpucnn.Sequential([
        Conv2D(2, 3, (3, 2), stride=(1, 2), padding=(1, 0), bias=False, dtype=dtype), BatchNorm2D(3, dtype=dtype),
        LeakyReLU(0.2), AvgPool2D(2, stride=1, padding=1), Conv2D(3, 3, 4, padding="same", dtype=dtype),
        MaxPool2D(3, stride=2), Sigmoid(), Dropout(0.25), Flatten(), Dense(18, 5, dtype=dtype),
        BatchNorm1D(5, eps=1e-3, momentum=0.2, dtype=dtype), Tanh(), ReLU(), Dense(5, 2, bias=False, dtype=dtype)])


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_build_makes_the_same_model(dtype, rng):
    model = every_layer(dtype)
    spec = json.loads(json.dumps(describe(model, (2, 6, 8))))  # survives JSON, as in a file
    assert spec["input_shape"] == [2, 6, 8]
    rebuilt = build(spec)
    assert [repr(layer) for layer in rebuilt.layers] == [repr(layer) for layer in model.layers]
    rebuilt.load_state_dict(model.state_dict())
    x = rng.random((3, 2, 6, 8)).astype(dtype)
    numpy.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))


def test_dilated_grouped_convolutions_are_rebuilt(rng):
    model = gpucnn.Sequential([Conv2D(4, 6, 3, padding="same", dilation=2, groups=2, rng=0), ReLU(),
                               Conv2D(6, 6, (2, 3), padding=(0, 0), dilation=(2, 1), groups=6, rng=1)])
    rebuilt = build(json.loads(json.dumps(describe(model, (4, 10, 9)))))
    assert [repr(layer) for layer in rebuilt.layers] == [repr(layer) for layer in model.layers]
    assert rebuilt.layers[2].dilation == (2, 1) and rebuilt.layers[2].groups == 6
    rebuilt.load_state_dict(model.state_dict())
    x = rng.random((2, 4, 10, 9)).astype(numpy.float32)
    numpy.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))


def test_a_foreign_layer_has_no_description():
    class Custom(Layer):
        def forward(self, x):
            return x

    assert describe(gpucnn.Sequential([Flatten(), Custom()])) is None


def test_a_broken_description_is_a_clear_error():
    with pytest.raises(ArchitectureError, match="unknown layer type 'Mystery'"):
        build({"layers": [{"type": "Mystery", "args": {}}]})
    with pytest.raises(ArchitectureError, match="cannot rebuild"):
        build({"layers": [{"type": "Dense", "args": {"in_features": 3}}]})


def test_save_records_the_architecture_and_the_input_shape(tmp_path, rng):
    model = gpucnn.models.lenet5(rng=0)
    model.forward(rng.random((2, 1, 28, 28), dtype=numpy.float32))
    model.save(tmp_path / "m.npz")
    _, meta = gpucnn.io.arrays.load_arrays(tmp_path / "m.npz")
    assert meta["architecture"]["input_shape"] == [1, 28, 28]
    assert build(meta["architecture"]).summary((1, 28, 28), print_fn=None).total_params == 61_706


def test_load_remembers_the_recorded_input_shape(tmp_path, rng):
    model = gpucnn.models.lenet5(rng=0)
    model.forward(rng.random((2, 1, 28, 28), dtype=numpy.float32))
    model.save(tmp_path / "m.npz")
    other = gpucnn.models.lenet5(rng=1).load(tmp_path / "m.npz")
    assert other.input_shape == (1, 28, 28)
    assert other.summary(print_fn=None).total_params == 61_706
