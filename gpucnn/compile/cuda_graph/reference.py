"""NumPy twins of the fused kernels, composed from the readable ops (the reference the fused kernels are held to).

Each function takes the arguments of its namesake in ``gpucnn.compile.cuda_graph.launch`` and returns
what the fused kernel must return, computed with ``gpucnn.ops.conv``, ``gpucnn.ops.linear``,
``gpucnn.ops.pool`` and ``gpucnn.ops.activation`` exactly as the eager layers compute it.
"""
import numpy

from ...ops import activation, conv, linear, pool

__all__ = ["conv2d_forward", "conv2d_data_grad", "conv2d_weight_grad", "linear_forward", "linear_data_grad",
           "linear_weight_grad", "conv2d_pool_forward", "conv2d_weight_grad_pooled",
           "max_pool2d_forward", "max_pool2d_backward", "POOL_NO_GRAD", "SPLIT_K_STEP",
           "split_k_bounds", "split_k_sum", "conv2d_weight_grad_partials", "linear_weight_grad_partials",
           "linear_forward_partials"]

# Split-K of the weight gradients (gpucnn/kernels/fused_splitk.cuh): K cut into S slices of whole k-steps of
# the GEMM core (GPUCNN_GEMM_TK), each slice summed on its own in ascending k, then the S partial sums added
# in ascending s. ``slices`` below is that S; 1 is the single-pass kernels (the readable ops as they are).
SPLIT_K_STEP = 16
# The argmax code of a max-pool window whose gradient the ReLU mask drops: GPUCNN_POOL_NO_GRAD of
# gpucnn/kernels/fused_pool_body.cuh (tests/kernels/test_compile.py); above every index of a <= 255-element window.
POOL_NO_GRAD = 255


