"""Issue 18's pooling and padding options: float64 numerical gradients (gpucnn.gradcheck), training with fit on
the CPU fast path equal to the reference path, and saved files (the architecture record, older [ph, pw]
records included) rebuilding every option."""
import numpy
import pytest

import gpucnn
from gpucnn.io.arrays import CheckpointReader
from gpucnn.nn import architecture
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.nn.sequential import Sequential
from gpucnn.optim.optimizers import SGD
from gpucnn.train.loop import fit

F64 = numpy.float64

LAYERS = {
    "max dilation": lambda: MaxPool2D(3, stride=1, padding=1, dilation=2),
    "max ceil": lambda: MaxPool2D(3, stride=2, padding=1, ceil_mode=True),
    "max dilated ceil": lambda: MaxPool2D((3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1), ceil_mode=True),
    "max asymmetric": lambda: MaxPool2D(2, stride=2, padding=((1, 0), (0, 1))),
    "max same stride 2": lambda: MaxPool2D(3, stride=2, padding="same"),
    "avg ceil": lambda: AvgPool2D(3, stride=2, padding=1, ceil_mode=True),
    "avg exclude pad": lambda: AvgPool2D(3, stride=2, padding=1, count_include_pad=False),
    "avg ceil exclude pad": lambda: AvgPool2D(2, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    "avg asymmetric exclude pad": lambda: AvgPool2D(3, stride=2, padding=((0, 1), (1, 0)), count_include_pad=False),
    "avg same stride 2": lambda: AvgPool2D(2, stride=2, padding="same", count_include_pad=False),
    "conv asymmetric": lambda: Conv2D(2, 3, 3, padding=((1, 0), (2, 1)), dtype=F64, rng=0),
    "conv same stride 2": lambda: Conv2D(2, 3, 4, stride=2, padding="same", dtype=F64, rng=0),
}


def _distinct_input(shape, seed=0):
    """Values far apart, so that no max pool's argmax changes within the finite-difference step."""
    values = numpy.random.default_rng(seed).permutation(int(numpy.prod(shape))).astype(F64)
    return (values * 0.01).reshape(shape)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("size", [(7, 8), (9, 9)])
def test_gradcheck_float64(name, size):
    check_layer(LAYERS[name](), _distinct_input((2, 2) + size))


def _model(name):
    """Conv, ReLU, the layer under test, Flatten, Dense, sized for 9x9 inputs."""
    layers = [Conv2D(1, 2, 3, padding=1, dtype=F64, rng=1), ReLU(), LAYERS[name]()]
    shape = Sequential(layers).forward(numpy.zeros((1, 1, 9, 9))).shape
    return Sequential(layers + [Flatten(), Dense(int(numpy.prod(shape[1:])), 3, dtype=F64, rng=2)])


def _fit_on(path, name, x, y):
    before, gpucnn.config.path = gpucnn.config.path, path
    try:
        model = _model(name)
        history = fit(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1, momentum=0.9), x, y, 2,
                      batch_size=4, seed=3, progress=False)
        return history["loss"], [p.data.copy() for p in model.parameters()]
    finally:
        gpucnn.config.path = before


@pytest.mark.parametrize("name", list(LAYERS))
def test_fit_on_the_fast_path_equals_the_reference(name):
    rng = numpy.random.default_rng(5)
    x, y = rng.standard_normal((8, 1, 9, 9)), rng.integers(0, 3, 8)
    ref_loss, ref_params = _fit_on("reference", name, x, y)
    fast_loss, fast_params = _fit_on("fast", name, x, y)
    numpy.testing.assert_allclose(fast_loss, ref_loss, rtol=1e-10)
    for a, b in zip(fast_params, ref_params):
        numpy.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_saved_file_rebuilds_the_options(name, tmp_path):
    model = _model(name)
    x = numpy.random.default_rng(0).standard_normal((2, 1, 9, 9))
    model.save(tmp_path / "m.npz")
    with CheckpointReader(tmp_path / "m.npz") as reader:
        record = reader.meta["architecture"]
    rebuilt = architecture.build(record)
    rebuilt.load(tmp_path / "m.npz")
    assert repr(rebuilt.layers[2]) == repr(model.layers[2]) and rebuilt.layers[2].window == model.layers[2].window
    numpy.testing.assert_array_equal(rebuilt.forward(x), model.forward(x))


def test_older_records_with_padding_h_w_still_load():
    record = {"layers": [
        {"type": "Conv2D", "args": {"in_channels": 1, "out_channels": 2, "kernel_size": [3, 3], "stride": [1, 1],
                                    "padding": [1, 0], "dilation": [1, 1], "groups": 1, "bias": True}},
        {"type": "MaxPool2D", "args": {"kernel_size": [2, 2], "stride": [2, 2], "padding": [1, 0]}},
        {"type": "AvgPool2D", "args": {"kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1]}}],
        "dtype": "float64"}
    conv, max_pool, avg_pool = architecture.build(record).layers
    assert (conv.window.pt, conv.window.pb, conv.window.pl, conv.window.pr) == (1, 1, 0, 0)
    assert (max_pool.window.pt, max_pool.window.pb, max_pool.window.pl, max_pool.window.pr) == (1, 1, 0, 0)
    assert not max_pool.window.ceil_mode and max_pool.window.dilated is False
    assert avg_pool.count_include_pad is True and not avg_pool.window.ceil_mode
    assert architecture.describe(Sequential([conv, max_pool, avg_pool]))["layers"] == record["layers"]


def test_the_report_describes_the_new_conv_paddings():
    from gpucnn.report.analysis import describe
    assert describe(Conv2D(1, 2, 3, stride=2, padding="same")).endswith("stride 2, padding 'same'")
    assert describe(Conv2D(1, 2, 3, padding=((1, 0), (1, 1)))).endswith("padding (1, 0, 1, 1)")
    assert describe(Conv2D(1, 2, 3, padding=1)).endswith("padding 1")
