"""compile_step on residual networks (emulated CuPy): a Model's whole training step as one CUDA graph.

A ResNet (gpucnn.models.resnet8 on 8x8 images, so that the host harness replays every kernel in seconds) and
the issue's block with Add and Concatenate: the replays of an epoch give the CPU eager epoch (parameters,
BatchNorm2D's running statistics, the optimizer's state), verify mode passes, two runs are bitwise equal,
the capture holds our fused batch-norm kernels and no cuBLAS call, and fit(graph=True) trains a Model.
"""
import numpy
import pytest

import gpucnn
from support.emulated_cupy import to_host
from gpucnn.compile.cuda_graph.plan import build_program
from gpucnn.nn.layers import Add, BatchNorm2D, Concatenate, Conv2D, Dense, GlobalAvgPool2D, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import Adam, SGD

pytestmark = [pytest.mark.kernels, pytest.mark.graph]

F32, F64 = numpy.float32, numpy.float64
TOL = {F32: 1e-4, F64: 1e-10}


def resnet8(dtype, seed=0):
    return gpucnn.models.resnet8(in_channels=1, num_classes=10, input_size=8, dtype=dtype, rng=seed)


def concat_block(dtype, seed=0):
    """The issue's example: a residual connection, then the skip concatenated beside it."""
    x = gpucnn.Input((3, 6, 6), dtype=dtype)
    h = Conv2D(3, 4, 3, padding="same", name="conv1", dtype=dtype, rng=seed)(x)
    h = ReLU()(BatchNorm2D(4, name="bn1", dtype=dtype)(h))
    skip = h
    h = BatchNorm2D(4, name="bn2", dtype=dtype)(Conv2D(4, 4, 3, padding="same", name="conv2", dtype=dtype,
                                                       rng=seed + 1)(h))
    h = ReLU()(Add()([h, skip]))
    h = Concatenate(axis=1)([h, skip])
    return gpucnn.Model(x, Dense(8, 10, name="fc", dtype=dtype, rng=seed + 2)(GlobalAvgPool2D()(h)), name="block")


MODELS = {"resnet8": resnet8, "concat_block": concat_block}


def _data(model, n, seed=0):
    rng = numpy.random.default_rng(seed)
    shape = (n,) + model.inputs[0].shape
    return rng.standard_normal(shape).astype(model.inputs[0].dtype), rng.integers(0, 10, n)


#: Adam for the ResNet; SGD for the block, whose convolutions have biases before a BatchNorm: their gradients are
#: zero in exact arithmetic, rounding noise here, which Adam's g / (|g| + eps) would blow up to steps of lr
OPTIMIZERS = {"resnet8": lambda params: Adam(params, lr=1e-2),
              "concat_block": lambda params: SGD(params, lr=0.05, momentum=0.9)}


def _setup(gpu, name, dtype, n, batch, **kwargs):
    model = MODELS[name](dtype).to("cuda")
    opt = OPTIMIZERS[name](model.parameters())
    x, y = _data(model, n)
    step = gpucnn.compile_step(model, SoftmaxCrossEntropy(), opt, batch, **kwargs)
    step.bind(gpu.cupy.asarray(x), gpu.cupy.asarray(y))
    return model, opt, step, x, y


def _eager_epoch(name, dtype, x, y, order, batch):
    model = MODELS[name](dtype)
    loss_fn, opt = SoftmaxCrossEntropy(), OPTIMIZERS[name](model.parameters())
    for start in range(0, len(x), batch):
        idx = order[start:start + batch]
        loss_fn.forward(model.forward(x[idx]), y[idx])
        opt.zero_grad()
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
    return model


def _assert_state_close(model, reference, dtype):
    """Every parameter and buffer (the running statistics too) within the tolerance of the eager epoch's."""
    got, want = model.state_dict(), reference.state_dict()
    assert list(got) == list(want)
    for key in want:
        expected = numpy.asarray(want[key])
        scale = max(1.0, float(numpy.abs(expected).max()))
        numpy.testing.assert_allclose(to_host(got[key]), expected, rtol=0, atol=TOL[dtype] * scale, err_msg=key)


