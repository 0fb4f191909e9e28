"""Softmax (probabilities along one axis) and Reshape (a new shape for each sample): the two layers an
imported ONNX graph may end with or need between its ops (gpucnn/io/onnx_import.py)."""
import math

from ...backend import device_scope
from ...ops.softmax import softmax_backward, softmax_forward
from .activation import check_float
from .base import Layer

__all__ = ["Softmax", "Reshape"]


class Softmax(Layer):
    """exp(x) / sum(exp(x)) along ``axis`` (1: the features of (N, F), the channels of (N, C, H, W)).

    Train on logits with SoftmaxCrossEntropy, which includes the softmax; this layer is for models that
    output probabilities (as ONNX files often do).

    Example:
        >>> Softmax().forward(numpy.zeros((2, 4), numpy.float32))   # every row 0.25
    """

    def __init__(self, axis=1, name=None):
        super().__init__(name)
        if not isinstance(axis, int) or isinstance(axis, bool) or axis == 0:
            raise ValueError(f"Softmax: axis must be a non-zero int (axis 0 is the batch), got {axis!r}")
        self.axis = axis
        self._cache = None

    def forward(self, x):
        check_float(x, self.name)
        axis = self.axis + x.ndim if self.axis < 0 else self.axis
        if not 0 < axis < x.ndim:
            raise ValueError(f"{self.name}: axis {self.axis} is out of range for an input of shape {tuple(x.shape)}")
        with device_scope(x):
            y = softmax_forward(x, axis)
        self._cache = (y, axis)
        return y

    def backward(self, grad_out, need_input_grad=True):
        y, axis = self._saved()
        self._check_grad(grad_out, y.shape, self.name)
        with device_scope(grad_out):
            return softmax_backward(grad_out, y, axis)

    def extra_repr(self):
        return f"axis={self.axis}"


class Reshape(Layer):
    """(N, ...) -> (N, *shape): each sample's values in a new shape (row-major), the batch untouched.

    Args:
        shape: one sample's new shape, as Keras's Reshape(target_shape); it must hold as many values.

    Example:
        >>> Reshape((16, 1, 1)).forward(numpy.zeros((8, 16), numpy.float32)).shape
        (8, 16, 1, 1)
    """

    def __init__(self, shape, name=None):
        super().__init__(name)
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape):
            raise ValueError(f"Reshape: shape must be positive ints (one sample's shape), got {shape!r}")
        self.shape = shape
        self._cache = None

    def forward(self, x):
        check_float(x, self.name)
        if math.prod(x.shape[1:]) != math.prod(self.shape):
            raise ValueError(f"{self.name}: cannot reshape samples of shape {tuple(x.shape[1:])} "
                             f"({math.prod(x.shape[1:])} values) to {self.shape} ({math.prod(self.shape)} values)")
        self._cache = x.shape
        return x.reshape((x.shape[0],) + self.shape)

    def backward(self, grad_out, need_input_grad=True):
        shape = self._saved()
        self._check_grad(grad_out, (shape[0],) + self.shape, self.name)
        return grad_out.reshape(shape)

    def extra_repr(self):
        return f"shape={self.shape}"
