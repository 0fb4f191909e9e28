"""CUDA twin of ``gpucnn.ops.loss``: softmax cross-entropy forward, backward and accuracy count
in one launch of ``softmax_xent`` (integer labels) or ``softmax_xent_soft`` (probability targets),
gpucnn/kernels/loss.cu, with every option of the NumPy function (class weights, ignore_index,
label smoothing, reduction).

No host read-back and no synchronisation. Given ``out`` buffers and int64 labels (or targets of the
logits' dtype) it allocates nothing either, so the launch can be captured in a CUDA graph and
replayed: the kernel's pointers and sizes are fixed, and ``accumulate=True`` keeps running totals of
the loss and the counts on the device (the caller zeroes them when it reads them). Without class
weights the kernel is told so (``weighted`` 0) and given the logits as its unread weight pointer.
"""
import cupy
import numpy

from . import loader

__all__ = ["softmax_cross_entropy"]

_FILE = "loss.cu"
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_INT64 = numpy.dtype(numpy.int64)
_REDUCTION = {"none": 0, "mean": 1, "sum": 2}  # PyTorch's enum; loss_body.cuh's XENT_*


def _check_out(out, n, k, dtype, loss_shape):
    loss, grad, counts = out
    for name, a, shape, want in (("loss", loss, loss_shape, dtype), ("grad", grad, (n, k), dtype),
                                 ("counts", counts, (2,), numpy.dtype(numpy.int32))):
        if not isinstance(a, cupy.ndarray) or tuple(a.shape) != shape or a.dtype != want \
                or not a.flags.c_contiguous:
            raise ValueError(f"softmax_cross_entropy (CUDA): out {name} must be a C-contiguous {want} CuPy "
                             f"array of shape {shape}, got {getattr(a, 'dtype', type(a).__name__)} "
                             f"{tuple(getattr(a, 'shape', ()))}")


def _checked_inputs(logits, labels, weight):
    if not isinstance(logits, cupy.ndarray) or not isinstance(labels, cupy.ndarray):
        raise TypeError(f"softmax_cross_entropy (CUDA): logits and labels must be CuPy arrays, got "
                        f"{type(logits).__name__} and {type(labels).__name__}")
    dtype = numpy.dtype(logits.dtype)
    if dtype not in _FLOATS:
        raise TypeError(f"softmax_cross_entropy (CUDA): logits must be float32 or float64, got {dtype}")
    soft = labels.dtype.kind == "f"
    if logits.ndim != 2 or (tuple(labels.shape) != tuple(logits.shape) if soft else
                            tuple(labels.shape) != (logits.shape[0],) or labels.dtype.kind not in "iu"):
        raise ValueError(f"softmax_cross_entropy (CUDA): expected logits (N, K) and N integer labels or (N, K) "
                         f"probabilities, got {tuple(logits.shape)} and {labels.dtype} {tuple(labels.shape)}")
    if soft and labels.dtype != dtype:
        raise TypeError(f"softmax_cross_entropy (CUDA): probability targets must be {dtype} like the logits, "
                        f"got {labels.dtype}")
    n, k = (int(s) for s in logits.shape)
    if n == 0 or k == 0:
        raise ValueError(f"softmax_cross_entropy (CUDA): empty logits {tuple(logits.shape)}")
    if weight is not None and (not isinstance(weight, cupy.ndarray) or tuple(weight.shape) != (k,)
                               or weight.dtype != dtype):
        raise ValueError(f"softmax_cross_entropy (CUDA): weight must be a {dtype} CuPy array of shape ({k},), got "
                         f"{getattr(weight, 'dtype', type(weight).__name__)} {tuple(getattr(weight, 'shape', ()))}")
    return dtype, soft, n, k


@loader.on_device_of_first_argument
def softmax_cross_entropy(logits, labels, out=None, accumulate=False, weight=None, ignore_index=None,
                          label_smoothing=0.0, reduction="mean"):
    """(loss (1,) or (N,), grad (N, K), counts (2,) int32); see ``gpucnn.ops.loss.softmax_cross_entropy``."""
    dtype, soft, n, k = _checked_inputs(logits, labels, weight)
    if soft and ignore_index is not None:
        raise ValueError("softmax_cross_entropy (CUDA): ignore_index is for integer labels, not probability targets")
    loss_shape = (n,) if reduction == "none" else (1,)
    if out is None:
        out = (cupy.empty(loss_shape, dtype=dtype), cupy.empty((n, k), dtype=dtype),
               cupy.empty((2,), dtype=numpy.int32))
    else:
        _check_out(out, n, k, dtype, loss_shape)
    loss, grad, counts = out
    logits = cupy.ascontiguousarray(logits)
    weighted = weight is not None
    weights = cupy.ascontiguousarray(weight) if weighted else logits  # unread when not weighted
    tail = (n, k, int(weighted))
    options = (float(label_smoothing), _REDUCTION[reduction], int(bool(accumulate)))
    if soft:
        loader.launch(_FILE, "softmax_xent_soft", dtype,
                      (logits, cupy.ascontiguousarray(labels), weights, grad, loss, counts) + tail + options, grid=1)
    else:
        labels = cupy.ascontiguousarray(labels if labels.dtype == _INT64 else labels.astype(_INT64))
        ignoring = (0 if ignore_index is None else int(ignore_index), int(ignore_index is not None))
        loader.launch(_FILE, "softmax_xent", dtype,
                      (logits, labels, weights, grad, loss, counts) + tail + ignoring + options, grid=1)
    return loss, grad, counts
