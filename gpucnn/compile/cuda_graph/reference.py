"""NumPy twins of the fused kernels, composed from the readable ops (the reference the fused kernels are held to).

Each function takes the arguments of its namesake in ``gpucnn.compile.cuda_graph.launch`` and returns
what the fused kernel must return, computed with ``gpucnn.ops.conv``, ``gpucnn.ops.linear``,
``gpucnn.ops.pool`` and ``gpucnn.ops.activation`` exactly as the eager layers compute it.
"""
import numpy

from ...ops import activation, conv, linear, pool

__all__ = ["conv2d_forward", "conv2d_data_grad", "conv2d_weight_grad", "linear_forward", "linear_data_grad",
           "linear_weight_grad", "max_pool2d_forward", "max_pool2d_backward"]


def conv2d_forward(x, weight, bias, window, relu=False):
    """relu(conv2d(x, weight) + bias)."""
    y, _ = conv.conv2d_forward(x, weight, bias, window)
    return activation.relu(y) if relu else y


def _conv_saved(x_shape, weight, window, x=None):
    """conv2d_forward's ``saved`` for the backward ops (x itself only matters to dW)."""
    x = numpy.zeros(x_shape, dtype=weight.dtype) if x is None else x
    return conv.conv2d_forward(x, weight, None, window)[1]


def conv2d_data_grad(grad_y, weight, x_shape, window, mask=None):
    """conv2d's dx, then relu_backward against ``mask`` (the ReLU output below) when given."""
    grad_x, _, _ = conv.conv2d_backward(grad_y, _conv_saved(x_shape, weight, window), need_bias=False)
    return grad_x if mask is None else activation.relu_backward(grad_x, mask)


def conv2d_weight_grad(grad_y, x, weight_shape, window, need_bias=True):
    """(dW, db or None) of conv2d."""
    weight = numpy.zeros(weight_shape, dtype=x.dtype)
    _, grad_w, grad_b = conv.conv2d_backward(grad_y, _conv_saved(x.shape, weight, window, x), need_bias=need_bias,
                                             need_input_grad=False)
    return grad_w, grad_b


def linear_forward(x, weight, bias, relu=False):
    y = linear.linear_forward(x, weight, bias)
    return activation.relu(y) if relu else y


def linear_data_grad(grad_y, weight, y=None):
    grad_z = grad_y if y is None else activation.relu_backward(grad_y, y)
    x = numpy.zeros((grad_y.shape[0], weight.shape[1]), dtype=weight.dtype)  # linear_backward's dW needs one
    return linear.linear_backward(grad_z, x, weight, need_bias=False)[0]


def linear_weight_grad(grad_y, x, y=None, need_bias=True):
    grad_z = grad_y if y is None else activation.relu_backward(grad_y, y)
    _, grad_w, grad_b = linear.linear_backward(grad_z, x, None, need_bias=need_bias, need_input_grad=False)
    return grad_w, grad_b


def max_pool2d_forward(x, window):
    """(y, argmax): the readable op's argmax is already uint8 for windows of <= 255 elements."""
    y, (argmax, _, _) = pool.max_pool2d_forward(x, window)
    return y, argmax


def max_pool2d_backward(grad_y, argmax, x, window, mask=True):
    grad_x = pool.max_pool2d_backward(grad_y, (argmax, x.shape, window))
    return activation.relu_backward(grad_x, x) if mask else grad_x
