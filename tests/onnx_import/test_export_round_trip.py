"""gpucnn.onnx.export -> gpucnn.onnx.load: the same outputs and gradients, parameters and buffers where they were."""
import functools

import numpy
import pytest

import gpucnn
from gpucnn.nn import layers as L

from .support import assert_close, every_option, outputs_and_gradients, warm_up

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'gpucnn[onnx]')")

MODELS = {
    "fashion_cnn": (gpucnn.models.fashion_cnn, (1, 28, 28)),
    "lenet5": (gpucnn.models.lenet5, (1, 28, 28)),
    "resnet8": (functools.partial(gpucnn.models.resnet8, in_channels=2, input_size=12), (2, 12, 12)),
    "every_option": (every_option, (4, 11, 10)),
}


def round_trip(make, shape, dtype=numpy.float32, seed=0):
    """(original in eval mode with moved BatchNorm statistics, its import, a batch of inputs)."""
    model = make(dtype=dtype, rng=1)
    x = numpy.random.default_rng(seed).random((5,) + shape).astype(dtype)
    warm_up(model, x)
    if dtype == numpy.float64:  # state that float32 holds exactly: the file (float32) loses nothing
        for key, value in model.state_dict().items():
            model.set_state(key, value.astype(numpy.float32).astype(numpy.float64))
    loaded = gpucnn.onnx.load(gpucnn.onnx.to_onnx(model, shape), dtype=dtype)
    return model, loaded, x


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_and_gradients_survive_the_round_trip_in_float32(name):
    model, loaded, x = round_trip(*MODELS[name])
    assert isinstance(loaded, gpucnn.Model) and not loaded.training
    assert [p.data.shape for p in loaded.parameters()] == [p.data.shape for p in model.parameters()]
    for mode in ("eval", "train"):
        if mode == "train" and name == "every_option":
            continue  # Dropout's masks come from each layer's own generator
        getattr(model, mode)(), getattr(loaded, mode)()
        want, got = outputs_and_gradients(model, x), outputs_and_gradients(loaded, x)
        assert_close(got[0], want[0], 1e-5)
        assert_close(got[1], want[1], 1e-5)
        for g, w in zip(got[2], want[2]):
            assert_close(g, w, 1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float64_round_trip_is_exact(name):
    model, loaded, x = round_trip(*MODELS[name], dtype=numpy.float64)
    assert all(p.data.dtype == numpy.float64 for p in loaded.parameters())
    want, got = outputs_and_gradients(model, x), outputs_and_gradients(loaded, x)
    numpy.testing.assert_array_equal(got[0], want[0])
    numpy.testing.assert_array_equal(got[1], want[1])
    for g, w in zip(got[2], want[2]):
        numpy.testing.assert_array_equal(g, w)


def test_initializers_become_parameters_and_buffers_named_after_their_nodes():
    model, loaded, _ = round_trip(*MODELS["resnet8"])
    state = loaded.state_dict()
    # the exporter names its nodes by the layers' paths ("conv1.Conv2D"): the names come back, as identifiers
    assert "conv1_Conv2D.weight" in state and "layer1_0_conv1_Conv2D.weight" in state
    assert "layer2_0_shortcut_1_BatchNorm2D.running_var" in state and "fc_Dense.bias" in state
    params = {id(p.data) for p in loaded.parameters()}
    assert id(state["bn1_BatchNorm2D.weight"]) in params and id(state["bn1_BatchNorm2D.running_mean"]) not in params
    numpy.testing.assert_array_equal(state["bn1_BatchNorm2D.running_mean"], model.state_dict()["bn1.running_mean"])
    assert loaded.node_names[0] == "conv1_Conv2D"


def test_the_batch_stays_dynamic_and_the_sample_shape_is_checked():
    model, loaded, x = round_trip(*MODELS["lenet5"])
    for batch in (1, 3, 5):
        assert_close(loaded.predict(x[:batch]), model.predict(x[:batch]), 1e-5)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(N, 1, 28, 28\)"):
        loaded.forward(numpy.zeros((2, 1, 27, 28), numpy.float32))


def test_a_loaded_model_saves_and_rebuilds_from_its_file(tmp_path):
    model, loaded, x = round_trip(*MODELS["every_option"])
    loaded.save(tmp_path / "m.npz")
    rebuilt = gpucnn.architecture.build(gpucnn.io.arrays.load_arrays(tmp_path / "m.npz")[1]["architecture"])
    rebuilt.load(tmp_path / "m.npz")
    numpy.testing.assert_array_equal(rebuilt.eval().predict(x), loaded.predict(x))


def test_layers_of_the_import_are_gpucnns_own():
    _, loaded, _ = round_trip(*MODELS["every_option"])
    kinds = {type(layer).__name__ for layer in loaded.leaf_layers()}
    assert {"Conv2D", "BatchNorm2D", "BatchNorm1D", "Concatenate", "Add", "Softmax"} <= kinds
    assert "Dropout" not in kinds  # the exporter writes none (the identity at inference)
    assert all(isinstance(layer, L.Layer) for layer in loaded.leaf_layers())


def test_same_padding_of_an_even_kernel_comes_back_or_is_refused_by_name():
    """The exporter writes 'same' with an even kernel as asymmetric pads: imported where Conv2D takes
    ((top, bottom), (left, right)), else refused in one line naming the node and the padding."""
    model = gpucnn.Sequential([L.Conv2D(3, 4, 4, padding="same", rng=0), L.ReLU()])
    x = numpy.random.default_rng(0).random((2, 3, 7, 6)).astype(numpy.float32)
    proto = gpucnn.onnx.to_onnx(model, (3, 7, 6))
    try:
        loaded = gpucnn.onnx.load(proto)
    except gpucnn.io.onnx_import.OnnxImportError as exc:
        assert "Conv node '0.Conv2D' (opset 17)" in str(exc) and "padding" in str(exc)
        return
    assert_close(loaded.predict(x), model.predict(x), 1e-5)
