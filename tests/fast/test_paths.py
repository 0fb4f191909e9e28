"""The fast CPU path against the reference path: forward, every gradient, whole training steps, fallback,
verify mode, threads and buffers."""
import numpy
import pytest

import gpucnn
from gpucnn.compile.cpu import FastPathMismatch, num_threads
from gpucnn.compile.cpu.runner import Segment
from gpucnn.compile.cpu.threads import blas_control, chunk_bounds
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU, MaxPool2D, ReLU, Sigmoid
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.nn.models import fashion_cnn, lenet5
from gpucnn.optim.optimizers import SGD, Adam
from support.helpers import F64, assert_close

MODELS = {"fashion_cnn": fashion_cnn, "lenet5": lenet5}


@pytest.fixture(autouse=True)
def fast_path():
    """These tests are about the fast path whichever path the run takes (--gpucnn-path); those that compare
    both name each path."""
    gpucnn.config.path = "fast"


def _on_path(path, fn, *args, **kwargs):
    before, gpucnn.config.path = gpucnn.config.path, path
    try:
        return fn(*args, **kwargs)
    finally:
        gpucnn.config.path = before


def _train(build, path, x, labels, steps, threads=None, optimizer=Adam):
    """Losses, input gradient and parameter gradients of the first step, and the parameters after ``steps``."""
    gpucnn.config.num_threads = threads
    model = build()
    opt = optimizer(model.parameters(), lr=0.01)
    loss_fn = SoftmaxCrossEntropy()
    losses, first = [], None
    for step in range(steps):
        loss = _on_path(path, lambda: loss_fn.forward(model.forward(x), labels))
        opt.zero_grad()
        grad_x = _on_path(path, model.backward, loss_fn.backward(), need_input_grad=step == 0)
        if step == 0:
            first = (grad_x, [p.grad.copy() for p in model.parameters()])
        opt.step()
        losses.append(float(loss))
    gpucnn.config.num_threads = None
    return losses, first, [p.data.copy() for p in model.parameters()], model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_models_equal_on_both_paths(name, threads, rng):
    """float64, so that the only differences left are float rounding: forward, dx, every gradient, 3 Adam steps."""
    x = rng.standard_normal((7, 1, 28, 28))
    labels = rng.integers(0, 10, 7)

    def build():
        return MODELS[name](dtype=F64, rng=3)

    ref = _train(build, "reference", x, labels, 3)
    fast = _train(build, "fast", x, labels, 3, threads=threads)
    assert fast[3]._fast is not None and ref[3]._fast is None, "each path ran where it should"
    assert_close(fast[0], ref[0], rtol=1e-12, atol=0, what="losses")
    assert_close(fast[1][0], ref[1][0], rtol=1e-10, atol=1e-13, what="input gradient")
    for i, (a, b) in enumerate(zip(fast[1][1], ref[1][1])):
        assert_close(a, b, rtol=1e-10, atol=1e-13, what=f"gradient of parameter {i}")
    for i, (a, b) in enumerate(zip(fast[2], ref[2])):
        assert_close(a, b, rtol=1e-10, atol=1e-13, what=f"parameter {i} after 3 steps")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float32_training_steps_agree(name, rng):
    """float32 as users train: 5 SGD steps of the two paths stay within float32 rounding."""
    x = rng.random((16, 1, 28, 28), dtype=numpy.float32)
    labels = rng.integers(0, 10, 16)
    ref = _train(lambda: MODELS[name](rng=5), "reference", x, labels, 5, optimizer=SGD)
    fast = _train(lambda: MODELS[name](rng=5), "fast", x, labels, 5, optimizer=SGD)
    assert_close(fast[0], ref[0], rtol=1e-4, atol=1e-6, what="losses")
    for i, (a, b) in enumerate(zip(fast[2], ref[2])):
        assert_close(a, b, rtol=1e-4, atol=1e-5, what=f"parameter {i} after 5 steps")


