"""The fused batch-norm launchers (gpucnn/compile/cuda_graph/launch_batchnorm.py) on a NumPy stand-in for CuPy.

Every launch goes through the host harness (tests/support/kernel_harness.py: FakeKernel, which checks the
exact scalar types of the signature, C-contiguous pointers and the grid). Held to PyTorch's BatchNorm2d /
BatchNorm1d in training mode, float64: y, the running statistics, and grad_x, grad_gamma, grad_beta from
autograd (ReLU after it when relu=True); bitwise repeatable; S = batch_norm_slices fills a full wave of
132 SMs at ResNet-20's shapes; bad input raises before any launch.
"""
import importlib

import numpy
import pytest

from support.kernel_harness import launchers_over_numpy

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.kernels

MOMENTUM, EPS = 0.1, 1e-5
FILE = "fused_batchnorm.cu"


@pytest.fixture
def bn(harness, monkeypatch):
    """launch_batchnorm over the NumPy stand-in for CuPy, its launches run by the harness and recorded."""
    with launchers_over_numpy(harness, monkeypatch) as (_, launches):
        module = importlib.import_module("gpucnn.compile.cuda_graph.launch_batchnorm")
        module.launches = launches
        yield module


def _torch_reference(x, gamma, beta, running_mean, running_var, grad_y, relu):
    """(y, running_mean, running_var, grad_x, grad_gamma, grad_beta) of torch.nn.BatchNorm{1,2}d in training."""
    layer = (torch.nn.BatchNorm2d if x.ndim == 4 else torch.nn.BatchNorm1d)(
        x.shape[1], eps=EPS, momentum=MOMENTUM, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma))
        layer.bias.copy_(torch.from_numpy(beta))
        layer.running_mean.copy_(torch.from_numpy(running_mean))
        layer.running_var.copy_(torch.from_numpy(running_var))
    layer.train()
    xt = torch.from_numpy(x).requires_grad_(True)
    y = layer(xt)
    if relu:
        y = torch.relu(y)
    y.backward(torch.from_numpy(grad_y))
    return (y.detach().numpy(), layer.running_mean.numpy(), layer.running_var.numpy(), xt.grad.numpy(),
            layer.weight.grad.numpy(), layer.bias.grad.numpy())


def _problem(shape, seed):
    rng = numpy.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * 3 + 2
    return (x, rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(c), rng.random(c) + 0.5,
            rng.standard_normal(shape))


def _fused_step(bn, x, gamma, beta, running_mean, running_var, grad_y, relu, slices, need_input_grad=True):
    y, mean, inv_std = bn.batch_norm_train_forward(x, gamma, beta, running_mean, running_var, MOMENTUM, EPS,
                                                   relu=relu, slices=slices)
    grads = bn.batch_norm_train_backward(grad_y, x, mean, inv_std, gamma, y=y if relu else None,
                                         need_input_grad=need_input_grad, slices=slices)
    return (y, mean, inv_std) + grads


@pytest.mark.parametrize("slices", [None, 1, 3])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 3, 7, 5), (6, 4), (4, 16, 8, 8)],
                         ids=lambda s: "x".join(map(str, s)))
def test_launchers_equal_pytorch_in_float64(bn, shape, relu, slices):
    x, gamma, beta, running_mean, running_var, grad_y = _problem(shape, seed=len(shape) + (slices or 0))
    want = _torch_reference(x, gamma, beta, running_mean.copy(), running_var.copy(), grad_y, relu)
    y, mean, inv_std, grad_x, grad_gamma, grad_beta = _fused_step(bn, x, gamma, beta, running_mean, running_var,
                                                                  grad_y, relu, slices)
    got = (y, running_mean, running_var, grad_x, grad_gamma, grad_beta)
    for name, a, b in zip(("y", "running_mean", "running_var", "grad_x", "grad_gamma", "grad_beta"), got, want):
        numpy.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * max(1.0, float(abs(b).max())), err_msg=name)
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    numpy.testing.assert_allclose(mean, x.mean(axis=axes), rtol=1e-12)
    numpy.testing.assert_allclose(inv_std, 1 / numpy.sqrt(x.var(axis=axes) + EPS), rtol=1e-12)
    assert bn.launches.count((FILE, "bn_stats_partial_fused")) == 1
    assert bn.launches.count((FILE, "bn_backward_apply_fused")) == 1


