"""The schedules against torch.optim.lr_scheduler: the whole learning-rate (and momentum / beta1) sequence of a
run, every parameter group, float64; and state() / set_state() resuming mid-schedule on the same floats."""
import math

import numpy
import pytest

from gpucnn import Parameter
from gpucnn.optim import (SGD, Adam, AdamW, CosineAnnealingLR, LinearLR, LinearWarmup, OneCycleLR, ReduceLROnPlateau,
                          SequentialLR, StepLR)

torch = pytest.importorskip("torch")


def _pair(kind, lrs=(0.1, 0.03), **settings):
    """(ours, torch's): the same optimizer with one parameter group per entry of ``lrs``."""
    ours_params = [Parameter(numpy.zeros(3)) for _ in lrs]
    theirs_params = [torch.zeros(3, dtype=torch.float64, requires_grad=True) for _ in lrs]
    ours_cls, theirs_cls = {"sgd": (SGD, torch.optim.SGD), "adam": (Adam, torch.optim.Adam),
                            "adamw": (AdamW, torch.optim.AdamW)}[kind]
    ours = ours_cls([{"params": [p], "lr": lr} for p, lr in zip(ours_params, lrs)], lr=lrs[0], **settings)
    theirs = theirs_cls([{"params": [p], "lr": lr} for p, lr in zip(theirs_params, lrs)], lr=lrs[0], **settings)
    return ours, theirs


def _trace(opt, key):
    return [g[key][0] if key == "betas" else g[key] for g in opt.param_groups]


def _run(ours, theirs, ours_sched, theirs_sched, steps, keys=("lr",), metrics=None):
    for step in range(steps + 1):
        for key in keys:
            got, want = _trace(ours, key), _trace(theirs, key)
            numpy.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=f"{key} at step {step}")
        if step == steps:
            break
        theirs.step()  # torch warns when a schedule steps before its optimizer
        if metrics is None:
            ours_sched.step()
            theirs_sched.step()
        else:
            ours_sched.step(metrics[step])
            theirs_sched.step(metrics[step])


CLOSED_FORM = {
    "step": (lambda o: StepLR(o, 3, gamma=0.5), lambda t: torch.optim.lr_scheduler.StepLR(t, 3, gamma=0.5), 12),
    "cosine": (lambda o: CosineAnnealingLR(o, 10, eta_min=1e-4),
               lambda t: torch.optim.lr_scheduler.CosineAnnealingLR(t, 10, eta_min=1e-4), 10),
    "linear": (lambda o: LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=6),
               lambda t: torch.optim.lr_scheduler.LinearLR(t, start_factor=0.2, end_factor=0.9, total_iters=6), 10),
    "warmup": (lambda o: LinearWarmup(o, 4),
               lambda t: torch.optim.lr_scheduler.LinearLR(t, start_factor=1 / 5, end_factor=1.0, total_iters=4), 8),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
def test_closed_form_schedules_follow_torch_over_a_run(name):
    ours_make, theirs_make, steps = CLOSED_FORM[name]
    ours, theirs = _pair("sgd", momentum=0.9)
    _run(ours, theirs, ours_make(ours), theirs_make(theirs), steps)


def test_warmup_then_cosine_through_sequential_lr_follows_torch():
    ours, theirs = _pair("adam")
    ours_sched = SequentialLR(ours, [LinearWarmup(ours, 3), CosineAnnealingLR(ours, T_max=7)], milestones=[3])
    lr = torch.optim.lr_scheduler
    theirs_sched = lr.SequentialLR(theirs, [lr.LinearLR(theirs, 0.25, 1.0, 3), lr.CosineAnnealingLR(theirs, 7)],
                                   milestones=[3])
    _run(ours, theirs, ours_sched, theirs_sched, 10)


def test_sequential_lr_of_three_schedules_follows_torch():
    ours, theirs = _pair("sgd", momentum=0.5)
    ours_sched = SequentialLR(ours, [LinearLR(ours, 0.5, 1.0, 2), StepLR(ours, 2, 0.5), CosineAnnealingLR(ours, 4)],
                              milestones=[2, 6])
    lr = torch.optim.lr_scheduler
    theirs_sched = lr.SequentialLR(theirs, [lr.LinearLR(theirs, 0.5, 1.0, 2), lr.StepLR(theirs, 2, 0.5),
                                            lr.CosineAnnealingLR(theirs, 4)], milestones=[2, 6])
    _run(ours, theirs, ours_sched, theirs_sched, 11)


