"""GlobalAvgPool2D, GlobalMaxPool2D and AdaptiveAvgPool2D against PyTorch in float64 (forward and input gradient),
on the reference path, the CPU fast path (which runs them as themselves between its segments) and the emulated GPU;
against central differences; and their clear refusals. Files and ONNX: tests/layers/test_global_pools_files.py."""
import numpy
import pytest

import gpucnn
from gpucnn.compile.cuda_graph import plan as graph
from gpucnn.gradcheck import check_layer
from gpucnn.nn.layers import AdaptiveAvgPool2D, Conv2D, Dense, GlobalAvgPool2D, GlobalMaxPool2D, ReLU
from gpucnn.ops.global_pool import adaptive_bins

torch = pytest.importorskip("torch")
F64 = numpy.float64

#: name -> (the gpucnn layer, the PyTorch function of the same meaning)
LAYERS = {
    "global_avg": (GlobalAvgPool2D, lambda t: torch.nn.functional.adaptive_avg_pool2d(t, 1).flatten(1)),
    "global_max": (GlobalMaxPool2D, lambda t: torch.nn.functional.adaptive_max_pool2d(t, 1).flatten(1)),
    "adaptive_3x2": (lambda: AdaptiveAvgPool2D((3, 2)), lambda t: torch.nn.functional.adaptive_avg_pool2d(t, (3, 2))),
    "adaptive_4": (lambda: AdaptiveAvgPool2D(4), lambda t: torch.nn.functional.adaptive_avg_pool2d(t, 4)),
    "adaptive_none_w": (lambda: AdaptiveAvgPool2D((2, None)),
                        lambda t: torch.nn.functional.adaptive_avg_pool2d(t, (2, None))),
    "adaptive_larger": (lambda: AdaptiveAvgPool2D((9, 11)),
                        lambda t: torch.nn.functional.adaptive_avg_pool2d(t, (9, 11))),
}
SHAPES = [(2, 3, 7, 5), (3, 2, 8, 8), (1, 4, 1, 3)]


def torch_reference(name, x, grad_y=None, seed=1):
    """(y, dL/dx) of PyTorch in float64; dL/dy random (from ``seed``) unless given."""
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = LAYERS[name][1](t)
    if grad_y is None:
        grad_y = numpy.random.default_rng(seed).standard_normal(tuple(y.shape))
    y.backward(torch.tensor(grad_y, dtype=torch.float64))
    return y.detach().numpy(), t.grad.numpy(), grad_y


def assert_same(actual, expected):
    numpy.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14, equal_nan=True)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_layer_equals_pytorch_forward_and_input_gradient(name, shape):
    x = numpy.random.default_rng(0).standard_normal(shape)
    y_t, dx_t, grad_y = torch_reference(name, x)
    layer = LAYERS[name][0]()
    y = layer.forward(x)
    assert y.shape == y_t.shape and y.dtype == F64
    assert_same(y, y_t)
    dx = layer.backward(grad_y)
    assert dx.shape == x.shape and dx.dtype == F64
    assert_same(dx, dx_t)


def test_pytorch_bins_for_many_sizes():
    """The bin rule itself, against PyTorch's output on an index ramp, for sizes up to 9 into up to 9 bins."""
    for n in range(1, 10):
        for o in range(1, 10):
            x = numpy.arange(n, dtype=F64).reshape(1, 1, 1, n)
            t = torch.nn.functional.adaptive_avg_pool1d(torch.tensor(x[0, 0]), o).numpy()[0]
            start, stop = adaptive_bins(n, o)
            assert_same(numpy.array([x[0, 0, 0, a:b].mean() for a, b in zip(start, stop)]), t)
            assert_same(AdaptiveAvgPool2D((1, o)).forward(x)[0, 0, 0], t)


