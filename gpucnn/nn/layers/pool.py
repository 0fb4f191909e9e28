"""MaxPool2D and AvgPool2D around gpucnn.ops.pool."""
from ...ops.geometry import check_input, pool_window
from ...ops.pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
from .base import Layer

__all__ = ["MaxPool2D", "AvgPool2D"]


class _Pool2D(Layer):
    _forward_op = None
    _backward_op = None

    def __init__(self, kernel_size, stride=None, padding=0, name=None):
        super().__init__(name)
        self.window = pool_window(kernel_size, stride, padding, self.name)
        self._cache = None

    def forward(self, x):
        check_input(x, self.name, 4)
        y, saved = type(self)._forward_op(x, self.window)
        self._cache = (saved, y.shape)
        return y

    def backward(self, grad_out, need_input_grad=True):
        saved, y_shape = self._saved()
        self._check_grad(grad_out, y_shape, self.name)
        return type(self)._backward_op(grad_out, saved)

    def extra_repr(self):
        w = self.window
        return f"kernel_size=({w.kh}, {w.kw}), stride=({w.sy}, {w.sx}), padding=({w.pt}, {w.pl})"


class MaxPool2D(_Pool2D):
    """Max over each (kh, kw) window; the gradient flows back only to each window's maximum.

    Args:
        kernel_size: int or (kh, kw). stride: defaults to kernel_size (windows may overlap
            when smaller). padding: int or (ph, pw), at most half the kernel; pads with -inf.

    Example:
        >>> MaxPool2D(2).forward(numpy.zeros((8, 32, 28, 28), numpy.float32)).shape
        (8, 32, 14, 14)
    """
    _forward_op = staticmethod(max_pool2d_forward)
    _backward_op = staticmethod(max_pool2d_backward)


class AvgPool2D(_Pool2D):
    """Mean over each (kh, kw) window, padded zeros counted (PyTorch's default).

    Same arguments as MaxPool2D.
    """
    _forward_op = staticmethod(avg_pool2d_forward)
    _backward_op = staticmethod(avg_pool2d_backward)
