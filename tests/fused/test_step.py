"""compile_step on the emulated CuPy: the whole training step captures, and a replay is the eager step.

The reference network (gpucnn.models.fashion_cnn) and LeNet-5 at small batches, float32
and float64; every kernel launch runs in the host harness (the tiled ones phase by phase),
so the batches and images are kept small. The loss and the optimizer update are the
capture-safe stand-ins of tests/fused/standins.py (the fused loss kernel and the
multi-tensor optimizer are built elsewhere).
"""
import numpy
import pytest

import emulated_cupy
import gpucnn
from emulated_cupy import to_host
from fused.standins import SGDStandIn, SoftmaxCrossEntropyStandIn
from gpucnn.fused.step import GraphMismatchWarning
from gpucnn.losses import SoftmaxCrossEntropy
from gpucnn.optim import SGD
from kernels.test_host_harness import FakeKernel, harness  # noqa: F401  (harness: the session fixture)

pytestmark = [pytest.mark.kernels, pytest.mark.graph]

F32, F64 = numpy.float32, numpy.float64
TOL = {F32: 1e-4, F64: 1e-10}


@pytest.fixture
def gpu(harness):  # noqa: F811
    with emulated_cupy.installed(harness, FakeKernel) as emulated:
        yield emulated


def _data(n, dtype, seed=0):
    rng = numpy.random.default_rng(seed)
    return rng.standard_normal((n, 1, 28, 28)).astype(dtype), rng.integers(0, 10, n)


def _setup(gpu, name, dtype, n, batch, lr=0.05, seed=0, **kwargs):
    cp = gpu.cupy
    model = gpucnn.models.MODELS[name](dtype=dtype, rng=seed).to("cuda")
    loss_fn, optimizer = SoftmaxCrossEntropy(), SGD(model.parameters(), lr=lr)
    x, y = _data(n, dtype, seed)
    step = gpucnn.compile_step(model, loss_fn, optimizer, batch, loss=SoftmaxCrossEntropyStandIn(cp, 10),
                               update=SGDStandIn(cp, optimizer, dtype), **kwargs)
    step.bind(cp.asarray(x), cp.asarray(y))
    return model, loss_fn, optimizer, step, x, y


def _eager_reference(name, dtype, x, y, order, batch, lr=0.05, seed=0):
    """The same epoch on the CPU eager path: the reference of the replays."""
    model = gpucnn.models.MODELS[name](dtype=dtype, rng=seed)
    loss_fn, optimizer = SoftmaxCrossEntropy(), SGD(model.parameters(), lr=lr)
    losses = []
    for start in range(0, len(x), batch):
        idx = order[start:start + batch]
        logits = model.forward(x[idx])
        losses.append(float(loss_fn.forward(logits, y[idx])) * len(idx))
        optimizer.zero_grad()
        model.backward(loss_fn.backward(), need_input_grad=False)
        optimizer.step()
    return model, sum(losses) / len(x)


