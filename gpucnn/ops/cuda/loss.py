"""CUDA twin of ``gpucnn.ops.loss``: softmax cross-entropy forward, backward and accuracy count
in one launch of ``softmax_xent`` (gpucnn/kernels/loss.cu).

No host read-back and no synchronisation. Given ``out`` buffers and int64 labels it
allocates nothing either, so the launch can be captured in a CUDA graph and replayed: the
kernel's pointers and sizes are fixed, and ``accumulate=True`` keeps running totals of the
loss and the counts on the device (the caller zeroes them when it reads them).
"""
import cupy
import numpy

from . import loader

__all__ = ["softmax_cross_entropy"]

_FILE = "loss.cu"
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_INT64 = numpy.dtype(numpy.int64)


def _check_out(out, n, k, dtype):
    loss, grad, counts = out
    for name, a, shape, want in (("loss", loss, (1,), dtype), ("grad", grad, (n, k), dtype),
                                 ("counts", counts, (2,), numpy.dtype(numpy.int32))):
        if not isinstance(a, cupy.ndarray) or tuple(a.shape) != shape or a.dtype != want \
                or not a.flags.c_contiguous:
            raise ValueError(f"softmax_cross_entropy (CUDA): out {name} must be a C-contiguous {want} CuPy "
                             f"array of shape {shape}, got {getattr(a, 'dtype', type(a).__name__)} "
                             f"{tuple(getattr(a, 'shape', ()))}")


@loader.on_device_of_first_argument
def softmax_cross_entropy(logits, labels, out=None, accumulate=False):
    """(loss (1,), grad (N, K), counts (2,) int32); see ``gpucnn.ops.loss.softmax_cross_entropy``."""
    if not isinstance(logits, cupy.ndarray) or not isinstance(labels, cupy.ndarray):
        raise TypeError(f"softmax_cross_entropy (CUDA): logits and labels must be CuPy arrays, got "
                        f"{type(logits).__name__} and {type(labels).__name__}")
    dtype = numpy.dtype(logits.dtype)
    if dtype not in _FLOATS:
        raise TypeError(f"softmax_cross_entropy (CUDA): logits must be float32 or float64, got {dtype}")
    if logits.ndim != 2 or tuple(labels.shape) != (logits.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(f"softmax_cross_entropy (CUDA): expected logits (N, K) and N integer labels, got "
                         f"{tuple(logits.shape)} and {labels.dtype} {tuple(labels.shape)}")
    n, k = (int(s) for s in logits.shape)
    if n == 0 or k == 0:
        raise ValueError(f"softmax_cross_entropy (CUDA): empty logits {tuple(logits.shape)}")
    if out is None:
        out = (cupy.empty((1,), dtype=dtype), cupy.empty((n, k), dtype=dtype), cupy.empty((2,), dtype=numpy.int32))
    else:
        _check_out(out, n, k, dtype)
    loss, grad, counts = out
    logits = cupy.ascontiguousarray(logits)
    labels = cupy.ascontiguousarray(labels if labels.dtype == _INT64 else labels.astype(_INT64))
    loader.launch(_FILE, "softmax_xent", dtype, (logits, labels, grad, loss, counts, n, k, int(bool(accumulate))),
                  grid=1)
    return loss, grad, counts
