"""The multi-tensor optimizer path (gpucnn.optim.flat) on the emulated GPU against the per-parameter CPU path."""
import numpy
import pytest

import gpucnn
from support.emulated_cupy import to_host
from gpucnn import backend
from gpucnn.nn.layers import Conv2D, Dense, Flatten, ReLU
from gpucnn.optim.optimizers import SGD, Adam, AdamW, StepLR

pytestmark = pytest.mark.kernels

OPTIMIZERS = {
    "sgd": lambda p: SGD(p, lr=0.1),
    "sgd_nesterov": lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_dampening": lambda p: SGD(p, lr=0.05, momentum=0.8, dampening=0.3),
    "adam": lambda p: Adam(p, lr=1e-2, weight_decay=1e-3),
    "adamw": lambda p: AdamW(p, lr=1e-2, weight_decay=1e-2),
}


def _model():
    rng = numpy.random.default_rng(0)
    return gpucnn.Sequential([Conv2D(1, 2, 3, padding=1, dtype=numpy.float64, rng=rng), ReLU(), Flatten(),
                              Dense(32, 5, dtype=numpy.float64, rng=rng), ReLU(), Dense(5, 3, dtype=numpy.float64,
                                                                                        rng=rng)])


def _data():
    rng = numpy.random.default_rng(1)
    return rng.standard_normal((4, 1, 4, 4)), rng.standard_normal((4, 3))


def _step(model, optimizer, x, g):
    model.forward(x)
    optimizer.zero_grad()
    model.backward(g)
    optimizer.step()


def _assert_same(gpu_model, cpu_model, gpu_opt, cpu_opt, what):
    for i, (p, q) in enumerate(zip(gpu_model.parameters(), cpu_model.parameters())):
        numpy.testing.assert_allclose(to_host(p.data), q.data, rtol=1e-12, atol=1e-14, err_msg=f"{what}: param {i}")
    got, got_scalars = gpu_opt.state_arrays()
    want, want_scalars = cpu_opt.state_arrays()
    assert got_scalars == want_scalars, what
    assert sorted(got) == sorted(want)
    for key in want:
        numpy.testing.assert_allclose(to_host(got[key]), want[key], rtol=1e-12, atol=1e-14, err_msg=f"{what}: {key}")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_two_launches_per_step_lr_on_the_device_same_numbers(gpu, name):
    x, g = _data()
    cpu_model, gpu_model = _model(), _model().to("cuda")
    cpu_opt, gpu_opt = OPTIMIZERS[name](cpu_model.parameters()), OPTIMIZERS[name](gpu_model.parameters())
    cpu_sched, gpu_sched = StepLR(cpu_opt, 1, gamma=0.5), StepLR(gpu_opt, 1, gamma=0.5)
    gx, gg = backend.to_device(x, "cuda"), backend.to_device(g, "cuda")
    for step in range(5):
        _step(cpu_model, cpu_opt, x, g)
        gpu_model.forward(gx)
        gpu_opt.zero_grad()
        gpu_model.backward(gg)
        gpu.device_ops.reset()
        gpu.syncs.reset()
        gpu_opt.step()
        kernel = "multi_sgd_update" if name.startswith("sgd") else "multi_adam_update"
        expected = ["kernel step_scalars", f"kernel {kernel}"]
        if step == 0:  # the first step builds the flat buffers (copies), later ones only launch
            assert gpu.device_ops.names[-2:] == expected
        elif step in (2, 4):  # the schedule changed lr after steps 2 and 4: one write of hyper's lr
            assert gpu.device_ops.names == ["assignment into a device array"] + expected, gpu.device_ops.names
        else:
            assert gpu.device_ops.names == expected, gpu.device_ops.names
        assert gpu.syncs.count == 0
        if step % 2 == 1:
            cpu_sched.step()
            gpu_sched.step()
        _assert_same(gpu_model, cpu_model, gpu_opt, cpu_opt, f"{name}, step {step + 1}")
    group = gpu_opt._groups[0]
    assert to_host(group.hyper)[1] == 5 and group.steps == 5 and all(s["step"] == 5 for s in gpu_opt.state)


def test_parameters_and_gradients_become_views_of_one_buffer(gpu):
    x, g = _data()
    model = _model().to("cuda")
    opt = Adam(model.parameters())
    _step(model, opt, backend.to_device(x, "cuda"), backend.to_device(g, "cuda"))
    (group,) = opt._groups

    def same_memory(a, b):
        return numpy.shares_memory(a.view(numpy.ndarray), b.view(numpy.ndarray))

    for p in model.parameters():
        assert same_memory(p.data, group.data) and same_memory(p.grad, group.grad)
    assert group.data.size == sum(p.data.size for p in model.parameters())


def test_move_to_another_device_resume_and_step_without_backward(gpu):
    """A model moved to 'cuda:1' rebuilds the groups there; loading optimizer state rebuilds them from it;
    a step right after zero_grad sees zero gradients (weight decay still applies), as on the CPU."""
    x, g = _data()
    cpu_model, gpu_model = _model(), _model().to("cuda")
    cpu_opt, gpu_opt = OPTIMIZERS["adam"](cpu_model.parameters()), OPTIMIZERS["adam"](gpu_model.parameters())
    for _ in range(2):
        _step(cpu_model, cpu_opt, x, g)
        _step(gpu_model, gpu_opt, backend.to_device(x, "cuda"), backend.to_device(g, "cuda"))
    gpu_model.to("cuda:1")
    for _ in range(2):
        _step(cpu_model, cpu_opt, x, g)
        _step(gpu_model, gpu_opt, backend.to_device(x, "cuda:1"), backend.to_device(g, "cuda:1"))
    assert backend.device_of(gpu_opt._groups[0].hyper) == "cuda:1"
    _assert_same(gpu_model, cpu_model, gpu_opt, cpu_opt, "after the move")

    arrays, scalars = gpu_opt.state_arrays()
    resumed = OPTIMIZERS["adam"](gpu_model.parameters())
    resumed.load_state_arrays({k: backend.asnumpy(v) for k, v in arrays.items()}, scalars)
    cpu_model.zero_grad()
    cpu_opt.step()
    gpu_model.zero_grad()
    resumed.step()
    _assert_same(gpu_model, cpu_model, resumed, cpu_opt, "resumed, a step after zero_grad")
    for p in gpu_model.parameters():
        assert backend.device_of(p.data) == "cuda:1"
        numpy.testing.assert_array_equal(to_host(p.grad), 0)


def test_switch_off_uses_one_launch_per_parameter(gpu, monkeypatch):
    monkeypatch.setattr(gpucnn.config, "multi_tensor_optimizer", False)
    x, g = _data()
    model = _model().to("cuda")
    opt = Adam(model.parameters())
    _step(model, opt, backend.to_device(x, "cuda"), backend.to_device(g, "cuda"))
    gpu.device_ops.reset()
    opt.step()
    assert gpu.device_ops.names == ["kernel adam_update"] * len(model.parameters())
    assert opt._groups is None
