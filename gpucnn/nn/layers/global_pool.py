"""GlobalAvgPool2D, GlobalMaxPool2D and AdaptiveAvgPool2D around gpucnn.ops.global_pool."""
from ...ops.geometry import check_input
from ...ops.global_pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, global_avg_pool2d,
                                global_avg_pool2d_backward, global_max_pool2d, global_max_pool2d_backward)
from .base import Layer

__all__ = ["GlobalAvgPool2D", "GlobalMaxPool2D", "AdaptiveAvgPool2D"]


class GlobalAvgPool2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each feature map.

    Keras's GlobalAveragePooling2D; PyTorch's AdaptiveAvgPool2d(1) followed by Flatten. A Flatten after it (as
    files of earlier versions have, when it returned (N, C, 1, 1)) changes nothing.

    Example:
        >>> GlobalAvgPool2D().forward(numpy.ones((8, 64, 7, 7), numpy.float32)).shape
        (8, 64)
    """

    def forward(self, x):
        check_input(x, self.name, 4)
        self._cache = x.shape
        return global_avg_pool2d(x)

    def backward(self, grad_out, need_input_grad=True):
        shape = self._saved()
        self._check_grad(grad_out, shape[:2], self.name)
        return global_avg_pool2d_backward(grad_out, shape)


class GlobalMaxPool2D(Layer):
    """(N, C, H, W) -> (N, C): the maximum of each feature map; its gradient goes to the element that won.

    Keras's GlobalMaxPooling2D; PyTorch's AdaptiveMaxPool2d(1) followed by Flatten, ties and NaN included
    (the first maximum wins; in a map holding NaN, the output is NaN and the last NaN wins).

    Example:
        >>> GlobalMaxPool2D().forward(numpy.ones((8, 64, 7, 7), numpy.float32)).shape
        (8, 64)
    """

    def forward(self, x):
        check_input(x, self.name, 4)
        y, argmax = global_max_pool2d(x)
        self._cache = (argmax, x.shape)
        return y

    def backward(self, grad_out, need_input_grad=True):
        argmax, shape = self._saved()
        self._check_grad(grad_out, shape[:2], self.name)
        return global_max_pool2d_backward(grad_out, argmax, shape)


def _output_size(output_size):
    """(out_h, out_w) from an int or a pair whose entries are ints or None (None: keep the input's size)."""
    def valid(v, none_ok):
        return (v is None and none_ok) or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
    if valid(output_size, False):
        return (output_size, output_size)
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2 and all(valid(v, True) for v in output_size):
        return tuple(output_size)
    raise ValueError(f"AdaptiveAvgPool2D: output_size must be a positive int or a pair (h, w) of positive ints "
                     f"or None (None keeps that size), got {output_size!r}")


class AdaptiveAvgPool2D(Layer):
    """(N, C, H, W) -> (N, C, out_h, out_w): the mean of each of out_h x out_w bins, PyTorch's AdaptiveAvgPool2d.

    Along an axis of n elements cut into o bins, bin i covers [floor(i*n/o), ceil((i+1)*n/o)): the bins
    cover the axis, neighbours may share an element, and o may exceed n.

    Args:
        output_size: int (a square output) or (out_h, out_w); None in the pair keeps the input's size there.

    Example:
        >>> AdaptiveAvgPool2D((2, None)).forward(numpy.ones((8, 64, 7, 5), numpy.float32)).shape
        (8, 64, 2, 5)
    """

    def __init__(self, output_size, name=None):
        super().__init__(name)
        self.output_size = _output_size(output_size)

    def resolved_size(self, input_size):
        """(out_h, out_w) for inputs of spatial size ``input_size`` (H, W): None replaced by the input's size."""
        return tuple(int(s) if o is None else o for o, s in zip(self.output_size, input_size))

    def forward(self, x):
        check_input(x, self.name, 4)
        self._cache = x.shape
        return adaptive_avg_pool2d(x, self.resolved_size(x.shape[2:]))

    def backward(self, grad_out, need_input_grad=True):
        shape = self._saved()
        self._check_grad(grad_out, shape[:2] + self.resolved_size(shape[2:]), self.name)
        return adaptive_avg_pool2d_backward(grad_out, shape)

    def extra_repr(self):
        return f"output_size={self.output_size}"