ONE_CYCLE = [
    ("adam", dict(max_lr=[0.01, 0.004], total_steps=40)),
    ("adamw", dict(max_lr=0.02, epochs=3, steps_per_epoch=11, pct_start=0.25, anneal_strategy="linear")),
    ("sgd", dict(max_lr=0.5, total_steps=30, three_phase=True, base_momentum=0.8, max_momentum=0.9)),
    ("sgd", dict(max_lr=0.5, total_steps=17, cycle_momentum=False, div_factor=10.0, final_div_factor=100.0)),
]


@pytest.mark.parametrize("kind, settings", ONE_CYCLE)
def test_one_cycle_follows_torch_in_lr_and_momentum_over_a_whole_run(kind, settings):
    ours, theirs = _pair(kind, **({"momentum": 0.9} if kind == "sgd" else {}))
    ours_sched = OneCycleLR(ours, **settings)
    theirs_sched = torch.optim.lr_scheduler.OneCycleLR(theirs, **settings)
    keys = ("lr",) if settings.get("cycle_momentum") is False else ("lr", "betas" if kind != "sgd" else "momentum")
    assert ours_sched.interval == "step"
    _run(ours, theirs, ours_sched, theirs_sched, theirs_sched.total_steps, keys)
    with pytest.raises(ValueError, match="total_steps"):
        ours_sched.step()


def test_one_cycle_refuses_bad_arguments():
    opt = Adam([Parameter(numpy.zeros(2))])
    with pytest.raises(ValueError, match="total_steps, or epochs and steps_per_epoch"):
        OneCycleLR(opt, 0.1)
    with pytest.raises(ValueError, match="anneal_strategy"):
        OneCycleLR(opt, 0.1, total_steps=5, anneal_strategy="exp")
    with pytest.raises(ValueError, match="max_lr"):
        OneCycleLR(opt, [0.1, 0.2], total_steps=5)


@pytest.mark.parametrize("settings", [dict(), dict(mode="max", threshold_mode="abs", threshold=0.05, patience=1),
                                      dict(factor=0.5, patience=0, cooldown=2, min_lr=[0.01, 0.001])])
def test_reduce_lr_on_plateau_follows_torch(settings):
    metrics = [1.0, 0.9, 0.95, 0.9, 0.91, 0.89, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99] * 2
    if settings.get("mode") == "max":
        metrics = [-m for m in metrics]
    settings = {"patience": 2, **settings}
    ours, theirs = _pair("sgd", momentum=0.9)
    _run(ours, theirs, ReduceLROnPlateau(ours, **settings),
         torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **settings), len(metrics), metrics=metrics)


def _schedules(opt):
    return {
        "onecycle": OneCycleLR(opt, max_lr=0.05, total_steps=20),
        "sequential": SequentialLR(opt, [LinearWarmup(opt, 3), CosineAnnealingLR(opt, 9)], milestones=[3]),
        "step": StepLR(opt, 4, 0.3),
    }


@pytest.mark.parametrize("name", ["onecycle", "sequential", "step"])
def test_a_schedule_restored_mid_run_continues_on_the_same_floats(name):
    straight_opt, _ = _pair("adam")
    straight = _schedules(straight_opt)[name]
    for _ in range(7):
        straight.step()
    saved = straight.state()
    rest = []
    for _ in range(6):
        straight.step()
        rest.append([dict(g, params=None) for g in straight_opt.param_groups])
    resumed_opt, _ = _pair("adam")
    resumed = _schedules(resumed_opt)[name]
    resumed.set_state(saved)
    assert resumed.last_epoch == 7
    for want in rest:
        resumed.step()
        assert [dict(g, params=None) for g in resumed_opt.param_groups] == want  # bitwise: == on floats


def test_a_schedule_state_of_another_kind_or_shape_is_refused():
    opt, _ = _pair("sgd", momentum=0.9)
    sched = StepLR(opt, 2)
    with pytest.raises(ValueError, match="the checkpoint's schedule is CosineAnnealingLR"):
        sched.set_state(CosineAnnealingLR(_pair("sgd")[0], 3).state())
    with pytest.raises(ValueError, match="one per parameter group"):
        sched.set_state({**sched.state(), "base_lrs": [0.1]})
    plateau = ReduceLROnPlateau(opt)
    with pytest.raises(ValueError, match="best"):
        plateau.set_state({**plateau.state(), "best": "nan?"})
    restored = ReduceLROnPlateau(opt)
    plateau.step(1.0)
    restored.set_state(plateau.state())
    assert restored.best == 1.0 and restored.last_epoch == 1
    assert math.isinf(ReduceLROnPlateau(opt).best)
