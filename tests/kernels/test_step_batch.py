"""The graph step's bookkeeping kernels (gpucnn/kernels/step_batch.cu, launchers in
gpucnn/compile/cuda_graph/step_batch.py) on a NumPy stand-in for CuPy, every launch run by the host harness:
the batch gathered by the device's counter equals the CuPy expressions it replaces (float32 and float64 rows,
integer labels, probability targets), and step_end adds the statistics and advances the counter."""
import importlib

import numpy
import pytest

from support.kernel_harness import launchers_over_numpy

pytestmark = pytest.mark.kernels


@pytest.fixture
def sb(harness, monkeypatch):
    with launchers_over_numpy(harness, monkeypatch) as (_, launches):
        module = importlib.import_module("gpucnn.compile.cuda_graph.step_batch")
        module.launches = launches
        yield module


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("soft", [False, True])
def test_the_gathered_batch_is_the_expressions_it_replaces(sb, dtype, soft):
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((11, 3, 5, 2)).astype(dtype)
    y = rng.random((11, 4)).astype(dtype) if soft else rng.integers(0, 10, 11)
    order = rng.permutation(11).astype(numpy.int64)
    for step in range(3):  # batch 3: three full batches of an epoch of 11
        counter = numpy.array([step], dtype=numpy.int64)
        xb, yb = sb.gather_batch(x, y, order, counter, 3)
        want_x, want_y = sb.reference_gather_batch(x, y, order, counter, 3)
        numpy.testing.assert_array_equal(xb, want_x)
        numpy.testing.assert_array_equal(yb, want_y)
        assert xb.dtype == x.dtype and yb.dtype == y.dtype and counter[0] == step  # the gather reads it only
    names = [name for _, name in sb.launches]
    assert names[:2] == ["gather_rows", "gather_rows"] if soft else names[:1] == ["gather_rows_labels"]


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_step_end_adds_the_statistics_and_advances_the_counter(sb, dtype):
    stats, counter = numpy.array([1.5, 2.0]), numpy.array([4], dtype=numpy.int64)
    want_stats, want_counter = stats.copy(), counter.copy()
    loss, correct = numpy.array([0.25], dtype=dtype)[0:1].reshape(()), numpy.array(3, dtype=numpy.int32)
    assert sb.takes_step_end(loss, correct, dtype)
    sb.step_end(loss, correct, stats, counter, 8)
    sb.reference_step_end(loss, correct, want_stats, want_counter, 8)
    numpy.testing.assert_array_equal(stats, want_stats)
    assert counter[0] == want_counter[0] == 5
    assert not sb.takes_step_end(loss, numpy.array(3, dtype=numpy.int64), dtype)  # another loss's count
