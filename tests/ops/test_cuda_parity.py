"""Every CUDA op (gpucnn.ops.cuda.*) equals its NumPy twin (gpucnn.ops.*), forward and backward, on a real GPU.

The tests here need a usable GPU (``@pytest.mark.gpu``; skipped elsewhere by
tests/conftest.py). The checks themselves are plain functions of a ``dev`` object
(``asarray``, ``asnumpy``, the launcher modules ``conv``/``pool``/``update`` and a list
``launches`` that records every kernel launch), in tests/support/cuda_parity.py, so
tests/kernels/test_emulated_launchers.py runs the very same checks without a GPU: there ``dev``
holds the same launchers imported over a NumPy stand-in for CuPy, and each launch runs the
kernel bodies in the CPU harness.

What is checked, on fixed and random configurations (tests/support/cuda_cases.py: non-square
kernels, strides > 1, asymmetric 'same' padding, dilated and grouped (depthwise included)
convolutions, overlapping pool windows, sizes that do not tile; float32 and float64):
- forward and backward equal the NumPy reference (float64 to 1e-10, float32 to 1e-4),
  argmax exactly, output dtypes and shapes;
- inputs given as transposed, sliced or flipped (non-contiguous) views work;
- forward leaves its inputs unmodified;
- two backward passes are bitwise identical;
- a wrong dtype or shape raises TypeError / ValueError before anything is launched.
"""
import types

import numpy
import pytest

from gpucnn.ops import conv as np_conv
from gpucnn.ops import pool as np_pool
from gpucnn.ops.geometry import conv_window, pool_window
from support.cuda_cases import ADAM_CASES, CONV_CASES, DTYPES, LAYOUTS, POOL_CASES, SGD_CASES, case_ids
from support.cuda_parity import (assert_close, check_adam, check_avg_pool, check_conv, check_errors, check_max_pool,
                                 check_sgd)
from support.emulated_cupy import record_launches


@pytest.fixture
def gpu(monkeypatch):
    """``dev`` for the real GPU: CuPy arrays and the launchers, launches recorded."""
    import cupy

    from gpucnn.ops.cuda import conv, loader, pool, update

    launches = record_launches(loader, monkeypatch.setattr)
    return types.SimpleNamespace(asarray=cupy.asarray, asnumpy=cupy.asnumpy, conv=conv, pool=pool,
                                 update=update, loader=loader, launches=launches)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_ids(CONV_CASES))
def test_conv_parity(gpu, case, dtype, layout):
    check_conv(gpu, case, dtype, layout)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=case_ids(POOL_CASES))
def test_max_pool_parity(gpu, case, dtype, layout):
    check_max_pool(gpu, case, dtype, layout, special=(layout == "flipped"))


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=case_ids(POOL_CASES))
def test_avg_pool_parity(gpu, case, dtype, layout):
    check_avg_pool(gpu, case, dtype, layout)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_parity(gpu, case, dtype, layout):
    check_sgd(gpu, case, dtype, layout)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADAM_CASES)
def test_adam_parity(gpu, case, dtype, layout):
    check_adam(gpu, case, dtype, layout)


@pytest.mark.gpu
def test_errors_raise_before_launch(gpu):
    check_errors(gpu)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_ops_dispatch_to_cuda(gpu, dtype):
    """gpucnn.ops.* given CuPy arrays run our kernels and return CuPy arrays equal to NumPy's."""
    import cupy

    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((3, 2, 9, 8)).astype(dtype)
    weight = rng.standard_normal((4, 2, 3, 3)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    win = conv_window(3, 1, "same")
    y_ref, _ = np_conv.conv2d_forward(x, weight, bias, win)
    y, saved = np_conv.conv2d_forward(cupy.asarray(x), cupy.asarray(weight), cupy.asarray(bias), win)
    assert isinstance(y, cupy.ndarray)
    assert_close(cupy.asnumpy(y), y_ref, dtype, "y")
    grads = np_conv.conv2d_backward(cupy.ones_like(y), saved)
    assert all(isinstance(g, cupy.ndarray) for g in grads)
    p_ref, p_saved = np_pool.max_pool2d_forward(y_ref, pool_window(2))
    p, psaved = np_pool.max_pool2d_forward(y, pool_window(2))
    assert_close(cupy.asnumpy(p), p_ref, dtype, "pool")
    assert isinstance(np_pool.max_pool2d_backward(cupy.ones_like(p), psaved), cupy.ndarray)
    assert len(gpu.launches) > 0


@pytest.mark.gpu
def test_large_fmnist_shapes_float32(gpu):
    """The target network's real shapes (batch 256) once, both conv paths and the pool."""
    check_conv(gpu, ("fmnist1_b256", 256, 1, 28, 28, 32, conv_window(3, 1, "same"), True), numpy.float32,
               "contiguous")
    check_conv(gpu, ("fmnist2_b256", 256, 32, 14, 14, 64, conv_window(3, 1, "same"), True), numpy.float32,
               "contiguous")
    check_max_pool(gpu, ("fmnist_pool_b256", 256, 32, 28, 28, pool_window(2)), numpy.float32, "contiguous")


@pytest.mark.gpu
def test_kernels_compile_on_this_device(gpu):
    """Every name expression of every kernel file loads on the current device."""
    for file in gpu.loader.SIGNATURES:
        for expression in gpu.loader.name_expressions(file):
            assert gpu.loader.get_kernel(file, expression) is not None
