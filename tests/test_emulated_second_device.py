"""gpucnn's CuPy path on the second of two emulated devices (no GPU needed; nvcc is): a model on 'cuda:1'
while device 0 is current.

The emulation of tests/support/emulated_cupy (see tests/test_emulated_gpu.py) has two devices. Layers,
losses, optimizers, loading, batching and fit enter their arrays' device themselves (CuPy without peer
access refuses work on another device's arrays, and so does the emulation); the results equal the same
model's on the CPU. Then predict, summary, state_dict and the ONNX export of a device model.
"""
import numpy
import pytest

import gpucnn
from gpucnn import backend
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD, Adam
from gpucnn.train import eager_step, loop as train
from support.emulated_cupy import DeviceArray
from support.emulated_models import (OPTIMIZERS, assert_close, build_model, fit_adam, fit_data, fit_model,
                                     mirror_device_dropout)

pytestmark = pytest.mark.kernels

F32 = numpy.float32


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
    cpu_history, _, _, _ = fit_adam(cpu_model, x, y, 1)
    gpu_model = fit_model().to("cuda:1")
    gpu_history, _, _, _ = fit_adam(gpu_model, backend.to_device(x, "cuda:1"), backend.to_device(y, "cuda:1"), 1,
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