def _assert_params_close(model, reference, dtype):
    for p, q in zip(model.parameters(), reference.parameters()):
        actual, expected = to_host(p.data), q.data
        scale = max(1.0, float(numpy.abs(expected).max()))
        numpy.testing.assert_allclose(actual, expected, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("name,dtype", [("fashion_cnn", F32), ("lenet5", F64)])
def test_whole_step_captures_and_replays_the_eager_step(gpu, name, dtype):
    """One capture; the replays over an epoch (and the eager partial batch) give the CPU eager epoch."""
    model, _, _, step, x, y = _setup(gpu, name, dtype, n=5, batch=2, verify=False)
    order = numpy.random.default_rng(1).permutation(5)
    stats = step.run_epoch(order)
    reference, loss = _eager_reference(name, dtype, x, y, order, 2)
    _assert_params_close(model, reference, dtype)
    assert stats["loss"] == pytest.approx(loss, rel=TOL[dtype] * 10)
    assert step.graph_launches == 2  # 5 samples at batch 2: two replays and one eager partial step
    captured = step.captured
    assert not any("matmul" in c for c in captured)  # cuBLAS cannot be captured
    kernels = {c for c in captured if c.startswith("kernel ")}
    if name == "fashion_cnn":
        assert kernels == {"kernel conv_fwd_fused", "kernel conv_dgrad_fused", "kernel conv_wgrad_fused",
                           "kernel max_pool_u8_fwd", "kernel max_pool_u8_bwd", "kernel dense_fwd_fused",
                           "kernel dense_dgrad_fused", "kernel dense_wgrad_fused"}


def test_an_epoch_does_one_host_read(gpu):
    model, _, _, step, x, y = _setup(gpu, "fashion_cnn", F32, n=4, batch=2, verify=False)
    step.run_epoch(numpy.arange(4))  # captures
    gpu.syncs.reset()
    step.run_epoch(numpy.random.default_rng(3).permutation(4))
    assert gpu.syncs.count == 1, gpu.syncs.events
    assert "gpucnn/fused/step.py" in gpu.syncs.events[0][1]


def test_two_identical_graph_runs_are_bitwise_identical(gpu):
    runs = []
    for _ in range(2):
        model, _, _, step, _, _ = _setup(gpu, "fashion_cnn", F32, n=4, batch=2, verify=False)
        step.run_epoch(numpy.array([3, 1, 0, 2]))
        runs.append([to_host(p.data).tobytes() for p in model.parameters()])
    assert runs[0] == runs[1]


def test_verify_passes_and_the_epoch_continues_on_the_graph(gpu):
    model, _, _, step, x, y = _setup(gpu, "fashion_cnn", F32, n=4, batch=2, verify=True, verify_every=2)
    order = numpy.array([2, 0, 3, 1])
    step.run_epoch(order)
    assert not step.eager and step.mismatch is None
    reference, _ = _eager_reference("fashion_cnn", F32, x, y, order, 2)
    _assert_params_close(model, reference, F32)
    step.run_epoch(order)  # steps 2 and 3: step 2 verified again (verify_every=2), step 3 a plain replay
    assert step.graph_launches == 4 and not step.eager


def test_verify_mismatch_warns_names_the_tensor_and_falls_back_to_eager(gpu):
    model, _, _, step, x, y = _setup(gpu, "fashion_cnn", F32, n=4, batch=2, verify=True)
    real_update = step.update

    def wrong_update(params, grads):  # a broken kernel: the last bias gets twice its step
        real_update(params, grads)
        params[-1] -= step.update_lr_for_test * grads[-1]

    step.update_lr_for_test = real_update.lr
    step.update = wrong_update
    order = numpy.array([2, 0, 3, 1])
    with pytest.warns(GraphMismatchWarning, match=r"layers\.9\.Dense\.bias'"):
        stats = step.run_epoch(order)
    assert step.eager and step.mismatch[0] == "layers.9.Dense.bias"
    reference, loss = _eager_reference("fashion_cnn", F32, x, y, order, 2)
    _assert_params_close(model, reference, F32)  # nothing lost: the eager path redid the epoch
    assert stats["loss"] == pytest.approx(loss, rel=1e-4)


def test_compile_step_refuses_what_it_cannot_capture(gpu):
    cp = gpu.cupy
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    loss_fn, optimizer = SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1)
    with pytest.raises(NotImplementedError, match="capture-safe loss"):
        gpucnn.compile_step(model, loss_fn, optimizer, 2, update=SGDStandIn(cp, optimizer, F32))
    with pytest.raises(NotImplementedError, match="capture-safe update"):
        gpucnn.compile_step(model, loss_fn, optimizer, 2, loss=SoftmaxCrossEntropyStandIn(cp, 10))
    with_dropout = gpucnn.Sequential([gpucnn.layers.Flatten(), gpucnn.layers.Dropout(0.5),
                                      gpucnn.layers.Dense(4, 2, rng=0)]).to("cuda")
    with pytest.raises(NotImplementedError, match="layer 1 \\(Dropout\\) has no fused stage"):
        gpucnn.compile_step(with_dropout, loss_fn, SGD(with_dropout.parameters(), lr=0.1), 2,
                            loss=SoftmaxCrossEntropyStandIn(cp, 2), update=lambda p, g: None)
    dilated = gpucnn.Sequential([gpucnn.layers.Conv2D(1, 2, 3, dilation=2, rng=0), gpucnn.layers.Flatten(),
                                 gpucnn.layers.Dense(2, 2, rng=0)]).to("cuda")
    with pytest.raises(NotImplementedError, match="layer 0 .* is dilated or grouped"):
        gpucnn.compile_step(dilated, loss_fn, SGD(dilated.parameters(), lr=0.1), 2,
                            loss=SoftmaxCrossEntropyStandIn(cp, 2), update=lambda p, g: None)
    with pytest.raises(ValueError, match="on a CUDA device"):
        gpucnn.compile_step(gpucnn.models.fashion_cnn(rng=0), loss_fn, optimizer, 2, loss=1, update=1)


def test_compile_step_needs_a_gpu():
    model = gpucnn.models.fashion_cnn(rng=0)
    with pytest.raises((RuntimeError, ValueError), match="CUDA"):
        gpucnn.compile_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), 2)
