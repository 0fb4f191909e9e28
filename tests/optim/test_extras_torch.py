"""Parameter groups, clip_grad_norm_ and EMA against PyTorch in float64 (CPU; tests/optim/test_extras_gpu.py runs
the same on the emulated GPU)."""
import numpy
import pytest

import gpucnn
from gpucnn import Parameter
from gpucnn.nn.layers import BatchNorm1D, Conv2D, Dense, Flatten
from gpucnn.optim import EMA, SGD, Adam, AdamW, clip_grad_norm_, param_groups_no_decay

torch = pytest.importorskip("torch")

SHAPES = ((3, 4), (4,), (2, 1, 3, 3), (5,))

GROUPED = {
    "sgd": (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9),
            [dict(weight_decay=1e-2, nesterov=True), dict(lr=0.02, momentum=0.5, dampening=0.2)]),
    "adam": (Adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-3),
             [dict(betas=(0.8, 0.99)), dict(lr=3e-3, weight_decay=0.0, eps=1e-6)]),
    "adamw": (AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=5e-2),
              [dict(), dict(lr=2e-2, weight_decay=0.0, betas=(0.5, 0.9))]),
}


def grouped_pair(name, to=lambda a: a):
    """(ours, torch's, our params, torch's params, per-step gradients): the same two-group optimizer."""
    ours_cls, theirs_cls, defaults, settings = GROUPED[name]
    rng = numpy.random.default_rng(0)
    values = [rng.standard_normal(s) for s in SHAPES]
    ours_p = [Parameter(to(v.copy())) for v in values]
    theirs_p = [torch.tensor(v, requires_grad=True) for v in values]
    ours = ours_cls([{"params": ours_p[:2], **settings[0]}, {"params": ours_p[2:], **settings[1]}], **defaults)
    theirs = theirs_cls([{"params": theirs_p[:2], **settings[0]}, {"params": theirs_p[2:], **settings[1]}],
                        **defaults)
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(5)]
    return ours, theirs, ours_p, theirs_p, grads


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_parameter_groups_follow_torch_over_several_steps(name):
    ours, theirs, ours_p, theirs_p, grads = grouped_pair(name)
    for step, gs in enumerate(grads):
        for p, q, g in zip(ours_p, theirs_p, gs):
            p.grad[...] = g
            q.grad = torch.tensor(g)
        ours.step()
        theirs.step()
        if step == 2:  # a schedule's kind of change: each group's own lr
            for group, lr in zip(ours.param_groups + theirs.param_groups, [0.05, 0.01] * 2):
                group["lr"] = lr
        for i, (p, q) in enumerate(zip(ours_p, theirs_p)):
            numpy.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-12, atol=1e-14,
                                          err_msg=f"{name}, step {step + 1}, parameter {i}")


def test_groups_take_the_defaults_and_lr_reads_the_first_group():
    ps = [Parameter(numpy.zeros(s)) for s in SHAPES]
    opt = Adam([{"params": ps[:1], "lr": 0.5}, {"params": ps[1:]}], lr=0.1, betas=(0.8, 0.9))
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1] and opt.lr == 0.5
    assert opt.param_groups[1]["betas"] == (0.8, 0.9) and opt.params == ps
    opt.lr = 0.2
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2]
    with pytest.raises(ValueError, match="unknown settings \\['momentum'\\]"):
        Adam([{"params": ps, "momentum": 0.9}])
    with pytest.raises(ValueError, match="more than one group"):
        Adam([{"params": ps}, {"params": ps[:1]}])
    with pytest.raises(ValueError, match="lr must be > 0"):
        SGD([{"params": ps, "lr": -1.0}], lr=0.1)


def test_param_groups_no_decay_leaves_out_biases_and_batchnorm():
    rng = numpy.random.default_rng(0)
    model = gpucnn.Sequential([Conv2D(1, 2, 3, rng=rng), Flatten(), Dense(8, 3, rng=rng), BatchNorm1D(3)])
    groups = param_groups_no_decay(model, 5e-4)
    conv, dense, bn = model.layers[0], model.layers[2], model.layers[3]
    assert [id(p) for p in groups[0]["params"]] == [id(conv.weight), id(dense.weight)]
    assert [id(p) for p in groups[1]["params"]] == [id(conv.bias), id(dense.bias), id(bn.weight), id(bn.bias)]
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (5e-4, 0.0)


