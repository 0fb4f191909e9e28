"""gpucnn's CuPy path end to end, on an emulated device (no GPU needed; nvcc is).

tests/support/emulated_cupy installs a stand-in ``cupy`` whose ndarray is a distinct subclass
of numpy.ndarray: gpucnn.backend then reports 'cuda:0', models move there with
``model.to('cuda')``, every op takes its CuPy branch, and every kernel launch of the real
launchers (gpucnn/ops/cuda/*.py) runs the kernel's body on the CPU in the harness of
tests/support/kernel_harness.py (``FakeKernel``, which also checks each launch's
argument types and grid). Every host read-back of a device array is counted.

Checked against the same model on the CPU:
- forward, backward (input and parameter gradients), SGD (momentum + Nesterov + L2),
  Adam (L2) and AdamW steps, BatchNorm running statistics, eval mode; float64 to 1e-10,
  float32 to 1e-4; every parameter, gradient, buffer and optimizer state stays a device
  array of the parameter's dtype;
- zero host synchronisations inside model.forward, model.backward and optimizer.step; the
  loss reads labels on the device back once per call, and not at all once fit has
  checked the data set; fit syncs only every ``sync_every`` steps (and at epoch ends);
- fit on a device data set gives the CPU run's history; training checkpoints move
  between the emulated GPU and the CPU both ways, and resuming on the other side
  continues the same run;
- Sequential.save on the device and load on the CPU (and back) keep the weights exactly;
- (e) a model on the second emulated device ('cuda:1') while device 0 is current: layers,
  losses, optimizers, loading, batching and fit enter their arrays' device themselves (CuPy
  without peer access refuses work on another device's arrays, and so does the emulation).
"""
import functools
import shutil

import numpy
import pytest

from support import emulated_cupy
import gpucnn
from support.emulated_cupy import DeviceArray, to_host
from gpucnn import backend
from gpucnn.train import eager_step, loop as train
from gpucnn.nn.layers import (AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU, MaxPool2D, ReLU,
    Sigmoid, Tanh)
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD, Adam, AdamW, StepLR

pytestmark = pytest.mark.kernels

F32, F64 = numpy.float32, numpy.float64


# ----------------------------------------------------------------------------- helpers

def tolerance(dtype):
    return 1e-4 if numpy.dtype(dtype) == numpy.dtype(F32) else 1e-10


def assert_close(actual, expected, dtype, what):
    """``actual`` (device or host) equals ``expected`` (host) to the dtype's tolerance, scaled."""
    actual, expected = to_host(actual), numpy.asarray(expected)
    assert actual.dtype == numpy.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {numpy.dtype(dtype)}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    tol = tolerance(dtype)
    scale = max(1.0, float(numpy.max(numpy.abs(expected)))) if expected.size else 1.0
    numpy.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def assert_on_device(array, dtype, what):
    assert type(array) is DeviceArray, f"{what}: a {type(array).__name__}, not a device array"
    assert array.dtype == numpy.dtype(dtype), f"{what}: dtype {array.dtype}, expected {numpy.dtype(dtype)}"


def _device_like_uniform(layer, xp, shape, dtype):
    seed = int(layer.rng.integers(2 ** 62))  # exactly what Dropout._uniform draws on the device path
    return emulated_cupy.uniform(seed, shape, dtype)


def mirror_device_dropout(model):
    """Make a CPU model's Dropout draw the masks the emulated device draws (CuPy's RNG differs from NumPy's).

    Only the CPU reference is touched: the device model runs Dropout._uniform as it is.
    """
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer._uniform = functools.partial(_device_like_uniform, layer)
    return model


