"""Padded max pooling on the fast path: a window of nothing but -inf sends its gradient to its first real
element, as the reference path and PyTorch do (the padding, -inf too, must not take it)."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.layers import MaxPool2D


@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (2, 2, 1), (3, 1, 1), (2, 1, (1, 0))])
def test_all_minus_inf_windows_route_the_gradient_like_the_reference(kernel, stride, padding):
    rng = numpy.random.default_rng(kernel * 10 + stride)
    x = rng.standard_normal((3, 2, 7, 6))
    x[0, 0] = -numpy.inf                 # a whole channel
    x[1, 1, :3, :3] = -numpy.inf         # a corner: windows that are partly padding
    x[2, 0, 2:5, 1:4] = -numpy.inf       # the middle
    grads, grad_y = {}, None
    for path in ("reference", "fast"):
        gpucnn.config.path = path
        model = gpucnn.Sequential([MaxPool2D(kernel, stride, padding=padding)])
        y = model.forward(x)
        grad_y = rng.standard_normal(y.shape) if grad_y is None else grad_y
        grads[path] = (y, model.backward(grad_y), grad_y)
    assert model._fast is not None  # the fast path really ran
    (y_ref, g_ref, gy), (y_fast, g_fast, _) = grads["reference"], grads["fast"]
    numpy.testing.assert_array_equal(y_fast, y_ref)
    numpy.testing.assert_allclose(g_fast, g_ref, rtol=1e-12, atol=0)
    numpy.testing.assert_allclose(g_ref.sum(), gy.sum(), rtol=1e-12)  # no gradient lost to the padding
