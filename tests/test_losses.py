"""SoftmaxCrossEntropy and MSE: values and gradients against the oracle and central differences."""
import numpy
import pytest

from support import oracle
from support.helpers import F64, assert_bad_input, assert_close, dev, to_numpy
from gpucnn.nn.gradcheck import check_loss, numerical_grad
from gpucnn.nn.losses import MSE, SoftmaxCrossEntropy


@pytest.mark.parametrize("n, k", [(1, 2), (4, 3), (7, 10), (3, 1)])
def test_cross_entropy_matches_oracle(n, k, rng, device):
    logits = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, size=n)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(dev(logits, device), dev(labels, device))
    grad = loss_fn.backward()
    want_loss, want_grad = oracle.softmax_cross_entropy(logits, labels)
    assert float(loss) == pytest.approx(want_loss, rel=1e-12, abs=1e-14)
    assert_close(grad, want_grad, what="dL/dlogits")
    assert to_numpy(grad).dtype == F64


def test_cross_entropy_fused_is_forward_and_backward_in_kept_buffers(rng, device):
    """The graph step's form: (loss, grad, correct) as forward/backward give them, into the same buffers."""
    logits = rng.standard_normal((5, 4)) * 3
    labels = numpy.array([0, 3, 1, 1, 2], dtype=numpy.int64)
    loss_fn = SoftmaxCrossEntropy()
    loss, grad, correct = loss_fn.fused(dev(logits, device), dev(labels, device))
    want_loss, want_grad = oracle.softmax_cross_entropy(logits, labels)
    assert loss.shape == () and correct.shape == ()
    assert float(loss) == pytest.approx(want_loss, rel=1e-12)
    assert_close(grad, want_grad, what="dL/dlogits")
    assert int(correct) == int((logits.argmax(axis=1) == labels).sum())
    again = loss_fn.fused(dev(logits[::-1].copy(), device), dev(labels, device))
    assert again[1] is grad  # the same buffer for the same shape: a captured launch allocates nothing
    assert len(loss_fn._fused_out) == 1


def test_cross_entropy_is_mean_over_batch(rng):
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, size=6)
    loss_fn = SoftmaxCrossEntropy()
    per_row = [float(loss_fn.forward(logits[i:i + 1], labels[i:i + 1])) for i in range(6)]
    assert float(loss_fn.forward(logits, labels)) == pytest.approx(numpy.mean(per_row), rel=1e-12)


def test_cross_entropy_numpy_labels_list_and_int32(rng):
    logits = rng.standard_normal((3, 4))
    want, _ = oracle.softmax_cross_entropy(logits, [0, 3, 1])
    for labels in ([0, 3, 1], numpy.array([0, 3, 1], numpy.int32), numpy.array([0, 3, 1], numpy.uint8)):
        assert float(SoftmaxCrossEntropy().forward(logits, labels)) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("dtype", [numpy.float32, F64])
def test_cross_entropy_stable_for_huge_logits(dtype, device):
    """Logits of +-1e4: no overflow (warnings are errors), finite loss and gradient with the right values."""
    logits = numpy.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [1e4, -1e4, -1e4]], dtype=dtype)
    labels = numpy.array([0, 0, 1])
    loss_fn = SoftmaxCrossEntropy()
    loss = float(loss_fn.forward(dev(logits, device), dev(labels, device)))
    grad = to_numpy(loss_fn.backward())
    assert numpy.isfinite(loss) and numpy.all(numpy.isfinite(grad))
    want_loss, want_grad = oracle.softmax_cross_entropy(logits.astype(F64), labels)
    # row 0: loss 0; row 1: 2e4 + log 2; row 2: 2e4
    assert want_loss == pytest.approx((2e4 + numpy.log(2) + 2e4) / 3)
    assert loss == pytest.approx(want_loss, rel=1e-6)
    assert_close(grad, want_grad, rtol=1e-6, atol=1e-7, what="grad at +-1e4")
    assert grad.dtype == dtype


def test_cross_entropy_float32_stays_float32(rng, device):
    logits = rng.standard_normal((4, 5)).astype(numpy.float32)
    labels = rng.integers(0, 5, size=4)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(dev(logits, device), dev(labels, device))
    grad = to_numpy(loss_fn.backward())
    want_loss, want_grad = oracle.softmax_cross_entropy(logits, labels)
    assert grad.dtype == numpy.float32
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert_close(grad, want_grad, rtol=1e-5, atol=1e-6, what="float32 grad")