def test_global_max_ties_go_to_the_first_maximum_and_nan_to_the_last_nan_as_pytorch():
    x = numpy.random.default_rng(2).standard_normal((2, 4, 3, 4))
    x[0, 0, 0, 1] = x[0, 0, 2, 3] = 9.0                     # a tie: the first (row-major) wins
    x[0, 1, 1, 0] = x[0, 1, 2, 2] = numpy.nan               # NaN: the output is NaN, the last NaN wins
    x[0, 2] = -numpy.inf                                    # all -inf: the first element
    x[0, 3, 1, 1], x[1, 0, 0, 0] = numpy.inf, numpy.nan
    y_t, dx_t, grad_y = torch_reference("global_max", x)
    layer = GlobalMaxPool2D()
    y, dx = layer.forward(x), layer.backward(grad_y)
    assert numpy.isnan(y[0, 1]) and numpy.isnan(y[1, 0])
    assert_same(y, y_t)
    numpy.testing.assert_array_equal(dx, dx_t)
    assert dx[0, 0, 0, 1] == grad_y[0, 0] and dx[0, 0, 2, 3] == 0 and dx[0, 1, 2, 2] == grad_y[0, 1]


def test_a_nan_gradient_reaches_only_its_winner_as_pytorch():
    x = numpy.random.default_rng(3).standard_normal((1, 2, 3, 3))
    grad_y = numpy.array([[numpy.nan, 1.0]])
    _, dx_t, _ = torch_reference("global_max", x, grad_y)
    layer = GlobalMaxPool2D()
    layer.forward(x)
    dx = layer.backward(grad_y)
    numpy.testing.assert_array_equal(dx, dx_t)
    assert numpy.isnan(dx).sum() == 1


def test_adaptive_inf_and_nan_stay_in_their_bins_as_pytorch():
    """No product with an averaging matrix: 0 * inf would spread NaN to bins that do not hold the inf."""
    x = numpy.random.default_rng(4).standard_normal((1, 2, 7, 5))
    x[0, 0, 0, 0], x[0, 1, 6, 4] = numpy.inf, numpy.nan
    for name in ("adaptive_3x2", "adaptive_larger"):
        grad_y = numpy.random.default_rng(5).standard_normal(LAYERS[name][1](torch.tensor(x)).shape)
        grad_y[0, 0, -1, -1] = numpy.inf
        y_t, dx_t, _ = torch_reference(name, x, grad_y)
        layer = LAYERS[name][0]()
        y = layer.forward(x)
        numpy.testing.assert_array_equal(numpy.isfinite(y), numpy.isfinite(y_t))
        assert_same(y, y_t)
        assert_same(layer.backward(grad_y), dx_t)


def test_float32_and_float16_keep_their_dtype_and_float16_adds_in_float32():
    x = numpy.random.default_rng(6).standard_normal((2, 3, 6, 6)).astype(numpy.float32)
    for name in sorted(LAYERS):
        layer = LAYERS[name][0]()
        y = layer.forward(x)
        assert y.dtype == numpy.float32 and layer.backward(numpy.ones_like(y)).dtype == numpy.float32
    big = numpy.full((1, 1, 4, 4), 60000, numpy.float16)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(big), (2, 2)).numpy()
    y = AdaptiveAvgPool2D(2).forward(big)
    assert y.dtype == numpy.float16 and numpy.isfinite(y).all()
    numpy.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradients_against_central_differences(name):
    check_layer(LAYERS[name][0](), numpy.random.default_rng(7).standard_normal((2, 3, 5, 4)))


def small_net(layer, dtype=F64):
    """Conv2D + ReLU (a segment of the CPU fast path), the layer (run as itself), then Dense (a segment again)."""
    probe = layer.forward(numpy.zeros((1, 3, 7, 6), dtype))
    return gpucnn.Sequential([Conv2D(2, 3, 3, padding=1, dtype=dtype, rng=0), ReLU(), layer,
                              gpucnn.layers.Flatten(), Dense(probe[0].size, 4, dtype=dtype, rng=1)])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_the_cpu_fast_path_runs_them_between_its_segments_equal_to_the_reference(name):
    x = numpy.random.default_rng(8).standard_normal((5, 2, 7, 6))
    results = {}
    for path in ("reference", "fast"):
        gpucnn.config.path = path
        model = small_net(LAYERS[name][0]())
        y = model.forward(x)
        grad_y = numpy.random.default_rng(9).standard_normal(y.shape)
        results[path] = (y, model.backward(grad_y), [p.grad.copy() for p in model.parameters()])
        assert (model._fast is not None) == (path == "fast")
    (y_r, dx_r, grads_r), (y_f, dx_f, grads_f) = results["reference"], results["fast"]
    assert_same(y_f, y_r)
    assert_same(dx_f, dx_r)
    for g_f, g_r in zip(grads_f, grads_r):
        numpy.testing.assert_allclose(g_f, g_r, rtol=1e-12, atol=1e-13)