def test_the_program_of_a_resnet_fuses_batchnorm_and_relu_and_sums_at_the_forks():
    program = build_program(resnet8(F32))
    names = [node.stage.name for node in program.nodes]
    assert names.count("BatchNorm2D+ReLU") == 4 and names.count("BatchNorm2D") == 5  # bn1 and each block's bn1
    assert names.count("Add") == 3 and names[-2:] == ["GlobalAvgPool2D", "Dense"]
    reads = [k for node in program.nodes for k in node.inputs]
    forks = {k for k in reads if reads.count(k) > 1}
    assert len(forks) == 3  # every block's input feeds its convolution and its shortcut
    shortcut = [n for n in program.nodes if n.label == "layer 'layer2.0.shortcut.0'"]
    assert len(shortcut) == 1 and shortcut[0].stage.name == "Conv2D"


@pytest.mark.parametrize("name,dtype", [("resnet8", F64), ("concat_block", F32)])
def test_a_residual_step_captures_and_replays_the_eager_step(gpu, name, dtype):
    model, opt, step, x, y = _setup(gpu, name, dtype, n=5, batch=2, verify=False)
    order = numpy.random.default_rng(1).permutation(5)
    step.run_epoch(order)
    assert step.graph_launches == 2  # 5 samples at batch 2: two replays and one eager partial step
    _assert_state_close(model, _eager_epoch(name, dtype, x, y, order, 2), dtype)
    if name == "resnet8":
        assert [s["step"] for s in opt.state] == [3] * len(opt.state)
    kernels = {c for c in step.captured if c.startswith("kernel ")}
    assert not any("matmul" in c for c in step.captured)  # cuBLAS cannot be captured
    assert {"kernel bn_stats_partial_fused", "kernel conv_fwd_fused", "kernel conv_dgrad_fused"} <= kernels
    # the convolutions and the Dense write their gradients into the optimizer's slots; BatchNorm2D's are copied
    copies = [c for c in step.captured if c.startswith("assignment")]
    assert len(copies) == 2 * sum(1 for node in step.program.nodes if node.stage.name.startswith("BatchNorm2D"))


def test_verify_passes_on_a_resnet_and_the_running_statistics_are_taken_once(gpu):
    model, _, step, x, y = _setup(gpu, "resnet8", F32, n=4, batch=2, verify=True)
    order = numpy.array([2, 0, 3, 1])
    step.run_epoch(order)
    assert not step.eager and step.mismatch is None
    _assert_state_close(model, _eager_epoch("resnet8", F32, x, y, order, 2), F32)


def test_two_identical_resnet_runs_are_bitwise_identical(gpu):
    runs = []
    for _ in range(2):
        model, _, step, _, _ = _setup(gpu, "concat_block", F32, n=4, batch=2, verify=False)
        step.run_epoch(numpy.array([3, 1, 0, 2]))
        runs.append([to_host(v).tobytes() for v in model.state_dict().values()])
    assert runs[0] == runs[1]


def test_running_statistics_replaced_between_epochs_are_captured_again(gpu):
    model, _, step, _, _ = _setup(gpu, "concat_block", F32, n=4, batch=2, verify=False)
    step.run_epoch(numpy.arange(4))
    first = step.graph
    state = {k: to_host(v) for k, v in model.state_dict().items()}
    model.load_state_dict(state)  # new arrays for every parameter and buffer
    step.run_epoch(numpy.arange(4))
    assert step.graph is not first
    assert all(a is b for a, b in zip(step.buffers, step.program.buffers()))


def test_fit_on_the_graph_matches_the_eager_fit_for_a_model(gpu):
    from gpucnn.train.loop import fit
    model = concat_block(F32).to("cuda")
    x, y = _data(model, 6)
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = fit(model, SoftmaxCrossEntropy(), opt, gpu.cupy.asarray(x), gpu.cupy.asarray(y), 2, batch_size=2,
                  progress=False, graph=True, graph_options={"verify": True})
    reference = concat_block(F32)
    ref_opt = SGD(reference.parameters(), lr=0.05, momentum=0.9)
    expected = fit(reference, SoftmaxCrossEntropy(), ref_opt, x, y, 2, batch_size=2, progress=False)
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-4)
    assert history["accuracy"] == expected["accuracy"]
    _assert_state_close(model, reference, F32)
