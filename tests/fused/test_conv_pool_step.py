"""compile_step with the max-pool in the convolution's stage (emulated CuPy): Conv2D [+ ReLU] + MaxPool2D of
non-overlapping windows runs as one conv_fwd_pool_fused launch, and the first such stage's weight gradient reads the
pool's gradient and argmax itself (conv_wgrad_pooled_*); a pool that leaves a row over (floor mode) or whose
windows overlap keeps the separate launches. One epoch on the graph equals the CPU eager epoch."""
import numpy
import pytest

import gpucnn
from support.emulated_cupy import to_host
from gpucnn.compile.cuda_graph.plan import build_program
from gpucnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD

pytestmark = [pytest.mark.kernels, pytest.mark.graph]

TOL = {numpy.float32: 1e-4, numpy.float64: 1e-10}


def no_relu_then_1x2(dtype, seed=0):
    """A pool right after a convolution without ReLU (no mask in the argmax), then a 1x2 pool; 12x12 inputs."""
    return gpucnn.Sequential([
        Conv2D(2, 4, 3, padding="same", dtype=dtype, rng=seed), MaxPool2D(2),
        Conv2D(4, 5, 3, padding="same", bias=False, dtype=dtype, rng=seed + 1), ReLU(), MaxPool2D((1, 2)),
        Flatten(), Dense(5 * 6 * 3, 10, dtype=dtype, rng=seed + 2)])


def floor_and_overlap(dtype, seed=0):
    """The first pool leaves a row and a column over (11x11 -> 5x5): fused forward, separate backward; the second's
    windows overlap (3x3, stride 2): a pool stage of its own."""
    return gpucnn.Sequential([
        Conv2D(2, 4, 2, dtype=dtype, rng=seed), ReLU(), MaxPool2D(2),
        Conv2D(4, 3, 3, padding="same", dtype=dtype, rng=seed + 1), ReLU(), MaxPool2D(3, stride=2),
        Flatten(), Dense(3 * 2 * 2, 10, dtype=dtype, rng=seed + 2)])


MODELS = {"no_relu_then_1x2": no_relu_then_1x2, "floor_and_overlap": floor_and_overlap}


def _epochs(gpu, name, dtype, n=5, batch=2):
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((n, 2, 12, 12)).astype(dtype)
    y = rng.integers(0, 10, n)
    order = rng.permutation(n)
    model = MODELS[name](dtype).to("cuda")
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = gpucnn.compile_step(model, SoftmaxCrossEntropy(), opt, batch, verify=False)
    step.bind(gpu.cupy.asarray(x), gpu.cupy.asarray(y))
    step.run_epoch(order)
    reference = MODELS[name](dtype)
    loss_fn, ref_opt = SoftmaxCrossEntropy(), SGD(reference.parameters(), lr=0.05, momentum=0.9)
    for start in range(0, n, batch):
        idx = order[start:start + batch]
        loss_fn.forward(reference.forward(x[idx]), y[idx])
        ref_opt.zero_grad()
        reference.backward(loss_fn.backward(), need_input_grad=False)
        ref_opt.step()
    return model, reference, step


@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_epoch_with_pools_in_the_conv_stages_equals_the_eager_epoch(gpu, name, dtype):
    model, reference, step = _epochs(gpu, name, dtype)
    got, want = model.state_dict(), reference.state_dict()
    for key in want:
        expected = numpy.asarray(want[key])
        scale = max(1.0, float(numpy.abs(expected).max()))
        numpy.testing.assert_allclose(to_host(got[key]), expected, rtol=0, atol=TOL[dtype] * scale, err_msg=key)
    kernels = {c for c in step.captured if c.startswith("kernel ")}
    assert "kernel conv_fwd_pool_fused" in kernels
    if name == "no_relu_then_1x2":
        assert "kernel max_pool_u8_fwd" not in kernels
        assert kernels & {"kernel conv_wgrad_pooled_fused", "kernel conv_wgrad_pooled_partial_fused"}
    else:  # the first pool's backward runs (a row over), the overlapping pool is its own forward launch
        assert {"kernel max_pool_u8_fwd", "kernel max_pool_u8_bwd"} <= kernels
        assert not kernels & {"kernel conv_wgrad_pooled_fused", "kernel conv_wgrad_pooled_partial_fused"}


def test_the_stages_of_the_programs():
    names = [node.stage.name for node in build_program(no_relu_then_1x2(numpy.float32)).nodes]
    assert names[:2] == ["Conv2D+MaxPool2D", "Conv2D+ReLU+MaxPool2D"]
    names = [node.stage.name for node in build_program(floor_and_overlap(numpy.float32)).nodes]
    assert names[:3] == ["Conv2D+ReLU+MaxPool2D", "Conv2D+ReLU", "MaxPool2D(+ReLU mask)"]
