"""Stateless functions on model outputs, NumPy or CuPy alike."""
import numbers

from ..backend import device_scope, get_array_module

__all__ = ["softmax"]


def softmax(logits, axis=-1):
    """exp(z) / sum(exp(z)) along ``axis``, after subtracting the maximum so that huge logits stay finite.

    An array with no elements (a zero-size axis) gives an empty array of its shape, as PyTorch's softmax.

    Example:
        >>> probabilities = gpucnn.functional.softmax(model.predict(x))   # rows sum to 1
    """
    if not hasattr(logits, "dtype") or logits.dtype.kind != "f":
        raise TypeError(f"softmax: expected a floating-point array, got {getattr(logits, 'dtype', type(logits))}")
    axes = axis if isinstance(axis, tuple) else (axis,)
    ndim = logits.ndim
    if not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) and -ndim <= a < ndim for a in axes):
        raise ValueError(f"softmax: axis must be an int (or a tuple of ints) in [-{ndim}, {ndim}) for an array of "
                         f"shape {tuple(logits.shape)}, got {axis!r}")
    xp = get_array_module(logits)
    with device_scope(logits):
        if logits.size == 0:  # nothing to normalise: the empty array, as PyTorch (max() of no values would fail)
            return logits.copy()
        shifted = xp.exp(logits - logits.max(axis=axis, keepdims=True))
        return shifted / shifted.sum(axis=axis, keepdims=True)
