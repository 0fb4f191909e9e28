"""Losses: forward(pred, target) returns the scalar loss, backward() returns dL/dpred."""
import numpy

from ..backend import device_of, device_scope, get_array_module
from ..ops.loss import softmax_cross_entropy

__all__ = ["SoftmaxCrossEntropy", "MSE", "check_label_range"]


def check_label_range(labels, classes, where):
    """ValueError unless every label lies in [0, classes); one combined read-back for GPU labels."""
    xp = get_array_module(labels)
    with device_scope(labels):
        low, high = (int(v) for v in xp.stack([labels.min(), labels.max()]).tolist())
    if low < 0 or high >= classes:
        raise ValueError(f"{where}: labels must lie in [0, {classes - 1}], got values in [{low}, {high}]")


def _check_pred(pred, loss, ndim=None):
    if not hasattr(pred, "dtype") or pred.dtype.kind != "f":
        got = getattr(pred, "dtype", type(pred).__name__)
        raise TypeError(f"{loss}: expected floating-point predictions, got {got}")
    if ndim is not None and pred.ndim != ndim:
        raise ValueError(f"{loss}: expected predictions of shape (N, classes), got shape {tuple(pred.shape)}")
    if pred.ndim == 0 or pred.shape[0] == 0:
        raise ValueError(f"{loss}: got an empty batch (shape {tuple(pred.shape)})")
    if pred.size == 0:
        raise ValueError(f"{loss}: got predictions with no elements (shape {tuple(pred.shape)}); the mean of "
                         f"nothing is undefined")


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy with integer labels, averaged over the batch.

    loss = mean_n( logsumexp(z_n) - z_n[y_n] ), computed after subtracting each row's
    maximum so that logits of any size stay finite. The gradient is
    (softmax(z) - onehot(y)) / N.

    Labels out of [0, classes) raise ValueError. For labels on the GPU that check reads a
    value back to the host, once per call; ``check_labels=False`` skips it where the labels
    are known to be good (``fit`` checks a whole data set once and skips it per step).
    Without the check a bad label still shows, on the device and without a read-back: its
    row's loss and gradient are NaN (so the loss is NaN) and ``invalid_labels`` counts it.

    Forward computes the gradient too (``gpucnn.ops.loss.softmax_cross_entropy``: one
    kernel on the GPU); ``backward()`` returns it, the same array until the next forward.
    After forward, ``correct`` is the number of rows whose largest logit is the label and
    ``invalid_labels`` the number of labels outside [0, classes), both 0-d integer arrays on
    the logits' device.

    Example:
        >>> loss_fn = SoftmaxCrossEntropy()
        >>> loss = loss_fn.forward(logits, labels)   # logits (N, K), labels (N,) ints in [0, K)
        >>> grad_logits = loss_fn.backward()
    """

    def __init__(self, check_labels=True):
        self.check_labels = check_labels
        self._cache = None
        self.correct = self.invalid_labels = None
        self._fused_out = {}

    def fused(self, logits, labels):
        """(mean loss, dL/dlogits, correct count) in one launch, for the graph-captured step (gpucnn.compile_step).

        Capture-safe: no label check and no host read (a label outside [0, classes) makes the loss NaN),
        and, for int64 labels and C-contiguous logits, no allocation after the first call of a shape:
        the results are views of buffers kept per (shape, dtype, device) and overwritten by the next
        call of that shape. The loss and the count are 0-d arrays on the logits' device.

        Example:
            >>> loss, grad_logits, correct = loss_fn.fused(logits, labels)   # labels: int64, same device
        """
        xp = get_array_module(logits)
        key = (tuple(logits.shape), str(logits.dtype), device_of(logits))
        with device_scope(logits):
            out = self._fused_out.get(key)
            if out is None:
                out = (xp.empty((1,), dtype=logits.dtype), xp.empty(logits.shape, dtype=logits.dtype),
                       xp.empty((2,), dtype=numpy.int32))
                self._fused_out[key] = out
            loss, grad, counts = softmax_cross_entropy(logits, labels, out=out)
        return loss[0], grad, counts[0]

    def forward(self, logits, labels):
        _check_pred(logits, "SoftmaxCrossEntropy", ndim=2)
        n, classes = logits.shape
        if not hasattr(labels, "dtype"):
            labels = numpy.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"SoftmaxCrossEntropy: labels must be integers (class indices), got dtype {labels.dtype}")
        if labels.shape != (n,):
            raise ValueError(f"SoftmaxCrossEntropy: expected {n} labels of shape ({n},) for logits of shape "
                             f"{tuple(logits.shape)}, got shape {tuple(labels.shape)}")
        if self.check_labels or get_array_module(labels) is numpy:
            check_label_range(labels, classes, "SoftmaxCrossEntropy")
        xp = get_array_module(logits)
        with device_scope(logits):
            loss, grad, counts = softmax_cross_entropy(logits, xp.asarray(labels))
        self._cache = grad
        self.correct, self.invalid_labels = counts[0], counts[1]
        return loss[0]

    def backward(self):
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward() called before forward()")
        return self._cache


class MSE:
    """Mean squared error over all elements: mean((pred - target)**2); gradient 2 (pred - target) / size."""

    def __init__(self):
        self._cache = None

    def forward(self, pred, target):
        _check_pred(pred, "MSE")
        xp = get_array_module(pred)
        with device_scope(pred):
            target = xp.asarray(target, dtype=pred.dtype)
            if target.shape != pred.shape:
                raise ValueError(f"MSE: target shape {tuple(target.shape)} differs from prediction shape "
                                 f"{tuple(pred.shape)}")
            diff = pred - target
            self._cache = diff
            return (diff * diff).mean()

    def backward(self):
        if self._cache is None:
            raise RuntimeError("MSE: backward() called before forward()")
        diff = self._cache
        with device_scope(diff):
            return diff * diff.dtype.type(2.0 / diff.size)
