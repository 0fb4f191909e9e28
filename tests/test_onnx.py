"""ONNX export, run back in onnxruntime (CPU) and held to gpucnn's own outputs."""

import numpy
import pytest

import gpucnn
from gpucnn.nn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU,
    MaxPool2D, ReLU, Sigmoid, Tanh)
from gpucnn.nn.layers.base import Layer

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'gpucnn[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: the exported files cannot be run")


def every_exportable_layer(rng=0):
    """Each exportable layer at least once, with 'same' padding on an even kernel and padded pooling."""
    return gpucnn.Sequential([
        Conv2D(3, 6, 4, padding="same", rng=rng), BatchNorm2D(6), LeakyReLU(0.1),
        AvgPool2D(3, stride=2, padding=1), Conv2D(6, 8, (3, 2), stride=(1, 2), padding=(1, 0), bias=False, rng=rng),
        ReLU(), MaxPool2D(2, stride=1, padding=1), Sigmoid(), Dropout(0.3, rng=rng), Flatten(),
        Dense(8 * 6 * 4, 12, rng=rng), BatchNorm1D(12), Tanh(), Dense(12, 4, bias=False, rng=rng),
    ])


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def assert_same_outputs(got, want):
    """Relative 1e-5, the absolute floor scaled to the outputs: float32 sums in another order differ by a few
    ulps of their terms, which near a zero output is no bound relative to that output."""
    numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(numpy.abs(want).max()))


@pytest.mark.parametrize("make, input_shape", [
    (gpucnn.models.fashion_cnn, (1, 28, 28)),
    (gpucnn.models.lenet5, (1, 28, 28)),
    (every_exportable_layer, (3, 9, 11)),
], ids=["fashion_cnn", "lenet5", "every_layer"])
def test_onnxruntime_gives_gpucnns_outputs(make, input_shape, tmp_path, rng):
    model = make(rng=1)
    x = rng.random((16,) + input_shape, dtype=numpy.float32)
    model.forward(x)  # train-mode pass: BatchNorm's running statistics move, so eval form is really tested
    path = tmp_path / "model.onnx"
    gpucnn.onnx.export(model, path, input_shape)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    ops = [node.op_type for node in proto.graph.node]
    assert "Dropout" not in ops
    for batch in (16, 3):  # the batch dimension is dynamic
        assert_same_outputs(run_onnx(path, x[:batch]), model.predict(x[:batch]))


def test_export_attributes(tmp_path):
    path = tmp_path / "m.onnx"
    gpucnn.onnx.export(every_exportable_layer(), path, (3, 9, 11))
    nodes = {node.name: node for node in onnx.load(str(path)).graph.node}
    attrs = {name: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} for name, node in nodes.items()}
    assert attrs["0.Conv2D"]["pads"] == [1, 1, 2, 2]  # 'same', kernel 4: the extra row/column at the bottom/right
    assert attrs["0.Conv2D"]["dilations"] == [1, 1] and attrs["0.Conv2D"]["group"] == 1
    assert attrs["3.AvgPool2D"]["count_include_pad"] == 1
    assert attrs["1.BatchNorm2D"]["epsilon"] == pytest.approx(1e-5)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_conv_node_carries_dilation_and_groups():
    conv = Conv2D(4, 6, 3, dilation=(2, 1), groups=2, rng=0)
    graph = gpucnn.onnx._Graph(onnx, numpy.float32)
    gpucnn.onnx._conv(graph, conv, "input", "0.Conv2D", 0)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in graph.nodes[0].attribute}
    assert attrs["dilations"] == [2, 1] and attrs["group"] == 2


def test_dilated_grouped_convolutions_run_in_onnxruntime(tmp_path, rng):
    model = gpucnn.Sequential([Conv2D(4, 6, 3, padding="same", dilation=2, groups=2, rng=0), ReLU(),
                               Conv2D(6, 6, (2, 3), dilation=(2, 1), groups=6, rng=1)])
    x = rng.random((5, 4, 10, 9), dtype=numpy.float32)
    gpucnn.onnx.export(model, tmp_path / "m.onnx", (4, 10, 9))
    assert_same_outputs(run_onnx(tmp_path / "m.onnx", x), model.predict(x))


def test_unsupported_layer_is_named(tmp_path):
    class Swish(Layer):
        def forward(self, x):
            return x / (1 + numpy.exp(-x))

    model = gpucnn.Sequential([Flatten(), Dense(4, 4), Swish()])
    with pytest.raises(gpucnn.onnx.ExportError, match=r"layer 2 \(Swish\(\)\) has no ONNX form"):
        gpucnn.onnx.export(model, tmp_path / "m.onnx", (4,))
    assert not (tmp_path / "m.onnx").exists()


def test_an_input_shape_the_model_cannot_take(tmp_path):
    with pytest.raises(gpucnn.onnx.ExportError, match=r"inputs of shape \(N, 1, 32, 32\).*Dense"):
        gpucnn.onnx.export(gpucnn.models.fashion_cnn(), tmp_path / "m.onnx", (1, 32, 32))


def test_float64_models_export_in_float32(tmp_path, rng):
    model = gpucnn.models.lenet5(dtype=numpy.float64, rng=0)
    gpucnn.onnx.export(model, tmp_path / "m.onnx", (1, 28, 28))
    x = rng.random((2, 1, 28, 28))
    got = run_onnx(tmp_path / "m.onnx", x.astype(numpy.float32))
    assert got.dtype == numpy.float32
    numpy.testing.assert_allclose(got, model.predict(x), rtol=1e-4, atol=1e-5)


def test_an_empty_model_is_refused(tmp_path):
    with pytest.raises(gpucnn.onnx.ExportError, match="no layers"):
        gpucnn.onnx.export(gpucnn.Sequential([]), tmp_path / "m.onnx", (3,))