def test_without_input_grad_the_parameter_grads_stay(bn):
    x, gamma, beta, running_mean, running_var, grad_y = _problem((2, 3, 7, 5), seed=9)
    full = _fused_step(bn, x, gamma, beta, running_mean.copy(), running_var.copy(), grad_y, True, 2)
    part = _fused_step(bn, x, gamma, beta, running_mean.copy(), running_var.copy(), grad_y, True, 2,
                       need_input_grad=False)
    assert part[3] is None
    assert part[4].tobytes() == full[4].tobytes() and part[5].tobytes() == full[5].tobytes()


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_launchers_are_bitwise_repeatable(bn, dtype):
    x, gamma, beta, running_mean, running_var, grad_y = (a.astype(dtype) for a in _problem((4, 16, 8, 8), 3))
    runs = [_fused_step(bn, x, gamma, beta, running_mean.copy(), running_var.copy(), grad_y, True, None)
            for _ in range(2)]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(*runs))


# ResNet-20 (gpucnn.nn.resnet): batch 64-256 of 32 x 32 or 28 x 28 inputs; stages of 16, 32, 64 channels at
# spatial 32, 16, 8 (28, 14, 7).
RESNET20_SHAPES = [(batch, c, side // 2 ** i) for batch in (64, 128, 256) for side in (32, 28)
                   for i, c in enumerate((16, 32, 64))]


@pytest.mark.parametrize("batch,channels,side", RESNET20_SHAPES)
def test_the_slices_fill_a_wave_at_the_resnet20_shapes(bn, batch, channels, side):
    count = batch * side * side
    slices = bn.batch_norm_slices(channels, count, 132)
    assert channels * slices >= 132  # at least one block per SM of an H100 SXM
    assert count // slices >= 4 * 256  # and every thread of a block has elements to read
    assert bn.batch_norm_slices(channels, count, 132) == slices


def test_the_slices_never_exceed_the_count_or_need_a_wave_of_big_channels(bn):
    assert bn.batch_norm_slices(3, 2, 132) == 2
    assert bn.batch_norm_slices(256, 64 * 64, 132) == 1  # 256 channels are a wave already
    assert bn.batch_norm_slices(16, 256 * 32 * 32, 132) == 33  # towards 4 blocks per SM


def test_the_launch_grids_are_channels_times_slices(bn, monkeypatch):
    grids = []
    real = bn.loader.launch

    def launch(file, name, dtype, args, grid=None, index=None):
        grids.append((name, grid))
        return real(file, name, dtype, args, grid=grid, index=index)

    monkeypatch.setattr(bn.loader, "launch", launch)
    x, gamma, beta, running_mean, running_var, grad_y = _problem((2, 3, 7, 5), seed=1)
    _fused_step(bn, x, gamma, beta, running_mean, running_var, grad_y, False, 7)
    assert grids == [(name, 21) for name in ("bn_stats_partial_fused", "bn_forward_apply_fused",
                                             "bn_grad_partial_fused", "bn_backward_apply_fused")]


def test_bad_input_raises_before_any_launch(bn):
    x, gamma, beta, running_mean, running_var, grad_y = _problem((2, 3, 4, 4), seed=2)
    forward = bn.batch_norm_train_forward
    with pytest.raises(ValueError, match="gamma has shape"):
        forward(x, gamma[:2], beta, running_mean, running_var, MOMENTUM, EPS)
    with pytest.raises(TypeError, match="one dtype"):
        forward(x.astype(numpy.float32), gamma, beta, running_mean, running_var, MOMENTUM, EPS)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        forward(x[:1, :, :1, :1], gamma, beta, running_mean, running_var, MOMENTUM, EPS)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, C\)"):
        forward(x[0], gamma, beta, running_mean, running_var, MOMENTUM, EPS)
    with pytest.raises(ValueError, match="slices must be a positive integer"):
        forward(x, gamma, beta, running_mean, running_var, MOMENTUM, EPS, slices=0)
    with pytest.raises(ValueError, match="contiguous"):
        forward(x, gamma, beta, running_mean, numpy.ones(6)[::2], MOMENTUM, EPS)
    with pytest.raises(ValueError, match="grad_y has shape"):
        bn.batch_norm_train_backward(grad_y[:1], x, gamma, gamma, gamma)
    with pytest.raises(TypeError, match="CuPy array"):
        bn.batch_norm_train_backward(grad_y, x.tolist(), gamma, gamma, gamma)
    assert bn.launches == []


