"""SGD / Adam / AdamW and the LR schedules against the update rules written out by hand (torch semantics)."""
import math

import numpy
import pytest

from support.helpers import F64, assert_close, dev, to_numpy
from gpucnn import Parameter
from gpucnn.optim.optimizers import SGD, Adam, AdamW, CosineAnnealingLR, StepLR

STEPS = 5


def _params(rng, device, shapes=((3, 4), (4,), (2, 1, 3, 3))):
    values = [rng.standard_normal(s) for s in shapes]
    return [Parameter(dev(v.copy(), device)) for v in values], values


def _grads(rng, shapes, steps=STEPS):
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def _feed(params, grads, device):
    for p, g in zip(params, grads):
        p.grad[...] = dev(g, device)


def reference_sgd(w, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    w = w.copy()
    buf = None
    trace = []
    for g in grads:
        d = g + weight_decay * w
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        w = w - lr * d
        trace.append(w.copy())
    return trace


def reference_adam(w, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    w = w.copy()
    m = numpy.zeros_like(w)
    v = numpy.zeros_like(w)
    trace = []
    for t, g in enumerate(grads, start=1):
        if decoupled:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat = m / (1 - betas[0] ** t)
        v_hat = v / (1 - betas[1] ** t)
        w = w - lr * m_hat / (numpy.sqrt(v_hat) + eps)
        trace.append(w.copy())
    return trace


def _run(opt_factory, reference, rng, device):
    params, values = _params(rng, device)
    shapes = [v.shape for v in values]
    grads = _grads(rng, shapes)
    opt = opt_factory(params)
    traces = [reference(v, [g[i] for g in grads]) for i, v in enumerate(values)]
    for step in range(STEPS):
        opt.zero_grad()
        for p in params:
            assert not numpy.any(to_numpy(p.grad))
        _feed(params, grads[step], device)
        opt.step()
        for i, p in enumerate(params):
            assert_close(p.data, traces[i][step], rtol=1e-12, atol=1e-14,
                         what=f"param {i} after step {step + 1}")
            assert to_numpy(p.data).dtype == F64


SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "momentum+wd": dict(lr=0.05, momentum=0.8, weight_decay=0.05),
    "nesterov+wd": dict(lr=0.02, momentum=0.7, nesterov=True, weight_decay=0.1),
}


@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd(case, rng, device):
    kw = SGD_CASES[case]
    _run(lambda ps: SGD(ps, **kw), lambda w, g: reference_sgd(w, g, **kw), rng, device)


ADAM_CASES = {
    "default": dict(),
    "lr+betas": dict(lr=0.01, betas=(0.8, 0.99)),
    "eps+wd": dict(lr=0.003, eps=1e-4, weight_decay=0.1),
}


@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam(case, rng, device):
    kw = ADAM_CASES[case]
    _run(lambda ps: Adam(ps, **kw), lambda w, g: reference_adam(w, g, **kw), rng, device)


ADAMW_CASES = {
    "default": dict(),
    "wd0.1": dict(lr=0.01, weight_decay=0.1),
    "betas+eps": dict(lr=0.02, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.3),
}


@pytest.mark.parametrize("case", list(ADAMW_CASES))
def test_adamw(case, rng, device):
    kw = ADAMW_CASES[case]
    wd = kw.get("weight_decay", 1e-2)   # AdamW's default decay is 1e-2
    ref_kw = {k: v for k, v in kw.items() if k != "weight_decay"}
    _run(lambda ps: AdamW(ps, **kw),
         lambda w, g: reference_adam(w, g, weight_decay=wd, decoupled=True, **ref_kw), rng, device)


def test_adamw_differs_from_adam_with_weight_decay(rng):
    w = rng.standard_normal(5)
    g = rng.standard_normal(5)
    a, b = Parameter(w.copy()), Parameter(w.copy())
    a.grad[...] = g
    b.grad[...] = g
    Adam([a], lr=0.1, weight_decay=0.5).step()
    AdamW([b], lr=0.1, weight_decay=0.5).step()
    assert not numpy.allclose(a.data, b.data)


def test_float32_parameters_stay_float32(rng, device):
    p = Parameter(dev(rng.standard_normal((3, 3)).astype(numpy.float32), device))
    for opt in (SGD([p], lr=0.1, momentum=0.9), Adam([p]), AdamW([p])):
        p.grad[...] = dev(numpy.ones((3, 3), numpy.float32), device)
        opt.step()
        assert to_numpy(p.data).dtype == numpy.float32 and to_numpy(p.grad).dtype == numpy.float32


def test_lr_can_be_changed_between_steps(rng):
    w = rng.standard_normal(3)
    p = Parameter(w.copy())
    opt = SGD([p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    opt.lr = 0.01
    opt.step()
    numpy.testing.assert_allclose(p.data, w - 0.11, rtol=1e-12)


def test_zero_grad(rng):
    ps, _ = _params(rng, "cpu")
    for p in ps:
        p.grad[...] = 1.0
    Adam(ps).zero_grad()
    assert all(not p.grad.any() for p in ps)


def test_step_without_gradient_leaves_sgd_params(rng):
    ps, values = _params(rng, "cpu")
    SGD(ps, lr=0.1, momentum=0.9).step()
    for p, v in zip(ps, values):
        numpy.testing.assert_array_equal(p.data, v)


# ----------------------------------------------------------------------------------------
# schedules

def _lrs(schedule, opt, epochs):
    out = [opt.lr]
    for _ in range(epochs):
        schedule.step()
        out.append(opt.lr)
    return out


@pytest.mark.parametrize("step_size, gamma", [(1, 0.5), (3, 0.1), (4, 0.9)])
def test_step_lr(step_size, gamma):
    opt = SGD([Parameter(numpy.zeros(2))], lr=0.2)
    got = _lrs(StepLR(opt, step_size, gamma=gamma), opt, 12)
    want = [0.2 * gamma ** (e // step_size) for e in range(13)]
    numpy.testing.assert_allclose(got, want, rtol=1e-12)


def test_step_lr_default_gamma():
    opt = SGD([Parameter(numpy.zeros(2))], lr=1.0)
    got = _lrs(StepLR(opt, 2), opt, 5)
    numpy.testing.assert_allclose(got, [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-12)


@pytest.mark.parametrize("t_max, eta_min", [(10, 0.0), (4, 0.001), (1, 0.0)])
def test_cosine_annealing(t_max, eta_min):
    opt = Adam([Parameter(numpy.zeros(2))], lr=0.1)
    got = _lrs(CosineAnnealingLR(opt, t_max, eta_min=eta_min), opt, t_max)
    want = [eta_min + (0.1 - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2 for e in range(t_max + 1)]
    numpy.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
    assert got[-1] == pytest.approx(eta_min, abs=1e-15)


def test_schedule_changes_what_step_uses():
    p = Parameter(numpy.zeros(1))
    opt = SGD([p], lr=1.0)
    sched = StepLR(opt, 1, gamma=0.5)
    for _ in range(3):
        p.grad[...] = -1.0
        opt.step()
        sched.step()
    numpy.testing.assert_allclose(p.data, [1.0 + 0.5 + 0.25])


def test_parameter_grad_is_zeros_like_data(device):
    for dtype in (numpy.float32, F64):
        data = dev(numpy.arange(6, dtype=dtype).reshape(2, 3), device)
        p = Parameter(data)
        assert p.data is data
        assert type(p.grad) is type(data)
        assert p.grad.shape == (2, 3) and to_numpy(p.grad).dtype == dtype
        assert not to_numpy(p.grad).any()
        assert p.grad is not p.data
