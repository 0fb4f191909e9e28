"""The graph step's bookkeeping on the device (gpucnn/kernels/step_batch.cu): three launches where CuPy took eleven.

    gather_batch   positions = counter * B + arange(B); idx = order[positions]; x[idx], y[idx]
                   (gather_rows_labels: x and integer labels in one launch; gather_rows twice for probability
                   targets)
    step_end       stats += [loss * B, correct]; counter += 1

Each replaces the CuPy expressions written beside it in ``reference_*`` (their NumPy twins, which take
the same arguments); neither reads device memory back, so both capture. ``step_end`` takes the loss as
the model's float type and the count as int32 (what ``SoftmaxCrossEntropy.fused`` returns); the step
uses the CuPy expressions for a pluggable loss that returns other types.
"""
import numpy

from ...backend import get_array_module
from ...ops.cuda import loader
from .launch import check_int32

__all__ = ["gather_batch", "step_end", "reference_gather_batch", "reference_step_end", "takes_step_end"]

FILE = "step_batch.cu"
_INT64, _INT32 = numpy.dtype(numpy.int64), numpy.dtype(numpy.int32)


def gather_batch(x, y, order, counter, batch):
    """(x_batch, y_batch): the samples ``order[counter * batch + arange(batch)]`` of x (N, ...) and y ((N,) int64
    labels, or (N, C) probability targets of x's dtype), gathered on the device (cupy.empty for the outputs)."""
    import cupy
    row = int(numpy.prod(x.shape[1:]))
    labels = y.dtype == _INT64 and y.ndim == 1
    check_int32("gather_batch", x_batch=batch * row + (batch if labels else 0))  # (the merged gather's count)
    xb = cupy.empty((batch,) + tuple(x.shape[1:]), dtype=x.dtype)
    if labels:
        yb = cupy.empty(batch, dtype=_INT64)
        loader.launch(FILE, "gather_rows_labels", x.dtype, (x, y, order, counter, xb, yb, batch, row,
                                                             batch * row + batch))
    else:
        loader.launch(FILE, "gather_rows", x.dtype, (x, order, counter, xb, batch, row, batch * row))
        classes = int(numpy.prod(y.shape[1:]))
        yb = cupy.empty((batch,) + tuple(y.shape[1:]), dtype=y.dtype)
        loader.launch(FILE, "gather_rows", y.dtype, (y, order, counter, yb, batch, classes, batch * classes))
    return xb, yb


def takes_step_end(loss, correct, dtype):
    """Whether ``step_end`` takes this loss and count (the fused loss's types)."""
    return getattr(loss, "dtype", None) == numpy.dtype(dtype) and getattr(correct, "dtype", None) == _INT32 \
        and loss.size == 1 and correct.size == 1


def step_end(loss, correct, stats, counter, batch):
    """stats[0] += loss * batch; stats[1] += correct; counter += 1 (one thread, after the step)."""
    loader.launch(FILE, "step_end", loss.dtype, (loss, correct, stats, counter, batch), grid=1)


def reference_gather_batch(x, y, order, counter, batch):
    """The CuPy (or NumPy) expressions ``gather_batch`` replaces."""
    positions = get_array_module(x).arange(batch, dtype=_INT64) + counter * batch
    idx = order[positions]
    return x[idx], y[idx]


def reference_step_end(loss, correct, stats, counter, batch):
    """The expressions ``step_end`` replaces."""
    stats[0:1] += loss * batch
    stats[1:2] += correct
    counter += 1
