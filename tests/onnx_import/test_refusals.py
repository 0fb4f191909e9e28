"""What gpucnn.onnx.load refuses: one line naming the op, its node and the opset; nothing is returned half-built."""
import numpy
import pytest

import gpucnn
from gpucnn.io.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'gpucnn[onnx]')")
helper, TensorProto = onnx.helper, onnx.TensorProto


def graph_of(nodes, inputs, outputs, initializers=(), opset=17):
    """A ModelProto of ``nodes`` with float inputs/outputs given as (name, shape)."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        initializer=[onnx.numpy_helper.from_array(numpy.asarray(a), n) for n, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def weights(*shape):
    return numpy.random.default_rng(0).standard_normal(shape).astype(numpy.float32)


def refused(proto, match):
    with pytest.raises(OnnxImportError, match=match) as info:
        gpucnn.onnx.load(proto)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_an_unsupported_op_is_named_with_its_node_and_opset():
    proto = graph_of([helper.make_node("Relu", ["x"], ["h"], name="r"), helper.make_node("Exp", ["h"], ["y"],
                                                                                         name="the_exp")],
                     [("x", ["N", 3])], [("y", ["N", 3])])
    message = refused(proto, r"op Exp \(node 'the_exp', opset 17\) is not supported")
    assert "Conv" in message and "Gemm" in message  # what it does import


def test_a_weight_computed_at_run_time_is_refused():
    proto = graph_of([helper.make_node("Relu", ["w0"], ["w"]), helper.make_node("MatMul", ["x", "w"], ["y"],
                                                                                name="mm")],
                     [("x", ["N", 3]), ("w0", [3, 2])], [("y", ["N", 2])])
    refused(proto, r"MatMul node 'mm' \(opset 17\): input 1 \('w'\) must be an initializer or a Constant")


@pytest.mark.parametrize("attrs, match", [
    ({"transA": 1}, "transA=1"),
    ({"alpha": 2.0, "beta": 0.5}, None),  # folded into the Dense: accepted
])
def test_gemm_maps_onto_dense_or_is_refused(attrs, match):
    b, c = weights(3, 4), weights(4)
    proto = graph_of([helper.make_node("Gemm", ["x", "b", "c"], ["y"], name="fc", **attrs)], [("x", ["N", 3])],
                     [("y", ["N", 4])], [("b", b), ("c", c)])
    if match:
        refused(proto, match)
        return
    x = weights(5, 3)
    numpy.testing.assert_allclose(gpucnn.onnx.load(proto).predict(x), 2.0 * x @ b + 0.5 * c, rtol=1e-5, atol=1e-6)


def test_a_bias_per_sample_is_refused():
    proto = graph_of([helper.make_node("Gemm", ["x", "b", "c"], ["y"], name="fc")], [("x", [5, 3])],
                     [("y", [5, 4])], [("b", weights(3, 4)), ("c", weights(5, 4))])
    refused(proto, r"C of shape \(5, 4\) is not one bias per output feature")


def test_an_unknown_attribute_is_refused():
    proto = graph_of([helper.make_node("Relu", ["x"], ["y"], name="r", fancy=1)], [("x", ["N", 3])],
                     [("y", ["N", 3])])
    refused(proto, "attribute fancy is not supported")


def test_shapes_batch_dynamic_rest_fixed_and_declared_outputs_checked():
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    refused(graph_of(relu, [("x", ["N", "C"])], [("y", ["N", 3])]), r"dimension 1 is not fixed \(C\)")
    refused(graph_of(relu, [("x", ["N", 3])], [("y", ["N", 4])]), r"declares samples of shape \(4,\), the model "
                                                                   r"computes \(3,\)")
    model = gpucnn.onnx.load(graph_of(relu, [("x", [2, 3])], [("y", [2, 3])]))
    assert model.predict(-numpy.ones((7, 3), numpy.float32)).shape == (7, 3)  # a fixed batch of 2 kept dynamic


def test_integer_inputs_and_training_mode_batchnorm_are_refused():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.INT32, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 3])])
    refused(helper.make_model(graph), "element type INT32; gpucnn imports float and double tensors")
    stats = [("s", weights(3)), ("b", weights(3)), ("m", weights(3)), ("v", numpy.ones(3, numpy.float32))]
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", training_mode=1)
    refused(graph_of([bn], [("x", ["N", 3, 2, 2])], [("y", ["N", 3, 2, 2])], stats), r"training_mode=1")


def test_a_reshape_across_the_batch_is_refused_and_one_that_flattens_is_a_flatten():
    shape = numpy.array([-1, 12], numpy.int64)
    proto = graph_of([helper.make_node("Reshape", ["x", "s"], ["y"], name="flat")], [("x", ["N", 3, 2, 2])],
                     [("y", ["N", 12])], [("s", shape)])
    model = gpucnn.onnx.load(proto)
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten"]
    proto = graph_of([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [("x", ["N", 3, 2, 2])],
                     [("y", [6, 6])], [("s", numpy.array([-1, 6], numpy.int64))])
    refused(proto, r"Reshape node 'rs' \(opset 17\): shape \[-1, 6\] does not keep the batch")


def test_shape_arithmetic_is_followed_into_a_reshape_and_refused_elsewhere():
    index = numpy.array(0, numpy.int64)
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i"], ["b"]),
             helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]), helper.make_node("Concat", ["b1", "rest"], ["t"],
                                                                                   axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"], name="rs")]
    inits = [("i", index), ("axes", numpy.array([0], numpy.int64)), ("rest", numpy.array([-1], numpy.int64))]
    model = gpucnn.onnx.load(graph_of(nodes, [("x", ["N", 2, 3])], [("y", ["N", 6])], inits))
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten"]
    moved = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s2"], ["y"], name="rs"),
             helper.make_node("Gather", ["s", "perm"], ["s2"])]
    moved[1], moved[2] = moved[2], moved[1]
    refused(graph_of(moved, [("x", ["N", 2, 3])], [("y", [3, "N", 2])], [("perm", numpy.array([2, 0, 1]))]),
            r"Reshape node 'rs' \(opset 17\): shape \[3, 'batch', 2\] moves the batch")
    data_gather = [helper.make_node("Gather", ["x", "i"], ["y"], name="g")]
    refused(graph_of(data_gather, [("x", ["N", 3])], [("y", [3])], [("i", index)]),
            r"Gather node 'g' \(opset 17\): gpucnn follows Gather on shapes")


def test_layer_names_are_identifiers_unique_in_the_model():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="/block/Relu"), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"], name="3rd layer")]
    model = gpucnn.onnx.load(graph_of(nodes, [("x", ["N", 3])], [("y", ["N", 3])]))
    assert model.node_names == ["block_Relu", "relu", "relu_2", "sigmoid_3rd_layer"]


def test_a_node_without_a_name_is_named_by_its_place():
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Erf", ["h"], ["y"])]
    refused(graph_of(nodes, [("x", ["N", 3])], [("y", ["N", 3])]), r"op Erf \(node #1 \(unnamed\), opset 17\)")
