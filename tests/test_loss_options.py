"""SoftmaxCrossEntropy's and MSE's options (weight, ignore_index, label_smoothing, reduction, probability
targets) against PyTorch in float64, loss and gradient, on NumPy and on the emulated GPU; their errors."""
import itertools

import numpy
import pytest

from support.emulated_cupy import to_host
from support.helpers import assert_bad_input
from gpucnn import backend
from gpucnn.nn.gradcheck import check_loss
from gpucnn.nn.losses import MSE, SoftmaxCrossEntropy

F32, F64 = numpy.float32, numpy.float64
N, C = 9, 5
IGNORES = [None, -100, 2]  # none; PyTorch's default value, outside [0, C); a class index
SMOOTHINGS = [0.0, 0.25, 1.0]
REDUCTIONS = ["mean", "sum", "none"]
LABEL_CASES = list(itertools.product([False, True], IGNORES, SMOOTHINGS, REDUCTIONS))
SOFT_CASES = list(itertools.product([False, True], SMOOTHINGS, REDUCTIONS))


def _ids(case):
    return "-".join(str(part) for part in case)


def _data(seed=0):
    rng = numpy.random.default_rng(seed)
    logits = rng.standard_normal((N, C)) * 3
    logits[0, :] = logits[0, 1]  # a tie: the first maximum counts
    labels = rng.integers(0, C, N)
    labels[[1, 5]] = -100  # ignored where ignore_index is -100, else replaced below
    labels[3] = 2
    weight = rng.random(C) + 0.2
    probs = rng.random((N, C))
    probs /= probs.sum(axis=1, keepdims=True)
    upstream = rng.standard_normal(N)
    return logits, labels, weight, probs, upstream


def _labels_for(labels, ignore_index):
    """-100 stays only where ignore_index is -100; elsewhere it becomes a class (1)."""
    return labels if ignore_index == -100 else numpy.where(labels == -100, 1, labels)


def _torch(logits, target, weight, ignore_index, smoothing, reduction, upstream):
    torch = pytest.importorskip("torch")
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    kwargs = {"label_smoothing": smoothing, "reduction": reduction}
    if weight is not None:
        kwargs["weight"] = torch.tensor(weight)
    if ignore_index is not None:
        kwargs["ignore_index"] = ignore_index
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(target), **kwargs)
    loss.backward(torch.tensor(upstream) if reduction == "none" else None)
    return loss.detach().numpy(), z.grad.numpy()


def _ours(loss_fn, logits, target, upstream, device, dtype=F64):
    z = backend.to_device(logits.astype(dtype), device)
    t = backend.to_device(target.astype(dtype) if target.dtype.kind == "f" else target, device)
    loss = loss_fn.forward(z, t)
    grad = loss_fn.backward(backend.to_device(upstream, device) if loss_fn.reduction == "none" else None)
    return to_host(loss), to_host(grad), loss_fn


def _check_labels_case(case, device, dtype=F64):
    weighted, ignore_index, smoothing, reduction = case
    logits, labels, weight, _, upstream = _data()
    labels = _labels_for(labels, ignore_index)
    w = weight if weighted else None
    want_loss, want_grad = _torch(logits, labels, w, ignore_index, smoothing, reduction, upstream)
    loss_fn = SoftmaxCrossEntropy(weight=w, ignore_index=ignore_index, label_smoothing=smoothing,
                                  reduction=reduction)
    loss, grad, _ = _ours(loss_fn, logits, labels, upstream, device, dtype)
    tol = 1e-12 if dtype == F64 else 2e-5
    assert loss.shape == want_loss.shape
    numpy.testing.assert_allclose(loss, want_loss, rtol=tol, atol=tol, err_msg="loss")
    numpy.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol, err_msg="dL/dlogits")
    counted = labels != ignore_index if ignore_index is not None else numpy.ones(N, bool)
    assert int(to_host(loss_fn.correct)) == int((counted & (logits.argmax(axis=1) == labels)).sum())
    assert int(to_host(loss_fn.invalid_labels)) == 0


