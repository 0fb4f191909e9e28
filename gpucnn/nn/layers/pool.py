"""MaxPool2D and AvgPool2D around gpucnn.ops.pool."""
from ...ops.geometry import SameWindow2D, check_input, pool_window
from ...ops.pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
from .base import Layer

__all__ = ["MaxPool2D", "AvgPool2D"]


def padding_repr(window, padding):
    """The padding as the user gave it for a string, else (h, w) when symmetric, else ((top, bottom), (left, right))."""
    if isinstance(padding, str) or isinstance(window, SameWindow2D):
        return repr(padding)
    if not window.asymmetric:
        return f"({window.pt}, {window.pl})"
    return f"(({window.pt}, {window.pb}), ({window.pl}, {window.pr}))"


class _Pool2D(Layer):
    _forward_op = None
    _backward_op = None

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, name=None):
        super().__init__(name)
        self.window = pool_window(kernel_size, stride, padding, self.name, dilation, ceil_mode)
        self.padding = padding
        self._cache = None

    @property
    def ceil_mode(self):
        return self.window.ceil_mode

    def _forward(self, x):
        return type(self)._forward_op(x, self.window)

    def forward(self, x):
        check_input(x, self.name, 4)
        y, saved = self._forward(x)
        self._cache = (saved, y.shape)
        return y

    def backward(self, grad_out, need_input_grad=True):
        saved, y_shape = self._saved()
        self._check_grad(grad_out, y_shape, self.name)
        return type(self)._backward_op(grad_out, saved)

    def extra_repr(self):
        w = self.window
        return (f"kernel_size=({w.kh}, {w.kw}), stride=({w.sy}, {w.sx}), padding={padding_repr(w, self.padding)}"
                + (f", dilation=({w.dy}, {w.dx})" if w.dilated else "")
                + (", ceil_mode=True" if w.ceil_mode else ""))


class MaxPool2D(_Pool2D):
    """Max over each (kh, kw) window; the gradient flows back only to each window's maximum.

    Args:
        kernel_size: int or (kh, kw).
        stride: int or (sy, sx); defaults to kernel_size (windows may overlap when smaller).
        padding: int, (ph, pw), ((top, bottom), (left, right)), 'valid' or 'same' (TensorFlow's split,
            at any stride: the extra row/column at the bottom/right); explicit padding at most half the
            kernel, as in PyTorch. Padding never wins (it is -inf).
        dilation: int or (dy, dx): the spacing of the window's taps.
        ceil_mode: round the output size up (PyTorch's rule: the last window must start inside the
            input or its leading padding).

    Example:
        >>> MaxPool2D(2).forward(numpy.zeros((8, 32, 28, 28), numpy.float32)).shape
        (8, 32, 14, 14)
        >>> MaxPool2D(3, stride=2, ceil_mode=True).forward(numpy.zeros((1, 1, 6, 6))).shape
        (1, 1, 3, 3)
    """
    _forward_op = staticmethod(max_pool2d_forward)
    _backward_op = staticmethod(max_pool2d_backward)

    @property
    def dilation(self):
        return self.window.dy, self.window.dx


class AvgPool2D(_Pool2D):
    """Mean over each (kh, kw) window (PyTorch's AvgPool2d).

    Args:
        kernel_size, stride, padding, ceil_mode: as MaxPool2D's (no dilation, as in PyTorch).
        count_include_pad: divide by the window's taps inside the padded input (True, PyTorch's
            default; a ceil-mode overhang is not counted) or by its real input elements only (False,
            ONNX's and Keras's default).
    """
    _forward_op = staticmethod(avg_pool2d_forward)
    _backward_op = staticmethod(avg_pool2d_backward)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, name=None):
        if not isinstance(count_include_pad, bool):
            raise TypeError(f"AvgPool2D: count_include_pad must be True or False, got {count_include_pad!r}")
        super().__init__(kernel_size, stride, padding, 1, ceil_mode, name)
        self.count_include_pad = count_include_pad

    def _forward(self, x):
        return avg_pool2d_forward(x, self.window, self.count_include_pad)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")