def test_optimizer_state_with_groups_round_trips_and_refuses_other_groups():
    ours, _, ours_p, _, grads = grouped_pair("adam")
    for p, g in zip(ours_p, grads[0]):
        p.grad[...] = g
    ours.step()
    arrays, scalars = ours.state_arrays()
    assert [g["size"] for g in scalars["groups"]] == [2, 2] and scalars["groups"][0]["betas"] == [0.8, 0.99]
    again, _, _, _, _ = grouped_pair("adam")
    again.load_state_arrays(arrays, scalars)
    assert [dict(g, params=None) for g in again.param_groups] == [dict(g, params=None) for g in ours.param_groups]
    single = Adam(ours_p)
    with pytest.raises(ValueError, match="do not fit this optimizer's groups"):
        single.load_state_arrays(arrays, {**scalars, "groups": scalars["groups"][:1]})
    with pytest.raises(ValueError, match="this optimizer has 2"):
        again.load_state_arrays(*single.state_arrays())


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_follows_torch(norm_type, max_norm):
    rng = numpy.random.default_rng(1)
    grads = [rng.standard_normal(s) for s in SHAPES]
    ours = [Parameter(numpy.zeros(s)) for s in SHAPES]
    theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, q, g in zip(ours, theirs, grads):
        p.grad[...] = g
        q.grad = torch.tensor(g)
    total = clip_grad_norm_(ours, max_norm, norm_type)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert float(total) == pytest.approx(float(want), rel=1e-13)
    for p, q in zip(ours, theirs):
        numpy.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_clip_grad_norm_refuses_a_nonfinite_norm_when_asked_and_scales_nothing():
    p = Parameter(numpy.ones(3))
    p.grad[...] = [1.0, numpy.nan, 2.0]
    with pytest.raises(RuntimeError, match="total norm"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert p.grad[0] == 1.0 and p.grad[2] == 2.0
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([p], -1.0)


def _model_pair():
    rng = numpy.random.default_rng(2)
    ours = gpucnn.Sequential([Dense(3, 2, dtype=numpy.float64, rng=rng), BatchNorm1D(2, dtype=numpy.float64)])
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).double()
    return ours, theirs


@pytest.mark.parametrize("decay", [0.9, 0.3])
def test_ema_follows_torch_averaged_model_with_ema_avg_fn_and_buffers(decay):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    ours, theirs = _model_pair()
    ema = EMA(ours, decay=decay)
    averaged = AveragedModel(theirs, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    rng = numpy.random.default_rng(3)
    theirs_state = theirs.state_dict()
    for _ in range(4):
        for key, value in ours.named_state().items():  # new "trained" weights, the same in both
            value[...] = rng.standard_normal(value.shape)
            theirs_state[key].copy_(torch.tensor(value.reshape(theirs_state[key].shape)))
        ema.update()
        averaged.update_parameters(theirs)
        want = averaged.module.state_dict()
        for key, value in ema.averages.items():
            numpy.testing.assert_allclose(value.reshape(-1), want[key].numpy().reshape(-1), rtol=1e-14, atol=1e-15,
                                          err_msg=key)
    own = {k: v.copy() for k, v in ours.named_state().items()}
    with ema.average_parameters():
        for key, value in ours.named_state().items():
            numpy.testing.assert_array_equal(value, ema.averages[key])
    for key, value in ours.named_state().items():
        numpy.testing.assert_array_equal(value, own[key])


def test_ema_refuses_a_bad_decay_and_evaluating_before_an_update():
    ours, _ = _model_pair()
    with pytest.raises(ValueError, match="decay"):
        EMA(ours, decay=1.5)
    with pytest.raises(RuntimeError, match="no average yet"):
        EMA(ours).copy_to()