@pytest.mark.graph
def test_one_training_step_of_batch_norm_is_captured_and_replayed(gpu):
    """On the emulated CuPy: the four launches and nothing else are captured (no read-back, no synchronisation,
    no cuBLAS; the partial buffers from the warmed pool), and each replay normalises the buffers' new contents
    and moves the running statistics again."""
    from gpucnn.compile.cuda_graph import reference_batchnorm as twin
    from support.emulated_cupy import to_host

    bn = importlib.import_module("gpucnn.compile.cuda_graph.launch_batchnorm")
    cp = gpu.cupy
    x, gamma, beta, running_mean, running_var, grad_y = _problem((2, 3, 7, 5), seed=4)
    dev = [cp.asarray(a) for a in (x, gamma, beta, running_mean, running_var, grad_y)]
    outputs = {}

    def step(x_d, gamma_d, beta_d, mean_d, var_d, grad_d):
        outputs["forward"] = bn.batch_norm_train_forward(x_d, gamma_d, beta_d, mean_d, var_d, MOMENTUM, EPS,
                                                         relu=True)
        y_d, m_d, inv_d = outputs["forward"]
        outputs["backward"] = bn.batch_norm_train_backward(grad_d, x_d, m_d, inv_d, gamma_d, y=y_d)

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        step(*dev)  # the warm-up step (eager)
        outputs.clear()  # its arrays back to the pool, which serves the capture
        syncs = gpu.syncs.count
        stream.begin_capture()
        step(*dev)
        graph = stream.end_capture()
    assert graph.captured == ["kernel bn_stats_partial_fused", "kernel bn_forward_apply_fused",
                              "kernel bn_grad_partial_fused", "kernel bn_backward_apply_fused"]
    assert gpu.syncs.count == syncs
    want_mean, want_var = running_mean.copy(), running_var.copy()
    twin.batch_norm_train_forward(x, gamma, beta, want_mean, want_var, MOMENTUM, EPS, relu=True)  # the warm-up
    new_x = x[::-1].copy() * 0.5
    dev[0][...] = cp.asarray(new_x)
    graph.launch(stream)
    y_ref, mean_ref, inv_ref = twin.batch_norm_train_forward(new_x, gamma, beta, want_mean, want_var, MOMENTUM, EPS,
                                                             relu=True)
    grads_ref = twin.batch_norm_train_backward(grad_y, new_x, mean_ref, inv_ref, gamma, y=y_ref)
    y_d, _, _ = outputs["forward"]
    numpy.testing.assert_allclose(to_host(y_d), y_ref, rtol=1e-10, atol=1e-10)
    numpy.testing.assert_allclose(to_host(dev[3]), want_mean, rtol=1e-10)
    numpy.testing.assert_allclose(to_host(dev[4]), want_var, rtol=1e-10)
    for got, want in zip(outputs["backward"], grads_ref):
        numpy.testing.assert_allclose(to_host(got), want, rtol=1e-10, atol=1e-10)
