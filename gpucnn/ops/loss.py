"""Softmax cross-entropy, forward and backward in one call, with its accuracy count.

For logits z (N, K) and integer labels y (N,), with log_p = log_softmax(z) computed after
subtracting each row's maximum (so that logits of any size stay finite):

    loss    = mean_r( -log_p[r, y_r] )
    grad    = (exp(log_p) - onehot(y)) / N          dL/dz
    correct = #rows whose argmax (the first maximum, as numpy.argmax) equals the label
    invalid = #labels outside [0, K); their rows' loss and gradient are NaN (so is the loss)

The NumPy code below is the reference; CuPy arrays go to ``gpucnn.ops.cuda.loss``, one
kernel that computes all of it without reading anything back to the host.
"""
import numpy

from ..backend import get_array_module

__all__ = ["softmax_cross_entropy"]


def softmax_cross_entropy(logits, labels, out=None, accumulate=False):
    """(loss, grad, counts) for logits (N, K) and integer labels (N,) on the same device.

    Args:
        logits: (N, K) floats. labels: (N,) integers (the CUDA path takes int64 as they are
            and converts other integer dtypes).
        out: optional (loss, grad, counts) to write into instead of new arrays: loss of shape
            (1,) and grad (N, K) of the logits' dtype, counts (2,) int32.
        accumulate: add loss and counts to what ``out`` holds instead of overwriting them
            (for running totals over steps; grad is always written).

    Returns:
        loss (1,), grad (N, K), counts (2,) = (correct rows, invalid labels).

    Example:
        >>> loss, grad, counts = softmax_cross_entropy(logits, labels)
    """
    if get_array_module(logits) is not numpy:
        from .cuda import loss as cuda_loss
        return cuda_loss.softmax_cross_entropy(logits, labels, out, accumulate)
    n, k = logits.shape
    labels = numpy.asarray(labels)
    valid = (labels >= 0) & (labels < k)
    safe = numpy.where(valid, labels, 0)
    rows = numpy.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True))
    row_loss = -log_probs[rows, safe]
    grad = numpy.exp(log_probs)
    grad[rows, safe] -= 1
    grad /= n
    nan = logits.dtype.type(numpy.nan)
    row_loss[~valid] = nan
    grad[~valid] = nan
    loss = numpy.array([row_loss.mean()], dtype=logits.dtype)
    counts = numpy.array([numpy.count_nonzero(valid & (logits.argmax(axis=1) == labels)),
                          numpy.count_nonzero(~valid)], dtype=numpy.int32)
    if out is None:
        return loss, grad, counts
    out_loss, out_grad, out_counts = out
    out_grad[...] = grad
    if accumulate:
        out_loss += loss
        out_counts += counts
    else:
        out_loss[...] = loss
        out_counts[...] = counts
    return out_loss, out_grad, out_counts
