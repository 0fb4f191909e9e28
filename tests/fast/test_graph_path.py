"""The fast path of a Model's graph (gpucnn/compile/cpu/graph_runner.py) against the reference path: joins (Add,
Concatenate) and GlobalAvgPool2D as stages in the internal layout, gradients summed at a fork, nested Models and
Sequentials opened up, fallback for a node without a stage, repeatability, verify mode."""
import numpy
import pytest

import gpucnn
from gpucnn.compile.cpu import profile
from gpucnn.compile.cpu.graph_segment import FallbackNode, GraphSegment
from gpucnn.nn.layers import Add, BatchNorm2D, Concatenate, Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU
from gpucnn.nn.resnet import basic_block, resnet8
from support.helpers import F64, assert_close


@pytest.fixture(autouse=True)
def fast_path():
    gpucnn.config.path = "fast"


class OwnReLU(ReLU):
    """A layer of the user's own (a subclass): no stage takes it."""


def forked_model(dtype=F64, own_layer=False):
    """x read three times (a convolution, an Add, a Concatenate), h twice; a max pool folded into a conv."""
    x = gpucnn.Input((3, 8, 8), dtype=dtype)
    h = Conv2D(3, 3, 3, padding=1, dtype=dtype, rng=0)(x)
    h = (OwnReLU() if own_layer else ReLU())(BatchNorm2D(3, dtype=dtype)(h))
    s = Add()([h, x])
    c = Concatenate(axis=1)([s, x, h])
    c = MaxPool2D(2)(ReLU()(Conv2D(9, 4, 3, padding=1, dtype=dtype, rng=1)(c)))
    return gpucnn.Model(x, Dense(4, 5, dtype=dtype, rng=2)(Flatten()(GlobalAvgPool2D()(c))))


def nested_model(dtype=F64):
    """A Model of a Sequential of two block Models, and a block Model used directly."""
    x = gpucnn.Input((2, 8, 8), dtype=dtype)
    h = gpucnn.Sequential([basic_block(2, 4, 1, (8, 8), dtype=dtype, rng=0),
                           basic_block(4, 4, 1, (8, 8), dtype=dtype, rng=1)], name="stage")(x)
    h = basic_block(4, 6, 2, (8, 8), dtype=dtype, rng=2, name="down")(h)
    return gpucnn.Model(x, Dense(6, 3, dtype=dtype, rng=3)(GlobalAvgPool2D()(h)))


def _step(build, path, x, g, threads=None, need_input_grad=True, train=True):
    gpucnn.config.path, gpucnn.config.num_threads = path, threads
    try:
        model = build()
        model.train(train)
        y = model.forward(x)
        grad_x = model.backward(g, need_input_grad=need_input_grad)
        state = {k: v.copy() for k, v in model.named_state().items()}
        return model, y, grad_x, [p.grad.copy() for p in model.parameters()], state
    finally:
        gpucnn.config.path, gpucnn.config.num_threads = "fast", None


def _assert_paths_agree(build, x, g, **kwargs):
    _, y_ref, gx_ref, grads_ref, state_ref = _step(build, "reference", x, g, **kwargs)
    model, y, gx, grads, state = _step(build, "fast", x, g, **kwargs)
    assert model._fast is not None, "the model ran on the fast path"
    assert_close(y, y_ref, rtol=1e-10, atol=0, what="output")
    if gx_ref is None:
        assert gx is None
    else:
        assert_close(gx, gx_ref, rtol=1e-10, atol=1e-13, what="input gradient")
    largest = max(float(numpy.abs(q).max()) for q in grads_ref)
    for i, (a, b) in enumerate(zip(grads, grads_ref)):
        assert_close(a, b, rtol=0, atol=1e-10 * largest, what=f"gradient of parameter {i}")
    for k in state_ref:
        assert_close(state[k], state_ref[k], rtol=1e-12, atol=1e-14, what=k)
    return model


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_joins_and_a_fork_equal_the_reference(rng, threads):
    x, g = rng.standard_normal((7, 3, 8, 8)), rng.standard_normal((7, 5))
    model = _assert_paths_agree(forked_model, x, g, threads=threads)
    (segment,) = model._fast.parts  # one segment: the data never leave the internal layout inside it
    assert isinstance(segment, GraphSegment) and segment.reads == model._fast.inputs
    assert segment.writes == model._fast.outputs
    assert segment.kinds == ["Conv2D", "BatchNorm2D", "ReLU", "Add", "Concatenate", "Conv2D+ReLU+MaxPool2D",
                             "GlobalAvgPool2D", "Flatten", "Dense"]


