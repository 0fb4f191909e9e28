"""Each imported op against onnxruntime on the same file: convolutions and pools with their options, global pools.

An option gpucnn's layers do not take yet (asymmetric pads, ceil_mode, ...) must be refused in one line that
says so; once the layer takes it, the same case is held to onnxruntime's outputs.
"""
import numpy
import pytest

import gpucnn
from gpucnn.io.onnx_import import OnnxImportError

from .support import assert_close

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'gpucnn[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
helper, TensorProto = onnx.helper, onnx.TensorProto


def one_node(op, x_shape, attrs, initializers=()):
    inputs = ["x"] + [name for name, _ in initializers]
    node = helper.make_node(op, inputs, ["y"], name="the_node", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[onnx.numpy_helper.from_array(a, n) for n, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def against_onnxruntime(proto, x, refusal=None):
    """gpucnn's outputs equal onnxruntime's, or (``refusal``: the layer option it needs) a one-line refusal."""
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    try:
        model = gpucnn.onnx.load(proto)
    except OnnxImportError as exc:
        assert refusal is not None and refusal in str(exc) and "the_node" in str(exc), str(exc)
        return None
    assert_close(model.predict(x), want, 1e-5)
    return model


X = numpy.random.default_rng(0).standard_normal((3, 4, 9, 8)).astype(numpy.float32)
W = numpy.random.default_rng(1).standard_normal((6, 2, 3, 2)).astype(numpy.float32)
B = numpy.random.default_rng(2).standard_normal(6).astype(numpy.float32)

CONV_CASES = {
    "symmetric": ({"pads": [1, 0, 1, 0], "strides": [2, 1]}, None),
    "dilated_grouped": ({"dilations": [2, 3], "group": 2, "pads": [2, 1, 2, 1]}, None),
    "valid": ({"auto_pad": "VALID", "strides": [1, 2]}, None),
    "same_upper_stride2": ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, "padding"),
    "same_lower": ({"auto_pad": "SAME_LOWER"}, "padding"),
    "asymmetric": ({"pads": [0, 1, 2, 0]}, "padding"),
}


@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv(name):
    attrs, refusal = CONV_CASES[name]
    group = attrs.get("group", 1)
    w = W if group == 2 else numpy.random.default_rng(1).standard_normal((6, 4, 3, 2)).astype(numpy.float32)
    against_onnxruntime(one_node("Conv", (4, 9, 8), attrs, [("w", w), ("b", B)]), X, refusal)


POOL_CASES = {
    "max_strided_padded": ("MaxPool", {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 1, 1, 1]}, None),
    "avg_unpadded": ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}, None),
    "avg_padded_counted": ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
                           None),
    "avg_padded_uncounted": ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, "count_include_pad"),
    "max_ceil": ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, "ceil_mode"),
    "max_ceil_without_effect": ("MaxPool", {"kernel_shape": [3, 2], "strides": [3, 2], "ceil_mode": 1}, None),
    "max_dilated": ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2]}, "dilation"),
    "max_same_upper": ("MaxPool", {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}, "padding"),
}


@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_pool(name):
    op, attrs, refusal = POOL_CASES[name]
    against_onnxruntime(one_node(op, (4, 9, 8), attrs), X, refusal)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools_keep_onnxs_four_dimensions(op):
    model = against_onnxruntime(one_node(op, (4, 9, 8), {}), X, refusal="GlobalMaxPool2D")
    if model is not None:
        assert model.outputs[0].shape == (4, 1, 1)


def test_gemm_with_alpha_beta_and_transposed_b_and_matmul_add_as_dense():
    x = X.reshape(3, -1)[:, :10]
    b, c = numpy.random.default_rng(3).standard_normal((5, 10)).astype(numpy.float32), B[:5]
    model = against_onnxruntime(one_node("Gemm", (10,), {"alpha": 0.5, "beta": 2.0, "transB": 1},
                                         [("b", b), ("c", c)]), x)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense"]
    nodes = [helper.make_node("MatMul", ["x", "m"], ["h"], name="mm"), helper.make_node("Add", ["bias", "h"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                              initializer=[onnx.numpy_helper.from_array(b.T.copy(), "m"),
                                           onnx.numpy_helper.from_array(c, "bias")])
    model = against_onnxruntime(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), x)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense"] and model.layers[0].bias is not None
