"""BatchNorm2D on the fast path, in the internal layout (C, H, W, n): the stage that lets Conv2D -> BatchNorm2D ->
ReLU chains (a ResNet block) run as one segment, with no layout change at each BatchNorm.

Replaces gpucnn.ops.batchnorm.batch_norm_forward / batch_norm_backward (with BatchNorm2D's running statistics
update), with the same formulas: x_hat = (x - mean) * inv_std, y = x_hat * gamma + beta, inv_std =
1 / sqrt(var + eps), the running mean and variance moved with PyTorch's momentum (the unbiased variance for the
running one), and in backward dbeta = sum(g), dgamma = sum(g * x_hat), dx = gamma * inv_std * (g - dbeta / count
- x_hat * dgamma / count) in training, dx = gamma * inv_std * g in evaluation.

Design: training needs the statistics of the WHOLE batch, and the segment cuts the batch into chunks on threads,
so the chunk-local statistics would be wrong. The segment (runner.Segment) runs its stages in phases cut at each
stage whose ``whole_batch`` is true (this one, in training): every chunk runs up to the BatchNorm and computes its
own sums (``forward_sums``); when the threads have joined (the end of ``run_chunks`` is the barrier), the main
thread combines them in chunk order (``combine_forward``: a fixed order, so results repeat bit for bit for a
thread count), then the next phase normalises each chunk (``forward_apply``) and runs on through the rest of the
segment. Backward mirrors it with the sums of g and g * x_hat (``backward_sums`` / ``combine_backward`` /
``backward_apply``). This was chosen over ending the segment at every BatchNorm (a single-chunk segment of its
own), which would keep the layout changes and the serial run this stage exists to remove; the cost of a phase is
one more hand-off to the worker threads.

Chunk sums: each chunk gives its count, mean and sum of squared deviations from its own mean (M2); they combine
as in Chan et al.'s parallel variance, M2 = sum(M2_i) + sum(count_i * (mean_i - mean)^2), as stable as the
reference's two passes over the whole batch (float rounding only). In evaluation the running statistics are used
and each chunk runs alone (no phase cut).
"""
import numpy

from ...ops.geometry import check_input
from .stages import Stage, shape_probe

__all__ = ["BatchNormStage"]


def _channels(v):
    return v[:, None, None, None]


def _channel_sums(a):
    """(C,) sums of a (C, H, W, n) array over its last three axes."""
    return a.reshape(a.shape[0], -1).sum(axis=1)