def build_model(dtype, seed=0):
    """Every layer kind; both conv paths (direct kernel for K <= 32, im2col + GEMM above), dilated and
    grouped convolutions on both."""
    rng = numpy.random.default_rng(seed)
    return gpucnn.Sequential([
        # no bias before BatchNorm: its gradient is zero up to rounding, which Adam would blow up to +-lr
        Conv2D(2, 3, 3, padding="same", bias=False, dtype=dtype, rng=rng),          # K=18: direct, (3,3,9,9)
        BatchNorm2D(3, dtype=dtype),
        LeakyReLU(0.1),
        MaxPool2D(3, stride=2, padding=1),                                          # overlapping, (3,3,5,5)
        Conv2D(3, 4, (3, 4), stride=(1, 2), padding=(1, 2), dtype=dtype, rng=rng),  # K=36: GEMM, (3,4,5,3)
        ReLU(),
        Conv2D(4, 4, 2, padding="same", dtype=dtype, rng=rng),                      # even kernel: pads 0/1
        Conv2D(4, 4, 3, padding="same", dilation=2, groups=4, dtype=dtype, rng=rng),  # depthwise, dilated: direct
        Conv2D(4, 4, (4, 5), padding="same", dilation=(1, 2), groups=2, dtype=dtype, rng=rng),  # K/group=40: GEMM
        Tanh(),
        AvgPool2D(2, stride=1, padding=1),                                          # (3,4,6,4)
        Flatten(),
        Dropout(0.25, rng=seed + 1),
        Dense(96, 8, dtype=dtype, rng=rng),
        Sigmoid(),
        Dense(8, 3, dtype=dtype, rng=rng),
    ])


OPTIMIZERS = {
    "sgd_nesterov": lambda params: SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda params: Adam(params, lr=1e-3, weight_decay=1e-3),
    "adamw": lambda params: AdamW(params, lr=1e-3, weight_decay=1e-2),
}


class SyncProbe:
    """Counts the syncs inside a call: ``probe.calls[name]`` lists (count, events) per call."""

    def __init__(self, syncs):
        self.syncs = syncs
        self.calls = {}

    def run(self, name, function, *args, **kwargs):
        start = len(self.syncs.events)
        try:
            return function(*args, **kwargs)
        finally:
            events = self.syncs.since(start)
            self.calls.setdefault(name, []).append((len(events), events))

    def counts(self, name):
        return [count for count, _ in self.calls.get(name, [])]

    def where(self, name):
        return [event for _, events in self.calls.get(name, []) for event in events]


# ----------------------------------------------------------------------------- the emulation itself

def test_backend_sees_a_gpu_and_arrays_stay_on_it(gpu):
    assert backend.gpu_available() and backend.resolve_device("auto") == "cuda:0"
    x = backend.to_device(numpy.arange(6.0).reshape(2, 3), "cuda")
    assert type(x) is DeviceArray and backend.device_of(x) == "cuda:0"
    assert backend.get_array_module(x) is gpu.cupy
    assert backend.get_array_module(numpy.zeros(1)) is numpy
    total = x.sum()
    assert type(total) is DeviceArray and total.ndim == 0       # CuPy: 0-d arrays, not scalars
    assert type(x[0, 1]) is DeviceArray and type(x.argmax()) is DeviceArray
    assert type(gpu.cupy.exp(x)) is DeviceArray and type(x.T @ x) is DeviceArray
    assert gpu.syncs.count == 0
    assert float(total) == 15.0 and gpu.syncs.count == 1
    with pytest.raises(TypeError, match="Unsupported type"):
        x + numpy.ones(3)                                          # CuPy refuses host arrays
    with pytest.raises(TypeError, match="Unsupported type"):
        gpu.cupy.stack([x, numpy.ones((2, 3))])
    host = backend.asnumpy(x)
    assert type(host) is numpy.ndarray and gpu.syncs.count == 2
    with pytest.raises(RuntimeError, match="only 2 CUDA device"):
        backend.resolve_device("cuda:2")
    y = backend.to_device(x, "cuda:1")                             # a copy on the second device
    assert backend.device_of(y) == "cuda:1" and backend.device_of(y[0]) == "cuda:1"
    with pytest.raises(ValueError, match="different from the current device 0"):
        y + 1                                                      # device 1's array, device 0 current
    with y.device:
        assert backend.device_of(y + 1) == "cuda:1" and backend.device_of(gpu.cupy.zeros(2)) == "cuda:1"


def test_fake_cupy_is_gone_after_the_fixture():
    assert backend.get_array_module(numpy.zeros(1)) is numpy
    cupy = backend.cupy_or_none()
    assert cupy is None or cupy.ndarray is not DeviceArray


# ----------------------------------------------------------------------------- (a) + (b) parity, no syncs

