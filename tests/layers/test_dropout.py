"""Dropout: inverted dropout in training (survivors scaled by 1/(1-p)), identity in eval mode."""
import numpy
import pytest

from support.helpers import F64, accepts, assert_bad_input, dev, run, to_numpy
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import Dropout


def _positive(rng, shape, dtype=F64):
    return (rng.random(shape) + 0.5).astype(dtype)      # no zeros, so y == 0 marks a dropped unit


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_train_drops_about_p_and_rescales(p, rng, device):
    x = _positive(rng, (50, 4, 10, 10))
    g = rng.standard_normal(x.shape)
    layer = Dropout(p)
    layer.train()
    y, dx = run(layer, x, g, device)
    kept = y != 0
    assert abs(1 - kept.mean() - p) < 0.02, f"dropped fraction {1 - kept.mean()}, expected {p}"
    numpy.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-12)
    # backward uses the forward's mask and the same scale
    numpy.testing.assert_allclose(dx, numpy.where(kept, g / (1 - p), 0.0), rtol=1e-12, atol=0)
    assert y.dtype == F64 and dx.dtype == F64


def test_float32_stays_float32(rng, device):
    x = _positive(rng, (8, 20), numpy.float32)
    y, dx = run(Dropout(0.5), x, numpy.ones_like(x), device)
    assert y.dtype == numpy.float32 and dx.dtype == numpy.float32
    kept = y != 0
    numpy.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-6)
    numpy.testing.assert_allclose(dx, numpy.where(kept, 2.0, 0.0), rtol=1e-6)


def test_eval_is_identity(rng, device):
    x = rng.standard_normal((4, 3, 5, 5))
    g = rng.standard_normal(x.shape)
    layer = Dropout(0.7)
    layer.eval()
    y, dx = run(layer, x, g, device)
    numpy.testing.assert_array_equal(y, x)
    numpy.testing.assert_array_equal(dx, g)


def test_p_zero_is_identity_in_training(rng, device):
    x = rng.standard_normal((4, 7))
    g = rng.standard_normal(x.shape)
    y, dx = run(Dropout(0.0), x, g, device)
    numpy.testing.assert_array_equal(y, x)
    numpy.testing.assert_array_equal(dx, g)


def test_masks_differ_between_calls(rng, device):
    x = _positive(rng, (16, 64))
    layer = Dropout(0.5)
    a = to_numpy(layer.forward(dev(x, device))) != 0
    b = to_numpy(layer.forward(dev(x, device))) != 0
    assert not numpy.array_equal(a, b)


@pytest.mark.skipif(not accepts(Dropout, "rng"), reason="Dropout takes no rng argument")
def test_rng_makes_masks_reproducible(rng):
    x = _positive(rng, (8, 32))
    a = Dropout(0.5, rng=11).forward(x)
    b = Dropout(0.5, rng=numpy.random.default_rng(11)).forward(x)
    c = Dropout(0.5, rng=12).forward(x)
    numpy.testing.assert_array_equal(a, b)
    assert not numpy.array_equal(a, c)


def test_backward_twice_same_and_input_untouched(rng, device):
    x = _positive(rng, (6, 30))
    xd = dev(x, device)
    g = dev(rng.standard_normal(x.shape), device)
    layer = Dropout(0.4)
    layer.forward(xd)
    numpy.testing.assert_array_equal(to_numpy(xd), x)
    d1 = to_numpy(layer.backward(g)).copy()
    d2 = to_numpy(layer.backward(g))
    numpy.testing.assert_array_equal(d1, d2)


def test_no_parameters():
    layer = Dropout(0.5)
    assert list(layer.parameters()) == []
    layer.zero_grad()


def test_check_layer_in_eval_mode(rng):
    layer = Dropout(0.5)
    layer.eval()
    check_layer(layer, rng.standard_normal((3, 4, 2, 2)))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_out_of_range(p):
    assert_bad_input(lambda: Dropout(p), "Dropout")


def test_non_float_input():
    assert_bad_input(lambda: Dropout(0.5).forward(numpy.ones((2, 3), numpy.int32)), "Dropout", "int32")


@pytest.mark.kernels
def test_emulated_masks_are_drawn_on_the_inputs_device_after_a_move(gpu):
    """Forward on 'cuda:0', then the model moves to 'cuda:1' (device 0 still current): the mask is drawn by a
    generator of device 1, and the host generator alone decides it (the same mask on either device)."""
    import gpucnn
    from gpucnn import backend

    x = _positive(numpy.random.default_rng(0), (6, 40))
    model = gpucnn.Sequential([Dropout(0.5, rng=3)]).to("cuda")
    a = to_numpy(model.forward(dev(x, "cuda:0")))
    model.to("cuda:1")
    state = model.layers[0].rng.bit_generator.state
    y = model.forward(dev(x, "cuda:1"))
    assert backend.device_of(y) == "cuda:1" and backend.device_of(model.layers[0]._cache) == "cuda:1"
    g = model.backward(dev(numpy.ones_like(x), "cuda:1"))
    assert backend.device_of(g) == "cuda:1"
    b = to_numpy(y)
    assert not numpy.array_equal(a != 0, b != 0)
    # exact resume: restoring the host generator's state draws the same mask again, on either device
    for device in ("cuda:1", "cuda:0"):
        model.layers[0].rng.bit_generator.state = state
        numpy.testing.assert_array_equal(to_numpy(model.layers[0].forward(dev(x, device))), b)
    assert sorted(model.layers[0]._device_rngs) == [0, 1]
    assert gpu.syncs.count == 0


@pytest.mark.kernels
def test_emulated_generator_is_bound_to_its_device(gpu):
    """The emulation refuses a generator of device 0 drawing for device 1, as CuPy's cuRAND would fail."""
    with gpu.cupy.cuda.Device(0):
        generator = gpu.cupy.random.RandomState(1)
    with gpu.cupy.cuda.Device(1), pytest.raises(ValueError, match="made on device 0"):
        generator.random_sample((3,), dtype=numpy.float32)