def test_a_global_pool_feeds_dense_directly_on_both_paths():
    """(N, C) out: no Flatten needed; the planner follows the rank (2) after it."""
    x = numpy.random.default_rng(10).standard_normal((4, 2, 6, 6))
    outputs = []
    for path in ("reference", "fast"):
        gpucnn.config.path = path
        model = gpucnn.Sequential([Conv2D(2, 5, 3, dtype=F64, rng=0), GlobalMaxPool2D(), Dense(5, 3, dtype=F64, rng=1)])
        outputs.append(model.forward(x))
    assert outputs[0].shape == (4, 3)
    assert_same(outputs[1], outputs[0])


@pytest.mark.parametrize("layer", [GlobalMaxPool2D(), AdaptiveAvgPool2D(2)], ids=repr)
def test_the_graph_step_refuses_them_naming_the_layer(layer):  # GlobalAvgPool2D has a graph stage
    model = gpucnn.Sequential([Conv2D(2, 3, 3, rng=0), layer, gpucnn.layers.Flatten()])
    with pytest.raises(NotImplementedError, match=rf"layer 1 \({type(layer).__name__}\) has no fused stage"):
        graph.build_stages(model)


@pytest.mark.parametrize("output_size", [0, -1, 2.0, True, None, (2,), (2, 3, 4), (0, 2), (None, 1.5), "2"])
def test_bad_output_sizes_are_refused_naming_the_argument(output_size):
    with pytest.raises(ValueError, match="AdaptiveAvgPool2D: output_size must be"):
        AdaptiveAvgPool2D(output_size)


@pytest.mark.parametrize("make", [GlobalAvgPool2D, GlobalMaxPool2D, lambda: AdaptiveAvgPool2D(2)])
def test_bad_inputs_and_gradients_are_refused_naming_the_layer(make):
    layer = make()
    name = type(layer).__name__
    for bad in (numpy.zeros((2, 3, 4)), numpy.zeros((0, 3, 4, 4)), numpy.zeros((2, 3, 0, 4))):
        with pytest.raises(ValueError, match=name):
            layer.forward(bad)
    with pytest.raises(TypeError, match=name):
        layer.forward(numpy.zeros((2, 3, 4, 4), numpy.int64))
    with pytest.raises(RuntimeError, match=f"{name}: backward"):
        make().backward(numpy.zeros((2, 3)))
    y = layer.forward(numpy.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=rf"{name}: backward expected a gradient of shape {y.shape}".replace("(", r"\(")
                       .replace(")", r"\)")):
        layer.backward(numpy.zeros((2, 3, 1, 1, 1)))


# ----------------------------------------------------------------------------- the emulated GPU

@pytest.mark.kernels
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_on_the_emulated_gpu_they_equal_the_host_with_no_sync(gpu, name):
    """The same ops on CuPy arrays (gathers, selects, reductions: no kernel of ours), arrays kept on the device and
    nothing read back to the host inside forward and backward."""
    from gpucnn import backend
    from support.emulated_cupy import DeviceArray, to_host
    x = numpy.random.default_rng(11).standard_normal((2, 3, 7, 5))
    x[0, 0, 1, 1] = numpy.nan
    y_t, dx_t, grad_y = torch_reference(name, x)
    layer = LAYERS[name][0]()
    x_d, grad_d = backend.to_device(x, "cuda"), backend.to_device(grad_y, "cuda")
    syncs = gpu.syncs.count
    y = layer.forward(x_d)
    dx = layer.backward(grad_d)
    assert gpu.syncs.count == syncs
    assert type(y) is DeviceArray and type(dx) is DeviceArray and y.dtype == dx.dtype == F64
    assert_same(to_host(y), y_t)
    assert_same(to_host(dx), dx_t)
