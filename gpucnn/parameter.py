"""A trainable array and its gradient."""
from .backend import device_scope, get_array_module

__all__ = ["Parameter"]


class Parameter:
    """A trainable array ``data`` with a gradient ``grad`` of the same shape, dtype and device.

    Backward passes add into ``grad``; ``zero_grad()`` clears it.

    Example:
        >>> p = Parameter(numpy.ones((2, 3), dtype=numpy.float32))
        >>> p.grad.shape
        (2, 3)
    """

    def __init__(self, data, name=None):
        xp = get_array_module(data)
        self.data = data
        with device_scope(data):
            self.grad = xp.zeros_like(data)
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def zero_grad(self):
        with device_scope(self.grad):
            self.grad.fill(0)

    def __repr__(self):
        return f"Parameter(name={self.name!r}, shape={tuple(self.data.shape)}, dtype={self.data.dtype})"
