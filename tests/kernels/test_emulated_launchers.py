"""The launchers (gpucnn/ops/cuda/{conv,pool,update}.py and loader.py) run on the CPU, checked launch by launch.

The real launchers are imported over a NumPy stand-in for CuPy, where every kernel launch goes
through the host harness (tests/support/kernel_harness.py: ``FakeKernel``). They run the very
checks of tests/ops/test_cuda_parity.py (tests/support/cuda_parity.py: NumPy parity forward and
backward, non-contiguous views, inputs left unmodified, repeatable backward, errors before
launch), and each launch is checked for the exact scalar types of the kernel's signature,
C-contiguous pointer arguments and the launch shape. Then the index width: 32-bit indices
where the sizes allow, 64-bit ones otherwise.

Skipped only where nvcc is not on PATH.
"""
import importlib
import sys
import types

import numpy
import pytest

from gpucnn import backend
from gpucnn.ops.cuda import loader as real_loader
from support import cuda_cases as cases
from support import cuda_parity as parity
from support.kernel_harness import launchers_over_numpy

pytestmark = pytest.mark.kernels

CONV_CASES = cases.CONV_CASES
DTYPES = cases.DTYPES


@pytest.fixture
def emulated(harness, monkeypatch):
    """``dev`` for the parity checks: the real launchers over a NumPy stand-in for CuPy."""
    with launchers_over_numpy(harness, monkeypatch) as (loader, launches):
        conv = importlib.import_module("gpucnn.ops.cuda.conv")
        pool = importlib.import_module("gpucnn.ops.cuda.pool")
        update = importlib.import_module("gpucnn.ops.cuda.update")
        copy = lambda a: numpy.array(a, copy=True)  # noqa: E731
        yield types.SimpleNamespace(asarray=copy, asnumpy=copy, conv=conv, pool=pool, update=update,
                                    loader=loader, launches=launches)


# Every case, dtype and layout, as on the GPU.
CONV_GRID = [(case, layout) for case in CONV_CASES for layout in cases.LAYOUTS]
POOL_GRID = [(case, layout) for case in cases.POOL_CASES for layout in cases.LAYOUTS]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,layout", CONV_GRID, ids=[f"{c[0]}-{lay}" for c, lay in CONV_GRID])
def test_emulated_conv_launcher(emulated, case, dtype, layout):
    parity.check_conv(emulated, case, dtype, layout)


def test_emulated_conv_uses_its_three_paths(emulated):
    """The fused implicit GEMM for dilation 1 and one group; else the direct kernel for small K, im2col + GEMM
    above DIRECT_MAX_K."""
    def rows_per_group(case):
        _, c, _, _, _, window, _, groups = cases.conv_case(case)
        return c // groups * window.kh * window.kw

    def plain(case):
        _, _, _, _, _, window, _, groups = cases.conv_case(case)
        return groups == 1 and window.dy == window.dx == 1

    small = [case for case in CONV_CASES if rows_per_group(case) <= emulated.conv.DIRECT_MAX_K and not plain(case)]
    large = [case for case in CONV_CASES if rows_per_group(case) > emulated.conv.DIRECT_MAX_K and not plain(case)]
    fused = [case for case in CONV_CASES if plain(case)]
    assert small and large and fused
    parity.check_conv(emulated, small[0], numpy.float64, "contiguous")
    assert ("conv.cu", "conv_direct") in emulated.launches
    emulated.launches.clear()
    parity.check_conv(emulated, large[0], numpy.float64, "contiguous")
    assert ("conv.cu", "conv_direct") not in emulated.launches
    assert ("conv.cu", "im2col") in emulated.launches
    emulated.launches.clear()
    parity.check_conv(emulated, fused[0], numpy.float64, "contiguous")
    assert {file for file, _ in emulated.launches} == {"fused_conv.cu"}
    assert ("fused_conv.cu", "conv_fwd_fused") in emulated.launches


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_conv_fallback_path_on_every_case(emulated, monkeypatch, dtype):
    """im2col / direct + GEMM, the path of the convolutions the fused kernels do not take, on the plain cases
    too (the fused kernels switched off)."""
    monkeypatch.setattr(emulated.conv, "runs_fused", lambda *args: False)
    for case in CONV_CASES:
        parity.check_conv(emulated, case, dtype, "contiguous")
    assert not any(file.startswith("fused") for file, _ in emulated.launches)


@pytest.mark.parametrize("chunk,max_grid_y,passes", [(64, 65535, 2), (64, 3, 2), (8, 65535, 3)])
def test_emulated_bias_sum_in_several_passes(emulated, monkeypatch, chunk, max_grid_y, passes):
    """Rows longer than a chunk: chunk sums, then sums of those (the grid's y extent capped)."""
    monkeypatch.setattr(emulated.conv, "ROW_SUM_CHUNK", chunk)
    monkeypatch.setattr(emulated.conv, "_MAX_GRID_Y", max_grid_y)
    monkeypatch.setattr(emulated.conv, "runs_fused", lambda *args: False)  # the row sums of the im2col path
    case = next(c for c in CONV_CASES if c[0] == "fmnist2_same3x3")  # rows of N*oh*ow = 392
    for dtype in DTYPES:
        emulated.launches.clear()
        parity.check_conv(emulated, case, dtype, "contiguous")
        assert emulated.launches.count(("conv.cu", "row_sum")) == 2 * passes  # two backward passes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,layout", POOL_GRID, ids=[f"{c[0]}-{lay}" for c, lay in POOL_GRID])