def test_resnet8_runs_as_one_segment_and_equals_the_reference(rng):
    x, g = rng.standard_normal((5, 1, 12, 12)), rng.standard_normal((5, 10))
    model = _assert_paths_agree(lambda: resnet8(in_channels=1, input_size=12, dtype=F64, rng=0), x, g)
    (segment,) = model._fast.parts
    assert segment.kinds.count("Add") == 3 and segment.kinds.count("BatchNorm2D") == 9
    assert len(segment.layers) == len(model.leaf_layers())


def test_nested_models_and_sequentials_are_opened_up(rng):
    x, g = rng.standard_normal((4, 2, 8, 8)), rng.standard_normal((4, 3))
    model = _assert_paths_agree(nested_model, x, g, threads=2)
    (segment,) = model._fast.parts
    assert segment.kinds.count("Add") == 3 and len(segment.layers) == len(model.leaf_layers())


def test_without_the_input_gradient_and_in_evaluation(rng):
    x, g = rng.standard_normal((6, 3, 8, 8)), rng.standard_normal((6, 5))
    _assert_paths_agree(forked_model, x, g, need_input_grad=False, threads=2)
    _assert_paths_agree(forked_model, x, g, train=False, threads=2)


def test_a_node_without_a_stage_runs_as_its_layer_between_segments(rng):
    x, g = rng.standard_normal((5, 3, 8, 8)), rng.standard_normal((5, 5))
    model = _assert_paths_agree(lambda: forked_model(own_layer=True), x, g, threads=2)
    kinds = [type(part).__name__ for part in model._fast.parts]
    assert kinds == ["GraphSegment", "FallbackNode", "GraphSegment"]
    first, fallback, second = model._fast.parts
    assert isinstance(fallback.layer, OwnReLU) and isinstance(fallback, FallbackNode)
    assert first.writes == fallback.item.inputs  # converted to the public layout only where the layer needs it
    assert second.reads == sorted([model._fast.inputs[0], fallback.item.output])


def test_several_inputs_and_a_concatenation_of_feature_vectors(rng):
    def build():
        a, b = gpucnn.Input((3, 6, 6), dtype=F64), gpucnn.Input((4,), dtype=F64)
        h = GlobalAvgPool2D()(ReLU()(Conv2D(3, 5, 3, dtype=F64, rng=0)(a)))
        return gpucnn.Model([a, b], Dense(9, 2, dtype=F64, rng=1)(Concatenate(axis=-1)([h, b])))
    x = [rng.standard_normal((5, 3, 6, 6)), rng.standard_normal((5, 4))]
    g = rng.standard_normal((5, 2))
    _, y_ref, gx_ref, grads_ref, _ = _step(build, "reference", x, g)
    model, y, gx, grads, _ = _step(build, "fast", x, g, threads=2)
    assert model._fast is not None
    assert_close(y, y_ref, rtol=1e-12, atol=0, what="output")
    for a, b in zip(gx + grads, gx_ref + grads_ref):
        assert_close(a, b, rtol=1e-10, atol=1e-13, what="gradient")


def test_one_tensor_twice_in_one_add(rng):
    def build():
        x = gpucnn.Input((2, 5, 5), dtype=F64)
        h = BatchNorm2D(2, dtype=F64)(Conv2D(2, 2, 3, padding=1, dtype=F64, rng=0)(x))
        return gpucnn.Model(x, Flatten()(Add()([h, h, x])))
    x, g = rng.standard_normal((3, 2, 5, 5)), rng.standard_normal((3, 50))
    _assert_paths_agree(build, x, g, threads=2)


