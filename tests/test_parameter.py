"""Parameter: zero_grad marks the gradient cleared; the next backward writes it, a second one adds."""
import numpy
import pytest

from support.helpers import dev, to_numpy
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense
from gpucnn.parameter import Parameter


def test_cleared_gradient_reads_as_zeros_and_keeps_its_buffer():
    p = Parameter(numpy.ones((2, 3)))
    buffer = p.grad
    buffer += 5
    p.zero_grad()
    assert p._grad_cleared and p._grad is buffer and buffer[0, 0] == 5  # nothing done yet
    numpy.testing.assert_array_equal(p.grad, numpy.zeros((2, 3)))
    assert p.grad is buffer


def test_accumulate_writes_then_adds():
    p = Parameter(numpy.zeros(3))
    p.grad[...] = 7
    p.zero_grad()
    p.accumulate_grad(numpy.array([1.0, 2.0, 3.0]))
    numpy.testing.assert_array_equal(p.grad, [1, 2, 3])
    p.accumulate_grad(numpy.array([1.0, 2.0, 3.0]))
    numpy.testing.assert_array_equal(p.grad, [2, 4, 6])


def test_grad_out_only_while_cleared():
    p = Parameter(numpy.zeros((4, 2)))
    assert p.grad_out() is None
    p.zero_grad()
    assert p.grad_out() is p._grad
    p.grad = numpy.zeros((2, 4)).T  # not C-contiguous: an op could not write it whole
    p.zero_grad()
    assert p.grad_out() is None


def _layers():
    rng = numpy.random.default_rng(0)
    return [
        (Dense(5, 3, dtype=numpy.float64, rng=1), rng.standard_normal((4, 5))),
        (Conv2D(2, 3, 3, padding=1, dtype=numpy.float64, rng=2), rng.standard_normal((2, 2, 5, 5))),   # direct
        (Conv2D(4, 3, 3, padding=1, dtype=numpy.float64, rng=3), rng.standard_normal((2, 4, 5, 5))),   # GEMM
        (BatchNorm2D(2, dtype=numpy.float64), rng.standard_normal((3, 2, 4, 4))),
    ]


@pytest.mark.parametrize("index", range(4), ids=["dense", "conv-direct", "conv-gemm", "batchnorm"])
def test_layer_backward_after_zero_grad_writes_then_accumulates(index, device):
    from gpucnn import Sequential

    layer, x = _layers()[index]
    Sequential([layer]).to(device)
    x = dev(x, device)
    y = layer.forward(x)
    g = dev(numpy.random.default_rng(5).standard_normal(y.shape), device)
    for p in layer.parameters():
        p.grad[...] = 1e6  # garbage that a zero fill would have cleared
    buffers = [p._grad for p in layer.parameters()]
    layer.zero_grad()
    layer.backward(g)
    once = [to_numpy(p.grad).copy() for p in layer.parameters()]
    layer.backward(g)
    twice = [to_numpy(p.grad).copy() for p in layer.parameters()]
    assert all(p._grad is b for p, b in zip(layer.parameters(), buffers)), "the gradient buffers were replaced"
    for a, b in zip(once, twice):
        assert numpy.abs(a).max() < 1e5
        numpy.testing.assert_allclose(b, 2 * a, rtol=1e-12, atol=1e-12)
    layer.zero_grad()
    for p in layer.parameters():
        numpy.testing.assert_array_equal(to_numpy(p.grad), 0)


@pytest.mark.kernels
@pytest.mark.parametrize("index", range(3), ids=["dense", "conv-direct", "conv-gemm"])
def test_emulated_first_backward_writes_the_gradient_buffers_in_place(gpu, index):
    """On the (emulated) GPU, after zero_grad the GEMMs and row sums write .grad itself: no zero fill,
    no addition, no copy; and the values equal the CPU layer's."""
    from gpucnn import Sequential

    layer, x = _layers()[index]
    twin, _ = _layers()[index]
    g_host = numpy.random.default_rng(6).standard_normal(twin.forward(x).shape)
    twin.zero_grad()
    twin.backward(g_host)
    Sequential([layer]).to("cuda")
    y = layer.forward(dev(x, "cuda"))
    g = dev(g_host, "cuda")
    layer.zero_grad()
    gpu.device_ops.reset()
    layer.backward(g)
    assert not {"fill", "assignment into a device array", "cupy.add"} & set(gpu.device_ops.names), gpu.device_ops.names
    for p, q in zip(layer.parameters(), twin.parameters()):
        numpy.testing.assert_allclose(to_numpy(p.grad), q.grad, rtol=1e-10, atol=1e-12)
    assert y is not None
