"""compile_step on the emulated CuPy: the whole training step captures, and a replay is the eager step.

The reference network (gpucnn.models.fashion_cnn) and LeNet-5 at small batches, float32
and float64; every kernel launch runs in the host harness (the tiled ones phase by phase),
so the batches and images are kept small. The loss and the optimizer update are the real
ones by default (``SoftmaxCrossEntropy.fused``: the one-launch loss kernel; gpucnn's SGD and
Adam through ``gpucnn.compile.cuda_graph.update.MultiTensorUpdate``); the capture-safe stand-ins of
tests/fused/standins.py show that ``loss=`` / ``update=`` still plug in.
"""
import numpy
import pytest

import gpucnn
from support.emulated_cupy import to_host
from fused.standins import SGDStandIn, SoftmaxCrossEntropyStandIn
from gpucnn.compile.cuda_graph.step import GraphMismatchWarning
from gpucnn.nn.losses import MSE, SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD, Adam, AdamW

pytestmark = [pytest.mark.kernels, pytest.mark.graph]

F32, F64 = numpy.float32, numpy.float64
TOL = {F32: 1e-4, F64: 1e-10}


def _data(n, dtype, seed=0):
    rng = numpy.random.default_rng(seed)
    return rng.standard_normal((n, 1, 28, 28)).astype(dtype), rng.integers(0, 10, n)


