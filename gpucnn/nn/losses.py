"""Losses: forward(pred, target) returns the loss, backward(grad_output=None) returns dL/dpred.

The options and their meaning are PyTorch's (``torch.nn.CrossEntropyLoss``, ``torch.nn.MSELoss``).
"""
import numbers

import numpy

from ..backend import asnumpy, device_of, device_scope, get_array_module
from ..ops.loss import REDUCTIONS, softmax_cross_entropy

__all__ = ["SoftmaxCrossEntropy", "MSE", "check_label_range", "balanced_class_weights"]


def check_label_range(labels, classes, where, ignore_index=None):
    """ValueError unless every label lies in [0, classes) or equals ``ignore_index``; one combined read-back
    for GPU labels. Probability targets (floats) have no labels to check."""
    xp = get_array_module(labels)
    if labels.dtype.kind == "f" or labels.size == 0:
        return
    with device_scope(labels):
        kept = labels if ignore_index is None else xp.where(labels == ignore_index, 0, labels)
        low, high = (int(v) for v in xp.stack([kept.min(), kept.max()]).tolist())
    if low < 0 or high >= classes:
        aside = "" if ignore_index is None else f" (or be ignore_index {ignore_index})"
        raise ValueError(f"{where}: labels must lie in [0, {classes - 1}]{aside}, got values in [{low}, {high}]")


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


def _check_reduction(reduction, loss):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{loss}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


