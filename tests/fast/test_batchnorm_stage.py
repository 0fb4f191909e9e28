"""BatchNorm2D's fast stage (gpucnn/compile/cpu/batchnorm_stage.py) against the reference path: Conv2D ->
BatchNorm2D -> ReLU chains in one segment, training (batch statistics over every chunk) and evaluation, several
thread counts, a batch that the thread count does not divide."""
import numpy
import pytest

import gpucnn
from gpucnn.compile.verify import relative_error
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from gpucnn.optim.optimizers import SGD

TOLERANCE = {numpy.float64: 1e-9, numpy.float32: 1e-4}


@pytest.fixture(autouse=True)
def fast_path():
    gpucnn.config.path = "fast"


def _build(dtype):
    """A ResNet-like chain: convolutions without bias before each BatchNorm, as in gpucnn.nn.resnet."""
    return gpucnn.Sequential([
        Conv2D(2, 4, 3, padding=1, bias=False, dtype=dtype, rng=0), BatchNorm2D(4, momentum=0.3, dtype=dtype), ReLU(),
        Conv2D(4, 3, 3, padding=1, bias=False, dtype=dtype, rng=1), BatchNorm2D(3, dtype=dtype), ReLU(),
        MaxPool2D(2), Flatten(), Dense(3 * 3 * 3, 5, dtype=dtype, rng=2)])


def _state(model, y, dx):
    """y, dx, every parameter gradient, then every parameter and buffer (running statistics included)."""
    return ([("y", y), ("dx", dx)] + [(f"grad {p.name} {i}", p.grad.copy()) for i, p in enumerate(model.parameters())]
            + [(name, value.copy()) for name, value in model.named_state().items()])


def _steps(path, dtype, training, x, g, steps=2):
    before, gpucnn.config.path = gpucnn.config.path, path
    try:
        model = _build(dtype)
        rng = numpy.random.default_rng(3)
        for layer in (model.layers[1], model.layers[4]):  # running statistics that are not the initial ones
            layer.running_mean[...] = rng.standard_normal(layer.num_features)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.num_features)
            layer.bias.data[...] = rng.standard_normal(layer.num_features)
        model.train(training)
        opt = SGD(model.parameters(), lr=0.1)
        states = []
        for _ in range(steps):
            opt.zero_grad()
            y = model.forward(x)
            dx = model.backward(g)
            states.append(_state(model, y, dx))
            opt.step()
        return model, states
    finally:
        gpucnn.config.path = before


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv_batchnorm_relu_matches_the_reference(rng, threads, dtype, training):
    gpucnn.config.num_threads = threads
    x = rng.standard_normal((7, 2, 6, 6)).astype(dtype)  # 7 images: 2 and 3 threads get unequal chunks
    g = rng.standard_normal((7, 5)).astype(dtype)
    fast_model, fast = _steps("fast", dtype, training, x, g)
    _, reference = _steps("reference", dtype, training, x, g)
    assert [type(p).__name__ for p in fast_model._fast.parts] == ["Segment"]
    for step, (got, want) in enumerate(zip(fast, reference)):
        for (name, a), (_, b) in zip(got, want):
            assert a.dtype == b.dtype, name
            error = relative_error(a, b)
            assert error <= TOLERANCE[dtype], f"step {step}, {name}: relative error {error:.3g}"
    if training:  # the running statistics moved
        assert not numpy.allclose(reference[0][-2][1], reference[1][-2][1])


def test_the_planner_puts_conv_batchnorm_relu_in_one_segment():
    model = _build(numpy.float64)
    model.forward(numpy.zeros((2, 2, 6, 6)))
    (segment,) = model._fast.parts
    kinds = [type(stage).__name__ for stage in segment.stages]
    assert kinds == ["ConvStage", "BatchNormStage", "ActivationStage", "ConvStage", "BatchNormStage",
                     "ActivationStage", "PoolStage", "FlattenStage", "DenseStage"]
    assert segment.layers == model.layers


@pytest.mark.parametrize("threads", [2, 3])
def test_a_thread_count_repeats_bit_for_bit(rng, threads):
    gpucnn.config.num_threads = threads
    x, g = rng.standard_normal((7, 2, 6, 6)), rng.standard_normal((7, 5))
    _, first = _steps("fast", numpy.float64, True, x, g)
    _, again = _steps("fast", numpy.float64, True, x, g)
    for (name, a), (_, b) in zip(first[-1], again[-1]):
        numpy.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("threads", [1, 3])
def test_batchnorm_first_and_alone(rng, threads):
    """BatchNorm2D as the first layer (its input a view of the caller's array) and as the whole model, without
    the input gradient too."""
    gpucnn.config.num_threads = threads
    x, g = rng.standard_normal((5, 3, 4, 4)), rng.standard_normal((5, 3, 4, 4))
    results = {}
    for path in ("reference", "fast"):
        gpucnn.config.path = path
        model = gpucnn.Sequential([BatchNorm2D(3, dtype=numpy.float64), ReLU()])
        y = model.forward(x)
        dx = model.backward(g)
        model.zero_grad()
        model.forward(x)
        skipped = model.backward(g, need_input_grad=False)
        assert skipped is None or path == "reference"  # the reference layer computes it anyway
        results[path] = [y, dx, model.layers[0].weight.grad, model.layers[0].bias.grad, model.layers[0].running_mean,
                         model.layers[0].running_var]
    for a, b in zip(results["fast"], results["reference"]):
        assert relative_error(a, b) <= 1e-12


def test_training_needs_more_than_one_value_per_channel():
    model = gpucnn.Sequential([Conv2D(1, 2, 1, bias=False, dtype=numpy.float64, rng=0), BatchNorm2D(2,
                               dtype=numpy.float64), ReLU()])
    with pytest.raises(ValueError, match="more than one value per channel"):
        model.forward(numpy.ones((1, 1, 1, 1)))
    model.eval()
    assert model.forward(numpy.ones((1, 1, 1, 1))).shape == (1, 2, 1, 1)


def test_verify_mode_accepts_the_stage(rng):
    gpucnn.config.num_threads, gpucnn.config.verify = 2, "raise"
    model = _build(numpy.float64)
    x, g = rng.standard_normal((5, 2, 6, 6)), rng.standard_normal((5, 5))
    model.forward(x)
    model.backward(g)
    assert model._fast.verified == {x.shape}