def _train(model, optimizer, x, y, steps, probe=None):
    """``steps`` training steps; returns per step (logits, loss, grad_x, grads); the last step's loss
    runs without the label check (as inside fit)."""
    run = probe.run if probe is not None else (lambda name, function, *a, **k: function(*a, **k))
    loss_fn = SoftmaxCrossEntropy()
    record = []
    for step in range(steps):
        loss_fn.check_labels = step < steps - 1
        logits = run("model.forward", model.forward, x)
        loss = run("loss.forward", loss_fn.forward, logits, y)
        run("optimizer.zero_grad", optimizer.zero_grad)
        grad_x = run("model.backward", model.backward, run("loss.backward", loss_fn.backward))
        grads = [p.grad.copy() for p in model.parameters()]
        run("optimizer.step", optimizer.step)
        record.append((logits, loss, grad_x, grads))
    return record


@pytest.mark.parametrize("multi_tensor", [True, False], ids=["multi-tensor", "per-parameter"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_model_on_device_matches_cpu(gpu, dtype, opt_name, multi_tensor, monkeypatch):
    monkeypatch.setattr(gpucnn.config, "multi_tensor_optimizer", multi_tensor)
    data = numpy.random.default_rng(7)
    x = data.standard_normal((3, 2, 9, 9)).astype(dtype)
    y = numpy.array([0, 2, 1])
    cpu_model = mirror_device_dropout(build_model(dtype))
    gpu_model = build_model(dtype).to("cuda")
    cpu_opt = OPTIMIZERS[opt_name](cpu_model.parameters())
    gpu_opt = OPTIMIZERS[opt_name](gpu_model.parameters())
    for p in gpu_model.parameters():
        assert_on_device(p.data, dtype, "parameter after .to('cuda')")
        assert_on_device(p.grad, dtype, "gradient after .to('cuda')")

    gx, gy = backend.to_device(x, "cuda"), backend.to_device(y, "cuda")
    gpu.syncs.reset()
    probe = SyncProbe(gpu.syncs)
    steps = 2
    expected = _train(cpu_model, cpu_opt, x, y, steps)
    got = _train(gpu_model, gpu_opt, gx, gy, steps, probe)

    # (b) no host synchronisation in the model or the optimizer; the loss checks device labels once per
    # call (one read-back) while check_labels is on, and never reads back with it off.
    for name in ("model.forward", "model.backward", "optimizer.step", "optimizer.zero_grad", "loss.backward"):
        assert probe.counts(name) == [0] * steps, (name, probe.where(name))
    assert probe.counts("loss.forward") == [1] * (steps - 1) + [0], probe.where("loss.forward")
    assert all(what == "tolist" for what, _ in probe.where("loss.forward"))
    assert gpu.syncs.count == steps - 1

    # (a) the same numbers, on the device, in the parameters' dtype
    for step, (mine, theirs) in enumerate(zip(got, expected)):
        (logits, loss, grad_x, grads), (e_logits, e_loss, e_grad_x, e_grads) = mine, theirs
        assert_on_device(logits, dtype, f"logits, step {step}")
        assert_on_device(loss, dtype, f"loss, step {step}")
        assert loss.ndim == 0
        assert_on_device(grad_x, dtype, f"grad_x, step {step}")
        assert_close(logits, e_logits, dtype, f"logits, step {step}")
        assert_close(loss, e_loss, dtype, f"loss, step {step}")
        assert_close(grad_x, e_grad_x, dtype, f"grad_x, step {step}")
        for i, (g, e) in enumerate(zip(grads, e_grads)):
            assert_on_device(g, dtype, f"grad {i}, step {step}")
            assert_close(g, e, dtype, f"grad of parameter {i}, step {step}")
    for i, (p, q) in enumerate(zip(gpu_model.parameters(), cpu_model.parameters())):
        assert_on_device(p.data, dtype, f"parameter {i} after the steps")
        assert_on_device(p.grad, dtype, f"gradient {i} after the steps")
        assert_close(p.data, q.data, dtype, f"parameter {i} after {steps} {opt_name} steps")
    gpu_state, gpu_scalars = gpu_opt.state_arrays()
    cpu_state, cpu_scalars = cpu_opt.state_arrays()
    assert gpu_scalars == cpu_scalars and sorted(gpu_state) == sorted(cpu_state) and gpu_state
    for key in cpu_state:
        assert_on_device(gpu_state[key], dtype, f"optimizer state {key}")
        assert_close(gpu_state[key], cpu_state[key], dtype, f"optimizer state {key}")
    for name in ("running_mean", "running_var"):
        assert_on_device(getattr(gpu_model.layers[1], name), dtype, name)
        assert_close(getattr(gpu_model.layers[1], name), getattr(cpu_model.layers[1], name), dtype, name)

    # eval mode: running statistics, no dropout; still no sync
    gpu_model.eval()
    cpu_model.eval()
    logits = probe.run("model.forward (eval)", gpu_model.forward, gx)
    assert probe.counts("model.forward (eval)") == [0], probe.where("model.forward (eval)")
    assert_close(logits, cpu_model.forward(x), dtype, "eval logits")
    # The kernels that ran: both conv paths, both pools, the update kernel of the optimizer.
    launched = {name for _, name in gpu.launches}
    assert {"conv_direct", "im2col", "transpose01", "row_sum", "col2im", "max_pool_fwd", "max_pool_bwd",
            "avg_pool_fwd", "avg_pool_bwd"} <= launched
    update = "sgd_update" if opt_name.startswith("sgd") else "adam_update"
    assert ({"step_scalars", "multi_" + update} if multi_tensor else {update}) <= launched


def test_host_input_to_a_device_model_is_refused(gpu):
    model = build_model(F32).to("cuda")
    with pytest.raises(TypeError, match="input is on cpu but the parameters are on cuda:0"):
        model.forward(numpy.zeros((1, 2, 9, 9), F32))


# ----------------------------------------------------------------------------- (c) fit, checkpoints

def fit_data(n=24, seed=0):
    """Images whose class is the quadrant holding the bright square."""
    rng = numpy.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8), dtype=F32) * 0.1
    y = rng.integers(0, 4, n)
    for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == k, 0, r:r + 4, c:c + 4] += 1.0
    return x, y