@pytest.mark.parametrize("threads", [2, 3])
def test_repeats_bit_for_bit_for_a_thread_count(rng, threads):
    x = rng.standard_normal((9, 1, 12, 12)).astype(numpy.float32)
    g = rng.standard_normal((9, 10)).astype(numpy.float32)
    runs = [_step(lambda: resnet8(in_channels=1, input_size=12, rng=0), "fast", x, g, threads=threads)
            for _ in range(2)]
    (_, y1, gx1, p1, s1), (_, y2, gx2, p2, s2) = runs
    assert numpy.array_equal(y1, y2) and numpy.array_equal(gx1, gx2)
    assert all(numpy.array_equal(a, b) for a, b in zip(p1, p2))
    assert all(numpy.array_equal(s1[k], s2[k]) for k in s1)


def test_a_second_step_reuses_the_buffers_and_still_agrees(rng):
    x, g = rng.standard_normal((6, 3, 8, 8)), rng.standard_normal((6, 5))
    results = {}
    for path in ("reference", "fast"):
        gpucnn.config.path = path
        model = forked_model()
        for _ in range(2):
            model.zero_grad()
            y = model.forward(x)
            grad_x = model.backward(g)
        results[path] = (y, grad_x, [p.grad.copy() for p in model.parameters()])
    for a, b in zip(results["fast"][:2] + tuple(results["fast"][2]), results["reference"][:2] + tuple(
            results["reference"][2])):
        assert_close(a, b, rtol=1e-10, atol=1e-12, what="second step")


def test_verify_mode_holds_the_graph_against_the_reference(rng, monkeypatch):
    monkeypatch.setattr(gpucnn.config, "verify", "raise")
    model = forked_model(dtype=numpy.float32)
    x = rng.standard_normal((4, 3, 8, 8)).astype(numpy.float32)
    y = model.forward(x)
    model.backward(numpy.ones_like(y))
    assert model._fast.verified == {((4, 3, 8, 8),)}


def test_backward_twice_after_one_forward_is_refused(rng):
    model = forked_model()
    y = model.forward(rng.standard_normal((2, 3, 8, 8)))
    model.backward(numpy.ones_like(y))
    with pytest.raises(RuntimeError, match="backward\\(\\) called before forward\\(\\), or twice"):
        model.backward(numpy.ones_like(y))


def test_node_times_name_every_node_type(rng):
    model = forked_model()
    x = rng.standard_normal((4, 3, 8, 8))
    with profile.node_times() as times:
        y = model.forward(x)
        model.backward(numpy.ones_like(y))
    kinds = {kind for kind, _ in times.totals}
    assert {"Add", "Concatenate", "BatchNorm2D", "GlobalAvgPool2D", "layout (N,C,H,W) -> (C,H,W,N)",
            "layout (C,H,W,N) -> (N,C,H,W)"} <= kinds
    assert all(seconds >= 0 and calls > 0 for seconds, calls in times.totals.values())
    assert profile.active() is None


def test_a_sequential_of_blocks_runs_as_one_graph(rng):
    def build():
        return gpucnn.Sequential([Conv2D(1, 4, 3, padding=1, dtype=F64, rng=0), BatchNorm2D(4, dtype=F64), ReLU(),
                                  basic_block(4, 4, 1, (6, 6), dtype=F64, rng=1),
                                  basic_block(4, 8, 2, (6, 6), dtype=F64, rng=2), GlobalAvgPool2D(),
                                  Dense(8, 3, dtype=F64, rng=3)])
    x, g = rng.standard_normal((5, 1, 6, 6)), rng.standard_normal((5, 3))
    model = _assert_paths_agree(build, x, g, threads=2)
    (segment,) = model._fast.parts
    assert segment.kinds.count("Add") == 2 and len(segment.layers) == len(model.leaf_layers())
