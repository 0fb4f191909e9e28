"""Fused softmax cross-entropy (gpucnn.ops.loss): NumPy twin against PyTorch, CUDA launcher on the emulated GPU."""
import numpy
import pytest

from support.emulated_cupy import to_host
from gpucnn import backend
from gpucnn.ops.loss import softmax_cross_entropy

F32, F64 = numpy.float32, numpy.float64


def _case(n, k, seed, dtype=F64):
    rng = numpy.random.default_rng(seed)
    logits = (rng.standard_normal((n, k)) * 4).astype(dtype)
    logits[0, :] = logits[0, 0]  # a tie: the first maximum counts
    return logits, rng.integers(0, k, n)


@pytest.mark.parametrize("n,k", [(1, 1), (5, 3), (64, 10)])
def test_numpy_twin_matches_torch(n, k):
    torch = pytest.importorskip("torch")
    logits, labels = _case(n, k, n + k)
    z = torch.tensor(logits, requires_grad=True)
    want = torch.nn.functional.cross_entropy(z, torch.tensor(labels))
    want.backward()
    loss, grad, counts = softmax_cross_entropy(logits, labels)
    numpy.testing.assert_allclose(loss[0], want.item(), rtol=1e-12)
    numpy.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert counts.dtype == numpy.int32
    assert counts.tolist() == [int((logits.argmax(axis=1) == labels).sum()), 0]


def test_invalid_labels_show_as_nan_and_are_counted():
    logits, labels = _case(6, 4, 0)
    labels[[1, 4]] = [-1, 4]
    loss, grad, counts = softmax_cross_entropy(logits, labels)
    assert numpy.isnan(loss[0]) and counts[1] == 2
    assert numpy.isnan(grad[[1, 4]]).all() and numpy.isfinite(grad[[0, 2, 3, 5]]).all()


def test_out_and_accumulate():
    logits, labels = _case(7, 5, 1)
    loss, grad, counts = softmax_cross_entropy(logits, labels)
    out = (numpy.zeros(1), numpy.zeros((7, 5)), numpy.zeros(2, numpy.int32))
    for times in (1, 2):
        got = softmax_cross_entropy(logits, labels, out=out, accumulate=True)
        assert all(a is b for a, b in zip(got, out))
        numpy.testing.assert_allclose(out[0], times * loss)
        numpy.testing.assert_array_equal(out[2], times * counts)
        numpy.testing.assert_array_equal(out[1], grad)


@pytest.mark.kernels
@pytest.mark.parametrize("dtype", [F32, F64])
def test_emulated_one_launch_no_sync_no_allocation_with_out(gpu, dtype):
    """Given out buffers and int64 labels: one kernel, nothing read back, the out arrays written."""
    logits, labels = _case(300, 10, 2, dtype)
    want = softmax_cross_entropy(logits, labels)
    z, y = backend.to_device(logits, "cuda"), backend.to_device(labels.astype(numpy.int64), "cuda")
    with z.device:
        out = (gpu.cupy.zeros(1, dtype=dtype), gpu.cupy.zeros((300, 10), dtype=dtype),
               gpu.cupy.zeros(2, dtype=numpy.int32))
    gpu.device_ops.reset()
    gpu.syncs.reset()
    got = softmax_cross_entropy(z, y, out=out, accumulate=True)
    assert gpu.device_ops.names == ["kernel softmax_xent"] and gpu.syncs.count == 0
    assert all(a is b for a, b in zip(got, out))
    tol = 1e-5 if dtype == F32 else 1e-12
    for name, a, b in zip(("loss", "grad", "counts"), got, want):
        numpy.testing.assert_allclose(to_host(a), b, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.kernels
def test_emulated_loss_layer_on_the_second_device_with_int32_labels(gpu):
    """SoftmaxCrossEntropy on 'cuda:1' with device 0 current; int32 labels are converted on the device."""
    from gpucnn.nn.losses import SoftmaxCrossEntropy

    logits, labels = _case(9, 4, 3)
    loss_fn = SoftmaxCrossEntropy(check_labels=False)
    z = backend.to_device(logits, "cuda:1")
    y = backend.to_device(labels.astype(numpy.int32), "cuda:1")
    loss = loss_fn.forward(z, y)
    grad = loss_fn.backward()
    assert backend.device_of(loss) == backend.device_of(grad) == backend.device_of(loss_fn.correct) == "cuda:1"
    want_loss, want_grad, want_counts = softmax_cross_entropy(logits, labels)
    numpy.testing.assert_allclose(to_host(loss), want_loss[0], rtol=1e-12)
    numpy.testing.assert_allclose(to_host(grad), want_grad, rtol=1e-12, atol=1e-15)
    assert int(to_host(loss_fn.correct)) == want_counts[0] and int(to_host(loss_fn.invalid_labels)) == 0
    assert gpu.syncs.count == 0


@pytest.mark.kernels
def test_emulated_bad_out_raises_before_launch(gpu):
    logits, labels = _case(4, 3, 4)
    z, y = backend.to_device(logits, "cuda"), backend.to_device(labels, "cuda")
    gpu.device_ops.reset()
    with pytest.raises(ValueError, match="out grad"):
        softmax_cross_entropy(z, y, out=(gpu.cupy.zeros(1), gpu.cupy.zeros((3, 4)), gpu.cupy.zeros(2, numpy.int32)))
    assert "kernel softmax_xent" not in gpu.device_ops.names
