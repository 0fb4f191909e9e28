"""Conv2D: a thin holder of filters and bias around gpucnn.ops.conv."""
import math

import numpy

from ...config import make_rng
from ...ops.conv import conv2d_backward, conv2d_forward
from ...ops.geometry import check_groups, check_input, conv_window
from ...parameter import Parameter
from .base import Layer

__all__ = ["Conv2D"]


def check_positive_int(value, what, layer):
    if not isinstance(value, (int, numpy.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {what} must be a positive int, got {value!r}")
    return int(value)


class Conv2D(Layer):
    """2-D convolution over NCHW volumes: ``out_channels`` filters of shape (in_channels / groups, kh, kw).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: int or (kh, kw).
        stride: int or (sy, sx), >= 1.
        padding: int, (ph, pw), ((top, bottom), (left, right)), 'valid' or 'same' (output size
            ceil(input / stride), at any stride: TensorFlow's split, the extra row/column at the
            bottom/right; at stride 1 also PyTorch's).
        dilation: int or (dy, dx), >= 1: the spacing of the kernel's taps (``layer.dilation``, a pair).
        groups: split the channels into this many groups, each convolved with its own filters;
            it must divide both channel counts. ``groups == in_channels`` is a depthwise convolution.
        bias: add a learned bias per output channel.
        dtype: float32 (default) or float64.
        rng: numpy Generator or int seed for the initial weights (He uniform).

    Example:
        >>> conv = Conv2D(1, 32, 3, padding='same')
        >>> conv.forward(numpy.zeros((8, 1, 28, 28), numpy.float32)).shape
        (8, 32, 28, 28)
        >>> Conv2D(32, 32, 3, padding='same', dilation=2, groups=32).weight.shape   # depthwise, dilated
        (32, 1, 3, 3)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, dtype=numpy.float32, rng=None, name=None):
        super().__init__(name)
        self.in_channels = check_positive_int(in_channels, "in_channels", "Conv2D")
        self.out_channels = check_positive_int(out_channels, "out_channels", "Conv2D")
        self.groups = check_groups(groups, self.in_channels, self.out_channels, "Conv2D")
        self.window = conv_window(kernel_size, stride, padding, "Conv2D", dilation)
        self.padding = padding
        kh, kw = self.window.kh, self.window.kw
        fan_in = self.in_channels // self.groups * kh * kw
        bound = math.sqrt(6.0 / fan_in)
        rng = make_rng(rng)
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(dtype), "weight")
        self.bias = Parameter(numpy.zeros(self.out_channels, dtype=dtype), "bias") if bias else None
        self._cache = None

    def forward(self, x):
        check_input(x, "Conv2D", 4, self.in_channels)
        x = self._match_input(x)
        bias = self.bias.data if self.bias is not None else None
        y, saved = conv2d_forward(x, self.weight.data, bias, self.window, self.groups)
        self._cache = (saved, y.shape)
        return y

    def backward(self, grad_out, need_input_grad=True):
        saved, y_shape = self._saved()
        self._check_grad(grad_out, y_shape, "Conv2D")
        w_out, b_out = self._grad_outs()
        grad_x, grad_w, grad_b = conv2d_backward(grad_out.astype(self.weight.dtype, copy=False), saved,
                                                 need_bias=self.bias is not None, need_input_grad=need_input_grad,
                                                 grad_weight_out=w_out, grad_bias_out=b_out)
        self._accumulate(grad_w, grad_b)
        return grad_x

    @property
    def dilation(self):
        """(dy, dx): the spacing of the kernel's taps (1, 1 for a plain convolution)."""
        return self.window.dy, self.window.dx

    def extra_repr(self):
        w = self.window
        # dilation and groups only when not 1, as PyTorch prints them (and as models saved before they existed read)
        extra = (f", dilation={self.dilation}" if self.dilation != (1, 1) else "") + \
            (f", groups={self.groups}" if self.groups != 1 else "")
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=({w.kh}, {w.kw}), stride=({w.sy}, {w.sx}), "
                f"padding={_as_tuples(self.padding)!r}{extra}, bias={self.bias is not None}")


def _as_tuples(value):
    """Lists (as an architecture record gives them) as tuples, so that a rebuilt layer prints as the original."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
