"""fit with the loss options: both CPU paths against a PyTorch SGD step, and the graph step on the emulated GPU
against the eager one (or its refusal, naming the option)."""

import numpy
import pytest

import gpucnn
from support.emulated_cupy import to_host
from gpucnn.nn.layers import Dense, Flatten, ReLU
from gpucnn.nn.losses import MSE, SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD
from gpucnn.train.loop import fit

N, FEATURES, C = 12, 6, 4
LR = 0.5


def _data(seed=0):
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((N, FEATURES))
    labels = rng.integers(0, C, N)
    labels[[2, 7]] = -100
    probs = rng.random((N, C))
    return x, labels, probs / probs.sum(axis=1, keepdims=True), rng.random(C) + 0.5


OPTIONS = {
    "weight-ignore-smooth-mean": dict(weight=True, ignore_index=-100, label_smoothing=0.2, reduction="mean"),
    "weight-smooth-sum": dict(weight=True, label_smoothing=0.3, reduction="sum"),
    "probabilities-weight-smooth": dict(weight=True, label_smoothing=0.1, soft=True),
}


def _case(name):
    options = dict(OPTIONS[name])
    x, labels, probs, weight = _data()
    soft = options.pop("soft", False)
    if options.pop("weight"):
        options["weight"] = weight
    y = probs if soft else (labels if "ignore_index" in options else numpy.where(labels < 0, 1, labels))
    return x, y, options


def _torch_sgd_step(x, y, options, weight, bias):
    torch = pytest.importorskip("torch")
    w = torch.tensor(weight, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    kwargs = dict(options)
    if "weight" in kwargs:
        kwargs["weight"] = torch.tensor(kwargs["weight"])
    loss = torch.nn.functional.cross_entropy(torch.tensor(x) @ w.T + b, torch.tensor(y), **kwargs)
    loss.backward()
    return loss.item(), (w - LR * w.grad).detach().numpy(), (b - LR * b.grad).detach().numpy()


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_fit_on_both_cpu_paths_takes_the_torch_step(name, path):
    """One full-batch SGD step: the history's loss and the new weights are PyTorch's, on either CPU path."""
    x, y, options = _case(name)
    gpucnn.config.path = path
    model = gpucnn.Sequential([Dense(FEATURES, C, dtype=numpy.float64, rng=0)])
    dense = model.layers[0]
    want_loss, want_w, want_b = _torch_sgd_step(x, y, options, dense.weight.data.copy(), dense.bias.data.copy())
    history = fit(model, SoftmaxCrossEntropy(**options), SGD(model.parameters(), lr=LR), x, y, 1, batch_size=N,
                  progress=False)
    assert history["loss"][0] == pytest.approx(want_loss, rel=1e-12)
    numpy.testing.assert_allclose(dense.weight.data, want_w, rtol=1e-12, atol=1e-14)
    numpy.testing.assert_allclose(dense.bias.data, want_b, rtol=1e-12, atol=1e-14)


def test_fit_refuses_reduction_none():
    x, y, _ = _case("weight-smooth-sum")
    model = gpucnn.Sequential([Dense(FEATURES, C, dtype=numpy.float64, rng=0)])
    for loss_fn in (SoftmaxCrossEntropy(reduction="none"), MSE(reduction="none")):
        with pytest.raises(ValueError, match=r"fit: loss_fn has reduction='none'.*'mean' or 'sum'"):
            fit(model, loss_fn, SGD(model.parameters(), lr=LR), x, y, 1, batch_size=N, progress=False)


def test_fit_with_ignore_index_leaves_ignored_rows_out_of_the_correct_count():
    x, y, options = _case("weight-ignore-smooth-mean")
    model = gpucnn.Sequential([Dense(FEATURES, C, dtype=numpy.float64, rng=0)])
    counted = y != -100
    before = int((counted & (model.forward(x).argmax(axis=1) == y)).sum()) / N  # the step's logits
    history = fit(model, SoftmaxCrossEntropy(**options), SGD(model.parameters(), lr=LR), x, y, 1, batch_size=N,
                  progress=False, validation=(x, y))
    after = int((counted & (model.forward(x).argmax(axis=1) == y)).sum()) / N
    assert history["accuracy"][0] == pytest.approx(before) and history["val_accuracy"][0] == pytest.approx(after)


# ---------------------------------------------------------------- the graph step (emulated GPU)

def _small_model(dtype=numpy.float32):
    return gpucnn.Sequential([Flatten(), Dense(FEATURES, 8, dtype=dtype, rng=0), ReLU(),
                              Dense(8, C, dtype=dtype, rng=1)])


@pytest.mark.kernels
@pytest.mark.parametrize("name", list(OPTIONS))
def test_graph_step_trains_with_the_options_as_the_eager_step(gpu, name):
    """fit(graph=True) verifies its first step against the eager one and ends where the CPU's eager fit ends."""
    cp = gpu.cupy
    x, y, options = _case(name)
    x = x.astype(numpy.float32)
    model = _small_model().to("cuda")
    history = fit(model, SoftmaxCrossEntropy(**options), SGD(model.parameters(), lr=0.1), cp.asarray(x),
                  cp.asarray(y.astype(numpy.float32) if y.dtype.kind == "f" else y), 2, batch_size=4,
                  progress=False, graph=True, graph_options={"verify": True, "verify_every": 1})
    reference = _small_model()
    expected = fit(reference, SoftmaxCrossEntropy(**options), SGD(reference.parameters(), lr=0.1), x,
                   y.astype(numpy.float32) if y.dtype.kind == "f" else y, 2, batch_size=4, progress=False)
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-4)
    assert history["accuracy"] == expected["accuracy"]
    for p, q in zip(model.parameters(), reference.parameters()):
        numpy.testing.assert_allclose(to_host(p.data), q.data, rtol=0, atol=1e-4)


@pytest.mark.kernels
def test_compile_step_refuses_reduction_none_naming_it(gpu):
    model = _small_model().to("cuda")
    with pytest.raises(ValueError, match="compile_step: loss_fn has reduction='none'"):
        gpucnn.compile_step(model, SoftmaxCrossEntropy(reduction="none"), SGD(model.parameters(), lr=0.1), 4)


@pytest.mark.kernels
def test_eager_fit_on_the_emulated_gpu_takes_ignore_index_in_its_label_check(gpu):
    cp = gpu.cupy
    x, y, options = _case("weight-ignore-smooth-mean")
    x = x.astype(numpy.float32)
    model = _small_model().to("cuda")
    history = fit(model, SoftmaxCrossEntropy(**options), SGD(model.parameters(), lr=0.1), cp.asarray(x),
                  cp.asarray(y), 2, batch_size=4, progress=False, graph=False)
    reference = _small_model()
    expected = fit(reference, SoftmaxCrossEntropy(**options), SGD(reference.parameters(), lr=0.1), x, y, 2,
                   batch_size=4, progress=False)
    numpy.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-5)
    assert history["accuracy"] == expected["accuracy"]
    bad = y.copy()
    bad[0] = -1
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\] \(or be ignore_index -100\)"):
        fit(model, SoftmaxCrossEntropy(**options), SGD(model.parameters(), lr=0.1), cp.asarray(x), cp.asarray(bad),
            1, batch_size=4, progress=False, graph=False)
