"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, Dropout."""
import numbers

from ...backend import device_scope, get_array_module
from ...config import make_rng
from ...ops import activation as act
from .base import Layer, check_grad_array

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Dropout"]


def check_float(x, layer):
    if not hasattr(x, "dtype") or x.dtype.kind != "f":
        raise TypeError(f"{layer}: expected a floating-point array, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{layer}: got an empty batch (shape {tuple(x.shape)})")


class _Elementwise(Layer):
    """An activation y = f(x) whose derivative is computed from x (``uses_output`` False) or from y."""
    uses_output = False

    def _f(self, x):
        raise NotImplementedError

    def _df(self, grad_out, saved):
        raise NotImplementedError

    def forward(self, x):
        check_float(x, self.name)
        y = self._f(x)
        self._cache = y if self.uses_output else x
        return y

    def backward(self, grad_out, need_input_grad=True):
        saved = self._saved()
        self._check_grad(grad_out, saved.shape, self.name)
        return self._df(grad_out, saved)


class ReLU(_Elementwise):
    """max(x, 0)."""

    def _f(self, x):
        return act.relu(x)

    def _df(self, grad_out, x):
        return act.relu_backward(grad_out, x)


class LeakyReLU(_Elementwise):
    """x for x > 0, else negative_slope * x."""

    def __init__(self, negative_slope=0.01, name=None):
        super().__init__(name)
        self.negative_slope = float(negative_slope)

    def _f(self, x):
        return act.leaky_relu(x, self.negative_slope)

    def _df(self, grad_out, x):
        return act.leaky_relu_backward(grad_out, x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)); its derivative y (1 - y) needs only the output."""
    uses_output = True

    def _f(self, x):
        return act.sigmoid(x)

    def _df(self, grad_out, y):
        return act.sigmoid_backward(grad_out, y)


class Tanh(_Elementwise):
    """tanh(x); its derivative 1 - y**2 needs only the output."""
    uses_output = True

    def _f(self, x):
        return act.tanh(x)

    def _df(self, grad_out, y):
        return act.tanh_backward(grad_out, y)


class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability p and scale the rest by 1/(1-p).

    In eval mode it is the identity. Args: p in [0, 1] (at p = 1 training zeroes everything, and its
    gradient, as PyTorch: the scale is 0 there, not 1/0); rng: numpy Generator or int seed.

    On the GPU the mask is drawn on the input's own device, by a CuPy generator made on that
    device (one per device, so a model moved to 'cuda:1' draws there) and seeded from ``rng``
    at every call: ``rng``, which training checkpoints save, alone decides every mask, so a
    resumed run draws the masks the uninterrupted one would have drawn.
    """

    def __init__(self, p=0.5, rng=None, name=None):
        super().__init__(name)
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"Dropout: p must be a number in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = make_rng(rng)
        self._device_rngs = {}  # CUDA device id -> cupy.random.RandomState made on that device

    def _uniform(self, xp, shape, dtype):
        """Uniform [0, 1) numbers on the current device (the forward pass enters the input's device)."""
        if xp.__name__ == "numpy":
            return self.rng.random(shape, dtype=dtype)
        seed = int(self.rng.integers(2 ** 62))
        device = xp.cuda.Device().id
        generator = self._device_rngs.get(device)
        if generator is None:
            generator = self._device_rngs[device] = xp.random.RandomState(seed)
        else:
            generator.seed(seed)
        return generator.random_sample(shape, dtype=dtype)

    def forward(self, x):
        check_float(x, "Dropout")
        if not self.training or self.p == 0.0:
            self._cache = None
            return x
        xp = get_array_module(x)
        with device_scope(x):
            return self._forward_on_device(xp, x)

    def _forward_on_device(self, xp, x):
        keep = self._uniform(xp, x.shape, x.dtype) >= self.p  # never at p = 1: the numbers are below 1
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)  # PyTorch's rule at p = 1
        mask = keep.astype(x.dtype) * x.dtype.type(scale)
        self._cache = mask
        return x * mask

    def backward(self, grad_out, need_input_grad=True):
        check_grad_array(grad_out, "Dropout")
        if self._cache is None:
            return grad_out
        self._check_grad(grad_out, self._cache.shape, "Dropout")
        with device_scope(grad_out):
            return grad_out * self._cache

    def extra_repr(self):
        return f"p={self.p}"
