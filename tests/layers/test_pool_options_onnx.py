"""ONNX export (opset 17) of the pooling options and of Conv2D's asymmetric / strided 'same' padding: the file run
in onnxruntime equals gpucnn."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.layers import AvgPool2D, Conv2D, MaxPool2D, ReLU
from gpucnn.nn.sequential import Sequential

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

LAYERS = {
    "max-ceil": lambda: MaxPool2D(3, 2, 1, ceil_mode=True),
    "max-dilated": lambda: MaxPool2D(3, 1, 1, dilation=2),
    "max-dilated-ceil": lambda: MaxPool2D(2, 2, 0, dilation=2, ceil_mode=True),
    "max-asymmetric": lambda: MaxPool2D(2, 2, ((0, 1), (1, 0))),
    "max-same-stride2": lambda: MaxPool2D(3, 2, "same"),
    "avg-ceil": lambda: AvgPool2D(3, 2, 1, ceil_mode=True),
    "avg-exclude-pad": lambda: AvgPool2D(3, 2, 1, count_include_pad=False),
    "avg-exclude-pad-ceil": lambda: AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False),
    "avg-asymmetric": lambda: AvgPool2D(3, 2, ((1, 0), (0, 1))),
    "avg-same-stride2": lambda: AvgPool2D(3, 2, "same", count_include_pad=False),
    "conv-same-stride2": lambda: Conv2D(3, 4, 3, stride=2, padding="same", rng=0),
    "conv-asymmetric": lambda: Conv2D(3, 4, 2, padding=((0, 1), (1, 0)), rng=0),
}


@pytest.mark.parametrize("size", [(9, 8), (10, 11)])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_export_runs_in_onnxruntime_equal_to_gpucnn(name, size, tmp_path):
    model = Sequential([Conv2D(3, 3, 1, rng=1), ReLU(), LAYERS[name]()])
    model.eval()
    x = numpy.random.default_rng(0).standard_normal((2, 3) + size).astype(numpy.float32)
    path = tmp_path / "m.onnx"
    gpucnn.onnx.export(model, path, (3,) + size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    want = model.forward(x)
    assert got.shape == want.shape
    numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(numpy.abs(want).max()))


def test_export_writes_explicit_attributes(tmp_path):
    model = Sequential([MaxPool2D(3, 2, ((0, 1), (1, 1)), dilation=(1, 2), ceil_mode=True),
                        AvgPool2D(2, ceil_mode=True, count_include_pad=False)])
    graph = gpucnn.onnx.to_onnx(model, (1, 12, 12)).graph
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} for node in graph.node]
    assert attrs[0]["pads"] == [0, 1, 1, 1] and attrs[0]["dilations"] == [1, 2] and attrs[0]["ceil_mode"] == 1
    assert attrs[1]["count_include_pad"] == 0 and attrs[1]["ceil_mode"] == 1
