"""The CUDA pooling launchers (gpucnn/ops/cuda/pool.py) on the emulated GPU, for the new pooling geometry.

Dilation, asymmetric and 'same' padding, ceil mode and count_include_pad: gpucnn.ops.pool's ops on
device arrays (dispatched to the launchers, kernels replayed by the host harness) equal the NumPy
reference bit for bit, forward (values and argmax) and backward, in float32 and float64.
"""
import numpy
import pytest

from gpucnn import backend
from gpucnn.ops import pool as np_pool
from gpucnn.ops.geometry import Window2D, pool_window
from support.emulated_cupy import to_host

pytestmark = pytest.mark.kernels

CASES = [
    # name, (N, C, H, W), pool_window arguments
    ("dilated-overlapping", (2, 3, 9, 8), dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    ("dilated-ceil", (1, 2, 10, 7), dict(kernel_size=(2, 3), stride=(3, 2), padding=(1, 1), dilation=(3, 2),
                                         ceil_mode=True)),
    ("asymmetric", (2, 2, 7, 6), dict(kernel_size=(3, 4), stride=2, padding=((0, 1), (2, 1)))),
    ("same-stride2", (1, 3, 7, 9), dict(kernel_size=3, stride=2, padding="same")),
    ("same-stride3-ceil", (2, 1, 8, 5), dict(kernel_size=(4, 2), stride=3, padding="same", ceil_mode=True)),
    ("ceil-overhang", (1, 2, 5, 5), dict(kernel_size=2, stride=2, ceil_mode=True)),
    ("ceil-padded", (2, 2, 6, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
]
DTYPES = [numpy.float32, numpy.float64]


def _inputs(shape, dtype, seed):
    rng = numpy.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(dtype)  # ties
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=max(2, flat.size // 10), replace=False)
    flat[picks[0::2]] = -numpy.inf
    flat[picks[1::4]] = numpy.nan
    return x, rng


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,kwargs", CASES, ids=[c[0] for c in CASES])
def test_max_pool_launchers_equal_the_reference(gpu, name, shape, kwargs, dtype):
    window = pool_window(layer="MaxPool2D", **kwargs)
    x, rng = _inputs(shape, dtype, len(name))
    y_ref, saved_ref = np_pool.max_pool2d_forward(x, window)
    y_d, saved = np_pool.max_pool2d_forward(backend.to_device(x, "cuda"), window)
    numpy.testing.assert_array_equal(to_host(y_d), y_ref)
    argmax = to_host(saved[0])
    assert argmax.dtype == numpy.int32
    numpy.testing.assert_array_equal(argmax, saved_ref[0])
    grad_y = rng.standard_normal(y_ref.shape).astype(dtype)
    grad_ref = np_pool.max_pool2d_backward(grad_y, saved_ref)
    grad = to_host(np_pool.max_pool2d_backward(backend.to_device(grad_y, "cuda"), saved))
    numpy.testing.assert_array_equal(grad, grad_ref)
    assert ("pool.cu", "max_pool_bwd") in [tuple(launch[:2]) for launch in gpu.launches]


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,kwargs", [c for c in CASES if "dilation" not in c[2]],
                         ids=[c[0] for c in CASES if "dilation" not in c[2]])
def test_avg_pool_launchers_equal_the_reference(gpu, name, shape, kwargs, dtype, count_include_pad):
    window = pool_window(layer="AvgPool2D", **kwargs)
    rng = numpy.random.default_rng(len(name))
    x = rng.standard_normal(shape).astype(dtype)
    y_ref, saved_ref = np_pool.avg_pool2d_forward(x, window, count_include_pad)
    y_d, saved = np_pool.avg_pool2d_forward(backend.to_device(x, "cuda"), window, count_include_pad)
    assert saved[2] == count_include_pad
    numpy.testing.assert_array_equal(to_host(y_d), y_ref)
    grad_y = rng.standard_normal(y_ref.shape).astype(dtype)
    grad_ref = np_pool.avg_pool2d_backward(grad_y, saved_ref)
    grad = to_host(np_pool.avg_pool2d_backward(backend.to_device(grad_y, "cuda"), saved))
    numpy.testing.assert_array_equal(grad, grad_ref)


def test_avg_pool_launcher_refuses_a_non_bool_count_include_pad(gpu):
    window = Window2D(2, 2, 2, 2, 0, 0, 0, 0, "AvgPool2D")
    x = backend.to_device(numpy.zeros((1, 1, 4, 4)), "cuda")
    with pytest.raises(TypeError, match="count_include_pad"):
        gpu.pool.avg_pool2d_forward(x, window, count_include_pad="no")
