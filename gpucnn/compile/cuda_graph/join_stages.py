"""The graph step's stages for residual networks: BatchNorm2D (batch statistics), Add, Concatenate, GlobalAvgPool2D.

    BatchNorm2D [+ ReLU] -> batch_norm_train_forward / batch_norm_train_backward (gpucnn/kernels/fused_batchnorm.cu,
                            launchers in launch_batchnorm.py): the batch's statistics in split per-channel
                            reductions combined in a fixed order, the running statistics updated in place on
                            the device, the ReLU that follows in the same kernel (its mask read from y)
    Add                  -> gpucnn.ops.merge.add (CuPy elementwise: memory-bound, as fast as ours would be);
                            backward: dL/dy to every input
    Concatenate          -> gpucnn.ops.merge.concatenate; backward: each input's slice of dL/dy, made contiguous
                            for the fused kernels below
    GlobalAvgPool2D      -> gpucnn.ops.global_pool (a CuPy reduction and a broadcast)

The graph step trains: BatchNorm2D always normalises with the batch's statistics here (the eager path
evaluates with the running ones). Every launch is capture-safe: no host read, no synchronisation.
"""
from ...ops import global_pool, merge

__all__ = ["BatchNormStage", "AddStage", "ConcatenateStage", "GlobalAvgPoolStage"]


def _batchnorm():
    from . import launch_batchnorm  # imported at use: it needs CuPy
    return launch_batchnorm


class BatchNormStage:
    """BatchNorm2D in training mode, with the ReLU that follows it when ``relu`` (set by the program builder)."""

    def __init__(self, layer, relu=False):
        self.layer, self.relu = layer, relu
        self.name = "BatchNorm2D+ReLU" if relu else "BatchNorm2D"
        self.width, self.params, self.grads = 1, [layer.weight, layer.bias], []

    def buffers(self):
        return [self.layer.running_mean, self.layer.running_var]

    def forward(self, x):
        layer = self.layer
        if x.size // x.shape[1] < 2:
            raise ValueError(f"{layer.name}: training needs more than one value per channel to estimate a variance, "
                             f"got input shape {tuple(x.shape)}")
        y, mean, inv_std = _batchnorm().batch_norm_train_forward(
            x, layer.weight.data, layer.bias.data, layer.running_mean, layer.running_var, layer.momentum, layer.eps,
            relu=self.relu)
        self.cache = (x, y, mean, inv_std)
        return y

    def backward(self, grad, need_input_grad, masked):
        x, y, mean, inv_std = self.cache
        grad_x, grad_gamma, grad_beta = _batchnorm().batch_norm_train_backward(
            grad, x, mean, inv_std, self.layer.weight.data, y=y if self.relu and not masked else None,
            need_input_grad=need_input_grad)
        self.grads = [grad_gamma, grad_beta]
        return grad_x, False


class AddStage:
    """y = x_1 + x_2 + ...; every input receives dL/dy."""

    def __init__(self, layer):
        self.layer, self.name = layer, "Add"
        self.width, self.params, self.grads = 1, [], []

    def forward(self, inputs):
        self.cache = len(inputs)
        return merge.add(inputs)

    def backward(self, grad, need_input_grad, masked):
        return merge.add_backward(grad, self.cache), False


class ConcatenateStage:
    """The inputs side by side along the layer's axis; each input receives its slice of dL/dy."""

    def __init__(self, layer):
        self.layer, self.name = layer, "Concatenate"
        self.width, self.params, self.grads = 1, [], []

    def forward(self, inputs):
        axis = self.layer.axis + inputs[0].ndim if self.layer.axis < 0 else self.layer.axis
        y, sizes = merge.concatenate(inputs, axis)
        self.cache = (sizes, axis)
        return y

    def backward(self, grad, need_input_grad, masked):
        sizes, axis = self.cache
        # copies: the fused kernels below read C-contiguous arrays (copy() is C order in NumPy and CuPy alike)
        return [s.copy() for s in merge.concatenate_backward(grad, sizes, axis)], False


class GlobalAvgPoolStage:
    """(N, C, H, W) -> (N, C), the mean of each map; backward spreads dL/dy / (H W) over it."""

    def __init__(self, layer):
        self.layer, self.name = layer, "GlobalAvgPool2D"
        self.width, self.params, self.grads = 1, [], []

    def forward(self, x):
        self.cache = x.shape
        return global_pool.global_avg_pool2d(x)

    def backward(self, grad, need_input_grad, masked):
        return global_pool.global_avg_pool2d_backward(grad, self.cache), False
