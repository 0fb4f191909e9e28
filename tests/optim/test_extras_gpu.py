"""Parameter groups, clip_grad_norm_, EMA and the schedules on the emulated GPU: the multi-tensor launch (one
flat group and one ``hyper`` per parameter group), no host read-back, and the captured graph step (each group's
lr read from its device scalars; what it cannot do between steps declined with the reason)."""
import io

import numpy
import pytest

import gpucnn
from support.emulated_cupy import to_host
from gpucnn import backend
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Flatten, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim import EMA, SGD, Adam, OneCycleLR, StepLR, clip_grad_norm_, param_groups_no_decay
from gpucnn.train.loop import fit

pytestmark = pytest.mark.kernels


def _model():
    rng = numpy.random.default_rng(0)
    return gpucnn.Sequential([Conv2D(1, 2, 3, padding=1, dtype=numpy.float64, rng=rng), ReLU(),
                              BatchNorm2D(2, dtype=numpy.float64), Flatten(),
                              Dense(32, 3, dtype=numpy.float64, rng=rng)])


def _data():
    rng = numpy.random.default_rng(1)
    return rng.standard_normal((4, 1, 4, 4)), rng.standard_normal((4, 3))


OPTIMIZERS = {
    "sgd": lambda m: SGD([{"params": param_groups_no_decay(m, 1e-2)[0]["params"], "weight_decay": 1e-2,
                           "nesterov": True}, {"params": param_groups_no_decay(m, 0)[1]["params"], "lr": 0.02}],
                         lr=0.05, momentum=0.9),
    "adam": lambda m: Adam(param_groups_no_decay(m, 1e-3), lr=1e-2),
}


def _step(model, opt, x, g, clip=None, ema=None):
    model.forward(x)
    opt.zero_grad()
    model.backward(g)
    norm = clip_grad_norm_(model.parameters(), clip) if clip is not None else None
    opt.step()
    if ema is not None:
        ema.update()
    return norm


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_groups_clipping_and_ema_on_the_gpu_match_the_cpu_without_a_host_read(gpu, name):
    x, g = _data()
    cpu_model, gpu_model = _model(), _model().to("cuda")
    cpu_opt, gpu_opt = OPTIMIZERS[name](cpu_model), OPTIMIZERS[name](gpu_model)
    cpu_ema, gpu_ema = EMA(cpu_model, 0.8), EMA(gpu_model, 0.8)
    cpu_sched, gpu_sched = StepLR(cpu_opt, 1, gamma=0.5), StepLR(gpu_opt, 1, gamma=0.5)
    gx, gg = backend.to_device(x, "cuda"), backend.to_device(g, "cuda")
    for step in range(4):
        cpu_norm = _step(cpu_model, cpu_opt, x, g, clip=0.3, ema=cpu_ema)
        gpu.syncs.reset()
        gpu_norm = _step(gpu_model, gpu_opt, gx, gg, clip=0.3, ema=gpu_ema)
        assert gpu.syncs.count == 0, gpu.syncs.events
        assert float(to_host(gpu_norm)) == pytest.approx(float(cpu_norm), rel=1e-12)
        cpu_sched.step()
        gpu_sched.step()
        for i, (p, q) in enumerate(zip(gpu_model.parameters(), cpu_model.parameters())):
            numpy.testing.assert_allclose(to_host(p.data), q.data, rtol=1e-12, atol=1e-14, err_msg=f"step {step}: {i}")
        for key, value in cpu_ema.averages.items():
            numpy.testing.assert_allclose(to_host(gpu_ema.averages[key]), value, rtol=1e-12, atol=1e-14)
    groups = gpu_opt.multi_tensor_groups()
    assert [g.group_index for g in groups] == [0, 1]  # one flat group (and one hyper) per parameter group
    # each group's lr of the last step (the schedule halved it since; the next step writes it there)
    assert [float(to_host(g.hyper)[0]) for g in groups] == [2 * grp["lr"] for grp in gpu_opt.param_groups]
    assert gpu_opt.state_arrays()[1] == cpu_opt.state_arrays()[1]