def _check_soft_case(case, device, dtype=F64):
    weighted, smoothing, reduction = case
    logits, _, weight, probs, upstream = _data(1)
    w = weight if weighted else None
    want_loss, want_grad = _torch(logits, probs, w, None, smoothing, reduction, upstream)
    loss_fn = SoftmaxCrossEntropy(weight=w, label_smoothing=smoothing, reduction=reduction)
    loss, grad, _ = _ours(loss_fn, logits, probs, upstream, device, dtype)
    tol = 1e-12 if dtype == F64 else 2e-5
    numpy.testing.assert_allclose(loss, want_loss, rtol=tol, atol=tol, err_msg="loss")
    numpy.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol, err_msg="dL/dlogits")
    assert int(to_host(loss_fn.correct)) == int((logits.argmax(axis=1) == probs.argmax(axis=1)).sum())


@pytest.mark.parametrize("case", LABEL_CASES, ids=_ids)
def test_integer_labels_match_torch(case):
    _check_labels_case(case, "cpu")


@pytest.mark.parametrize("case", SOFT_CASES, ids=_ids)
def test_probability_targets_match_torch(case):
    _check_soft_case(case, "cpu")


@pytest.mark.kernels
@pytest.mark.parametrize("case", LABEL_CASES, ids=_ids)
def test_emulated_integer_labels_match_torch(gpu, case):
    _check_labels_case(case, "cuda")


@pytest.mark.kernels
@pytest.mark.parametrize("case", SOFT_CASES, ids=_ids)
def test_emulated_probability_targets_match_torch(gpu, case):
    _check_soft_case(case, "cuda")


@pytest.mark.kernels
@pytest.mark.parametrize("case", [(True, -100, 0.25, "mean"), (True, 2, 1.0, "none"), (False, None, 0.25, "sum")],
                         ids=_ids)
def test_emulated_float32_matches_torch(gpu, case):
    _check_labels_case(case, "cuda", F32)
    _check_soft_case((case[0], case[2], case[3]), "cuda", F32)


@pytest.mark.kernels
def test_emulated_options_one_launch_no_read_back(gpu):
    """With check_labels=False, every option on the device: one kernel, nothing read back to the host."""
    logits, labels, weight, probs, upstream = _data()
    z = backend.to_device(logits, "cuda")
    for target, ignore in ((backend.to_device(labels, "cuda"), -100), (backend.to_device(probs, "cuda"), None)):
        loss_fn = SoftmaxCrossEntropy(weight=weight, ignore_index=ignore, label_smoothing=0.1, check_labels=False)
        loss_fn.forward(z, target)  # the first call puts the weight on the device
        gpu.device_ops.reset()
        gpu.syncs.reset()
        loss_fn.forward(z, target)
        assert [name for name in gpu.device_ops.names if name.startswith("kernel")] == \
            ["kernel softmax_xent" if ignore is not None else "kernel softmax_xent_soft"]
        assert gpu.syncs.count == 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("emulated", marks=pytest.mark.kernels)])
def test_fused_takes_the_options(device, request):
    """The graph step's form gives what forward and backward give, with every option but 'none'."""
    if device == "emulated":
        request.getfixturevalue("gpu")
    where = "cuda" if device == "emulated" else "cpu"
    logits, labels, weight, _, _ = _data()
    for reduction in ("mean", "sum"):
        loss_fn = SoftmaxCrossEntropy(weight=weight, ignore_index=-100, label_smoothing=0.3, reduction=reduction)
        z, y = backend.to_device(logits, where), backend.to_device(labels.astype(numpy.int64), where)
        loss, grad, correct = (to_host(a).copy() for a in loss_fn.fused(z, y))
        want = float(to_host(loss_fn.forward(z, y)))
        assert float(loss) == pytest.approx(want, rel=1e-12)
        numpy.testing.assert_allclose(grad, to_host(loss_fn.backward()), rtol=1e-12, atol=1e-15)
        assert int(correct) == int(to_host(loss_fn.correct))
    with pytest.raises(ValueError, match="reduction='none'"):
        SoftmaxCrossEntropy(reduction="none").fused(z, y)


