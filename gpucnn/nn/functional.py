"""Stateless functions on model outputs, NumPy or CuPy alike."""
from ..backend import device_scope, get_array_module

__all__ = ["softmax"]


def softmax(logits, axis=-1):
    """exp(z) / sum(exp(z)) along ``axis``, after subtracting the maximum so that huge logits stay finite.

    Example:
        >>> probabilities = gpucnn.functional.softmax(model.predict(x))   # rows sum to 1
    """
    if not hasattr(logits, "dtype") or logits.dtype.kind != "f":
        raise TypeError(f"softmax: expected a floating-point array, got {getattr(logits, 'dtype', type(logits))}")
    xp = get_array_module(logits)
    with device_scope(logits):
        shifted = xp.exp(logits - logits.max(axis=axis, keepdims=True))
        return shifted / shifted.sum(axis=axis, keepdims=True)
