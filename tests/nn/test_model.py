"""gpucnn.Model: graphs of layers (Keras's functional API), their gradients, names, state and training."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.graph import GraphError
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import (Add, BatchNorm2D, Concatenate, Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D,
                              ReLU)
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim import Adam

F64 = numpy.float64


def tiny_resnet(dtype=numpy.float32):
    """The example of the issue: a residual connection, then the skip concatenated beside it."""
    x = gpucnn.Input((3, 8, 8), dtype=dtype)
    h = Conv2D(3, 4, 3, padding="same", name="conv1", dtype=dtype, rng=1)(x)
    h = ReLU()(BatchNorm2D(4, name="bn1", dtype=dtype)(h))
    skip = h
    h = Conv2D(4, 4, 3, padding="same", name="conv2", dtype=dtype, rng=2)(h)
    h = BatchNorm2D(4, name="bn2", dtype=dtype)(h)
    h = ReLU()(Add()([h, skip]))
    h = Concatenate(axis=1)([h, skip])
    y = Dense(8, 5, name="fc", dtype=dtype, rng=3)(Flatten()(GlobalAvgPool2D()(h)))
    return gpucnn.Model(x, y, name="tiny_resnet")


def test_the_functional_api_records_shapes_and_names():
    model = tiny_resnet()
    assert [n.output.shape for n in model.nodes][-4:] == [(8, 8, 8), (8,), (8,), (5,)]
    assert model.node_names == ["conv1", "bn1", "relu_1", "conv2", "bn2", "add_1", "relu_2", "concatenate_1",
                                "global_avg_pool2d_1", "flatten_1", "fc"]
    assert list(model.state_dict())[:4] == ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias"]
    assert [p.shape for p in model.parameters()][0] == (4, 3, 3, 3)  # in the order the layers run
    table = str(model.summary(print_fn=None))
    assert "concatenate_1 (Concatenate)" in table and "(None, 8, 8, 8)" in table


def test_wrong_shapes_reuse_and_stray_tensors_are_clear_errors():
    x = gpucnn.Input((3, 8, 8))
    a = Conv2D(3, 4, 3, padding=1)(x)
    b = Conv2D(3, 4, 3)(x)
    with pytest.raises(GraphError, match=r"Add\(\) cannot take inputs of shape \(4, 8, 8\), \(4, 6, 6\).*one shape"):
        Add()([a, b])
    with pytest.raises(GraphError, match=r"Concatenate.*agree on every axis but 1"):
        Concatenate(axis=1)([a, b])
    with pytest.raises(GraphError, match=r"Dense.*cannot take input of shape \(3, 8, 8\)"):
        Dense(10, 2)(x)
    conv = Conv2D(4, 4, 3, padding=1)
    conv(a)
    with pytest.raises(GraphError, match="already used in a graph; a layer is used once"):
        conv(a)
    other = gpucnn.Input((3, 8, 8))
    y = Add()([a, Conv2D(3, 4, 3, padding=1)(other)])
    with pytest.raises(GraphError, match="not among the model's inputs"):
        gpucnn.Model(x, y)
    with pytest.raises(GraphError, match="two layers are named 'c'"):
        gpucnn.Model(x, Conv2D(4, 4, 1, name="c")(Conv2D(3, 4, 1, name="c")(x)))
    with pytest.raises(ValueError, match="must be a Python identifier"):
        ReLU(name="a.b")


def test_backward_sums_the_gradients_of_a_tensor_used_twice():
    """dL/dx = dL/dh + dL/dskip, held against central differences in float64."""
    x = gpucnn.Input((2, 5, 5), dtype=F64)
    h = Conv2D(2, 2, 3, padding=1, dtype=F64, rng=0)(x)
    y = Add()([h, x])                          # x is used twice: by the convolution and by the sum
    y = Concatenate(axis=1)([ReLU()(y), x])    # and a third time
    model = gpucnn.Model(x, GlobalAvgPool2D()(y))
    inputs = numpy.random.default_rng(0).standard_normal((3, 2, 5, 5))
    check_layer(model, inputs)
    g = numpy.random.default_rng(1).standard_normal((3, 4))
    model.forward(inputs)
    grad_x = model.backward(g)
    # the same sum by hand: the residual branch alone (a model of its own with the same weights), plus the
    # concatenated copy of x, whose gradient is its slice of dL/dy spread over the 25 positions
    x2 = gpucnn.Input((2, 5, 5), dtype=F64)
    branch = gpucnn.Model(x2, GlobalAvgPool2D()(ReLU()(Add()([Conv2D(2, 2, 3, padding=1, dtype=F64, rng=0)(x2), x2]))))
    branch.forward(inputs)
    expected = branch.backward(g[:, :2]) + numpy.broadcast_to(g[:, 2:, None, None] / 25, inputs.shape)
    numpy.testing.assert_allclose(grad_x, expected, rtol=1e-13, atol=1e-15)


def test_a_whole_residual_model_against_central_differences():
    model = tiny_resnet(F64).eval()  # BatchNorm in eval mode: a fixed affine map, as gradcheck needs
    check_layer(model, numpy.random.default_rng(1).standard_normal((2, 3, 8, 8)), rtol=1e-5)


def test_models_nest_both_ways_and_names_nest():
    def block(name):
        x = gpucnn.Input((4, 6, 6))
        return gpucnn.Model(x, ReLU()(Add()([Conv2D(4, 4, 3, padding=1, name="conv1", rng=0)(x), x])), name=name)

    x = gpucnn.Input((4, 6, 6))
    h = block("block1")(x)
    h = gpucnn.Sequential([block("a"), block("b")], name="stage")(h)
    y = Dense(4 * 6 * 6, 3, name="fc", rng=0)(Flatten()(h))
    model = gpucnn.Model(x, y)
    assert list(model.state_dict()) == ["block1.conv1.weight", "block1.conv1.bias", "stage.0.conv1.weight",
                                        "stage.0.conv1.bias", "stage.1.conv1.weight", "stage.1.conv1.bias",
                                        "fc.weight", "fc.bias"]
    inner = gpucnn.Sequential([model, ReLU()])  # a Model inside a Sequential
    data = numpy.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(numpy.float32)
    out = inner.forward(data)
    assert out.shape == (2, 3) and inner.backward(numpy.ones_like(out)).shape == data.shape
    assert list(inner.state_dict())[0] == "0.block1.conv1.weight"
    state = {k: v * 0 + 0.5 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert all(float(v.mean()) == 0.5 for v in model.state_dict().values())


def test_several_inputs_and_outputs():
    a, b = gpucnn.Input((3,)), gpucnn.Input((3,))
    s = Add()([a, b])
    model = gpucnn.Model([a, b], [Dense(3, 2, rng=0)(s), s])
    xa, xb = numpy.ones((4, 3), numpy.float32), numpy.full((4, 3), 2, numpy.float32)
    y1, y2 = model.forward([xa, xb])
    numpy.testing.assert_array_equal(y2, xa + xb)
    ga, gb = model.backward([numpy.ones((4, 2), numpy.float32), numpy.ones((4, 3), numpy.float32)])
    numpy.testing.assert_allclose(ga, gb)
    with pytest.raises(ValueError, match="expected 2 inputs, got 1"):
        model.forward([xa])


def _data(n=24, seed=0):
    rng = numpy.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)).astype(numpy.float32), rng.integers(0, 5, n)


def test_fit_save_load_and_exact_resume_of_a_model(tmp_path):
    x, y = _data()
    straight = tiny_resnet()
    opt = Adam(straight.parameters(), lr=1e-2)
    history = gpucnn.train.fit(straight, SoftmaxCrossEntropy(), opt, x, y, 3, batch_size=8, progress=False,
                               validation=(x, y))
    assert history["epoch"] == [1, 2, 3] and numpy.isfinite(history["val_loss"]).all()
    ckpt = str(tmp_path / "c.npz")
    first = tiny_resnet()
    gpucnn.train.fit(first, SoftmaxCrossEntropy(), Adam(first.parameters(), lr=1e-2), x, y, 2, batch_size=8,
                     progress=False, validation=(x, y), checkpoint=ckpt)
    resumed = tiny_resnet()
    again = gpucnn.train.fit(resumed, SoftmaxCrossEntropy(), Adam(resumed.parameters(), lr=1e-2), x, y, 3,
                             batch_size=8, progress=False, validation=(x, y), checkpoint=ckpt, resume=True)
    assert again["loss"] == history["loss"]
    for p, q in zip(resumed.parameters(), straight.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)
    straight.save(tmp_path / "m.npz")
    loaded = tiny_resnet().load(tmp_path / "m.npz").eval()
    numpy.testing.assert_array_equal(loaded.forward(x[:4]), straight.eval().forward(x[:4]))
    with pytest.raises(gpucnn.checkpoint.CheckpointError, match="not a saved Sequential .format .gpucnn.Model/1"):
        gpucnn.models.fashion_cnn().load(tmp_path / "m.npz")


def test_a_model_refused_by_the_graph_step_names_the_layer_by_its_path():
    from gpucnn.compile.cuda_graph.plan import build_stages
    x = gpucnn.Input((3, 8, 8))
    h = Conv2D(3, 4, 3, padding="same", name="conv1")(x)
    block = gpucnn.Model(x, gpucnn.layers.LeakyReLU(0.1, name="act")(Add()([h, Conv2D(3, 4, 1)(x)])), name="block")
    outer_x = gpucnn.Input((3, 8, 8))
    model = gpucnn.Model(outer_x, Dense(4, 2)(GlobalAvgPool2D()(block(outer_x))))
    with pytest.raises(NotImplementedError, match=r"layer 'block.act' \(LeakyReLU\) has no fused stage"):
        build_stages(model)


def test_a_chain_inside_a_model_takes_the_fast_path():
    x = gpucnn.Input((1, 8, 8))
    chain = gpucnn.Sequential([Conv2D(1, 4, 3, padding=1, rng=0), ReLU(), MaxPool2D(2)], name="features")
    model = gpucnn.Model(x, Dense(64, 3, rng=0)(Flatten()(chain(x))))
    data = numpy.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(numpy.float32)
    model.forward(data)
    assert (chain._fast is not None) == (gpucnn.config.path == "fast")


def test_the_summary_indents_nested_networks_and_counts_each_parameter_once():
    model = gpucnn.models.resnet8(rng=0)
    summary = model.summary(print_fn=None)
    text = str(summary)
    assert "3: layer1 (Sequential)" in text and "\n  0 (Model)" in text and "\n      0 (Conv2D)" in text
    assert summary.total_params == sum(int(p.data.size) for p in model.parameters()) == 78042