def test_all_ignored_mean_is_nan_with_zero_gradient_as_torch():
    logits, labels, _, _, _ = _data()
    labels = numpy.full(N, -100)
    for weighted in (False, True):
        w = numpy.ones(C) if weighted else None
        want_loss, want_grad = _torch(logits, labels, w, -100, 0.2, "mean", None)
        loss_fn = SoftmaxCrossEntropy(weight=w, ignore_index=-100, label_smoothing=0.2)
        loss = float(loss_fn.forward(logits, labels))
        assert numpy.isnan(want_loss) and numpy.isnan(loss)
        numpy.testing.assert_array_equal(loss_fn.backward(), want_grad)
        assert int(loss_fn.correct) == 0


def test_gradcheck_with_options():
    logits, labels, weight, probs, _ = _data()
    for reduction in ("mean", "sum"):
        check_loss(SoftmaxCrossEntropy(weight=weight, ignore_index=-100, label_smoothing=0.3, reduction=reduction),
                   logits, labels)
        check_loss(SoftmaxCrossEntropy(weight=weight, label_smoothing=0.3, reduction=reduction), logits, probs)


def test_none_backward_defaults_to_ones_and_scales_rows():
    logits, labels, _, _, upstream = _data()
    loss_fn = SoftmaxCrossEntropy(reduction="none")
    per_sample = loss_fn.forward(logits, numpy.where(labels < 0, 0, labels))
    assert per_sample.shape == (N,)
    ones = loss_fn.backward()
    numpy.testing.assert_allclose(loss_fn.backward(upstream), ones * upstream[:, None], rtol=1e-15)
    summed = SoftmaxCrossEntropy(reduction="sum")
    assert float(summed.forward(logits, numpy.where(labels < 0, 0, labels))) == pytest.approx(per_sample.sum())
    numpy.testing.assert_allclose(summed.backward(), ones, rtol=1e-13)
    numpy.testing.assert_allclose(summed.backward(2.5), 2.5 * ones, rtol=1e-13)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device", ["cpu", pytest.param("emulated", marks=pytest.mark.kernels)])
def test_mse_reductions_match_torch(reduction, device, request):
    torch = pytest.importorskip("torch")
    if device == "emulated":
        request.getfixturevalue("gpu")
    where = "cuda" if device == "emulated" else "cpu"
    rng = numpy.random.default_rng(4)
    pred, target = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    upstream = rng.standard_normal((3, 4, 2))
    p = torch.tensor(pred, requires_grad=True)
    want = torch.nn.functional.mse_loss(p, torch.tensor(target), reduction=reduction)
    want.backward(torch.tensor(upstream) if reduction == "none" else None)
    loss_fn = MSE(reduction=reduction)
    loss = loss_fn.forward(backend.to_device(pred, where), backend.to_device(target, where))
    grad = loss_fn.backward(backend.to_device(upstream, where) if reduction == "none" else None)
    numpy.testing.assert_allclose(to_host(loss), want.detach().numpy(), rtol=1e-13)
    numpy.testing.assert_allclose(to_host(grad), p.grad.numpy(), rtol=1e-13, atol=1e-15)
    if reduction != "none":
        check_loss(MSE(reduction=reduction), pred, target)


# ----------------------------------------------------------------------------------------
# errors: one line naming the argument

