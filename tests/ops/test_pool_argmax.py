"""The argmax convention written in gpucnn/ops/pool.py's docstring, checked on the reference op itself."""
import numpy
import pytest

from gpucnn.ops import pool
from gpucnn.ops.geometry import pool_window


def _argmax(plane, window):
    _, (argmax, _, _) = pool.max_pool2d_forward(numpy.asarray(plane, dtype=numpy.float64)[None, None], window)
    return argmax[0, 0]


def test_the_window_local_index_row_major():
    plane = [[0, 1, 0, 0],
             [0, 0, 0, 5]]
    assert _argmax(plane, pool_window(2)).tolist() == [[1, 3]]  # i*kw + j: (0, 1) and (1, 1)


def test_ties_go_to_the_first():
    assert _argmax([[2, 2], [2, 2]], pool_window(2)).tolist() == [[0]]
    assert _argmax([[0, 1], [1, 1]], pool_window(2)).tolist() == [[1]]


def test_nan_goes_to_the_last_nan_as_in_pytorch():
    nan = numpy.nan
    assert _argmax([[nan, 9], [nan, 0]], pool_window(2)).tolist() == [[2]]
    assert _argmax([[1, nan], [9, 0]], pool_window(2)).tolist() == [[1]]


def test_all_minus_inf_windows_name_their_first_real_element():
    inf = numpy.inf
    plane = numpy.full((3, 3), -inf)
    # 3x3 windows, stride 2, padding 1: window (0, 0) has padding in row 0 and column 0, so its first
    # real element is (1, 1), k = 4; window (0, 1) starts at column 1 of the padded input: (1, 0), k = 3.
    assert _argmax(plane, pool_window(3, 2, 1)).tolist() == [[4, 3], [1, 0]]
    grad = pool.max_pool2d_backward(numpy.ones((1, 1, 2, 2)), pool.max_pool2d_forward(plane[None, None],
                                                                                     pool_window(3, 2, 1))[1])
    assert grad.sum() == 4  # no gradient lost to padding


@pytest.mark.parametrize("k,dtype", [(2, numpy.uint8), (15, numpy.uint8), (16, numpy.int32)])
def test_encoding_uint8_up_to_255_elements(k, dtype):
    assert _argmax(numpy.zeros((k, k)), pool_window(k)).dtype == dtype