def split_k_bounds(k, slices):
    """[(begin, end)] of the ``slices`` k-ranges of ``range(k)``: its ceil(k / SPLIT_K_STEP) k-steps dealt out
    in order, steps // slices each and one more to the first steps % slices (the kernels' split_k_block)."""
    steps = -(-k // SPLIT_K_STEP)
    q, r = divmod(steps, slices)
    bounds = []
    for s in range(slices):
        first = s * q + min(s, r)
        last = first + q + (1 if s < r else 0)
        bounds.append((min(first * SPLIT_K_STEP, k), min(last * SPLIT_K_STEP, k)))
    return bounds


def split_k_sum(partials):
    """The second pass: ``((partials[0] + partials[1]) + partials[2]) + ...``, in ascending s, in their dtype."""
    total = partials[0].copy()
    for part in partials[1:]:
        total += part
    return total


def _with_bias_column(grad_w, grad_b):
    """[dW | db]: the bias gradient as the last column of the product, as the kernels store it."""
    return grad_w if grad_b is None else numpy.concatenate([grad_w, grad_b[:, None]], axis=1)


def _weight_grad_from_sum(total, weight_shape, need_bias):
    kw = int(numpy.prod(weight_shape[1:]))
    grad_w = numpy.ascontiguousarray(total[:, :kw]).reshape(weight_shape)
    return grad_w, (numpy.ascontiguousarray(total[:, kw]) if need_bias else None)


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


def conv2d_weight_grad(grad_y, x, weight_shape, window, need_bias=True, slices=1):
    """(dW, db or None) of conv2d; with ``slices`` > 1 summed as the split-K kernels sum it (split_k_sum of
    conv2d_weight_grad_partials)."""
    if slices > 1:
        total = split_k_sum(conv2d_weight_grad_partials(grad_y, x, weight_shape, window, need_bias, slices))
        return _weight_grad_from_sum(total, weight_shape, need_bias)
    weight = numpy.zeros(weight_shape, dtype=x.dtype)
    _, grad_w, grad_b = conv.conv2d_backward(grad_y, _conv_saved(x.shape, weight, window, x), need_bias=need_bias,
                                             need_input_grad=False)
    return grad_w, grad_b


def conv2d_weight_grad_partials(grad_y, x, weight_shape, window, need_bias, slices):
    """(S, O, C*kh*kw [+1]): slice s of the split-K weight gradient, [dW | db] over the GEMM's k (the columns
    (n, oy, ox) of im2col) in split_k_bounds(N*oh*ow, S)[s]: linear_backward of that slice of dY and cols."""
    n, o, oh, ow = grad_y.shape
    cols = conv.im2col(x, window, oh, ow)                    # (C*kh*kw, N*oh*ow)
    gy = grad_y.transpose(1, 0, 2, 3).reshape(o, n * oh * ow)  # (O, N*oh*ow), columns ordered as cols'
    parts = []
    for begin, end in split_k_bounds(n * oh * ow, slices):
        _, grad_w, grad_b = linear.linear_backward(gy[:, begin:end].T, cols[:, begin:end].T, None,
                                                   need_bias=need_bias, need_input_grad=False)
        parts.append(_with_bias_column(grad_w, grad_b))
    return numpy.stack(parts)


def linear_forward(x, weight, bias, relu=False, slices=1):
    """relu(x @ weight.T + bias); with ``slices`` > 1 as the split-K kernels compute it: the partial products
    (linear_forward_partials) added in ascending s, then the bias and the ReLU."""
    if slices > 1:
        y = split_k_sum(linear_forward_partials(x, weight, slices))
        if bias is not None:
            y += bias
    else:
        y = linear.linear_forward(x, weight, bias)
    return activation.relu(y) if relu else y


def linear_forward_partials(x, weight, slices):
    """(S, N, O): x @ weight.T over the inputs in split_k_bounds(I, S)[s] (the GEMM's k is the input feature)."""
    return numpy.stack([linear.linear_forward(x[:, begin:end], weight[:, begin:end], None)
                        for begin, end in split_k_bounds(x.shape[1], slices)])


def linear_data_grad(grad_y, weight, y=None):
    grad_z = grad_y if y is None else activation.relu_backward(grad_y, y)
    x = numpy.zeros((grad_y.shape[0], weight.shape[1]), dtype=weight.dtype)  # linear_backward's dW needs one
    return linear.linear_backward(grad_z, x, weight, need_bias=False)[0]


def linear_weight_grad(grad_y, x, y=None, need_bias=True, slices=1):
    """(dW, db or None) of the Dense layer (the ReLU after it folded in when ``y`` is given); with ``slices`` > 1
    summed as the split-K kernels sum it."""
    if slices > 1:
        total = split_k_sum(linear_weight_grad_partials(grad_y, x, y, need_bias, slices))
        return _weight_grad_from_sum(total, (grad_y.shape[1], x.shape[1]), need_bias)
    grad_z = grad_y if y is None else activation.relu_backward(grad_y, y)
    _, grad_w, grad_b = linear.linear_backward(grad_z, x, None, need_bias=need_bias, need_input_grad=False)
    return grad_w, grad_b


def linear_weight_grad_partials(grad_y, x, y, need_bias, slices):
    """(S, O, I [+1]): [dW | db] over the samples in split_k_bounds(N, S)[s] (the GEMM's k is the sample)."""
    grad_z = grad_y if y is None else activation.relu_backward(grad_y, y)
    parts = []
    for begin, end in split_k_bounds(grad_z.shape[0], slices):
        _, grad_w, grad_b = linear.linear_backward(grad_z[begin:end], x[begin:end], None, need_bias=need_bias,
                                                   need_input_grad=False)
        parts.append(_with_bias_column(grad_w, grad_b))
    return numpy.stack(parts)


def max_pool2d_forward(x, window, mask=False):
    """(y, argmax): the readable op's argmax is already uint8 for windows of <= 255 elements (indices <= 254);
    ``mask``: POOL_NO_GRAD where ``not y > 0`` (y <= 0 or NaN), the ReLU mask of x where an argmax names it."""
    y, (argmax, _, _) = pool.max_pool2d_forward(x, window)
    if mask:
        argmax = numpy.where(y > 0, argmax, numpy.uint8(POOL_NO_GRAD)).astype(numpy.uint8)
    return y, argmax


def conv2d_pool_forward(x, weight, bias, window, pool_window, relu=False, mask=False):
    """(y, argmax): max_pool2d_forward(conv2d_forward(x, weight, bias, window, relu), pool_window, mask)."""
    return max_pool2d_forward(conv2d_forward(x, weight, bias, window, relu), pool_window, mask)


def conv2d_weight_grad_pooled(grad_pool, argmax, x, weight_shape, window, pool_window, need_bias=True, slices=1):
    """conv2d_weight_grad of max_pool2d_backward(grad_pool, argmax) over the convolution's output."""
    n, _, h, w = x.shape
    conv_shape = (n, weight_shape[0]) + tuple(window.output_size(h, w))
    grad_y = max_pool2d_backward(grad_pool, argmax, conv_shape, pool_window)
    return conv2d_weight_grad(grad_y, x, weight_shape, window, need_bias, slices)


def max_pool2d_backward(grad_y, argmax, x_shape, window):
    """The readable op's dx; a window coded POOL_NO_GRAD names no element and adds nothing (not grad_y * 0, which
    is NaN for an inf gradient: 0, as PyTorch's threshold_backward where(x <= 0, 0, g))."""
    grad_y = numpy.where(argmax == POOL_NO_GRAD, grad_y.dtype.type(0), grad_y)  # the op adds grad_y * (k match)
    return pool.max_pool2d_backward(grad_y, (argmax, tuple(x_shape), window))
