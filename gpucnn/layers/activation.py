"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, Dropout."""
from ..backend import get_array_module
from ..config import make_rng
from ..ops import activation as act
from .base import Layer

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Dropout"]


def _check_float(x, layer):
    if not hasattr(x, "dtype") or x.dtype.kind != "f":
        raise TypeError(f"{layer}: expected a floating-point array, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{layer}: got an empty batch (shape {tuple(x.shape)})")


class ReLU(Layer):
    """max(x, 0)."""

    def forward(self, x):
        _check_float(x, "ReLU")
        self._cache = x
        return act.relu(x)

    def backward(self, grad_out):
        return act.relu_backward(grad_out, self._saved())


class LeakyReLU(Layer):
    """x for x > 0, else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        _check_float(x, "LeakyReLU")
        self._cache = x
        return act.leaky_relu(x, self.negative_slope)

    def backward(self, grad_out):
        return act.leaky_relu_backward(grad_out, self._saved(), self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Layer):
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        _check_float(x, "Sigmoid")
        y = act.sigmoid(x)
        self._cache = y
        return y

    def backward(self, grad_out):
        return act.sigmoid_backward(grad_out, self._saved())


class Tanh(Layer):
    """tanh(x)."""

    def forward(self, x):
        _check_float(x, "Tanh")
        y = act.tanh(x)
        self._cache = y
        return y

    def backward(self, grad_out):
        return act.tanh_backward(grad_out, self._saved())


class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability p and scale the rest by 1/(1-p).

    In eval mode it is the identity. Args: p in [0, 1); rng: numpy Generator or int seed.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = make_rng(rng)
        self._device_rng = None

    def _uniform(self, xp, shape, dtype):
        if xp.__name__ == "numpy":
            return self.rng.random(shape, dtype=dtype)
        # CuPy draws on the device, seeded from our host generator so runs repeat.
        if self._device_rng is None:
            self._device_rng = xp.random.RandomState(int(self.rng.integers(2 ** 62)))
        return self._device_rng.random_sample(shape, dtype=dtype)

    def forward(self, x):
        _check_float(x, "Dropout")
        if not self.training or self.p == 0.0:
            self._cache = None
            return x
        xp = get_array_module(x)
        keep = self._uniform(xp, x.shape, x.dtype) >= self.p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._cache = mask
        return x * mask

    def backward(self, grad_out):
        if self._cache is None:
            return grad_out
        return grad_out * self._cache

    def extra_repr(self):
        return f"p={self.p}"
