"""A Sequential model as a list of fused stages: the forward and backward pass of the graph-captured step.

Each stage replaces one or two layers with the fused launchers of ``gpucnn.compile.cuda_graph.launch``
(or, where no fused kernel exists yet, with capture-safe readable ops):

    Conv2D [+ ReLU]   -> conv2d_forward (bias and ReLU in the epilogue); backward: conv2d_weight_grad
                         (dW and db in one GEMM) and conv2d_data_grad (no im2col matrix)
    Dense [+ ReLU]    -> linear_forward; backward: linear_weight_grad / linear_data_grad with the ReLU
                         mask folded in (read from the layer's own output)
    MaxPool2D         -> max_pool2d_forward (uint8 argmax); after Conv2D + ReLU its backward also applies
                         that ReLU's mask, so the convolution below receives a masked gradient
    Flatten           -> a reshape (a view)
    Tanh, ReLU alone  -> gpucnn.ops.activation (CuPy elementwise kernels: they capture)
    AvgPool2D         -> gpucnn.ops.pool (our pool.cu kernels: they capture)

Gradients are returned, not accumulated into ``Parameter.grad``: the captured step writes
fresh gradient buffers each replay, and the optimizer update reads them.
Nothing here reads device memory back, calls cuBLAS or synchronises.
"""
from ...nn.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Tanh
from ...ops import activation, pool

__all__ = ["build_stages", "SUPPORTED_LAYERS"]

SUPPORTED_LAYERS = ("Conv2D", "Dense", "ReLU", "MaxPool2D", "Flatten", "Tanh", "AvgPool2D")


def _fused():
    from . import launch as fused  # imported at use: it needs CuPy
    return fused


class _ConvStage:
    """Conv2D, with the ReLU that follows it when ``relu``: y = relu(conv(x) + b)."""

    def __init__(self, layer, relu):
        self.layer, self.relu = layer, relu
        self.name = "Conv2D+ReLU" if relu else "Conv2D"

    def forward(self, x):
        layer = self.layer
        bias = layer.bias.data if layer.bias is not None else None
        y = _fused().conv2d_forward(x, layer.weight.data, bias, layer.window, relu=self.relu)
        self.cache = (x, y)
        return y

    def backward(self, grad, need_input_grad, masked):
        x, y = self.cache
        if self.relu and not masked:
            grad = activation.relu_backward(grad, y)  # y > 0 exactly where the pre-activation is
        layer, fused = self.layer, _fused()
        grad_w, grad_b = fused.conv2d_weight_grad(grad, x, layer.weight.shape, layer.window,
                                                  need_bias=layer.bias is not None)
        self.grads = [grad_w] + ([grad_b] if layer.bias is not None else [])
        grad_x = fused.conv2d_data_grad(grad, layer.weight.data, x.shape, layer.window) if need_input_grad else None
        return grad_x, False


class _DenseStage:
    """Dense, with the ReLU that follows it when ``relu``: y = relu(x @ W.T + b)."""

    def __init__(self, layer, relu):
        self.layer, self.relu = layer, relu
        self.name = "Dense+ReLU" if relu else "Dense"

    def forward(self, x):
        layer = self.layer
        bias = layer.bias.data if layer.bias is not None else None
        y = _fused().linear_forward(x, layer.weight.data, bias, relu=self.relu)
        self.cache = (x, y)
        return y

    def backward(self, grad, need_input_grad, masked):
        x, y = self.cache
        mask = y if self.relu and not masked else None
        layer, fused = self.layer, _fused()
        grad_w, grad_b = fused.linear_weight_grad(grad, x, mask, need_bias=layer.bias is not None)
        self.grads = [grad_w] + ([grad_b] if layer.bias is not None else [])
        grad_x = fused.linear_data_grad(grad, layer.weight.data, mask) if need_input_grad else None
        return grad_x, False


class _MaxPoolStage:
    """MaxPool2D; ``fold_relu``: its input is a ReLU output, whose mask its backward applies."""

    def __init__(self, layer, fold_relu):
        self.layer, self.fold_relu = layer, fold_relu
        self.name = "MaxPool2D(+ReLU mask)" if fold_relu else "MaxPool2D"
        self.grads = []

    def forward(self, x):
        y, argmax = _fused().max_pool2d_forward(x, self.layer.window)
        self.cache = (x, argmax)
        return y

    def backward(self, grad, need_input_grad, masked):
        x, argmax = self.cache
        return _fused().max_pool2d_backward(grad, argmax, x, self.layer.window, mask=self.fold_relu), self.fold_relu


class _ElementwiseStage:
    """A layer computed with the readable ops (elementwise or our own pool kernels), which capture."""

    def __init__(self, layer):
        self.layer = layer
        self.name = type(layer).__name__
        self.grads = []

    def forward(self, x):
        layer = self.layer
        if isinstance(layer, Flatten):
            self.cache = x.shape
            return x.reshape(x.shape[0], -1)
        if isinstance(layer, Tanh):
            y = activation.tanh(x)
            self.cache = y
            return y
        if isinstance(layer, ReLU):
            self.cache = x
            return activation.relu(x)
        y, saved = pool.avg_pool2d_forward(x, layer.window)  # AvgPool2D
        self.cache = saved
        return y

    def backward(self, grad, need_input_grad, masked):
        layer = self.layer
        if isinstance(layer, Flatten):
            return grad.reshape(self.cache), False
        if isinstance(layer, Tanh):
            return activation.tanh_backward(grad, self.cache), False
        if isinstance(layer, ReLU):
            return activation.relu_backward(grad, self.cache), False
        return pool.avg_pool2d_backward(grad, self.cache), False


def build_stages(model):
    """The fused stages of a Sequential ``model``; NotImplementedError names a layer without one."""
    layers = list(model.layers)
    stages, i = [], 0
    while i < len(layers):
        layer = layers[i]
        relu_next = i + 1 < len(layers) and type(layers[i + 1]) is ReLU
        if isinstance(layer, Conv2D) and (layer.dilation != (1, 1) or layer.groups != 1):
            raise NotImplementedError(f"compile_step: layer {i} ({layer!r}) is dilated or grouped; the fused "
                                      f"convolution kernels handle dilation 1 and groups 1 only (use the eager "
                                      f"path for this model)")
        if isinstance(layer, (Conv2D, Dense)):
            stage = (_ConvStage if isinstance(layer, Conv2D) else _DenseStage)(layer, relu_next)
            i += 2 if relu_next else 1
        elif isinstance(layer, MaxPool2D):
            after_relu = bool(stages) and getattr(stages[-1], "relu", False) and isinstance(stages[-1], _ConvStage)
            stage = _MaxPoolStage(layer, after_relu)
            i += 1
        elif type(layer) in (Flatten, Tanh, ReLU, AvgPool2D):
            stage = _ElementwiseStage(layer)
            i += 1
        else:
            raise NotImplementedError(f"compile_step: layer {i} ({type(layer).__name__}) has no fused stage; the "
                                      f"graph-captured step supports {', '.join(SUPPORTED_LAYERS)} (use the eager "
                                      f"path for this model)")
        stages.append(stage)
    return stages
