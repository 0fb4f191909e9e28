"""Number-for-number parity with PyTorch (CPU), weights copied across, float64 unless stated: the losses,
optimizers and schedules, and one training step of a whole model (the layers: tests/test_torch_parity.py).
"""
import numpy
import pytest

import gpucnn
from gpucnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from gpucnn.nn.losses import MSE, SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD, Adam, AdamW, CosineAnnealingLR, StepLR
from support.helpers import F64, assert_close, dev, set_param, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional


def T(a, grad=False):
    return torch.tensor(numpy.asarray(a), dtype=torch.float64, requires_grad=grad)


# ----------------------------------------------------------------------------------------
# losses

@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_cross_entropy(scale, rng, device):
    logits = rng.standard_normal((6, 5)) * scale
    labels = rng.integers(0, 5, size=6)
    lt = T(logits, True)
    loss_t = F.cross_entropy(lt, torch.tensor(labels))
    loss_t.backward()
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(dev(logits, device), dev(labels, device))
    assert float(loss) == pytest.approx(loss_t.item(), rel=1e-12, abs=1e-12)
    assert_close(loss_fn.backward(), lt.grad.numpy(), what="grad")


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 2, 2)])
def test_mse(shape, rng, device):
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    pt = T(pred, True)
    loss_t = F.mse_loss(pt, T(target))
    loss_t.backward()
    loss_fn = MSE()
    loss = float(loss_fn.forward(dev(pred, device), dev(target, device)))
    assert loss == pytest.approx(loss_t.item(), rel=1e-12)
    assert_close(loss_fn.backward(), pt.grad.numpy(), what="grad")


# ----------------------------------------------------------------------------------------
# optimizers and schedules

OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.03, momentum=0.8, nesterov=True, weight_decay=0.05)),
    ("SGD", dict(lr=0.03, momentum=0.7, weight_decay=0.2)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.2)),
]
OURS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


@pytest.mark.parametrize("name, kw", OPTIMIZERS, ids=[f"{n}-{kw}" for n, kw in OPTIMIZERS])
def test_optimizer(name, kw, rng, device):
    shapes = [(3, 4), (4,), (2, 2, 3, 3)]
    values = [rng.standard_normal(s) for s in shapes]
    ours = [gpucnn.Parameter(dev(v.copy(), device)) for v in values]
    theirs = [T(v, True) for v in values]
    opt = OURS[name](ours, **kw)
    topt = getattr(torch.optim, name)(theirs, **kw)
    for step in range(6):
        opt.zero_grad()
        topt.zero_grad()
        for p, t, s in zip(ours, theirs, shapes):
            g = rng.standard_normal(s)
            p.grad[...] = dev(g, device)
            t.grad = T(g)
        opt.step()
        topt.step()
        for i, (p, t) in enumerate(zip(ours, theirs)):
            assert_close(p.data, t.detach().numpy(), rtol=1e-11, atol=1e-13,
                         what=f"param {i} step {step + 1}")


def _schedule_pair(name, lr, **kw):
    ours_opt = SGD([gpucnn.Parameter(numpy.zeros(1))], lr=lr)
    torch_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    ours = {"StepLR": StepLR, "CosineAnnealingLR": CosineAnnealingLR}[name](ours_opt, **kw)
    theirs = getattr(torch.optim.lr_scheduler, name)(torch_opt, **kw)
    return ours_opt, ours, torch_opt, theirs


@pytest.mark.parametrize("name, lr, kw", [
    ("StepLR", 0.1, dict(step_size=3)),
    ("StepLR", 0.5, dict(step_size=1, gamma=0.7)),
    ("StepLR", 1.0, dict(step_size=4, gamma=0.5)),
    ("CosineAnnealingLR", 0.1, dict(T_max=10)),
    ("CosineAnnealingLR", 0.05, dict(T_max=4, eta_min=0.001)),
    ("CosineAnnealingLR", 0.3, dict(T_max=1, eta_min=0.01)),
    ("CosineAnnealingLR", 0.2, dict(T_max=7, eta_min=0.02)),
])
def test_schedule(name, lr, kw):
    ours_opt, ours, torch_opt, theirs = _schedule_pair(name, lr, **kw)
    assert ours_opt.lr == pytest.approx(torch_opt.param_groups[0]["lr"], rel=1e-12)
    for epoch in range(1, 25):      # past T_max too
        torch_opt.step()            # torch wants optimizer.step() before scheduler.step()
        theirs.step()
        ours.step()
        want = torch_opt.param_groups[0]["lr"]
        assert ours_opt.lr == pytest.approx(want, rel=1e-9, abs=1e-14), f"epoch {epoch}"


# ----------------------------------------------------------------------------------------
# a whole model: conv-relu-pool-flatten-dense, loss, backward, one Adam step

def _models(rng, dtype):
    ours = gpucnn.Sequential([Conv2D(3, 4, 3, padding=1, dtype=dtype), ReLU(), MaxPool2D(2), Flatten(),
                              Dense(4 * 4 * 4, 5, dtype=dtype)])
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                 torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5)).to(torch.float64)
    with torch.no_grad():
        for mine, ref in zip(ours.parameters(), theirs.parameters()):
            value = rng.standard_normal(mine.data.shape) * 0.3
            set_param(mine, value)
            ref.copy_(T(value))
    return ours, theirs


@pytest.mark.parametrize("dtype, rtol, atol", [(F64, 1e-10, 1e-12), (numpy.float32, 2e-4, 2e-5)],
                         ids=["float64", "float32"])
def test_small_model_step(dtype, rtol, atol, rng, device):
    ours, theirs = _models(rng, dtype)
    x = rng.standard_normal((4, 3, 8, 8))
    labels = rng.integers(0, 5, size=4)
    # torch
    xt = T(x, True)
    loss_t = F.cross_entropy(theirs(xt), torch.tensor(labels))
    topt = torch.optim.Adam(theirs.parameters(), lr=0.01)
    topt.zero_grad()
    loss_t.backward()
    # gpucnn
    ours.to(device)
    opt = Adam(ours.parameters(), lr=0.01)
    loss_fn = SoftmaxCrossEntropy()
    opt.zero_grad()
    logits = ours.forward(dev(x.astype(dtype), device))
    assert to_numpy(logits).dtype == dtype
    loss = loss_fn.forward(logits, dev(labels, device))
    dx = ours.backward(loss_fn.backward())
    assert float(loss) == pytest.approx(loss_t.item(), rel=rtol, abs=atol)
    assert_close(dx, xt.grad.numpy(), rtol=rtol, atol=atol, what="dx")
    for i, (mine, ref) in enumerate(zip(ours.parameters(), theirs.parameters())):
        assert_close(mine.grad, ref.grad.numpy(), rtol=rtol, atol=atol, what=f"grad of parameter {i}")
    if dtype != F64:
        return   # Adam's first step is lr * sign(grad): float32 rounding of near-zero grads can flip it
    opt.step()
    topt.step()
    for i, (mine, ref) in enumerate(zip(ours.parameters(), theirs.parameters())):
        assert_close(mine.data, ref.detach().numpy(), rtol=rtol, atol=atol, what=f"parameter {i} after Adam")
    # and the next forward agrees too
    with torch.no_grad():
        want = theirs(T(x)).numpy()
    assert_close(ours.forward(dev(x.astype(dtype), device)), want, rtol=rtol * 10, atol=atol * 10,
                 what="logits after the step")
