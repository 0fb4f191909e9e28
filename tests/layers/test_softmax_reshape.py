"""Softmax and Reshape (gpucnn/nn/layers/softmax.py): against numerical gradients and PyTorch in float64."""
import numpy
import pytest

from gpucnn import backend
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import Reshape, Softmax


@pytest.mark.parametrize("shape, axis", [((4, 5), 1), ((4, 5), -1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -2)])
def test_softmax_against_numerical_gradients_and_torch(shape, axis, rng, device):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape) * 3
    g = rng.standard_normal(shape)
    check_layer(Softmax(axis=axis), x)
    layer = Softmax(axis=axis)
    y = backend.asnumpy(layer.forward(backend.to_device(x, device)))
    grad_x = backend.asnumpy(layer.backward(backend.to_device(g, device)))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.softmax(tx, dim=axis)
    ty.backward(torch.tensor(g))
    numpy.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-15)
    numpy.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_softmax_keeps_huge_logits_finite_and_refuses_the_batch_axis():
    y = Softmax().forward(numpy.array([[1000.0, 1000.0, -1000.0]]))
    numpy.testing.assert_allclose(y, [[0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match="axis 0 is the batch"):
        Softmax(axis=0)
    with pytest.raises(ValueError, match="out of range"):
        Softmax(axis=3).forward(numpy.zeros((2, 3)))


def test_reshape_against_numerical_gradients_and_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 12))
    check_layer(Reshape((3, 2, 2)), x)
    layer = Reshape((3, 2, 2))
    y = layer.forward(x)
    numpy.testing.assert_array_equal(y, torch.tensor(x).unflatten(1, (3, 2, 2)).numpy())
    assert layer.backward(numpy.ones_like(y)).shape == (3, 12)
    with pytest.raises(ValueError, match=r"cannot reshape samples of shape \(12,\) \(12 values\) to \(5,\)"):
        Reshape((5,)).forward(x)
    with pytest.raises(ValueError, match="shape must be positive ints"):
        Reshape((0, 3))
