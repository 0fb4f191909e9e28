"""Global and adaptive pooling in files: architecture round trips, the files of earlier versions (a Flatten after
GlobalAvgPool2D, which returned (N, C, 1, 1) then), and ONNX export run in onnxruntime equal to gpucnn."""
import json

import numpy
import pytest

import gpucnn
from gpucnn.io.arrays import CheckpointReader
from gpucnn.nn import architecture
from gpucnn.nn.layers import AdaptiveAvgPool2D, Conv2D, Dense, Flatten, GlobalAvgPool2D, GlobalMaxPool2D, ReLU

F32, F64 = numpy.float32, numpy.float64


def net(dtype=F32):
    return gpucnn.Sequential([Conv2D(2, 4, 3, padding=1, dtype=dtype, rng=0), ReLU(), AdaptiveAvgPool2D((3, None)),
                              GlobalMaxPool2D(), Dense(4, 3, dtype=dtype, rng=1)])


def test_the_architecture_records_and_rebuilds_every_argument(tmp_path):
    model = net()
    spec = json.loads(json.dumps(architecture.describe(model, (2, 6, 5))))  # what a file holds
    assert spec["layers"][2] == {"type": "AdaptiveAvgPool2D", "args": {"output_size": [3, None]}}
    assert spec["layers"][3] == {"type": "GlobalMaxPool2D", "args": {}}
    rebuilt = architecture.build(spec)
    assert [repr(layer) for layer in rebuilt.layers[2:4]] == ["AdaptiveAvgPool2D(output_size=(3, None))",
                                                            "GlobalMaxPool2D()"]
    assert rebuilt.layers[2].output_size == (3, None)
    model.save(tmp_path / "m.npz")
    with CheckpointReader(tmp_path / "m.npz") as reader:
        loaded = architecture.build(reader.meta["architecture"]).load(tmp_path / "m.npz")
    x = numpy.random.default_rng(0).standard_normal((3, 2, 6, 5)).astype(F32)
    numpy.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_a_file_of_an_earlier_version_with_a_flatten_after_the_global_pool_computes_the_same(tmp_path):
    """Earlier files hold GlobalAvgPool2D then Flatten (its output was (N, C, 1, 1)); Flatten of (N, C) is a no-op,
    so they load and give mean-of-each-map then the Dense, as then."""
    spec = {"layers": [
        {"type": "Conv2D", "args": {"in_channels": 2, "out_channels": 3, "kernel_size": [3, 3], "stride": [1, 1],
                                    "padding": [1, 1], "dilation": [1, 1], "groups": 1, "bias": True}},
        {"type": "GlobalAvgPool2D", "args": {}}, {"type": "Flatten", "args": {}},
        {"type": "Dense", "args": {"in_features": 3, "out_features": 2, "bias": True}}],
        "dtype": "float64", "input_shape": [2, 5, 5]}
    model = architecture.build(spec)
    x = numpy.random.default_rng(1).standard_normal((4, 2, 5, 5))
    conv, dense = model.layers[0], model.layers[3]
    expected = conv.forward(x).mean(axis=(2, 3)) @ dense.weight.data.T + dense.bias.data
    numpy.testing.assert_allclose(model.forward(x), expected, rtol=1e-13, atol=1e-14)
    grad = model.backward(numpy.ones((4, 2)))
    assert grad.shape == x.shape


def test_a_model_saved_with_the_old_flatten_rebuilds_and_computes_the_same(tmp_path):
    x = gpucnn.Input((2, 6, 6), dtype=F64)
    h = ReLU()(Conv2D(2, 3, 3, dtype=F64, rng=0)(x))
    model = gpucnn.Model(x, Dense(3, 2, dtype=F64, rng=1, name="fc")(Flatten()(GlobalAvgPool2D()(h))))
    model.save(tmp_path / "m.npz")
    with CheckpointReader(tmp_path / "m.npz") as reader:
        rebuilt = architecture.build(reader.meta["architecture"]).load(tmp_path / "m.npz")
    inputs = numpy.random.default_rng(2).standard_normal((3, 2, 6, 6))
    numpy.testing.assert_array_equal(rebuilt.forward(inputs), model.forward(inputs))


def test_resnet_ends_in_the_global_pool_and_its_dense_without_a_flatten():
    model = gpucnn.nn.resnet.resnet8(in_channels=1, input_size=8, rng=0)
    assert [type(node.layer).__name__ for node in model.nodes][-2:] == ["GlobalAvgPool2D", "Dense"]
    assert model.nodes[-2].output.shape == (64,)
    assert model.forward(numpy.zeros((2, 1, 8, 8), F32)).shape == (2, 10)


