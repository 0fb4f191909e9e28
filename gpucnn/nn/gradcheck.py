"""Numerical gradients by central differences in float64, to check every backward pass.

    df/dx_i  ~  (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)

The loop over elements is fine here: this is the slow, obviously-right oracle.
"""
import numpy

from ..backend import asnumpy, get_array_module

__all__ = ["numerical_grad", "check_layer", "check_loss"]


def numerical_grad(f, x, eps=1e-6):
    """d f / d x for a scalar function ``f`` of the array ``x`` (changed in place, restored after)."""
    if x.dtype != numpy.float64:
        raise TypeError(f"numerical_grad: needs a float64 array for accurate differences, got {x.dtype}")
    grad = numpy.zeros(x.shape, dtype=numpy.float64)
    flat = x.reshape(-1)
    out = grad.reshape(-1)
    for i in range(flat.size):
        orig = float(flat[i])
        flat[i] = orig + eps
        f_plus = float(f())
        flat[i] = orig - eps
        f_minus = float(f())
        flat[i] = orig
        out[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def _assert_close(analytic, numeric, what, rtol, atol):
    analytic, numeric = asnumpy(analytic), asnumpy(numeric)
    err = numpy.abs(analytic - numeric)
    bound = atol + rtol * numpy.abs(numeric)
    if not numpy.all(err <= bound):
        i = numpy.unravel_index(numpy.argmax(err - bound), err.shape)
        raise AssertionError(f"gradcheck: {what} differs at index {i}: backward gives {analytic[i]!r}, "
                             f"central differences give {numeric[i]!r} (max abs error {err.max():.3g})")


def check_layer(layer, x, seed=0, eps=1e-6, rtol=1e-5, atol=1e-7):
    """Hold a layer's (or a model's) backward against central differences.

    The loss is a random projection ``sum(forward(x) * r)``, so every output element
    matters. Checks dL/dx and dL/dp for every parameter. Layers and inputs must be
    float64 on the CPU; layers with randomness must be in eval mode.

    Raises AssertionError naming the first gradient that disagrees.
    """
    x = numpy.array(x, dtype=numpy.float64)
    if get_array_module(x) is not numpy:
        raise TypeError("check_layer: runs on the CPU; pass NumPy arrays")
    r = numpy.random.default_rng(seed).standard_normal(layer.forward(x.copy()).shape)
    for p in layer.parameters():
        p.zero_grad()
    layer.forward(x.copy())
    grad_x = layer.backward(r.copy())
    analytic = [p.grad.copy() for p in layer.parameters()]

    def loss():
        return numpy.sum(layer.forward(x) * r)

    _assert_close(grad_x, numerical_grad(loss, x, eps), "input gradient", rtol, atol)
    for k, (p, grad_p) in enumerate(zip(layer.parameters(), analytic)):
        _assert_close(grad_p, numerical_grad(loss, p.data, eps), f"gradient of parameter {k} ({p.name})", rtol, atol)


def check_loss(loss_fn, pred, target, eps=1e-6, rtol=1e-5, atol=1e-7):
    """Hold a loss's backward() against central differences with respect to the predictions."""
    pred = numpy.array(pred, dtype=numpy.float64)
    loss_fn.forward(pred.copy(), target)
    analytic = loss_fn.backward()
    numeric = numerical_grad(lambda: loss_fn.forward(pred, target), pred, eps)
    _assert_close(analytic, numeric, f"{type(loss_fn).__name__} gradient", rtol, atol)