class BatchNormStage(Stage):
    """BatchNorm2D on (C, H, W, n) chunks: batch statistics combined across chunks in training (see above)."""

    def __init__(self, index, layer):
        super().__init__(index)
        self.layer = layer
        self.layers = (layer,)

    @property
    def whole_batch(self):
        """True when the forward needs the whole batch's statistics (training): the segment cuts a phase here."""
        return self.layer.training

    def out_shape(self, shape, dtype):
        check_input(shape_probe(shape, dtype), self.layer.name, 4, self.layer.num_features, what="channels")
        return shape, self.layer.weight.data.dtype

    def _input(self, x):
        return x.astype(self.layer.weight.data.dtype, copy=False)

    def _normalise(self, ctx, x, mean, inv_std, gamma, training, count=None):
        layer = self.layer
        x_hat = self.buffer(ctx, "x_hat", x.shape, x.dtype)
        numpy.subtract(x, _channels(mean), out=x_hat)
        x_hat *= _channels(inv_std)
        y = self.buffer(ctx, "y", x.shape, x.dtype)
        numpy.multiply(x_hat, _channels(gamma), out=y)
        y += _channels(layer.bias.data)
        ctx.saved[self.index] = {"x_hat": x_hat, "inv_std": inv_std, "gamma": gamma, "training": training,
                                 "count": count}
        return y

    # evaluation: one chunk at a time
    def forward(self, ctx, x):
        layer = self.layer
        x = self._input(x)
        inv_std = 1 / numpy.sqrt(layer.running_var + layer.eps)
        return self._normalise(ctx, x, layer.running_mean, inv_std, layer.weight.data, False)

    def backward(self, ctx, grad, need_input_grad):
        count, gb, gg = self.backward_sums(ctx, grad)
        saved = ctx.saved[self.index]
        if not need_input_grad:
            return None
        dx = self.buffer(ctx, "grad", saved["x_hat"].shape, saved["x_hat"].dtype)
        return numpy.multiply(grad, _channels(saved["gamma"] * saved["inv_std"]), out=dx)

    # training, phase 1: each chunk's sums
    def forward_sums(self, ctx, x):
        """(count, mean, M2) of this chunk, per channel; the x_hat buffer serves as scratch."""
        x = self._input(x)
        count = x.size // x.shape[0]
        mean = _channel_sums(x) / count
        scratch = self.buffer(ctx, "x_hat", x.shape, x.dtype)
        numpy.subtract(x, _channels(mean), out=scratch)
        numpy.square(scratch, out=scratch)
        return count, mean, _channel_sums(scratch)

    def combine_forward(self, parts):
        """The batch statistics from every chunk's sums, in chunk order; moves the running statistics as the
        reference does. Returns what ``forward_apply`` needs."""
        layer = self.layer
        count = sum(c for c, _, _ in parts)
        if count < 2:
            raise ValueError(f"{layer.name}: training needs more than one value per channel to estimate a "
                             f"variance, got {count} value(s) per channel")
        mean = parts[0][1] * (parts[0][0] / count)
        for c, m, _ in parts[1:]:
            mean = mean + m * (c / count)
        m2 = parts[0][2] + parts[0][0] * (parts[0][1] - mean) ** 2
        for c, m, s in parts[1:]:
            m2 = m2 + s + c * (m - mean) ** 2
        var = m2 / count
        momentum = layer.momentum
        layer.running_mean *= 1 - momentum
        layer.running_mean += momentum * mean
        layer.running_var *= 1 - momentum
        layer.running_var += (momentum * count / (count - 1)) * var
        return mean, 1 / numpy.sqrt(var + layer.eps), count

    # training, phase 2: normalise each chunk with the batch statistics
    def forward_apply(self, ctx, x, stats):
        mean, inv_std, count = stats
        return self._normalise(ctx, self._input(x), mean, inv_std, self.layer.weight.data, True, count)

    def backward_sums(self, ctx, grad):
        """(count, sum of g, sum of g * x_hat) of this chunk, per channel; written as its parameter gradients
        (dgamma, dbeta), which the segment adds up in chunk order."""
        saved = ctx.saved[self.index]
        x_hat = saved["x_hat"]
        grad = grad.astype(x_hat.dtype, copy=False)
        gb = _channel_sums(grad)
        product = numpy.multiply(grad, x_hat, out=self.buffer(ctx, "grad", x_hat.shape, x_hat.dtype))
        gg = _channel_sums(product)
        ctx.grads[self.index] = [gg, gb]
        return saved["count"], gb, gg

    def combine_backward(self, parts):
        count = parts[0][0]
        gb, gg = parts[0][1], parts[0][2]
        for _, b, g in parts[1:]:
            gb, gg = gb + b, gg + g
        return gb / count, gg / count

    def backward_apply(self, ctx, grad, sums, need_input_grad):
        if not need_input_grad:
            return None
        gb_mean, gg_mean = sums
        saved = ctx.saved[self.index]
        x_hat = saved["x_hat"]
        grad = grad.astype(x_hat.dtype, copy=False)
        dx = self.buffer(ctx, "grad", x_hat.shape, x_hat.dtype)
        numpy.multiply(x_hat, _channels(gg_mean), out=dx)
        dx += _channels(gb_mean)
        numpy.subtract(grad, dx, out=dx)
        dx *= _channels(saved["gamma"] * saved["inv_std"])
        return dx