# ----------------------------------------------------------------------------- ONNX


def run_onnx(proto, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def assert_same_outputs(got, want):
    numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(numpy.abs(want).max()))


@pytest.mark.parametrize("pool, shape, ops", [
    (GlobalAvgPool2D, (3, 7, 5), ["GlobalAveragePool", "Flatten"]),
    (GlobalMaxPool2D, (3, 7, 5), ["GlobalMaxPool", "Flatten"]),
    (lambda: AdaptiveAvgPool2D((2, None)), (3, 8, 5), ["AveragePool"]),
    (lambda: AdaptiveAvgPool2D(1), (3, 7, 5), ["AveragePool"]),
    (lambda: AdaptiveAvgPool2D((4, 5)), (3, 8, 5), ["AveragePool"]),
], ids=["global_avg", "global_max", "adaptive_2xNone", "adaptive_1", "adaptive_same_width"])
def test_onnx_export_runs_in_onnxruntime_equal_to_gpucnn(pool, shape, ops):
    pytest.importorskip("onnx")
    layer = pool()
    probe = layer.forward(numpy.zeros((1, 6) + shape[1:], F32))  # the pool's output for the convolution's 6 maps
    model = gpucnn.Sequential([Conv2D(shape[0], 6, 1, rng=0), ReLU(), layer] + ([] if probe.ndim == 2 else [Flatten()])
                              + [Dense(probe[0].size, 4, rng=1)])
    proto = gpucnn.onnx.to_onnx(model, shape)
    pool_ops = [n.op_type for n in proto.graph.node if n.name.startswith("2.")]
    assert pool_ops == ops
    x = numpy.random.default_rng(3).standard_normal((5,) + shape).astype(F32)
    assert_same_outputs(run_onnx(proto, x), model.eval().forward(x))


def test_onnx_export_follows_shapes_through_a_model_and_a_nested_chain():
    pytest.importorskip("onnx")
    x = gpucnn.Input((2, 9, 6))
    h = gpucnn.Sequential([Conv2D(2, 3, 3, padding=1, rng=0), ReLU(), AdaptiveAvgPool2D((3, 2))], name="body")(x)
    y = Dense(3, 2, rng=1, name="fc")(GlobalMaxPool2D()(AdaptiveAvgPool2D(1)(h)))
    model = gpucnn.Model(x, y)
    inputs = numpy.random.default_rng(4).standard_normal((3, 2, 9, 6)).astype(F32)
    assert_same_outputs(run_onnx(gpucnn.onnx.to_onnx(model, (2, 9, 6)), inputs), model.eval().forward(inputs))


def test_an_adaptive_pool_with_uneven_bins_is_refused_naming_it_and_the_sizes():
    pytest.importorskip("onnx")
    model = gpucnn.Sequential([Conv2D(2, 3, 1, rng=0), AdaptiveAvgPool2D((3, 2)), Flatten()])
    with pytest.raises(gpucnn.onnx.ExportError, match=r"layer 1 \(AdaptiveAvgPool2D\(output_size=\(3, 2\)\)\) has "
                                                      r"no ONNX form for inputs of size 7x4.*3x2 divides"):
        gpucnn.onnx.to_onnx(model, (2, 7, 4))


def test_an_exported_global_pool_imports_back_as_the_same_layer(tmp_path):
    """ONNX's global pools followed by Flatten import as gpucnn's layers (gpucnn/io/onnx_ops.py) and compute the
    same outputs."""
    pytest.importorskip("onnx")
    model = gpucnn.Sequential([Conv2D(2, 3, 3, rng=0), GlobalMaxPool2D(), Dense(3, 2, rng=1)])
    gpucnn.onnx.export(model, tmp_path / "m.onnx", (2, 6, 6))
    imported = gpucnn.onnx.load(tmp_path / "m.onnx")
    names = [type(layer).__name__ for layer in getattr(imported, "layers", [])]
    assert "GlobalMaxPool2D" in names or any(type(n.layer).__name__ == "GlobalMaxPool2D" for n in imported.nodes)
    x = numpy.random.default_rng(5).standard_normal((4, 2, 6, 6)).astype(F32)
    numpy.testing.assert_allclose(imported.eval().forward(x), model.eval().forward(x), rtol=1e-5, atol=1e-6)