def fit_model(seed=0):
    return gpucnn.Sequential([Conv2D(1, 3, 3, padding="same", rng=seed), ReLU(), MaxPool2D(2), Flatten(),
                              Dropout(0.2, rng=seed), Dense(48, 4, rng=seed)])


FIT = dict(batch_size=8, seed=3, progress=False, sync_every=2)
STEPS_PER_EPOCH = 3


def _fit(model, x, y, epochs, **kwargs):
    optimizer = Adam(model.parameters(), lr=1e-2)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    loss_fn = SoftmaxCrossEntropy()
    history = train.fit(model, loss_fn, optimizer, x, y, epochs, validation=(x, y), scheduler=scheduler,
                        **FIT, **kwargs)
    return history, optimizer, scheduler, loss_fn


class FitTrace:
    """Attributes every sync during fit to the outermost instrumented call it happened in."""

    def __init__(self, syncs):
        self.syncs = syncs
        self.regions = []  # (name, syncs, events)
        self.depth = 0

    def wrap(self, name, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if self.depth:
                return function(*args, **kwargs)
            self.depth += 1
            start = len(self.syncs.events)
            try:
                return function(*args, **kwargs)
            finally:
                self.depth -= 1
                events = self.syncs.since(start)
                self.regions.append((name, len(events), events))
        return wrapper

    def instrument(self, monkeypatch, model, loss_fn, optimizer):
        for obj, attr, name in ((model, "forward", "model.forward"), (model, "backward", "model.backward"),
                                (loss_fn, "forward", "loss.forward"), (loss_fn, "backward", "loss.backward"),
                                (optimizer, "zero_grad", "optimizer.zero_grad"),
                                (optimizer, "step", "optimizer.step"),
                                (eager_step, "check_label_range", "fit label check"),
                                (train, "evaluate_with_bar", "evaluate"),  # fit validates through it
                                (train, "save_training_checkpoint", "checkpoint"),
                                (train, "all_finite", "finite weights"),
                                (eager_step.EpochStats, "record", "stats.record"),
                                (eager_step.EpochStats, "sync", "stats.sync")):
            monkeypatch.setattr(obj, attr, self.wrap(name, getattr(obj, attr)))

    def steps(self):
        """The regions grouped per training step (a step starts with model.forward)."""
        steps = []
        for region in self.regions:
            if region[0] == "model.forward":
                steps.append([])
            steps[-1].append(region)
        return steps


def test_fit_on_device_matches_cpu_and_syncs_only_on_purpose(gpu, tmp_path, monkeypatch):
    x, y = fit_data()
    epochs = 2
    cpu_model = mirror_device_dropout(fit_model())
    cpu_history, cpu_opt, _, _ = _fit(cpu_model, x, y, epochs, checkpoint=str(tmp_path / "cpu.npz"))

    gpu_model = fit_model().to("cuda")
    gx, gy = backend.to_device(x, "cuda"), backend.to_device(y, "cuda")
    optimizer = Adam(gpu_model.parameters(), lr=1e-2)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    loss_fn = SoftmaxCrossEntropy()
    trace = FitTrace(gpu.syncs)
    start = len(gpu.syncs.events)
    with monkeypatch.context() as patch:
        trace.instrument(patch, gpu_model, loss_fn, optimizer)
        gpu_history = train.fit(gpu_model, loss_fn, optimizer, gx, gy, epochs, validation=(gx, gy),
                                scheduler=scheduler, checkpoint=str(tmp_path / "gpu.npz"), **FIT)
    assert loss_fn.check_labels is True  # fit restores it

    # (b) every sync of fit happened inside an instrumented call (no hidden read-back elsewhere) ...
    total = len(gpu.syncs.events) - start
    assert total == sum(count for _, count, _ in trace.regions), gpu.syncs.since(start)
    steps = trace.steps()
    assert len(steps) == epochs * STEPS_PER_EPOCH
    for index, regions in enumerate(steps):
        step = index % STEPS_PER_EPOCH
        by_name = {}
        for name, count, events in regions:
            by_name.setdefault(name, []).append((count, events))
        for name in ("model.forward", "model.backward", "optimizer.step", "optimizer.zero_grad",
                     "loss.backward", "stats.record"):
            assert [c for c, _ in by_name[name]] == [0], (index, name, by_name[name])
        # ... the loss checked the device labels on the very first step only (then fit checks the whole
        # data set once, two read-backs for training and validation labels, and turns the check off) ...
        assert [c for c, _ in by_name["loss.forward"]] == [int(index == 0)], (index, by_name["loss.forward"])
        assert [c for c, _ in by_name.get("fit label check", [])] == ([1, 1] if index == 0 else []), index
        # ... and the losses come back every sync_every steps and at the end of each epoch, by design.
        deliberate = (step + 1) % FIT["sync_every"] == 0 or step + 1 == STEPS_PER_EPOCH
        syncs = [c for c, _ in by_name.get("stats.sync", [])]
        assert len(syncs) == int(deliberate), (index, by_name.get("stats.sync"))
        assert all(1 <= c <= 2 for c in syncs), (index, by_name.get("stats.sync"))
        at_epoch_end = step + 1 == STEPS_PER_EPOCH
        assert len(by_name.get("evaluate", [])) == int(at_epoch_end), index
        assert len(by_name.get("checkpoint", [])) == int(at_epoch_end), index
        assert [c for c, _ in by_name.get("finite weights", [])] == ([1] if at_epoch_end else []), index

    # (c) the CPU run's history, to float32 tolerance; the same learning rates, the same accuracies
    assert gpu_history["epoch"] == cpu_history["epoch"] == [1, 2]
    assert gpu_history["lr"] == cpu_history["lr"]
    for key in ("loss", "val_loss"):
        numpy.testing.assert_allclose(gpu_history[key], cpu_history[key], rtol=1e-4, err_msg=key)
    for key in ("accuracy", "val_accuracy"):
        assert gpu_history[key] == cpu_history[key], key
    for i, (p, q) in enumerate(zip(gpu_model.parameters(), cpu_model.parameters())):
        assert_on_device(p.data, F32, f"parameter {i} after fit")
        assert_close(p.data, q.data, F32, f"parameter {i} after fit")
    for key, value in optimizer.state_arrays()[0].items():
        assert_on_device(value, F32, f"optimizer state {key} after fit")

    # The device checkpoint loads into a CPU model: exactly the device's weights and optimizer state.
    cpu_from_gpu = fit_model(seed=9)
    cpu_from_gpu_opt = Adam(cpu_from_gpu.parameters(), lr=1e-2)
    meta = train.load_training_checkpoint(str(tmp_path / "gpu.npz"), cpu_from_gpu, cpu_from_gpu_opt)
    assert meta["epoch"] == epochs and meta["history"]["loss"] == gpu_history["loss"]
    for p, q in zip(cpu_from_gpu.parameters(), gpu_model.parameters()):
        assert type(p.data) is numpy.ndarray
        numpy.testing.assert_array_equal(p.data, to_host(q.data))
    gpu_state = optimizer.state_arrays()[0]
    for key, value in cpu_from_gpu_opt.state_arrays()[0].items():
        numpy.testing.assert_array_equal(value, to_host(gpu_state[key]), err_msg=key)

    # And the CPU checkpoint loads into a device model; resuming there continues the CPU run.
    shutil.copy(tmp_path / "cpu.npz", tmp_path / "cpu_resumed_on_gpu.npz")
    resumed = fit_model(seed=9).to("cuda")  # weights, RNGs: all from the checkpoint
    resumed_history, resumed_opt, _, _ = _fit(resumed, gx, gy, epochs + 1,
                                              checkpoint=str(tmp_path / "cpu_resumed_on_gpu.npz"),
                                              resume=True)
    cpu_continued_history, _, _, _ = _fit(cpu_model, x, y, epochs + 1, checkpoint=str(tmp_path / "cpu.npz"),
                                          resume=True)
    assert resumed_history["epoch"] == cpu_continued_history["epoch"] == [1, 2, 3]
    assert resumed_history["lr"] == cpu_continued_history["lr"]
    numpy.testing.assert_allclose(resumed_history["loss"], cpu_continued_history["loss"], rtol=1e-4)
    numpy.testing.assert_allclose(resumed_history["val_loss"], cpu_continued_history["val_loss"], rtol=1e-4)
    for i, (p, q) in enumerate(zip(resumed.parameters(), cpu_model.parameters())):
        assert_on_device(p.data, F32, f"resumed parameter {i}")
        assert_close(p.data, q.data, F32, f"parameter {i} after resuming on the device")
    for key, value in resumed_opt.state_arrays()[0].items():
        assert_on_device(value, F32, f"resumed optimizer state {key}")


# ----------------------------------------------------------------------------- (d) save / load

def test_save_on_device_load_on_cpu_and_back(gpu, tmp_path):
    dtype = F32
    gpu_model = build_model(dtype).to("cuda")
    x = backend.to_device(numpy.random.default_rng(1).standard_normal((3, 2, 9, 9)).astype(dtype), "cuda")
    _train(gpu_model, SGD(gpu_model.parameters(), lr=0.1, momentum=0.9), x,
           backend.to_device(numpy.array([0, 1, 2]), "cuda"), 1)  # weights and running stats off their init
    gpu_model.save(tmp_path / "gpu.npz")

    cpu_model = build_model(dtype, seed=5)
    cpu_model.load(tmp_path / "gpu.npz")
    gpu_state, cpu_state = gpu_model.named_state(), cpu_model.named_state()
    assert sorted(gpu_state) == sorted(cpu_state)
    for key, value in cpu_state.items():
        assert type(value) is numpy.ndarray and value.dtype == numpy.dtype(dtype), key
        numpy.testing.assert_array_equal(value, to_host(gpu_state[key]), err_msg=key)

    cpu_model.save(tmp_path / "cpu.npz")
    back = build_model(dtype, seed=6).to("cuda").load(tmp_path / "cpu.npz")
    for key, value in back.named_state().items():
        assert_on_device(value, dtype, key)
        numpy.testing.assert_array_equal(to_host(value), cpu_state[key], err_msg=key)
    for p in back.parameters():
        assert_on_device(p.grad, dtype, "gradient after load")


# ----------------------------------------------------------------------------- (e) a second device
#
# The emulated machine has two devices. A model on 'cuda:1' is used while device 0 is current (the
# default, as in any script that never calls cupy.cuda.Device(1).use()). CuPy allocates, launches and
# runs cuBLAS on the *current* device: a kernel touching another device's array raises ValueError
# where the devices have no peer access (or warns, PerformanceWarning, where CuPy turns peer access
# on), and our RawKernels would read foreign pointers unchecked. The emulation raises at the first one.

def _second_device_data(dtype=F32):
    x = numpy.random.default_rng(3).standard_normal((3, 2, 9, 9)).astype(dtype)
    y = numpy.array([2, 0, 1])
    return x, y, backend.to_device(x, "cuda:1"), backend.to_device(y, "cuda:1")


def test_layers_and_optimizers_run_on_the_device_of_their_arrays(gpu):
    """forward, backward and optimizer.step enter the device of their arrays themselves (no user scope)."""
    x, y, gx, gy = _second_device_data()
    cpu_model = mirror_device_dropout(build_model(F32))
    gpu_model = build_model(F32).to("cuda:1")
    cpu_opt, gpu_opt = Adam(cpu_model.parameters(), lr=1e-3), Adam(gpu_model.parameters(), lr=1e-3)
    cpu_loss, gpu_loss = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    for step in range(2):
        expected = cpu_model.forward(x)
        cpu_loss.forward(expected, y)
        cpu_opt.zero_grad()
        expected_grad_x = cpu_model.backward(cpu_loss.backward())
        cpu_opt.step()

        logits = gpu_model.forward(gx)
        gpu_loss.forward(logits, gy)
        grad_logits = gpu_loss.backward()
        gpu_opt.zero_grad()
        grad_x = gpu_model.backward(grad_logits)
        gpu_opt.step()
        assert backend.device_of(logits) == backend.device_of(grad_x) == "cuda:1"
        assert_close(logits, expected, F32, f"logits on cuda:1, step {step}")
        assert_close(grad_x, expected_grad_x, F32, f"grad_x on cuda:1, step {step}")
    for i, (p, q) in enumerate(zip(gpu_model.parameters(), cpu_model.parameters())):
        assert backend.device_of(p.data) == backend.device_of(p.grad) == "cuda:1", i
        assert_close(p.data, q.data, F32, f"parameter {i} on cuda:1")
    assert all(backend.device_of(v) == "cuda:1" for v in gpu_opt.state_arrays()[0].values())
    assert gpu.devices.events == []


def test_loss_backward_runs_on_the_device_of_the_logits(gpu):
    _, _, gx, gy = _second_device_data()
    logits = backend.to_device(numpy.random.default_rng(0).standard_normal((3, 3)).astype(F32), "cuda:1")
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(logits, gy)
    grad = loss_fn.backward()
    assert backend.device_of(grad) == "cuda:1"


def test_loss_label_check_runs_on_the_device_of_the_labels(gpu):
    _, _, _, gy = _second_device_data()
    logits = backend.to_device(numpy.zeros((3, 3), F32), "cuda:1")
    SoftmaxCrossEntropy().forward(logits, gy)


def test_zero_grad_runs_on_the_device_of_the_gradients(gpu):
    model = build_model(F32).to("cuda:1")
    Adam(model.parameters()).zero_grad()


@pytest.mark.parametrize("opt_name", ["sgd_nesterov", "adam"])
def test_optimizer_state_follows_the_model_to_another_device(gpu, opt_name):
    x, y, gx, gy = _second_device_data()
    model = build_model(F32).to("cuda:1")
    optimizer = OPTIMIZERS[opt_name](model.parameters())
    for data, labels in ((gx, gy), (backend.to_device(x, "cuda:0"), backend.to_device(y, "cuda:0"))):
        loss_fn = SoftmaxCrossEntropy()
        loss_fn.forward(model.forward(data), labels)
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
        model.to("cuda:0")
    assert all(backend.device_of(v) == "cuda:0" for v in optimizer.state_arrays()[0].values())


def test_load_keeps_a_model_on_its_device(gpu, tmp_path):
    build_model(F32).save(tmp_path / "w.npz")
    model = build_model(F32, seed=1).to("cuda:1").load(tmp_path / "w.npz")
    devices = {key: backend.device_of(value) for key, value in model.named_state().items()}
    assert set(devices.values()) == {"cuda:1"}, devices


def test_fit_statistics_live_on_the_device_of_the_logits(gpu):
    logits = backend.to_device(numpy.eye(3, dtype=F32), "cuda:1")
    labels = backend.to_device(numpy.array([0, 1, 1]), "cuda:1")
    stats = eager_step.EpochStats(2, None)
    with logits.device:
        loss = -logits.mean()
    stats.record(0, loss, logits, labels)
    assert backend.device_of(stats.losses) == backend.device_of(stats.correct) == "cuda:1"


def test_shuffled_batches_are_gathered_on_the_device_of_the_data(gpu):
    _, _, gx, gy = _second_device_data()
    for xb, yb in gpucnn.data.BatchIterator(gx, gy, 2, seed=0):
        assert backend.device_of(xb) == backend.device_of(yb) == "cuda:1"


def test_fit_on_the_second_device_matches_cpu(gpu, tmp_path):
    x, y = fit_data()
    cpu_model = mirror_device_dropout(fit_model())
    cpu_history, _, _, _ = _fit(cpu_model, x, y, 1)
    gpu_model = fit_model().to("cuda:1")
    gpu_history, _, _, _ = _fit(gpu_model, backend.to_device(x, "cuda:1"), backend.to_device(y, "cuda:1"), 1,
                                checkpoint=str(tmp_path / "c.npz"))
    numpy.testing.assert_allclose(gpu_history["loss"], cpu_history["loss"], rtol=1e-4)
    assert all(backend.device_of(p.data) == "cuda:1" for p in gpu_model.parameters())
    assert gpu.devices.events == []


def test_fit_compiles_the_kernels_of_its_float_type_before_the_first_step(gpu, monkeypatch):
    import io
    calls = []
    real_compile_all = gpu.loader.compile_all

    def recording_compile_all(dtype, device=None):
        calls.append((numpy.dtype(dtype), device, len(gpu.launches)))
        return real_compile_all(dtype, device)

    monkeypatch.setattr(gpu.loader, "compile_all", recording_compile_all)
    x, y = fit_data()
    model = fit_model().to("cuda:1")
    log = io.StringIO()
    train.fit(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), backend.to_device(x, "cuda:1"),
              backend.to_device(y, "cuda:1"), 1, batch_size=16, stream=log)
    assert calls == [(numpy.dtype(F32), 1, 0)]  # float32 only, on the model's device, before any launch
    assert "CUDA kernels ready in" in log.getvalue()
    assert len(gpu.launches) > 0