def test_one_cycle_beta1_reaches_the_gpu_launch(gpu):
    """OneCycleLR sets every group's lr and beta1 per step: the multi-tensor launch takes both."""
    x, g = _data()
    cpu_model, gpu_model = _model(), _model().to("cuda")
    cpu_opt, gpu_opt = OPTIMIZERS["adam"](cpu_model), OPTIMIZERS["adam"](gpu_model)
    scheds = [OneCycleLR(o, max_lr=0.05, total_steps=5) for o in (cpu_opt, gpu_opt)]
    gx, gg = backend.to_device(x, "cuda"), backend.to_device(g, "cuda")
    for _ in range(5):
        _step(cpu_model, cpu_opt, x, g)
        _step(gpu_model, gpu_opt, gx, gg)
        for s in scheds:
            s.step()
    assert gpu_opt.param_groups[0]["betas"][0] == cpu_opt.param_groups[0]["betas"][0] == scheds[0].momenta_at(5)[0]
    for p, q in zip(gpu_model.parameters(), cpu_model.parameters()):
        numpy.testing.assert_allclose(to_host(p.data), q.data, rtol=1e-12, atol=1e-14)


def _fashion_fit(gpu, x, y, epochs, make_opt, scheduler=None, **kwargs):
    model = gpucnn.models.fashion_cnn(rng=0)
    if gpu is not None:
        model.to("cuda")
        x, y = gpu.cupy.asarray(x), gpu.cupy.asarray(y)
    opt = make_opt(model)
    sched = scheduler(opt) if scheduler is not None else None
    history = fit(model, SoftmaxCrossEntropy(), opt, x, y, epochs, batch_size=2, scheduler=sched, progress=False,
                  **kwargs)
    return model, opt, history


def _grouped_adam(model):
    return Adam([{"params": param_groups_no_decay(model, 0)[0]["params"], "lr": 2e-3},
                 {"params": param_groups_no_decay(model, 0)[1]["params"], "lr": 5e-4, "weight_decay": 1e-2}])


@pytest.mark.graph
def test_the_captured_step_reads_each_groups_lr_and_matches_the_eager_fit(gpu):
    rng = numpy.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 28, 28)).astype(numpy.float32), rng.integers(0, 10, 4)
    schedule = lambda o: StepLR(o, 1, gamma=0.5)  # noqa: E731
    model, opt, history = _fashion_fit(gpu, x, y, 2, _grouped_adam, schedule, graph=True,
                                       graph_options={"verify": True})
    reference, ref_opt, expected = _fashion_fit(None, x, y, 2, _grouped_adam, schedule)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups] == [5e-4, 1.25e-4]
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-4)
    for p, q in zip(model.parameters(), reference.parameters()):
        numpy.testing.assert_allclose(to_host(p.data), q.data, rtol=0, atol=1e-4 * max(1.0, numpy.abs(q.data).max()))
    assert [float(to_host(g.hyper)[0]) for g in opt.multi_tensor_groups()] == [1e-3, 2.5e-4]  # epoch 2's


@pytest.mark.graph
def test_per_step_schedules_clipping_and_ema_run_the_eager_step_and_say_why(gpu):
    rng = numpy.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 28, 28)).astype(numpy.float32), rng.integers(0, 10, 4)
    one_cycle = lambda o: OneCycleLR(o, max_lr=1e-2, total_steps=4)  # noqa: E731
    with pytest.raises(ValueError, match="OneCycleLR changes the learning rate after every step"):
        _fashion_fit(gpu, x, y, 2, _grouped_adam, one_cycle, graph=True)
    notes = io.StringIO()
    model, opt, history = _fashion_fit(gpu, x, y, 2, _grouped_adam, one_cycle, notes=notes, clip_grad_norm=1.0)
    assert "training step: eager, not a CUDA graph (OneCycleLR changes" in notes.getvalue()
    reference, ref_opt, expected = _fashion_fit(None, x, y, 2, _grouped_adam, one_cycle, clip_grad_norm=1.0)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-4)
    notes = io.StringIO()
    _fashion_fit(gpu, x, y, 1, _grouped_adam, ema=None, notes=notes, clip_grad_norm=0.5)
    assert "gradient clipping (clip_grad_norm) is not in the captured step" in notes.getvalue()
