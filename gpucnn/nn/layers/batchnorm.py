"""BatchNorm1D (N, F) and BatchNorm2D (N, C, H, W) around gpucnn.ops.batchnorm."""
import numpy

from ...ops.batchnorm import batch_norm_backward, batch_norm_forward
from ...ops.geometry import check_input
from ...parameter import Parameter
from .base import Layer
from .conv import check_positive_int

__all__ = ["BatchNorm1D", "BatchNorm2D"]


class _BatchNorm(Layer):
    ndim = None
    buffer_names = ("running_mean", "running_var")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=numpy.float32, name=None):
        super().__init__(name)
        self.num_features = check_positive_int(num_features, "num_features", self.name)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = Parameter(numpy.ones(self.num_features, dtype=dtype), "weight")
        self.bias = Parameter(numpy.zeros(self.num_features, dtype=dtype), "bias")
        self.running_mean = numpy.zeros(self.num_features, dtype=dtype)
        self.running_var = numpy.ones(self.num_features, dtype=dtype)
        self._cache = None

    def forward(self, x):
        check_input(x, self.name, self.ndim, self.num_features,
                    what="channels" if self.ndim == 4 else "features")
        x = self._match_input(x)
        if self.training and x.size // x.shape[1] < 2:
            raise ValueError(f"{self.name}: training needs more than one value per channel to estimate a variance, "
                             f"got input shape {tuple(x.shape)}")
        y, saved = batch_norm_forward(x, self.weight.data, self.bias.data, self.running_mean, self.running_var,
                                      self.momentum, self.eps, self.training)
        self._cache = (saved, y.shape)
        return y

    def backward(self, grad_out, need_input_grad=True):
        saved, y_shape = self._saved()
        self._check_grad(grad_out, y_shape, self.name)
        grad_x, grad_gamma, grad_beta = batch_norm_backward(grad_out.astype(self.weight.dtype, copy=False), saved)
        self._accumulate(grad_gamma, grad_beta)
        return grad_x

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm2D(_BatchNorm):
    """Normalise each channel of (N, C, H, W) over N, H and W; learn a scale (weight) and shift (bias).

    Example:
        >>> BatchNorm2D(32).forward(numpy.random.rand(8, 32, 5, 5).astype(numpy.float32)).shape
        (8, 32, 5, 5)
    """
    ndim = 4


class BatchNorm1D(_BatchNorm):
    """Normalise each feature of (N, F) over the batch; learn a scale (weight) and shift (bias)."""
    ndim = 2
