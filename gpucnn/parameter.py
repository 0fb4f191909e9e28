"""A trainable array and its gradient."""
from .backend import device_scope, get_array_module, to_device

__all__ = ["Parameter"]


class Parameter:
    """A trainable array ``data`` with a gradient ``grad`` of the same shape, dtype and device.

    Backward passes add into ``grad``; ``zero_grad()`` clears it. Clearing costs nothing at
    once: the gradient is only marked cleared, the next backward *writes* its gradient into
    the buffer instead of adding (no zero fill, no addition), and a second backward adds as
    usual. Reading ``grad`` while it is marked cleared gives zeros (the buffer is zeroed then),
    so the values a user sees are those of an eager zero fill.

    Example:
        >>> p = Parameter(numpy.ones((2, 3), dtype=numpy.float32))
        >>> p.grad.shape
        (2, 3)
    """

    def __init__(self, data, name=None):
        xp = get_array_module(data)
        self.data = data
        with device_scope(data):
            self._grad = xp.zeros_like(data)
        self._grad_cleared = False
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def grad(self):
        """dL/d(data): zeros after ``zero_grad()`` until a backward pass writes it."""
        if self._grad_cleared:
            with device_scope(self._grad):
                self._grad.fill(0)
            self._grad_cleared = False
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = value
        self._grad_cleared = False

    def zero_grad(self):
        """Mark the gradient cleared (see the class docstring); launches nothing."""
        self._grad_cleared = True

    def grad_out(self):
        """The gradient buffer when the next gradient may be written straight into it (it is marked
        cleared and C-contiguous), else None. An op that gets it writes every element and returns it;
        ``accumulate_grad`` of that very array then just ends the cleared state."""
        return self._grad if self._grad_cleared and self._grad.flags.c_contiguous else None

    def accumulate_grad(self, value):
        """Add ``value`` into ``grad``, or write it there when the gradient is marked cleared."""
        if value is self._grad:  # written in place by an op that got grad_out()
            self._grad_cleared = False
            return
        with device_scope(self._grad):
            if self._grad_cleared:
                self._grad[...] = value
                self._grad_cleared = False
            else:
                self._grad += value

    def rebind(self, data, grad):
        """Point ``data`` and ``grad`` at other arrays holding the same values (views of an optimizer's
        flat buffers), keeping whether the gradient is marked cleared."""
        self.data = data
        self._grad = grad

    def to(self, device):
        """Move data and gradient to ``device`` (the cleared mark moves along, nothing is filled)."""
        self.data = to_device(self.data, device)
        self._grad = to_device(self._grad, device)
        return self

    def __repr__(self):
        return f"Parameter(name={self.name!r}, shape={tuple(self.data.shape)}, dtype={self.data.dtype})"
