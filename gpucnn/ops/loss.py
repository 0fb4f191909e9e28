"""Softmax cross-entropy, forward and backward in one call, with its accuracy count (PyTorch's
``torch.nn.functional.cross_entropy``, every option).

For logits z (N, K), log_p = log_softmax(z) computed after subtracting each row's maximum (so
that logits of any size stay finite), p = exp(log_p), class weights w (K,) (all ones by
default, W = sum_k w_k) and label smoothing eps:

integer labels y (N,), rows whose label is ``ignore_index`` left out of everything:
    loss_r  = (1 - eps) w[y_r] (-log_p[r, y_r])  +  eps/K sum_k w_k (-log_p[r, k])
    dloss_r = (1 - eps) w[y_r] (p[r] - onehot(y_r))  +  eps/K (W p[r] - w)       d loss_r / d z_r
    mean    = sum_r loss_r / sum_r w[y_r]             (over the rows not ignored: NaN if none is)

probability targets t (N, K), smoothed to t' = (1 - eps) t + eps/K:
    loss_r  = -sum_k w_k t'[r, k] log_p[r, k]
    dloss_r = (sum_k w_k t'[r, k]) p[r] - w t'[r]
    mean    = sum_r loss_r / N

reduction 'sum' is sum_r loss_r and 'none' the vector loss_r; the gradient returned is that of
the reduced loss ('none': the rows dloss_r, for an upstream gradient of ones). Ignored rows have
loss 0 and gradient 0.

    correct = #rows whose argmax (the first maximum, as numpy.argmax) equals the label (ignored rows
              never count), or, for probability targets, the target's argmax
    invalid = #labels outside [0, K) that are not ignore_index; their rows' loss and gradient are NaN
              (so is the loss)

The NumPy code below is the reference; CuPy arrays go to ``gpucnn.ops.cuda.loss``, one
kernel that computes all of it without reading anything back to the host.
"""
import numpy

from ..backend import get_array_module

__all__ = ["softmax_cross_entropy", "REDUCTIONS"]

#: the reductions, as PyTorch names them (its enum order: 'none' 0, 'mean' 1, 'sum' 2)
REDUCTIONS = ("none", "mean", "sum")


def softmax_cross_entropy(logits, labels, out=None, accumulate=False, weight=None, ignore_index=None,
                          label_smoothing=0.0, reduction="mean"):
    """(loss, grad, counts) for logits (N, K) and integer labels (N,) or probability targets (N, K).

    Args:
        logits: (N, K) floats. labels: (N,) integers (the CUDA path takes int64 as they are
            and converts other integer dtypes), or (N, K) floats of the logits' dtype: probabilities.
        out: optional (loss, grad, counts) to write into instead of new arrays: loss of shape
            (1,) ((N,) for reduction 'none') and grad (N, K) of the logits' dtype, counts (2,) int32.
        accumulate: add loss and counts to what ``out`` holds instead of overwriting them
            (for running totals over steps; grad is always written). Not with reduction 'none'.
        weight: None, or (K,) class weights of the logits' dtype on their device.
        ignore_index: None, or the label value whose rows count nowhere (integer labels only).
        label_smoothing: eps in [0, 1]. reduction: 'mean', 'sum' or 'none'.
        (The layer, gpucnn.nn.losses.SoftmaxCrossEntropy, checks them with messages for users.)

    Returns:
        loss (1,) or (N,), grad (N, K), counts (2,) = (correct rows, invalid labels).

    Example:
        >>> loss, grad, counts = softmax_cross_entropy(logits, labels, label_smoothing=0.1)
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"softmax_cross_entropy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if accumulate and reduction == "none":
        raise ValueError("softmax_cross_entropy: accumulate adds up reduced losses; reduction 'none' has none")
    if get_array_module(logits) is not numpy:
        from .cuda import loss as cuda_loss
        return cuda_loss.softmax_cross_entropy(logits, labels, out, accumulate, weight, ignore_index,
                                               label_smoothing, reduction)
    n, k = logits.shape
    labels = numpy.asarray(labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True))
    probs = numpy.exp(log_probs)
    w = numpy.ones(k, dtype=logits.dtype) if weight is None else weight
    eps = logits.dtype.type(label_smoothing)
    if labels.ndim == 2:
        row_loss, grad, denominator, ignored, correct, invalid = _probability_rows(
            log_probs, probs, labels, w, eps, logits)
    else:
        row_loss, grad, denominator, ignored, correct, invalid = _label_rows(
            log_probs, probs, labels, w, eps, ignore_index, logits)
    if reduction == "none":
        loss = row_loss
    elif reduction == "sum":
        loss = numpy.array([row_loss.sum()], dtype=logits.dtype)
    else:
        with numpy.errstate(invalid="ignore", divide="ignore"):  # every row ignored: 0 / 0 = NaN, as PyTorch
            loss = numpy.array([row_loss.sum() / denominator], dtype=logits.dtype)
            grad[~ignored] /= denominator  # ignored rows keep their zero gradient
    counts = numpy.array([correct, invalid], dtype=numpy.int32)
    return _written(out, accumulate, loss, grad, counts)


def _label_rows(log_probs, probs, labels, w, eps, ignore_index, logits):
    """Row losses and gradients for integer labels (the module docstring's first formulas)."""
    n, k = log_probs.shape
    rows = numpy.arange(n)
    ignored = numpy.zeros(n, bool) if ignore_index is None else labels == ignore_index
    invalid = ~ignored & ((labels < 0) | (labels >= k))
    counted = ~ignored & ~invalid
    y = numpy.where(counted, labels, 0)
    w_y = numpy.where(counted, w[y], 0).astype(logits.dtype)
    onehot = numpy.zeros_like(probs)
    onehot[rows, y] = 1
    a = (1 - eps) * w_y
    row_loss = a * -log_probs[rows, y]
    grad = a[:, None] * (probs - onehot)
    if eps > 0:  # mix toward the uniform distribution: eps/K of the (weighted) loss of every class
        b = eps / k
        row_loss += b * -(log_probs * w).sum(axis=1)
        grad += b * (w.sum() * probs - w)
    nan = logits.dtype.type(numpy.nan)
    row_loss[ignored], grad[ignored] = 0, 0
    row_loss[invalid], grad[invalid] = nan, nan
    correct = numpy.count_nonzero(counted & (logits.argmax(axis=1) == labels))
    return row_loss, grad, w_y.sum(), ignored, correct, numpy.count_nonzero(invalid)


def _probability_rows(log_probs, probs, targets, w, eps, logits):
    """Row losses and gradients for probability targets (the module docstring's second formulas)."""
    n, k = log_probs.shape
    smoothed = (1 - eps) * targets + eps / k
    wt = w * smoothed
    row_loss = -(wt * log_probs).sum(axis=1)
    grad = wt.sum(axis=1, keepdims=True) * probs - wt
    correct = numpy.count_nonzero(logits.argmax(axis=1) == targets.argmax(axis=1))
    return row_loss, grad, logits.dtype.type(n), numpy.zeros(n, bool), correct, 0


def _written(out, accumulate, loss, grad, counts):
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
