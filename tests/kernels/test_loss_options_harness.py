"""softmax_xent and softmax_xent_soft (gpucnn/kernels/loss.cu) with every option, their one block replayed phase by
phase in the host harness (tests/kernels/harness_loss.cuh), against gpucnn.ops.loss's NumPy code."""
import itertools
import os
import pathlib
import subprocess

import numpy
import pytest

from support import cuda_parity as parity
from support.kernel_harness import run_kernel
from gpucnn.ops import loss as np_loss

pytestmark = pytest.mark.kernels

DTYPES = [numpy.float32, numpy.float64]
REDUCTION = {"none": 0, "mean": 1, "sum": 2}
SIZES = [(1, 1), (6, 3), (257, 10), (600, 37)]  # past GPUCNN_BLOCK rows: several rows per thread


def _case(n, k, dtype, seed):
    rng = numpy.random.default_rng(seed)
    logits = (rng.standard_normal((n, k)) * 3).astype(dtype)
    labels = rng.integers(0, k, n).astype(numpy.int64)
    labels[::5] = -100
    weight = (rng.random(k) + 0.25).astype(dtype)
    probs = rng.random((n, k)).astype(dtype)
    probs /= probs.sum(axis=1, keepdims=True)
    return logits, labels, weight, probs


def _buffers(n, k, dtype, reduction):
    return (numpy.full((n, k), 12345.0, dtype=dtype), numpy.full((n,) if reduction == "none" else (1,), 12345.0,
                                                                  dtype=dtype), numpy.full(2, -7, dtype=numpy.int32))


def _compare(got, want, dtype):
    grad, loss, counts = got
    want_loss, want_grad, want_counts = want
    numpy.testing.assert_array_equal(counts, want_counts)
    numpy.testing.assert_array_equal(numpy.isnan(grad), numpy.isnan(want_grad))
    parity.assert_close(grad, want_grad, dtype, "grad")
    parity.assert_close(loss, want_loss, dtype, "loss")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", SIZES)
@pytest.mark.parametrize("weighted,ignore,smoothing,reduction",
                         list(itertools.product([False, True], [None, -100], [0.0, 0.3], REDUCTION)))
def test_softmax_xent_options_match_numpy(harness, n, k, dtype, weighted, ignore, smoothing, reduction):
    logits, labels, weight, _ = _case(n, k, dtype, n * k)
    if ignore is None:
        labels = numpy.where(labels < 0, 0, labels)
    w = weight if weighted else None
    want = np_loss.softmax_cross_entropy(logits, labels, weight=w, ignore_index=ignore, label_smoothing=smoothing,
                                         reduction=reduction)
    grad, loss, counts = _buffers(n, k, dtype, reduction)
    run_kernel(harness, "loss.cu", "softmax_xent", dtype,
               (logits, labels, weight if weighted else logits, grad, loss, counts, n, k, int(weighted),
                0 if ignore is None else ignore, int(ignore is not None), smoothing, REDUCTION[reduction], 0))
    _compare((grad, loss, counts), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", SIZES)
@pytest.mark.parametrize("weighted,smoothing,reduction",
                         list(itertools.product([False, True], [0.0, 0.3], REDUCTION)))
def test_softmax_xent_soft_options_match_numpy(harness, n, k, dtype, weighted, smoothing, reduction):
    logits, _, weight, probs = _case(n, k, dtype, n + k)
    w = weight if weighted else None
    want = np_loss.softmax_cross_entropy(logits, probs, weight=w, label_smoothing=smoothing, reduction=reduction)
    grad, loss, counts = _buffers(n, k, dtype, reduction)
    run_kernel(harness, "loss.cu", "softmax_xent_soft", dtype,
               (logits, probs, weight if weighted else logits, grad, loss, counts, n, k, int(weighted), smoothing,
                REDUCTION[reduction], 0))
    _compare((grad, loss, counts), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ignore_index_inside_the_classes_bad_labels_and_accumulate(harness, dtype):
    """ignore_index 2 (a class): its rows count nowhere; -1 and K are invalid (NaN rows, counted); accumulate adds."""
    n, k = 300, 7
    logits, labels, weight, _ = _case(n, k, dtype, 7)
    labels = numpy.where(labels < 0, 2, labels)
    labels[[3, 4]] = [-1, k]
    with numpy.errstate(invalid="ignore"):
        want = np_loss.softmax_cross_entropy(logits, labels, weight=weight, ignore_index=2, label_smoothing=0.1)
    assert numpy.isnan(want[0][0]) and want[2][1] == 2
    grad, loss, counts = _buffers(n, k, dtype, "mean")
    args = (logits, labels, weight, grad, loss, counts, n, k, 1, 2, 1, 0.1, 1)
    run_kernel(harness, "loss.cu", "softmax_xent", dtype, args + (0,))
    _compare((grad, loss, counts), want, dtype)
    assert (grad[labels == 2] == 0).all()
    good = (labels >= 0) & (labels < k)
    finite = np_loss.softmax_cross_entropy(logits[good], labels[good], weight=weight, ignore_index=2,
                                           label_smoothing=0.1)
    loss[...], counts[...] = 1.5, [10, 20]
    m = int(good.sum())
    run_kernel(harness, "loss.cu", "softmax_xent", dtype,
               (logits[good].copy(), labels[good].copy(), weight, grad[good].copy(), loss, counts, m, k, 1, 2, 1,
                0.1, 1, 1))
    parity.assert_close(loss, 1.5 + finite[0], dtype, "accumulated loss")
    numpy.testing.assert_array_equal(counts, [10 + finite[2][0], 20])


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_row_ignored_gives_nan_mean_and_zero_gradient(harness, dtype):
    n, k = 5, 4
    logits, _, weight, _ = _case(n, k, dtype, 3)
    labels = numpy.full(n, -100, dtype=numpy.int64)
    grad, loss, counts = _buffers(n, k, dtype, "mean")
    run_kernel(harness, "loss.cu", "softmax_xent", dtype,
               (logits, labels, weight, grad, loss, counts, n, k, 1, -100, 1, 0.2, 1, 0))
    assert numpy.isnan(loss[0]) and (grad == 0).all() and counts.tolist() == [0, 0]


@pytest.mark.parametrize("kernel", ["softmax_xent", "softmax_xent_soft"])
def test_no_thread_depends_on_another_within_a_phase(harness, tmp_path, kernel):
    """The replay's premise: running each phase's threads in reverse order gives the same bits."""
    n, k = 600, 7
    logits, labels, weight, probs = _case(n, k, numpy.float32, 11)
    targets = probs if kernel == "softmax_xent_soft" else labels
    options = [] if kernel == "softmax_xent_soft" else ["-100", "1"]
    outputs = {}
    for order in ("forward", "reverse"):
        grad, loss, counts = _buffers(n, k, numpy.float32, "mean")
        paths = []
        for i, a in enumerate((logits, targets, weight, grad, loss, counts)):
            paths.append(str(tmp_path / f"{order}{i}.bin"))
            a.tofile(paths[-1])
        argv = [harness.exe, kernel, "f32"] + paths + [str(n), str(k), "1"] + options + [0.3.hex(), "1", "0"]
        subprocess.run(argv, check=True, capture_output=True, env=dict(os.environ, GPUCNN_HARNESS_THREAD_ORDER=order))
        outputs[order] = [pathlib.Path(p).read_bytes() for p in paths[3:]]
    assert outputs["forward"] == outputs["reverse"]
    assert numpy.isfinite(numpy.frombuffer(outputs["forward"][1], numpy.float32)).all()