#: the optimizers of the tests: (class, keyword arguments)
OPTIMIZERS = {"sgd": (SGD, {"lr": 0.05}), "momentum": (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
              "adam": (Adam, {"lr": 1e-3}), "adamw": (AdamW, {"lr": 1e-3, "weight_decay": 0.1})}


def _setup(gpu, name, dtype, n, batch, optimizer="adam", standins=False, seed=0, **kwargs):
    cp = gpu.cupy
    model = gpucnn.models.MODELS[name](dtype=dtype, rng=seed).to("cuda")
    cls, settings = OPTIMIZERS[optimizer]
    loss_fn, opt = SoftmaxCrossEntropy(), cls(model.parameters(), **settings)
    x, y = _data(n, dtype, seed)
    if standins:
        kwargs.update(loss=SoftmaxCrossEntropyStandIn(cp, 10), update=SGDStandIn(cp, opt, dtype))
    step = gpucnn.compile_step(model, loss_fn, opt, batch, **kwargs)
    step.bind(cp.asarray(x), cp.asarray(y))
    return model, loss_fn, opt, step, x, y


def _eager_reference(name, dtype, x, y, order, batch, optimizer="adam", seed=0):
    """The same epoch on the CPU eager path: the reference of the replays; returns (model, mean loss, optimizer)."""
    model = gpucnn.models.MODELS[name](dtype=dtype, rng=seed)
    cls, settings = OPTIMIZERS[optimizer]
    loss_fn, opt = SoftmaxCrossEntropy(), cls(model.parameters(), **settings)
    losses = []
    for start in range(0, len(x), batch):
        idx = order[start:start + batch]
        logits = model.forward(x[idx])
        losses.append(float(loss_fn.forward(logits, y[idx])) * len(idx))
        opt.zero_grad()
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
    return model, sum(losses) / len(x), opt


def _assert_params_close(model, reference, dtype):
    for p, q in zip(model.parameters(), reference.parameters()):
        actual, expected = to_host(p.data), q.data
        scale = max(1.0, float(numpy.abs(expected).max()))
        numpy.testing.assert_allclose(actual, expected, rtol=0, atol=TOL[dtype] * scale)


def _assert_optimizer_state_close(optimizer, reference, dtype):
    """Host step counts and lr exactly as on the eager path; the state arrays within the tolerance."""
    assert [s["step"] for s in optimizer.state] == [s["step"] for s in reference.state]
    assert optimizer.lr == reference.lr
    for state, expected in zip(optimizer.state, reference.state):
        assert sorted(state) == sorted(expected)
        for key in reference.state_names:
            scale = max(1.0, float(numpy.abs(expected[key]).max()))
            numpy.testing.assert_allclose(to_host(state[key]), expected[key], rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("name,dtype,optimizer", [("fashion_cnn", F32, "adam"), ("lenet5", F64, "momentum"),
                                                  ("lenet5", F32, "adamw")])
def test_whole_step_captures_and_replays_the_eager_step(gpu, name, dtype, optimizer):
    """One capture with the real loss and optimizer; the replays over an epoch (and the eager partial batch)
    give the CPU eager epoch: parameters, optimizer state, host step counts."""
    model, _, opt, step, x, y = _setup(gpu, name, dtype, n=5, batch=2, optimizer=optimizer, verify=False)
    order = numpy.random.default_rng(1).permutation(5)
    stats = step.run_epoch(order)
    reference, loss, ref_opt = _eager_reference(name, dtype, x, y, order, 2, optimizer)
    _assert_params_close(model, reference, dtype)
    _assert_optimizer_state_close(opt, ref_opt, dtype)
    assert [s["step"] for s in opt.state] == [3] * len(opt.state)
    assert stats["loss"] == pytest.approx(loss, rel=TOL[dtype] * 10)
    assert step.graph_launches == 2  # 5 samples at batch 2: two replays and one eager partial step
    captured = step.captured
    assert not any("matmul" in c for c in captured)  # cuBLAS cannot be captured
    assert not any(c.startswith("assignment") for c in captured), captured  # gradients written in place
    kernels = {c for c in captured if c.startswith("kernel ")}
    update = {"kernel step_scalars", "kernel multi_sgd_update" if optimizer == "momentum" else
              "kernel multi_adam_update"}
    assert {"kernel softmax_xent"} | update <= kernels
    if name == "fashion_cnn":
        # at batch 2, conv1's weight gradient (K = 2 * 784) splits (launch.weight_grad_plan), conv2's (K = 392)
        # not; dense1's forward (4 tiles, K = 3136) splits, dense2's (K = 128) not; both 2x2 max pools run in
        # their convolution's epilogue (conv_fwd_pool_fused), and conv1's dW reads the pool's gradient itself
        # (conv_wgrad_pooled_partial_fused: no pool backward for the first stage)
        assert kernels == {"kernel conv_fwd_pool_fused", "kernel conv_dgrad_fused", "kernel conv_wgrad_fused",
                           "kernel conv_wgrad_pooled_partial_fused", "kernel conv_wgrad_reduce_fused",
                           "kernel dense_fwd_partial_fused", "kernel dense_fwd_reduce_fused",
                           "kernel max_pool_u8_bwd", "kernel dense_fwd_fused",
                           "kernel dense_dgrad_fused", "kernel dense_wgrad_fused", "kernel softmax_xent",
                           "kernel gather_rows_labels", "kernel step_end"} | update


def test_the_pluggable_loss_and_update_still_plug_in(gpu):
    model, _, _, step, x, y = _setup(gpu, "fashion_cnn", F32, n=4, batch=2, optimizer="sgd", standins=True,
                                     verify=True)
    order = numpy.array([1, 3, 0, 2])
    step.run_epoch(order)
    assert not step.eager and step.graph_launches == 2
    assert "kernel softmax_xent" not in step.captured  # the stand-in's CuPy kernels instead
    reference, _, _ = _eager_reference("fashion_cnn", F32, x, y, order, 2, "sgd")
    _assert_params_close(model, reference, F32)


def test_an_epoch_does_one_host_read(gpu):
    model, _, _, step, x, y = _setup(gpu, "fashion_cnn", F32, n=5, batch=2, verify=False)
    step.run_epoch(numpy.arange(5))  # captures
    gpu.syncs.reset()
    step.run_epoch(numpy.random.default_rng(3).permutation(5))  # two replays and the eager partial step
    assert gpu.syncs.count == 1, gpu.syncs.events
    assert "gpucnn/compile/cuda_graph/step.py" in gpu.syncs.events[0][1]


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_two_identical_graph_runs_are_bitwise_identical(gpu, optimizer):
    runs = []
    for _ in range(2):
        model, _, opt, step, _, _ = _setup(gpu, "fashion_cnn", F32, n=4, batch=2, optimizer=optimizer,
                                           verify=False)
        step.run_epoch(numpy.array([3, 1, 0, 2]))
        runs.append([to_host(p.data).tobytes() for p in model.parameters()]
                    + [to_host(s[k]).tobytes() for s in opt.state for k in opt.state_names])
    assert runs[0] == runs[1]


def test_verify_passes_and_the_epoch_continues_on_the_graph(gpu):
    model, _, opt, step, x, y = _setup(gpu, "fashion_cnn", F32, n=4, batch=2, verify=True, verify_every=2)
    groups = opt.multi_tensor_groups()
    order = numpy.array([2, 0, 3, 1])
    step.run_epoch(order)
    assert not step.eager and step.mismatch is None
    reference, _, ref_opt = _eager_reference("fashion_cnn", F32, x, y, order, 2)
    _assert_params_close(model, reference, F32)
    _assert_optimizer_state_close(opt, ref_opt, F32)  # the verified step was taken once, not twice
    step.run_epoch(order)  # steps 2 and 3: step 2 verified again (verify_every=2), step 3 a plain replay
    assert step.graph_launches == 4 and not step.eager and step.mismatch is None
    assert opt.multi_tensor_groups() is groups  # the verify restored the state in place: no new buffers
    assert [s["step"] for s in opt.state] == [4] * len(opt.state)


def test_verify_mismatch_warns_names_the_tensor_and_falls_back_to_eager(gpu):
    model, _, opt, step, x, y = _setup(gpu, "fashion_cnn", F32, n=4, batch=2, verify=True)
    real_update = step.update

    class WrongUpdate:  # a broken kernel: the last bias gets an extra step
        def __getattr__(self, name):
            return getattr(real_update, name)  # the hooks (sync_from, after_step, ...) of the real one

        def __call__(self, params, grads):
            real_update(params, grads)
            params[-1] -= 0.1 * grads[-1]

    step.update = WrongUpdate()
    order = numpy.array([2, 0, 3, 1])
    with pytest.warns(GraphMismatchWarning, match=r"first differing tensor '9\.bias'"):
        stats = step.run_epoch(order)
    assert step.eager and step.mismatch[0] == "9.bias"
    reference, loss, ref_opt = _eager_reference("fashion_cnn", F32, x, y, order, 2)
    _assert_params_close(model, reference, F32)  # nothing lost: the eager path redid the epoch
    _assert_optimizer_state_close(opt, ref_opt, F32)
    assert stats["loss"] == pytest.approx(loss, rel=1e-4)


def test_compile_step_refuses_what_it_cannot_capture(gpu):
    cp = gpu.cupy
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    loss_fn, optimizer = SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1)
    with pytest.raises(NotImplementedError, match="capture-safe loss"):
        gpucnn.compile_step(model, MSE(), optimizer, 2)

    class PlainOptimizer:  # no fused_step, no multi-tensor groups
        lr = 0.1

    with pytest.raises(NotImplementedError, match="capture-safe update"):
        gpucnn.compile_step(model, loss_fn, PlainOptimizer(), 2, loss=SoftmaxCrossEntropyStandIn(cp, 10))
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


def test_a_state_loaded_between_epochs_is_captured_again(gpu):
    """Loading optimizer state replaces the arrays the graph captured: the next epoch captures again and
    continues exactly as if nothing had been loaded."""
    runs = []
    for reload in (False, True):
        model, _, opt, step, _, _ = _setup(gpu, "fashion_cnn", F32, n=4, batch=2, verify=False)
        step.run_epoch(numpy.array([3, 1, 0, 2]))
        first_graph = step.graph
        if reload:
            arrays, scalars = opt.state_arrays()
            opt.load_state_arrays({k: to_host(v) for k, v in arrays.items()}, scalars)
            assert not step.update.is_current()
        step.run_epoch(numpy.array([0, 2, 1, 3]))
        assert (step.graph is not first_graph) == reload
        runs.append([to_host(p.data).tobytes() for p in model.parameters()]
                    + [to_host(s[k]).tobytes() for s in opt.state for k in opt.state_names])
    assert runs[0] == runs[1]
