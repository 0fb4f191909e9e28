"""Dense (fully connected) layer and Flatten, which turns feature maps into vectors for it."""
import math

import numpy

from ...config import make_rng
from ...ops.geometry import check_input
from ...ops.linear import linear_backward, linear_forward
from ...parameter import Parameter
from .base import Layer
from .conv import check_positive_int

__all__ = ["Dense", "Flatten"]


class Dense(Layer):
    """y = x @ weight.T + bias, weight of shape (out_features, in_features).

    Args:
        in_features, out_features: widths. bias: learn a bias. dtype: float32 or float64.
        rng: numpy Generator or int seed for the initial weights (He uniform).

    Example:
        >>> Dense(3136, 128).forward(numpy.zeros((8, 3136), numpy.float32)).shape
        (8, 128)
    """

    def __init__(self, in_features, out_features, bias=True, dtype=numpy.float32, rng=None, name=None):
        super().__init__(name)
        self.in_features = check_positive_int(in_features, "in_features", "Dense")
        self.out_features = check_positive_int(out_features, "out_features", "Dense")
        bound = math.sqrt(6.0 / self.in_features)
        rng = make_rng(rng)
        self.weight = Parameter(rng.uniform(-bound, bound, (self.out_features, self.in_features)).astype(dtype),
                                "weight")
        self.bias = Parameter(numpy.zeros(self.out_features, dtype=dtype), "bias") if bias else None
        self._cache = None

    def forward(self, x):
        check_input(x, "Dense", 2, self.in_features, what="input features")
        x = self._match_input(x)
        bias = self.bias.data if self.bias is not None else None
        y = linear_forward(x, self.weight.data, bias)
        self._cache = (x, y.shape)
        return y

    def backward(self, grad_out, need_input_grad=True):
        x, y_shape = self._saved()
        self._check_grad(grad_out, y_shape, "Dense")
        w_out, b_out = self._grad_outs()
        grad_x, grad_w, grad_b = linear_backward(grad_out.astype(self.weight.dtype, copy=False), x,
                                                 self.weight.data, need_bias=self.bias is not None,
                                                 need_input_grad=need_input_grad,
                                                 grad_weight_out=w_out, grad_bias_out=b_out)
        self._accumulate(grad_w, grad_b)
        return grad_x

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), row-major like PyTorch's nn.Flatten."""

    def __init__(self, name=None):
        super().__init__(name)
        self._cache = None

    def forward(self, x):
        if not hasattr(x, "dtype") or x.dtype.kind != "f":
            raise TypeError(f"Flatten: expected a floating-point array, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim < 2:
            raise ValueError(f"Flatten: expected an input of rank >= 2 (N, ...), got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"Flatten: got an empty batch (shape {tuple(x.shape)})")
        self._cache = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: a zero-size axis makes that ambiguous

    def backward(self, grad_out, need_input_grad=True):
        shape = self._saved()
        self._check_grad(grad_out, (shape[0], math.prod(shape[1:])), "Flatten")
        return grad_out.reshape(shape)