def _upstream(grad, grad_output, reduction, loss, per_sample_shape):
    """dL/dpred for an upstream gradient: a scalar for 'mean' and 'sum', one per loss entry for 'none'."""
    if grad_output is None:
        return grad
    xp = get_array_module(grad)
    with device_scope(grad):
        g = xp.asarray(grad_output, dtype=grad.dtype)
        if reduction == "none":
            if tuple(g.shape) != per_sample_shape:
                raise ValueError(f"{loss}.backward: grad_output must have the shape {per_sample_shape} of the "
                                 f"losses of reduction='none', got shape {tuple(g.shape)}")
            return grad * g.reshape(g.shape + (1,) * (grad.ndim - g.ndim))
        if g.size != 1:
            raise ValueError(f"{loss}.backward: grad_output must be a scalar for reduction={reduction!r}, got "
                             f"shape {tuple(g.shape)}")
        return grad * g.reshape(())


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, as ``torch.nn.CrossEntropyLoss`` (every option, the same numbers).

    loss_r = logsumexp(z_r) - z_r[y_r] for integer labels, computed after subtracting each row's
    maximum so that logits of any size stay finite; gpucnn/ops/loss.py gives every formula.

    Args:
        weight: optional class weights, C non-negative numbers (a list or array): row r weighs
            weight[y_r], and the mean divides by the sum of the weights of the rows' labels.
        ignore_index: optional label value whose rows count in neither the loss nor the mean's
            denominator and get a zero gradient (it may lie outside [0, C), like PyTorch's -100).
            Integer labels only.
        label_smoothing: in [0, 1]: the target becomes (1 - label_smoothing) onehot(y) +
            label_smoothing / C (each class's term weighted by its weight, as PyTorch).
        reduction: 'mean' (default), 'sum' or 'none' (the (N,) per-sample losses).
        check_labels: labels out of [0, C) (other than ignore_index) raise ValueError. For labels on
            the GPU that check reads a value back to the host, once per call; ``False`` skips it where
            the labels are known to be good (``fit`` checks a whole data set once and skips it per
            step). Without the check a bad label still shows, on the device and without a read-back:
            its row's loss and gradient are NaN (so the loss is NaN) and ``invalid_labels`` counts it.

    Targets: integer labels (N,), or probability targets: floats of the logits' shape (N, C) (the
    mean then divides by N; ignore_index is refused with them, as PyTorch refuses it).

    Forward computes the gradient too (``gpucnn.ops.loss.softmax_cross_entropy``: one kernel on the
    GPU); ``backward()`` returns it, the same array until the next forward. ``backward(grad_output)``
    scales it by an upstream gradient: a scalar for 'mean' and 'sum', an (N,) array for 'none'
    (default: ones, so ``backward()`` after 'none' is the gradient of the sum). After forward,
    ``correct`` is the number of rows whose largest logit is the label (ignored rows never count;
    for probability targets, the target's largest entry) and ``invalid_labels`` the number of labels
    outside [0, C) that are not ignore_index, both 0-d integer arrays on the logits' device (``fit`` and
    ``evaluate`` divide the correct rows by all rows, ignored ones included).

    Example:
        >>> loss_fn = SoftmaxCrossEntropy(label_smoothing=0.1, ignore_index=-100)
        >>> loss = loss_fn.forward(logits, labels)   # logits (N, C), labels (N,) ints in [0, C) or -100
        >>> grad_logits = loss_fn.backward()
    """

    def __init__(self, weight=None, ignore_index=None, label_smoothing=0.0, reduction="mean", check_labels=True):
        self.weight = self._checked_weight(weight)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index,
                                                                                         numbers.Integral)):
            raise TypeError(f"SoftmaxCrossEntropy: ignore_index must be an integer or None, got {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
                or not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"SoftmaxCrossEntropy: label_smoothing must be a number in [0, 1], got "
                             f"{label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.reduction = _check_reduction(reduction, "SoftmaxCrossEntropy")
        self.check_labels = check_labels
        self._cache = None
        self.correct = self.invalid_labels = None
        self._fused_out = {}
        self._weights = {}  # the weight on each (device, dtype) it was used with

    @staticmethod
    def _checked_weight(weight):
        if weight is None:
            return None
        w = asnumpy(weight) if hasattr(weight, "dtype") else numpy.asarray(weight)
        if w.dtype.kind not in "iuf" or w.ndim != 1 or w.size == 0:
            raise ValueError(f"SoftmaxCrossEntropy: weight must be a 1-D sequence of C class weights, got "
                             f"{w.dtype} of shape {w.shape}")
        w = w.astype(numpy.float64)
        if not numpy.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"SoftmaxCrossEntropy: weight must be finite and non-negative, got {w.tolist()}")
        return w

    def extra_repr(self):
        """The options that differ from the defaults, as PyTorch's repr lists them."""
        options = [f"weight={self.weight.tolist()}" if self.weight is not None else "",
                   f"ignore_index={self.ignore_index}" if self.ignore_index is not None else "",
                   f"label_smoothing={self.label_smoothing:g}" if self.label_smoothing else "",
                   f"reduction={self.reduction!r}" if self.reduction != "mean" else ""]
        return ", ".join(o for o in options if o)

    def __repr__(self):
        return f"SoftmaxCrossEntropy({self.extra_repr()})"

    def _weight_for(self, logits):
        """The class weights on the logits' device in their dtype (kept: a captured launch allocates nothing)."""
        if self.weight is None:
            return None
        classes = logits.shape[1]
        if self.weight.size != classes:
            raise ValueError(f"SoftmaxCrossEntropy: weight has {self.weight.size} entries but the logits have "
                             f"{classes} classes")
        key = (device_of(logits), str(logits.dtype))
        w = self._weights.get(key)
        if w is None:
            xp = get_array_module(logits)
            with device_scope(logits):
                w = self._weights[key] = xp.asarray(self.weight.astype(logits.dtype))
        return w

    def _options(self, logits):
        return dict(weight=self._weight_for(logits), ignore_index=self.ignore_index,
                    label_smoothing=self.label_smoothing, reduction=self.reduction)

    def fused(self, logits, labels):
        """(loss, dL/dlogits, correct count) in one launch, for the graph-captured step (gpucnn.compile_step).

        Capture-safe: no label check and no host read (a label outside [0, classes) makes the loss NaN),
        and, for int64 labels (or probability targets of the logits' dtype) and C-contiguous logits, no
        allocation after the first call of a shape: the results are views of buffers kept per (shape,
        dtype, device) and overwritten by the next call of that shape. The loss and the count are 0-d
        arrays on the logits' device. Every option but reduction='none' (compile_step refuses that one).

        Example:
            >>> loss, grad_logits, correct = loss_fn.fused(logits, labels)   # labels: int64, same device
        """
        if self.reduction == "none":
            raise ValueError("SoftmaxCrossEntropy.fused: reduction='none' gives no scalar loss to train on")
        xp = get_array_module(logits)
        key = (tuple(logits.shape), str(logits.dtype), device_of(logits))
        options = self._options(logits)
        with device_scope(logits):
            out = self._fused_out.get(key)
            if out is None:
                out = (xp.empty((1,), dtype=logits.dtype), xp.empty(logits.shape, dtype=logits.dtype),
                       xp.empty((2,), dtype=numpy.int32))
                self._fused_out[key] = out
            loss, grad, counts = softmax_cross_entropy(logits, labels, out=out, **options)
        return loss[0], grad, counts[0]

    def forward(self, logits, labels):
        _check_pred(logits, "SoftmaxCrossEntropy", ndim=2)
        n, classes = logits.shape
        if not hasattr(labels, "dtype"):
            labels = numpy.asarray(labels)
        xp = get_array_module(logits)
        if labels.dtype.kind == "f":
            if tuple(labels.shape) != tuple(logits.shape):
                raise ValueError(f"SoftmaxCrossEntropy: float targets are probabilities of the logits' shape "
                                 f"{tuple(logits.shape)}, got shape {tuple(labels.shape)} (class indices must be "
                                 f"integers)")
            if self.ignore_index is not None:
                raise ValueError("SoftmaxCrossEntropy: ignore_index is for integer labels, not probability "
                                 "targets (PyTorch refuses it there too)")
            with device_scope(logits):
                labels = xp.asarray(labels, dtype=logits.dtype)
        elif labels.dtype.kind in "iu":
            if labels.shape != (n,):
                raise ValueError(f"SoftmaxCrossEntropy: expected {n} labels of shape ({n},) for logits of shape "
                                 f"{tuple(logits.shape)}, got shape {tuple(labels.shape)}")
            if self.check_labels or get_array_module(labels) is numpy:
                check_label_range(labels, classes, "SoftmaxCrossEntropy", self.ignore_index)
            with device_scope(logits):
                labels = xp.asarray(labels)
        else:
            raise TypeError(f"SoftmaxCrossEntropy: labels must be integers (class indices) or float probabilities "
                            f"of shape (N, C), got dtype {labels.dtype}")
        options = self._options(logits)
        with device_scope(logits):
            loss, grad, counts = softmax_cross_entropy(logits, labels, **options)
        self._cache = grad
        self.correct, self.invalid_labels = counts[0], counts[1]
        return loss if self.reduction == "none" else loss[0]

    def backward(self, grad_output=None):
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward() called before forward()")
        return _upstream(self._cache, grad_output, self.reduction, "SoftmaxCrossEntropy", self._cache.shape[:1])


class MSE:
    """Mean squared error, as ``torch.nn.MSELoss``: mean((pred - target)**2); gradient 2 (pred - target) / size.

    Args:
        reduction: 'mean' (default), 'sum' (sum((pred - target)**2), gradient 2 (pred - target)) or
            'none' (the elementwise (pred - target)**2, of the predictions' shape).

    ``backward(grad_output)`` scales the gradient by an upstream gradient: a scalar for 'mean' and
    'sum', an array of the predictions' shape for 'none' (default: ones).

    Example:
        >>> loss = MSE(reduction="sum").forward(pred, target)
    """

    def __init__(self, reduction="mean"):
        self.reduction = _check_reduction(reduction, "MSE")
        self._cache = None

    def __repr__(self):
        return "MSE()" if self.reduction == "mean" else f"MSE(reduction={self.reduction!r})"

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
            if self.reduction == "none":
                return diff * diff
            if self.reduction == "sum":
                return (diff * diff).sum()
            return (diff * diff).mean()

    def backward(self, grad_output=None):
        if self._cache is None:
            raise RuntimeError("MSE: backward() called before forward()")
        diff = self._cache
        scale = 2.0 / diff.size if self.reduction == "mean" else 2.0
        with device_scope(diff):
            grad = diff * diff.dtype.type(scale)
        return _upstream(grad, grad_output, self.reduction, "MSE", tuple(diff.shape))


def balanced_class_weights(labels, classes):
    """scikit-learn's class_weight='balanced': n_samples / (n_classes * count_c) for each of the ``classes`` classes
    c, from integer labels; n_classes counts the classes present (scikit-learn's ``numpy.unique(labels)``), and a
    class absent from ``labels`` gets weight 0 (it has no samples to weigh).

    Example:
        >>> balanced_class_weights(numpy.array([0, 0, 0, 1]), 2)
        array([0.66666667, 2.        ])
    """
    labels = asnumpy(labels) if hasattr(labels, "dtype") else numpy.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"balanced_class_weights: labels must be a non-empty 1-D integer array, got "
                         f"{labels.dtype} of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"balanced_class_weights: labels must lie in [0, {classes - 1}], got values in "
                         f"[{labels.min()}, {labels.max()}]")
    counts = numpy.bincount(labels, minlength=classes).astype(numpy.float64)
    present = numpy.count_nonzero(counts)
    return numpy.where(counts > 0, labels.size / (present * numpy.maximum(counts, 1)), 0.0)

