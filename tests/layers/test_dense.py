"""Dense (fully connected) against the loop oracle."""
import numpy
import pytest

from support import oracle
from support.helpers import (F64, accepts, assert_bad_input, assert_close, check_repeatable_and_accumulating,
                             on_device, run, set_param)
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import Dense

SHAPES = [(1, 1, 1), (2, 3, 4), (5, 7, 3), (4, 16, 10), (3, 2, 9)]   # (N, in, out)


def _make(n, i, o, rng, bias=True, dtype=F64):
    layer = Dense(i, o, bias=bias, dtype=dtype)
    w = rng.standard_normal((o, i))
    set_param(layer.weight, w)
    b = None
    if bias:
        b = rng.standard_normal(o)
        set_param(layer.bias, b)
    return layer, rng.standard_normal((n, i)), w, b


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_oracle(shape, bias, rng, device):
    n, i, o = shape
    layer, x, w, b = _make(n, i, o, rng, bias)
    g = rng.standard_normal((n, o))
    on_device(layer, device)
    y, dx = run(layer, x, g, device)
    want_dx, want_dw, want_db = oracle.dense_backward(x, w, g)
    assert_close(y, oracle.dense_forward(x, w, b), what="y")
    assert_close(dx, want_dx, what="dx")
    assert_close(layer.weight.grad, want_dw, what="dW")
    if bias:
        assert_close(layer.bias.grad, want_db, what="db")
    else:
        assert layer.bias is None and len(layer.parameters()) == 1
    assert y.dtype == F64 and dx.dtype == F64


def test_shapes_and_default_dtype(rng, device):
    layer = Dense(6, 4)
    assert layer.weight.data.shape == (4, 6) and layer.bias.data.shape == (4,)
    assert layer.weight.data.dtype == numpy.float32 and layer.bias.data.dtype == numpy.float32
    assert layer.weight.grad.shape == (4, 6) and not layer.weight.grad.any()
    assert layer.parameters()[0] is layer.weight and layer.parameters()[1] is layer.bias
    w, b = layer.weight.data.astype(F64), layer.bias.data.astype(F64)
    x = rng.standard_normal((3, 6)).astype(numpy.float32)
    g = rng.standard_normal((3, 4)).astype(numpy.float32)
    on_device(layer, device)
    y, dx = run(layer, x, g, device)
    assert y.dtype == numpy.float32 and dx.dtype == numpy.float32
    assert_close(y, oracle.dense_forward(x, w, b), rtol=1e-5, atol=1e-5, what="y float32")
    assert_close(dx, g.astype(F64) @ w, rtol=1e-5, atol=1e-5, what="dx float32")


def test_float64_end_to_end(rng):
    layer = Dense(3, 2, dtype=F64)
    assert layer.weight.data.dtype == F64 and layer.bias.grad.dtype == F64
    y = layer.forward(rng.standard_normal((2, 3)))
    assert y.dtype == F64
    assert layer.backward(numpy.ones_like(y)).dtype == F64
    assert layer.weight.grad.dtype == F64


@pytest.mark.skipif(not accepts(Dense, "rng"), reason="Dense takes no rng argument")
def test_rng_initialisation_is_reproducible():
    a, b, c = Dense(8, 5, rng=3), Dense(8, 5, rng=numpy.random.default_rng(3)), Dense(8, 5, rng=4)
    numpy.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not numpy.array_equal(a.weight.data, c.weight.data)
    assert a.weight.data.std() > 0


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_check_layer(shape, rng):
    layer, x, _, _ = _make(*shape, rng)
    check_layer(layer, x)


def test_check_layer_without_bias(rng):
    layer, x, _, _ = _make(3, 4, 2, rng, bias=False)
    check_layer(layer, x)


def test_input_untouched_backward_repeatable_grads_accumulate(rng, device):
    layer, x, _, _ = _make(4, 5, 3, rng)
    on_device(layer, device)
    y1, y2 = check_repeatable_and_accumulating(layer, x, rng.standard_normal((4, 3)), device)
    numpy.testing.assert_array_equal(y1, y2)


def test_non_contiguous_input(rng, device):
    layer, _, w, b = _make(3, 4, 5, rng)
    x = rng.standard_normal((4, 3)).T                 # (3, 4), Fortran-ordered
    g = rng.standard_normal((5, 3)).T
    on_device(layer, device)
    y, dx = run(layer, x, g, device)
    assert_close(y, oracle.dense_forward(x, w, b), what="y")
    assert_close(dx, oracle.dense_backward(x, w, g)[0], what="dx")
    assert_close(layer.weight.grad, oracle.dense_backward(x, w, g)[1], what="dW")


# ----------------------------------------------------------------------------------------
# bad input

def test_wrong_width():
    assert_bad_input(lambda: Dense(6, 2).forward(numpy.zeros((3, 7), numpy.float32)), "Dense", "6", "7")


@pytest.mark.parametrize("shape", [(6,), (2, 3, 2), (1, 6, 1, 1)])
def test_wrong_rank(shape):
    assert_bad_input(lambda: Dense(6, 2).forward(numpy.zeros(shape, numpy.float32)), "Dense", "2", str(shape))


@pytest.mark.parametrize("dtype", [numpy.int64, numpy.uint8])
def test_non_float_input(dtype):
    assert_bad_input(lambda: Dense(6, 2).forward(numpy.zeros((1, 6), dtype)),
                     "Dense", numpy.dtype(dtype).name)


def test_empty_batch():
    assert_bad_input(lambda: Dense(6, 2).forward(numpy.zeros((0, 6), numpy.float32)), "Dense")
