import numpy
import pytest

import gpucnn
from gpucnn.io.arrays import CheckpointError
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU


def small_model(seed, dtype=numpy.float32):
    return gpucnn.Sequential([Conv2D(1, 3, 3, padding="same", dtype=dtype, rng=seed), BatchNorm2D(3, dtype=dtype),
                              ReLU(), MaxPool2D(2), Flatten(), Dense(3 * 4 * 4, 5, dtype=dtype, rng=seed)])


def test_forward_backward_shapes_and_parameters(rng):
    model = small_model(0)
    x = rng.random((2, 1, 8, 8), dtype=numpy.float32)
    y = model.forward(x)
    assert y.shape == (2, 5) and y.dtype == numpy.float32
    gx = model.backward(numpy.ones_like(y))
    assert gx.shape == x.shape
    assert len(model.parameters()) == 6
    assert all(numpy.any(p.grad != 0) for p in model.parameters())
    model.zero_grad()
    assert all(not numpy.any(p.grad) for p in model.parameters())


def test_train_eval_propagate():
    model = small_model(0)
    model.eval()
    assert all(not layer.training for layer in model.layers)
    model.train()
    assert all(layer.training for layer in model.layers)


def test_float64_model_computes_in_float64(rng):
    model = small_model(0, numpy.float64)
    y = model.forward(rng.random((2, 1, 8, 8)))
    assert y.dtype == numpy.float64
    assert model.backward(numpy.ones_like(y)).dtype == numpy.float64


def test_save_load_round_trip(tmp_path, rng):
    model = small_model(0)
    x = rng.random((4, 1, 8, 8), dtype=numpy.float32)
    model.forward(x)  # moves the BatchNorm running statistics away from their start
    model.eval()
    expected = model.forward(x)
    path = tmp_path / "m.npz"
    model.save(path)
    other = small_model(1).eval()
    assert not numpy.allclose(other.forward(x), expected)
    other.load(path)
    numpy.testing.assert_array_equal(other.forward(x), expected)


def test_save_keeps_device_and_does_not_alias(tmp_path):
    model = small_model(0)
    model.save(tmp_path / "m.npz")
    assert isinstance(model.layers[0].weight.data, numpy.ndarray)
    other = small_model(1).load(tmp_path / "m.npz")
    other.layers[0].weight.data[...] = 0
    assert numpy.any(model.layers[0].weight.data != 0)


def test_load_of_a_corrupt_file_leaves_weights_unchanged(tmp_path):
    model = small_model(0)
    model.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(data[: len(data) // 2])
    other = small_model(1)
    before = [p.data.copy() for p in other.parameters()]
    with pytest.raises(CheckpointError, match="bad.npz"):
        other.load(tmp_path / "bad.npz")
    for p, b in zip(other.parameters(), before):
        numpy.testing.assert_array_equal(p.data, b)


def test_load_of_another_architecture_changes_nothing(tmp_path):
    small_model(0).save(tmp_path / "m.npz")
    other = gpucnn.Sequential([Conv2D(1, 3, 3, padding="same", rng=2), BatchNorm2D(3), ReLU(), MaxPool2D(2),
                               Flatten(), Dense(3 * 4 * 4, 7, rng=2)])
    before = [p.data.copy() for p in other.parameters()]
    with pytest.raises(CheckpointError, match="shape"):
        other.load(tmp_path / "m.npz")
    for p, b in zip(other.parameters(), before):
        numpy.testing.assert_array_equal(p.data, b)


def test_sequential_rejects_non_layers():
    with pytest.raises(TypeError, match="item 1"):
        gpucnn.Sequential([ReLU(), lambda x: x])


def test_input_on_the_wrong_dtype_is_cast_and_integers_refused(rng):
    model = small_model(0)
    assert model.forward(rng.random((2, 1, 8, 8))).dtype == numpy.float32
    with pytest.raises(TypeError, match="Conv2D"):
        model.forward(numpy.zeros((2, 1, 8, 8), dtype=numpy.uint8))


def test_reference_models_shapes():
    x = numpy.zeros((2, 1, 28, 28), dtype=numpy.float32)
    for build in gpucnn.models.MODELS.values():
        model = build(rng=0)
        y = model.forward(x)
        assert y.shape == (2, 10)
        assert model.backward(numpy.ones_like(y)).shape == x.shape
    params = sum(p.data.size for p in gpucnn.models.fashion_cnn(rng=0).parameters())
    assert params == 320 + 18496 + 401536 + 1290  # the Keras tutorial's summary


def test_model_to_cpu_is_a_no_op_copy_free():
    model = small_model(0)
    w = model.layers[0].weight.data
    assert model.to("cpu").device == "cpu"
    assert model.layers[0].weight.data is w


def test_auto_says_where_the_model_went():
    from gpucnn.backend import gpu_available
    assert small_model(0).to("auto").device == ("cuda:0" if gpu_available() else "cpu")


@pytest.mark.gpu
def test_model_to_cuda_and_back(rng):
    from gpucnn.backend import asnumpy, to_device
    model = small_model(0).eval()
    x = rng.random((2, 1, 8, 8), dtype=numpy.float32)
    expected = model.forward(x)
    model.to("cuda")
    numpy.testing.assert_allclose(asnumpy(model.forward(to_device(x, "cuda"))), expected, rtol=1e-4, atol=1e-5)
    model.to("cpu")
    numpy.testing.assert_allclose(model.forward(x), expected, rtol=1e-6)


def test_backward_without_input_gradient_gives_the_same_parameter_gradients(rng):
    x = rng.random((3, 1, 8, 8))
    full, lean = small_model(0, numpy.float64), small_model(0, numpy.float64)
    g = numpy.ones((3, 5))
    full.forward(x)
    lean.forward(x)
    assert full.backward(g).shape == x.shape
    assert lean.backward(g, need_input_grad=False) is None
    for p, q in zip(full.parameters(), lean.parameters()):
        numpy.testing.assert_array_equal(p.grad, q.grad)
