"""NumPy twins of the fused batch-norm kernels (gpucnn/kernels/fused_batchnorm.cu), composed from the readable op.

``batch_norm_train_forward`` and ``batch_norm_train_backward`` take the arguments of their namesakes in
``gpucnn.compile.cuda_graph.launch_batchnorm`` and return what the kernels must return, computed with
``gpucnn.ops.batchnorm`` (training mode) and ``gpucnn.ops.activation`` exactly as the eager layers compute it.
``slices`` changes only the order of the kernels' additions, not what they compute: the twins accept it and
compute the readable op's statistics. What the kernels do per slice is stated by ``slice_bounds``,
``batch_norm_stats_partials`` / ``merge_stats_partials`` (Welford per slice, Chan's merge in ascending s) and
``batch_norm_grad_partials`` (sums per slice, added in ascending s), which the harness tests hold the partial
buffers to.
"""
import numpy

from ...ops import activation, batchnorm

__all__ = ["batch_norm_train_forward", "batch_norm_train_backward", "slice_bounds", "batch_norm_stats_partials",
           "merge_stats_partials", "batch_norm_grad_partials", "channel_view"]


def channel_view(x):
    """(C, N*HW) of an (N, C, H, W) or (N, C) array: each channel's count = N*H*W elements, in the kernels'
    order e = n*HW + p."""
    n, c = x.shape[:2]
    return numpy.moveaxis(x.reshape(n, c, -1), 1, 0).reshape(c, -1)


def _per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_train_forward(x, gamma, beta, running_mean, running_var, momentum, eps, relu=False, slices=None):
    """(y, mean, inv_std): ops.batchnorm.batch_norm_forward in training mode (running statistics updated in
    place), then ops.activation.relu when ``relu``; mean is the batch mean the op normalises with."""
    y, (_, inv_std, _, _) = batchnorm.batch_norm_forward(x, gamma, beta, running_mean, running_var, momentum, eps,
                                                         training=True)
    mean = channel_view(x).mean(axis=1)
    return (activation.relu(y) if relu else y), mean, inv_std


def batch_norm_train_backward(grad_y, x, mean, inv_std, gamma, y=None, need_input_grad=True, slices=None):
    """(grad_x or None, grad_gamma, grad_beta): ops.activation.relu_backward against ``y`` when given, then
    ops.batchnorm.batch_norm_backward in training mode, x_hat recomputed from x, mean and inv_std."""
    grad_z = grad_y if y is None else activation.relu_backward(grad_y, y)
    x_hat = (x - _per_channel(mean, x.ndim)) * _per_channel(inv_std, x.ndim)
    grad_x, grad_gamma, grad_beta = batchnorm.batch_norm_backward(grad_z, (x_hat, inv_std, gamma, True))
    return (grad_x if need_input_grad else None), grad_gamma, grad_beta


def slice_bounds(count, slices):
    """[(begin, end)] of the ``slices`` slices of a channel's ``count`` elements: count // S each, one more for
    the first count % S (the kernels' bn_block)."""
    q, r = divmod(count, slices)
    return [(s * q + min(s, r), (s + 1) * q + min(s + 1, r)) for s in range(slices)]


def batch_norm_stats_partials(x, slices):
    """(C*S, 2): row c*S + s = (mean, M2) of slice s of channel c (0, 0 for an empty slice), in x's dtype."""
    rows = []
    for channel in channel_view(x):
        for begin, end in slice_bounds(channel.size, slices):
            part = channel[begin:end]
            mean = part.mean() if part.size else part.dtype.type(0)
            rows.append((mean, ((part - mean) ** 2).sum()))
    return numpy.array(rows, dtype=x.dtype).reshape(-1, 2)


def merge_stats_partials(partials, count, slices):
    """(mean, biased var) per channel from the (C*S, 2) partials, merged in ascending s by Chan's update (the
    kernels' bn_channel_moments), in float64."""
    parts = numpy.asarray(partials, dtype=numpy.float64).reshape(-1, slices, 2)
    sizes = [end - begin for begin, end in slice_bounds(count, slices)]
    n, mean, m2 = 0, numpy.zeros(parts.shape[0]), numpy.zeros(parts.shape[0])
    for s, size in enumerate(sizes):
        if size == 0:
            continue
        delta = parts[:, s, 0] - mean
        total = n + size
        mean = mean + delta * (size / total)
        m2 = m2 + parts[:, s, 1] + delta * delta * (n * size / total)
        n = total
    return mean, m2 / count


def batch_norm_grad_partials(grad_y, x, mean, inv_std, y, slices):
    """(C*S, 2): row c*S + s = (sum gz, sum gz * x_hat) over slice s of channel c, gz = relu_backward(grad_y, y)
    when ``y`` is given."""
    grad_z = channel_view(grad_y if y is None else activation.relu_backward(grad_y, y))
    x_hat = (channel_view(x) - mean[:, None]) * inv_std[:, None]
    rows = []
    for c in range(grad_z.shape[0]):
        for begin, end in slice_bounds(grad_z.shape[1], slices):
            rows.append((grad_z[c, begin:end].sum(), (grad_z[c, begin:end] * x_hat[c, begin:end]).sum()))
    return numpy.array(rows, dtype=grad_y.dtype).reshape(-1, 2)