def test_predict_summary_state_dict_and_export_of_a_device_model(gpu, tmp_path):
    def make():
        return gpucnn.Sequential([Conv2D(1, 3, 3, padding="same", rng=0), BatchNorm2D(3), ReLU(), MaxPool2D(2),
                                  Flatten(), Dropout(0.5, rng=0), Dense(3 * 4 * 4, 5, rng=1)])

    cpu_model, gpu_model = make(), make().to("cuda")
    x = numpy.random.default_rng(0).random((7, 1, 8, 8), dtype=F32)
    out = gpu_model.predict(x, batch_size=3)  # host inputs, moved batch by batch
    assert isinstance(out, DeviceArray) and gpu_model.training
    assert_close(out, cpu_model.predict(x), F32, "predict")
    assert gpu_model.summary((1, 8, 8), print_fn=None).total_params == cpu_model.summary((1, 8, 8),
                                                                                         print_fn=None).total_params
    gpu_model.forward(backend.to_device(x, "cuda"))  # running statistics move on the device
    state = gpu_model.state_dict()
    assert all(isinstance(v, DeviceArray) for v in state.values())
    cpu_model.load_state_dict(state)  # device arrays into a host model ...
    assert all(type(v) is numpy.ndarray for v in cpu_model.state_dict().values())
    make().to("cuda").load_state_dict(cpu_model.state_dict())  # ... and host arrays into a device model
    assert_close(gpu_model.predict(x), cpu_model.predict(x), F32, "after load_state_dict")
    if _onnx_runtime() is not None:  # the export copies the device weights to the host
        gpucnn.onnx.export(gpu_model, tmp_path / "m.onnx", (1, 8, 8))
        session = _onnx_runtime().InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
        assert_close(session.run(None, {"input": x})[0], cpu_model.predict(x), F32, "onnx")


def _onnx_runtime():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime
