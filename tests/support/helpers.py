"""Shared test plumbing: put a layer on a device, run it, read its gradients, check error messages.

The comparison against a reference lives in ``oracle.assert_close``; this module only
drives gpucnn objects so that the per-layer test files stay short.
"""
import inspect

import numpy
import pytest

from support.oracle import assert_close, to_numpy  # noqa: F401  (re-exported for the test files)

F64 = numpy.float64


def dev(x, device):
    """``x`` (a NumPy array) on ``device``."""
    from gpucnn import backend
    return backend.to_device(x, device)


def on_device(layer, device):
    """Move one layer (parameters and buffers) to ``device`` through Sequential.to; returns the layer."""
    if device == "cpu":
        return layer
    import gpucnn
    gpucnn.Sequential([layer]).to(device)
    return layer


def set_param(param, value):
    """Overwrite a Parameter's values in place (parameter still on the CPU)."""
    value = numpy.asarray(value)
    assert param.data.shape == value.shape, f"parameter shape {param.data.shape}, value {value.shape}"
    param.data[...] = value.astype(param.data.dtype)


def run(layer, x, grad_out, device="cpu"):
    """forward(x) then backward(grad_out) on ``device``; returns (y, dx) as NumPy arrays."""
    y = layer.forward(dev(x, device))
    dx = layer.backward(dev(grad_out, device))
    return to_numpy(y), to_numpy(dx)


def grads(layer):
    """NumPy copies of every parameter's gradient, in parameters() order."""
    return [to_numpy(p.grad).copy() for p in layer.parameters()]


def accepts(cls, name):
    """True when ``cls.__init__`` takes a keyword ``name`` (e.g. 'rng')."""
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def assert_bad_input(fn, layer_name, *fragments, types=(ValueError, TypeError)):
    """``fn()`` raises ValueError/TypeError naming ``layer_name`` and containing each fragment."""
    with pytest.raises(types) as info:
        fn()
    message = str(info.value)
    assert layer_name in message, f"message does not name {layer_name!r}: {message!r}"
    for fragment in fragments:
        assert str(fragment).lower() in message.lower(), f"message lacks {fragment!r}: {message!r}"
    return message


def check_repeatable_and_accumulating(layer, x, grad_out, device="cpu"):
    """Contract (3): forward leaves x alone; backward twice gives the same dx; parameter grads double.

    Call with a freshly built layer (grads zero). Also checks zero_grad resets them.
    """
    x_dev = dev(x, device)
    before = to_numpy(x_dev).copy()
    layer.zero_grad()
    y1 = to_numpy(layer.forward(x_dev)).copy()
    numpy.testing.assert_array_equal(to_numpy(x_dev), before, err_msg="forward modified its input")
    g = dev(grad_out, device)
    g_before = to_numpy(g).copy()
    dx1 = to_numpy(layer.backward(g)).copy()
    numpy.testing.assert_array_equal(to_numpy(g), g_before, err_msg="backward modified grad_out")
    once = grads(layer)
    dx2 = to_numpy(layer.backward(g)).copy()
    twice = grads(layer)
    numpy.testing.assert_allclose(dx2, dx1, rtol=1e-12, atol=0, err_msg="second backward gave another dx")
    for a, b in zip(once, twice):
        numpy.testing.assert_allclose(b, 2 * a, rtol=1e-12, atol=1e-300, err_msg="grads did not accumulate")
    # a second forward on the same input gives the same output (in train mode for deterministic layers)
    y2 = to_numpy(layer.forward(x_dev))
    numpy.testing.assert_array_equal(to_numpy(x_dev), before, err_msg="forward modified its input")
    layer.zero_grad()
    for p in layer.parameters():
        assert not numpy.any(to_numpy(p.grad)), "zero_grad left non-zero gradients"
    return y1, y2


def record_kernel_launches(gpu, monkeypatch):
    """[(name, grid)] of every kernel of ours the emulated CuPy ``gpu`` launches from now on (the grid the kernel
    object gets): what the performance model's launch lists are held to."""
    calls, real = [], gpu.loader.get_kernel

    def get_kernel(file, expression):
        kernel = real(file, expression)

        def call(grid, block, args, *rest, **kwargs):
            calls.append((expression.split("<")[0], tuple(grid)))
            return kernel(grid, block, args, *rest, **kwargs)
        return call

    monkeypatch.setattr(gpu.loader, "get_kernel", get_kernel)
    return calls
