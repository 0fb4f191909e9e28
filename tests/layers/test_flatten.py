"""Flatten: (N, C, H, W) -> (N, C*H*W) in C order, backward reshapes back."""
import numpy
import pytest

from support.helpers import F64, assert_bad_input, check_repeatable_and_accumulating, run
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import Flatten


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 7), (2, 2, 3)])
def test_forward_backward(shape, rng, device):
    x = rng.standard_normal(shape)
    n = shape[0]
    g = rng.standard_normal((n, x.size // n))
    y, dx = run(Flatten(), x, g, device)
    numpy.testing.assert_array_equal(y, x.reshape(n, -1))
    numpy.testing.assert_array_equal(dx, g.reshape(shape))
    assert y.dtype == F64 and dx.dtype == F64


def test_channel_major_order():
    """Feature index = c*H*W + h*W + w, the order a following Dense layer expects."""
    x = numpy.arange(24, dtype=F64).reshape(1, 2, 3, 4)
    assert Flatten().forward(x).tolist() == [list(range(24))]


def test_float32_stays_float32(rng, device):
    y, dx = run(Flatten(), rng.standard_normal((2, 3, 2, 2)).astype(numpy.float32),
                numpy.ones((2, 12), numpy.float32), device)
    assert y.dtype == numpy.float32 and dx.dtype == numpy.float32


def test_no_parameters_and_modes(rng):
    layer = Flatten()
    assert list(layer.parameters()) == []
    layer.eval()
    x = rng.standard_normal((2, 2, 2, 2))
    assert layer.forward(x).shape == (2, 8)
    layer.train()
    layer.zero_grad()


def test_check_layer(rng):
    check_layer(Flatten(), rng.standard_normal((2, 3, 2, 2)))


def test_input_untouched_backward_repeatable(rng, device):
    x = rng.standard_normal((2, 3, 2, 2))
    y1, y2 = check_repeatable_and_accumulating(Flatten(), x, rng.standard_normal((2, 12)), device)
    numpy.testing.assert_array_equal(y1, y2)


# ----------------------------------------------------------------------------------------
# bad input

def test_empty_batch():
    assert_bad_input(lambda: Flatten().forward(numpy.zeros((0, 3, 2, 2))), "Flatten")


def test_rank_one_input():
    assert_bad_input(lambda: Flatten().forward(numpy.zeros(6)), "Flatten")


def test_non_float_input():
    assert_bad_input(lambda: Flatten().forward(numpy.zeros((2, 3, 2, 2), numpy.int64)), "Flatten", "int64")