def test_conv_relu_maxpool_rewrite_with_ties(rng):
    """Integer inputs and weights: many equal maxima, and windows that ReLU zeroes. The rewritten chain
    (max pool before bias and ReLU) routes every gradient exactly as the reference does."""
    w1, w2 = rng.integers(-1, 2, (3, 2, 3, 3)), rng.integers(-1, 2, (2, 3, 3, 3))

    def build():
        model = gpucnn.Sequential([Conv2D(2, 3, 3, padding=1, dtype=F64), ReLU(), MaxPool2D(2),
                                   Conv2D(3, 2, 3, padding=1, dtype=F64), ReLU(), MaxPool2D(2, stride=1)])
        for p, value in zip(model.parameters(), (w1, [-1.0, 0.0, 2.0], w2, [1.0, -2.0])):
            p.data[...] = value
        return model
    x = rng.integers(-2, 3, (5, 2, 8, 8)).astype(F64)
    g = rng.integers(-3, 4, (5, 2, 3, 3)).astype(F64)
    results, model = _on_both_paths(build, x, g)
    stages = model._fast.segments[0].stages
    assert [type(s).__name__ for s in stages] == ["ConvStage", "ConvStage"] and stages[0].pool is not None
    for i, (a, b) in enumerate(zip(results["fast"], results["reference"])):
        numpy.testing.assert_array_equal(a, b, err_msg=f"result {i} (y, dx, then gradients)")