@pytest.mark.parametrize("kwargs, fragments", [
    ({"label_smoothing": 1.5}, ["label_smoothing", "[0, 1]", "1.5"]),
    ({"label_smoothing": -0.1}, ["label_smoothing", "-0.1"]),
    ({"label_smoothing": float("nan")}, ["label_smoothing", "nan"]),
    ({"label_smoothing": "0.1"}, ["label_smoothing"]),
    ({"reduction": "avg"}, ["reduction", "'avg'"]),
    ({"reduction": None}, ["reduction", "None"]),
    ({"weight": [1.0, -2.0, 1.0]}, ["weight", "non-negative"]),
    ({"weight": [1.0, float("inf")]}, ["weight", "finite"]),
    ({"weight": [[1.0, 2.0]]}, ["weight", "1-D", "(1, 2)"]),
    ({"weight": []}, ["weight", "1-D"]),
    ({"ignore_index": 1.5}, ["ignore_index", "1.5"]),
    ({"ignore_index": True}, ["ignore_index", "True"]),
])
def test_bad_options_are_refused_naming_the_argument(kwargs, fragments):
    assert_bad_input(lambda: SoftmaxCrossEntropy(**kwargs), "SoftmaxCrossEntropy", *fragments)


def test_weight_of_the_wrong_length():
    loss_fn = SoftmaxCrossEntropy(weight=[1.0, 2.0, 3.0])
    assert_bad_input(lambda: loss_fn.forward(numpy.zeros((2, 4)), numpy.array([0, 1])),
                     "SoftmaxCrossEntropy", "weight", "3 entries", "4 classes")


def test_probability_targets_of_the_wrong_shape_or_with_ignore_index():
    assert_bad_input(lambda: SoftmaxCrossEntropy().forward(numpy.zeros((2, 4)), numpy.zeros((2, 3))),
                     "SoftmaxCrossEntropy", "(2, 4)", "(2, 3)")
    assert_bad_input(lambda: SoftmaxCrossEntropy(ignore_index=-100).forward(numpy.zeros((2, 4)),
                                                                           numpy.full((2, 4), 0.25)),
                     "SoftmaxCrossEntropy", "ignore_index", "probability")


def test_ignore_index_passes_the_label_check_and_other_labels_do_not():
    logits = numpy.zeros((3, 4))
    assert numpy.isfinite(float(SoftmaxCrossEntropy(ignore_index=-100).forward(logits, numpy.array([0, -100, 3]))))
    assert numpy.isfinite(float(SoftmaxCrossEntropy(ignore_index=7).forward(logits, numpy.array([7, 1, 3]))))
    assert_bad_input(lambda: SoftmaxCrossEntropy(ignore_index=-100).forward(logits, numpy.array([0, -1, 3])),
                     "SoftmaxCrossEntropy", "-1", "ignore_index -100")


@pytest.mark.parametrize("reduction, upstream, fragments", [
    ("none", numpy.ones(2), ["grad_output", "(3,)", "(2,)"]),
    ("mean", numpy.ones(3), ["grad_output", "scalar", "(3,)"]),
])
def test_bad_upstream_gradient(reduction, upstream, fragments):
    loss_fn = SoftmaxCrossEntropy(reduction=reduction)
    loss_fn.forward(numpy.zeros((3, 4)), numpy.array([0, 1, 2]))
    assert_bad_input(lambda: loss_fn.backward(upstream), "SoftmaxCrossEntropy", *fragments)
    mse = MSE(reduction=reduction)
    mse.forward(numpy.zeros((3,)), numpy.ones(3))
    bad = numpy.ones(2) if reduction == "none" else numpy.ones(3)
    assert_bad_input(lambda: mse.backward(bad), "MSE", "grad_output")


def test_mse_bad_reduction():
    assert_bad_input(lambda: MSE(reduction="mean_squared"), "MSE", "reduction", "'mean_squared'")


def test_repr_names_the_options():
    assert repr(SoftmaxCrossEntropy()) == "SoftmaxCrossEntropy()"
    text = repr(SoftmaxCrossEntropy(weight=[1, 2], ignore_index=-100, label_smoothing=0.1, reduction="sum"))
    assert text == "SoftmaxCrossEntropy(weight=[1.0, 2.0], ignore_index=-100, label_smoothing=0.1, reduction='sum')"
    assert repr(MSE(reduction="none")) == "MSE(reduction='none')"
