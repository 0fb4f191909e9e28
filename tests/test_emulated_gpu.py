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
- (e) a model on the second emulated device ('cuda:1'): tests/test_emulated_second_device.py.
"""
import functools
import shutil

import numpy
import pytest

import gpucnn
from gpucnn import backend
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD, Adam, StepLR
from gpucnn.train import eager_step, loop as train
from support.emulated_cupy import DeviceArray, to_host
from support.emulated_models import (FIT, OPTIMIZERS, STEPS_PER_EPOCH, SyncProbe, assert_close, assert_on_device,
                                     build_model, fit_adam, fit_data, fit_model, mirror_device_dropout)

pytestmark = pytest.mark.kernels

F32, F64 = numpy.float32, numpy.float64


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
    cpu_history, cpu_opt, _, _ = fit_adam(cpu_model, x, y, epochs, checkpoint=str(tmp_path / "cpu.npz"))

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
    resumed_history, resumed_opt, _, _ = fit_adam(resumed, gx, gy, epochs + 1,
                                              checkpoint=str(tmp_path / "cpu_resumed_on_gpu.npz"),
                                              resume=True)
    cpu_continued_history, _, _, _ = fit_adam(cpu_model, x, y, epochs + 1, checkpoint=str(tmp_path / "cpu.npz"),
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