@pytest.mark.parametrize("conv", [dict(padding=1), dict(padding=0), dict(padding=3, stride=2)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nan", [False, True])
@pytest.mark.parametrize("input_grad", [True, False])
def test_conv_pool_with_pool_major_columns(conv, threads, nan, input_grad, rng):
    """A convolution with fewer column rows (c*kh*kw) than output channels, then ReLU and a 2x2 max pool:
    ConvStage orders its columns by pooling tap. Integer values with ties (and NaN), so that both paths
    must agree exactly, the input gradient included ("same", valid and strided convolutions); without
    the input gradient, the weight gradient goes channel by channel."""
    def build():
        model = gpucnn.Sequential([Conv2D(1, 12, 3, dtype=F64, **conv), ReLU(), MaxPool2D(2)])
        model.parameters()[0].data[...] = rng_w.integers(-1, 2, (12, 1, 3, 3))
        model.parameters()[1].data[...] = numpy.arange(12) % 3 - 1.0
        return model
    x = rng.integers(-2, 3, (5, 1, 8, 8)).astype(F64)
    if nan:
        x[1, 0, 2, 3] = x[4, 0, 7, 7] = numpy.nan
    results = {}
    gpucnn.config.num_threads = threads
    try:
        for path in ("reference", "fast"):
            rng_w = numpy.random.default_rng(7)
            model = build()
            y = _on_path(path, model.forward, x)
            g = numpy.random.default_rng(8).integers(-3, 4, y.shape).astype(F64)
            dx = _on_path(path, model.backward, g, need_input_grad=input_grad)
            results[path] = [y, dx] + [p.grad for p in model.parameters()]
    finally:
        gpucnn.config.num_threads = None
    assert (results["fast"][1] is None) == (not input_grad)
    stage = model._fast.segments[0].stages[0]
    assert stage._pool_major(*stage.conv.window.output_size(8, 8))
    for i, (a, b) in enumerate(zip(results["fast"], results["reference"])):
        numpy.testing.assert_array_equal(a, b, err_msg=f"result {i} (y, dx, then gradients)")


def test_max_pool_nan_follows_the_reference():
    """A window holding NaN gives NaN, and its gradient goes to the last NaN (the reference's rule)."""
    x = numpy.arange(2 * 2 * 4 * 4, dtype=F64).reshape(2, 2, 4, 4)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = x[1, 1, 2, 3] = numpy.nan
    for layers in ([MaxPool2D(2)], [MaxPool2D(3, stride=1, padding=1)]):
        results = {}
        for path in ("reference", "fast"):
            model = gpucnn.Sequential(layers)
            y = _on_path(path, model.forward, x)
            results[path] = (y, _on_path(path, model.backward, numpy.ones_like(y)))
        numpy.testing.assert_array_equal(results["fast"][0], results["reference"][0])
        numpy.testing.assert_array_equal(results["fast"][1], results["reference"][1])


def _on_both_paths(build, x, g):
    """({path: [y, dx, parameter gradients...]} of a model from ``build()`` run forward on x and backward
    from g on each path, the model run on the fast path)."""
    results = {}
    for path in ("reference", "fast"):
        model = build()
        y = _on_path(path, model.forward, x)
        dx = _on_path(path, model.backward, g)
        results[path] = [y, dx] + [p.grad for p in model.parameters()]
    return results, model


def _assert_segments_match_the_reference(build, x, g, parts):
    """A model from ``build()`` cuts into ``parts`` on the fast path and gives the reference's y, dx and
    parameter gradients."""
    results, model = _on_both_paths(build, x, g)
    kinds = [type(p).__name__ for p in model._fast.parts]
    assert kinds == parts, kinds
    for i, (a, b) in enumerate(zip(results["fast"], results["reference"])):
        assert_close(a, b, rtol=1e-11, atol=1e-13, what=f"result {i} (y, dx, then gradients)")


def test_unknown_layers_fall_back_per_segment(rng):
    """Dropout runs as itself between fast segments (BatchNorm2D has a stage in the first); the numbers match
    the reference."""
    def build():
        return gpucnn.Sequential([Conv2D(1, 4, 3, dtype=F64, rng=0), LeakyReLU(0.1), BatchNorm2D(4, dtype=F64),
                                  MaxPool2D(2), Dropout(0.3, rng=7), Flatten(), Dense(4 * 3 * 3, 5, dtype=F64, rng=1),
                                  Sigmoid()])
    _assert_segments_match_the_reference(build, rng.standard_normal((6, 1, 8, 8)), rng.standard_normal((6, 5)),
                                         ["Segment", "Dropout", "Segment"])


def test_dilated_and_grouped_convolutions_run_as_themselves(rng):
    def build():
        return gpucnn.Sequential([Conv2D(2, 4, 3, padding=1, dtype=F64, rng=0), ReLU(),
                                  Conv2D(4, 4, 3, padding=2, dilation=2, dtype=F64, rng=1), ReLU(),
                                  Conv2D(4, 4, 3, groups=2, dtype=F64, rng=2), MaxPool2D(2), Flatten(),
                                  Dense(4 * 3 * 3, 3, dtype=F64, rng=3)])
    _assert_segments_match_the_reference(build, rng.standard_normal((3, 2, 8, 8)), rng.standard_normal((3, 3)),
                                         ["Segment", "Conv2D", "Segment", "Conv2D", "Segment"])


def test_reference_path_and_gpu_style_inputs_skip_the_fast_path(rng):
    model = fashion_cnn(rng=0)
    x = rng.random((2, 1, 28, 28), dtype=numpy.float32)
    _on_path("reference", model.forward, x)
    assert model._fast is None
    model.forward(x.reshape(2, 1, 28, 28, 1)[..., 0])
    assert model._fast is not None
    model.forward(x.astype(numpy.float16))
    assert model._fast is None, "float16 takes the reference path"
    gpucnn.config.path = "quick"
    with pytest.raises(ValueError, match="config.path"):
        model.forward(x)


def test_bad_input_gives_the_layers_own_errors(rng):
    model = fashion_cnn(rng=0)
    with pytest.raises(ValueError, match="Conv2D: expected 1 channels, got 3"):
        model.forward(rng.random((2, 3, 28, 28), dtype=numpy.float32))
    with pytest.raises(TypeError, match="floating-point"):
        model.forward(numpy.zeros((2, 1, 28, 28), dtype=numpy.int32))
    model.forward(rng.random((2, 1, 28, 28), dtype=numpy.float32))
    with pytest.raises(ValueError, match="backward expected a gradient of shape"):
        model.backward(numpy.zeros((2, 9), numpy.float32))


def test_backward_twice_is_refused_not_wrong(rng):
    model = fashion_cnn(rng=0)
    y = model.forward(rng.random((4, 1, 28, 28), dtype=numpy.float32))
    model.backward(numpy.ones_like(y))
    with pytest.raises(RuntimeError, match="twice after one forward"):
        model.backward(numpy.ones_like(y))


def test_buffers_are_reused_and_outputs_are_not(rng):
    model = fashion_cnn(rng=0)
    x = rng.random((8, 1, 28, 28), dtype=numpy.float32)
    y1 = model.forward(x)
    model.backward(numpy.ones_like(y1))
    segment = model._fast.segments[0]
    buffers = {k: id(v) for chunk in segment._chunks[(8, len(chunk_bounds(8, num_threads())))]
               for k, v in chunk.arena._buffers.items()}
    kept = y1.copy()
    y2 = model.forward(x * 0.5)
    model.backward(numpy.ones_like(y2))
    again = {k: id(v) for chunk in segment._chunks[(8, len(chunk_bounds(8, num_threads())))]
             for k, v in chunk.arena._buffers.items()}
    assert again == buffers, "the second step allocated new buffers"
    numpy.testing.assert_array_equal(y1, kept, err_msg="a later forward overwrote an earlier output")


@pytest.mark.parametrize("mode", ["raise", "warn"])
def test_verify_catches_a_wrong_fast_path(mode, rng, monkeypatch):
    gpucnn.config.verify = mode
    model = fashion_cnn(rng=0)
    x = rng.random((4, 1, 28, 28), dtype=numpy.float32)
    model.backward(numpy.ones_like(model.forward(x)))  # a correct fast path passes
    original = Segment.forward
    monkeypatch.setattr(Segment, "forward", lambda self, x, keep=True: original(self, x, keep) * 1.01)
    fresh = fashion_cnn(rng=0)
    if mode == "raise":
        with pytest.raises(FastPathMismatch, match="forward output"):
            fresh.forward(x)
    else:
        with pytest.warns(RuntimeWarning, match="forward output"):
            fresh.forward(x)


def test_verify_compares_gradients_and_keeps_the_reference_ones(rng, monkeypatch):
    gpucnn.config.verify = "raise"
    model = fashion_cnn(rng=0)
    x = rng.random((4, 1, 28, 28), dtype=numpy.float32)
    original = Segment.backward

    def skewed(self, grad, need):
        result = original(self, grad, need)
        self.stages[0].conv.weight.grad += 1.0
        return result
    monkeypatch.setattr(Segment, "backward", skewed)
    y = model.forward(x)
    with pytest.raises(FastPathMismatch, match="gradient of parameter 0"):
        model.backward(numpy.ones_like(y))


def test_same_thread_count_repeats_bit_for_bit(rng):
    x = rng.random((9, 1, 28, 28), dtype=numpy.float32)
    labels = rng.integers(0, 10, 9)
    a = _train(lambda: fashion_cnn(rng=2), "fast", x, labels, 2, threads=2)
    b = _train(lambda: fashion_cnn(rng=2), "fast", x, labels, 2, threads=2)
    for p, q in zip(a[2], b[2]):
        numpy.testing.assert_array_equal(p, q)


def test_thread_count_setting(monkeypatch):
    monkeypatch.setenv("GPUCNN_NUM_THREADS", "3")
    assert num_threads() == 3
    monkeypatch.setenv("GPUCNN_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="GPUCNN_NUM_THREADS must be a positive integer"):
        num_threads()
    gpucnn.config.num_threads = 1
    assert num_threads() == 1
    monkeypatch.delenv("GPUCNN_NUM_THREADS")
    gpucnn.config.num_threads = None
    assert num_threads() >= 1
    assert chunk_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert chunk_bounds(2, 4) == [(0, 1), (1, 2)]


def test_blas_threads_are_set_and_restored():
    control = blas_control()
    if control.kind != "openblas":
        pytest.skip(f"BLAS threads {control.describe()}")
    before = control.get()
    with control.limited(1):
        assert control.get() == 1
    assert control.get() == before


def test_evaluation_buffers_are_not_kept(rng):
    model = fashion_cnn(rng=0)
    x = rng.random((6, 1, 28, 28), dtype=numpy.float32)
    model.forward(x)
    segment = model._fast.segments[0]
    kept = dict(segment._chunks)
    model.eval()
    y_eval = model.forward(rng.random((10, 1, 28, 28), dtype=numpy.float32))
    assert segment._chunks.keys() == kept.keys(), "an evaluation batch's buffers were kept"
    model.train()
    assert_close(_on_path("reference", model.forward, x), model.forward(x), rtol=1e-5, atol=1e-6, what="logits")
    assert y_eval.shape == (10, 10)


def test_the_documented_rounding_difference_of_the_rewrite():
    """gpucnn/compile/cpu/stages.py: raw values 0 < 1 whose sums with the bias round to the same float32. The outputs
    agree; the reference sends the gradient to the first of the two, the fast path to the larger."""
    x = numpy.array([[[[0.0, 1.0], [-100.0, -100.0]]]], dtype=numpy.float32)
    results = {}
    for path in ("reference", "fast"):
        model = gpucnn.Sequential([Conv2D(1, 1, 1), ReLU(), MaxPool2D(2)])
        model.layers[0].weight.data[...] = 1.0
        model.layers[0].bias.data[...] = 1e8
        y = _on_path(path, model.forward, x)
        results[path] = (y, _on_path(path, model.backward, numpy.ones_like(y)))
    numpy.testing.assert_array_equal(results["fast"][0], results["reference"][0])
    assert results["reference"][1][0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert results["fast"][1][0, 0].tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_verify_replays_dropout_and_moves_running_statistics_once(rng):
    """Verify mode runs the reference forward with the same dropout masks and BatchNorm moves its running
    statistics once, as on a single path."""
    def build():
        return gpucnn.Sequential([Conv2D(1, 3, 3, dtype=F64, rng=0), BatchNorm2D(3, dtype=F64), ReLU(),
                                  Dropout(0.5, rng=4), Flatten(), Dense(3 * 6 * 6, 4, dtype=F64, rng=1)])
    x = rng.standard_normal((5, 1, 8, 8))
    g = rng.standard_normal((5, 4))
    plain = build()
    _on_path("reference", plain.forward, x)
    _on_path("reference", plain.backward, g)
    gpucnn.config.verify = "raise"
    checked = build()
    checked.forward(x)
    checked.backward(g)
    assert checked._fast.verified == {x.shape}
    for a, b in zip(checked.named_state().values(), plain.named_state().values()):
        assert_close(a, b, rtol=1e-12, atol=0, what="state after one verified step")
    assert checked.layers[3].rng.bit_generator.state == plain.layers[3].rng.bit_generator.state


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python >= 3.12
def test_a_forked_child_gets_its_own_worker_threads(rng):
    import multiprocessing
    gpucnn.config.num_threads = 2
    model = fashion_cnn(rng=0)
    x = rng.random((4, 1, 28, 28), dtype=numpy.float32)
    model.forward(x)  # the parent's pool exists now
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        shape = pool.apply_async(_forward_shape, (model, x)).get(timeout=60)
    assert shape == (4, 10)


def _forward_shape(model, x):
    return model.forward(x).shape


@pytest.mark.parametrize("kh, kw, h, w", [(3, 3, 6, 5), (5, 5, 2, 3), (4, 2, 5, 4), (1, 3, 3, 1), (7, 7, 3, 3)])
def test_col2im_same_equals_col2im(kh, kw, h, w, rng):
    """chwn.col2im_same (each offset one shifted run per channel, wrapping columns zeroed) against col2im
    then the interior, for "same" windows: odd, even (asymmetric padding) and larger than the image."""
    from gpucnn.compile.cpu import chwn
    from gpucnn.ops.geometry import Window2D
    pt, pl = (kh - 1) // 2, (kw - 1) // 2
    win = Window2D(kh, kw, 1, 1, pt, kh - 1 - pt, pl, kw - 1 - pl)
    c, n = 3, 4
    assert chwn.same_size(win, h, w)
    cols = rng.integers(-9, 10, (c * kh * kw, h * w * n)).astype(F64)
    padded = numpy.empty((c, h + kh - 1, w + kw - 1, n))
    expected = chwn.col2im(cols.copy(), win, h, w, padded)[:, pt:pt + h, pl:pl + w]
    got = chwn.col2im_same(cols.copy(), win, h, w, numpy.full((c, h, w, n), numpy.nan))
    numpy.testing.assert_array_equal(got, expected)