def test_emulated_pool_launchers(emulated, case, dtype, layout):
    parity.check_max_pool(emulated, case, dtype, layout)
    parity.check_max_pool(emulated, case, dtype, layout, special=True, seed=1)
    parity.check_avg_pool(emulated, case, dtype, layout)


@pytest.mark.parametrize("layout", cases.LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_update_launchers(emulated, dtype, layout):
    for case in cases.SGD_CASES:
        parity.check_sgd(emulated, case, dtype, layout)
    for case in cases.ADAM_CASES:
        parity.check_adam(emulated, case, dtype, layout)


def test_emulated_public_launchers_enter_the_device_of_their_input(emulated):
    """Every public launcher runs under ``with <first argument>.device:`` (loader.on_device_of_first_argument)."""
    for module, names in ((emulated.conv, ("conv2d_forward", "conv2d_backward")),
                          (emulated.pool, ("max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
                                           "avg_pool2d_backward")),
                          (emulated.update, ("sgd_update", "adam_update"))):
        for name in names:
            function = getattr(module, name)
            assert getattr(function, "__wrapped__", None) is not None, f"{module.__name__}.{name} is not wrapped"


def test_emulated_errors_raise_before_launch(emulated):
    parity.check_errors(emulated)


def test_emulated_launchers_leave_real_modules_alone(emulated):
    """The fixture's stand-in for CuPy stays inside it (checked again by the next test)."""
    assert sys.modules["cupy"].ndarray is numpy.ndarray


def test_fake_cupy_is_gone():
    cupy = sys.modules.get("cupy")
    assert cupy is None or cupy.ndarray is not numpy.ndarray
    assert backend.get_array_module(numpy.zeros(1)) is numpy


# ----------------------------------------------------------------------------- index width

def test_index_type_switches_to_64_bit_past_the_int32_limit():
    """32-bit indices up to INT32_INDEX_LIMIT elements, 64-bit above; the limit leaves room for the
    grid-stride loop's last step (index + one grid of threads) below 2^31."""
    limit = real_loader.INT32_INDEX_LIMIT
    assert limit + real_loader.MAX_BLOCKS * real_loader.BLOCK <= 2 ** 31 - 1
    assert real_loader.index_type(1) == "int"
    assert real_loader.index_type(10, limit, 3) == "int"
    assert real_loader.index_type(10, limit + 1) == "long long"
    assert real_loader.index_type(2 ** 31, 5) == "long long"
    # conv2 of the reference network at batch 256: every size fits, with room to spare
    n, c, o, p = 256, 32, 64, 14 * 14
    assert real_loader.index_type(n * c * p, c * 9 * n * p, n * o * p) == "int"
    # batch 65536 of the same layer: the columns matrix (3.7e9 elements) does not
    assert real_loader.index_type(c * 9 * 65536 * p) == "long long"


def test_launch_requires_the_index_type_of_the_kernel():
    with pytest.raises(ValueError, match="index type"):
        real_loader.resolved_signature("conv.cu", "im2col")
    with pytest.raises(ValueError, match="index type"):
        real_loader.resolved_signature("conv.cu", "row_sum", "int")
    with pytest.raises(ValueError, match="index type"):
        real_loader.resolved_signature("conv.cu", "im2col", "short")
    assert real_loader.resolved_signature("pool.cu", "max_pool_fwd", "long long")[-1] == "long long"


@pytest.mark.parametrize("limit,expected", [(None, {"int"}), (200, {"int", "long long"}), (0, {"long long"})])
def test_emulated_launchers_pick_the_index_type_by_size(emulated, monkeypatch, limit, expected):
    """The launchers launch the 64-bit instantiations exactly when a size passes the limit (lowered here
    so that small arrays cross it), and the results stay equal to NumPy's either way."""
    if limit is not None:
        monkeypatch.setattr(emulated.loader, "INT32_INDEX_LIMIT", limit)
    expressions = []
    get_kernel = emulated.loader.get_kernel
    monkeypatch.setattr(emulated.loader, "get_kernel",
                        lambda file, expression: expressions.append(expression) or get_kernel(file, expression))
    for name in ("grouped_dilated_gemm", "depthwise_same"):
        parity.check_conv(emulated, next(c for c in CONV_CASES if c[0] == name), numpy.float64, "contiguous")
    case = next(c for c in cases.POOL_CASES if c[0] == "overlap_3x3_s2")
    parity.check_max_pool(emulated, case, numpy.float32, "contiguous")
    parity.check_avg_pool(emulated, case, numpy.float32, "contiguous")
    indices = {expression[:-1].partition(", ")[2] for expression in expressions if ", " in expression}
    assert indices == expected
    # FakeKernel asserted on every 'int' launch that all its sizes fit under the limit
