"""A Model exported to ONNX runs in onnxruntime equal to gpucnn (float32, relative 1e-5)."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.resnet import resnet8

from .test_model import tiny_resnet

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _trained_a_little(model, shape):
    """BatchNorm's running statistics away from (0, 1), so that the export's eval form is really checked."""
    x = numpy.random.default_rng(5).standard_normal((8,) + shape).astype(numpy.float32) * 2 + 0.5
    model.train().forward(x)
    return model.eval()


@pytest.mark.parametrize("build, shape", [(lambda: resnet8(in_channels=1, input_size=28, rng=0), (1, 28, 28)),
                                          (tiny_resnet, (3, 8, 8))])
def test_a_resnet_runs_in_onnxruntime_as_in_gpucnn(build, shape, tmp_path):
    model = _trained_a_little(build(), shape)
    path = gpucnn.onnx.export(model, tmp_path / "m.onnx", shape)
    x = numpy.random.default_rng(0).standard_normal((3,) + shape).astype(numpy.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    want = model.forward(x)
    numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(numpy.abs(want).max()))


def test_the_export_refuses_another_input_shape_and_names_nested_layers(tmp_path):
    model = resnet8(in_channels=1, input_size=28, rng=0)
    with pytest.raises(gpucnn.onnx.ExportError, match=r"built for inputs of shape \(1, 28, 28\)"):
        gpucnn.onnx.to_onnx(model, (1, 32, 32))
    proto = gpucnn.onnx.to_onnx(model, (1, 28, 28))
    names = {init.name for init in proto.graph.initializer}
    assert "layer2.0.shortcut.0.weight" in names and "fc.weight" in names