@pytest.mark.parametrize("n, k", [(1, 3), (5, 4), (3, 7)])
def test_cross_entropy_gradcheck(n, k, rng):
    logits = rng.standard_normal((n, k))
    labels = rng.integers(0, k, size=n)
    check_loss(SoftmaxCrossEntropy(), logits, labels)
    # and the same by hand with numerical_grad
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(logits, labels)
    analytic = loss_fn.backward()
    numeric = numerical_grad(lambda: float(SoftmaxCrossEntropy().forward(logits, labels)), logits)
    numpy.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_cross_entropy_backward_twice_same_and_inputs_untouched(rng, device):
    logits = dev(rng.standard_normal((4, 3)), device)
    labels = dev(numpy.array([2, 0, 1, 2]), device)
    before = to_numpy(logits).copy()
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(logits, labels)
    numpy.testing.assert_array_equal(to_numpy(logits), before)
    numpy.testing.assert_array_equal(to_numpy(labels), [2, 0, 1, 2])
    g1 = to_numpy(loss_fn.backward()).copy()
    g2 = to_numpy(loss_fn.backward())
    numpy.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2, 2)])
def test_mse_matches_formula(shape, rng, device):
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    loss_fn = MSE()
    loss = float(loss_fn.forward(dev(pred, device), dev(target, device)))
    grad = loss_fn.backward()
    assert loss == pytest.approx(numpy.mean((pred - target) ** 2), rel=1e-12)
    assert_close(grad, 2 * (pred - target) / pred.size, what="MSE grad")


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 2, 2, 3)])
def test_mse_gradcheck(shape, rng):
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    check_loss(MSE(), pred, target)
    numeric = numerical_grad(lambda: float(MSE().forward(pred, target)), pred)
    loss_fn = MSE()
    loss_fn.forward(pred, target)
    numpy.testing.assert_allclose(loss_fn.backward(), numeric, rtol=1e-5, atol=1e-8)


def test_mse_backward_twice_same_and_inputs_untouched(rng, device):
    pred, target = dev(rng.standard_normal((3, 4)), device), dev(rng.standard_normal((3, 4)), device)
    p0, t0 = to_numpy(pred).copy(), to_numpy(target).copy()
    loss_fn = MSE()
    loss_fn.forward(pred, target)
    numpy.testing.assert_array_equal(to_numpy(pred), p0)
    numpy.testing.assert_array_equal(to_numpy(target), t0)
    numpy.testing.assert_array_equal(to_numpy(loss_fn.backward()), to_numpy(loss_fn.backward()))


# ----------------------------------------------------------------------------------------
# bad input

@pytest.mark.parametrize("labels", [[0, 1], [0, 1, 2, 0], [[0, 1, 2]]], ids=["too-few", "too-many", "2-D"])
def test_cross_entropy_wrong_label_count(labels):
    assert_bad_input(lambda: SoftmaxCrossEntropy().forward(numpy.zeros((3, 4)), numpy.array(labels)),
                     "SoftmaxCrossEntropy", "3")


@pytest.mark.parametrize("bad", [4, 9, -1])
def test_cross_entropy_label_out_of_range(bad):
    assert_bad_input(lambda: SoftmaxCrossEntropy().forward(numpy.zeros((3, 4)), numpy.array([0, bad, 1])),
                     "SoftmaxCrossEntropy", str(bad))


def test_cross_entropy_empty_batch():
    assert_bad_input(lambda: SoftmaxCrossEntropy().forward(numpy.zeros((0, 4)), numpy.zeros(0, numpy.int64)),
                     "SoftmaxCrossEntropy")


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4)])
def test_cross_entropy_wrong_rank(shape):
    labels = numpy.zeros(shape[0], numpy.int64)
    assert_bad_input(lambda: SoftmaxCrossEntropy().forward(numpy.zeros(shape), labels),
                     "SoftmaxCrossEntropy", str(shape))


def test_cross_entropy_integer_logits():
    logits = numpy.zeros((2, 3), numpy.int64)
    assert_bad_input(lambda: SoftmaxCrossEntropy().forward(logits, numpy.array([0, 1])),
                     "SoftmaxCrossEntropy", "int64")


def test_cross_entropy_float_labels():
    assert_bad_input(lambda: SoftmaxCrossEntropy().forward(numpy.zeros((2, 3)), numpy.array([0.0, 1.0])),
                     "SoftmaxCrossEntropy")


def test_mse_shape_mismatch():
    assert_bad_input(lambda: MSE().forward(numpy.zeros((3, 4)), numpy.zeros((4, 3))),
                     "MSE", "(3, 4)", "(4, 3)")


def test_mse_empty_batch():
    assert_bad_input(lambda: MSE().forward(numpy.zeros((0, 4)), numpy.zeros((0, 4))), "MSE")


def test_mse_integer_predictions():
    assert_bad_input(lambda: MSE().forward(numpy.zeros((2, 3), numpy.int32), numpy.zeros((2, 3))),
                     "MSE", "int32")
