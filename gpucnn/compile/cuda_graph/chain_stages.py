"""The fused stages of a chain of layers: the forward and backward pass of the graph-captured step.

The one planner (gpucnn/compile/plan.py) matches the layers of a chain; ``take`` says what this executor
runs of each match, ``stages_of`` makes its stages, and a layer it does not take makes
``gpucnn.compile.cuda_graph.plan.build_program`` refuse the model, naming the layer.

Each stage replaces one or two layers with the fused launchers of ``gpucnn.compile.cuda_graph.launch``
(or, where no fused kernel exists yet, with capture-safe readable ops):

    Conv2D [+ ReLU]   -> conv2d_forward (bias and ReLU in the epilogue); backward: conv2d_weight_grad
                         (dW and db in one GEMM) and conv2d_data_grad (no im2col matrix)
    Dense [+ ReLU]    -> linear_forward; backward: linear_weight_grad / linear_data_grad with the ReLU
                         mask folded in (read from the layer's own output)
    Conv2D [+ ReLU] + MaxPool2D -> conv2d_pool_forward (the pool in the GEMM's epilogue) where the windows do not
                         overlap (``pool_fuses``); backward: max_pool2d_backward, then the Conv2D's, or for
                         the first stage conv2d_weight_grad_pooled (the pool's backward inside dW's GEMM)
    MaxPool2D         -> max_pool2d_forward (uint8 argmax); after Conv2D + ReLU its backward also applies
                         that ReLU's mask (recorded in the argmax), so the convolution below receives a masked
                         gradient
    Flatten           -> a reshape (a view)
    Tanh, ReLU alone  -> gpucnn.ops.activation (CuPy elementwise kernels: they capture)
    AvgPool2D         -> gpucnn.ops.pool (our pool.cu kernels: they capture)
    BatchNorm2D       -> the fused batch-norm kernels (gpucnn/compile/cuda_graph/join_stages.py)

Each stage covers ``width`` consecutive layers and lists the ``params`` its ``grads`` belong to.

Gradients are returned, not accumulated into ``Parameter.grad``: the captured step writes
fresh gradient buffers each replay, and the optimizer update reads them.
Nothing here reads device memory back, calls cuBLAS or synchronises.
"""
from ...nn.layers import AvgPool2D, Flatten, MaxPool2D, ReLU, Tanh
from ...ops.geometry import Window2D
from ...ops import activation, pool
from ...ops.cuda.gemm_plan import pool_fuses
from .join_stages import BatchNormStage

__all__ = ["take", "stages_of", "SUPPORTED_LAYERS"]

#: the layer types of a chain the fused stages run
SUPPORTED_LAYERS = ("Conv2D", "Dense", "ReLU", "MaxPool2D", "Flatten", "Tanh", "AvgPool2D", "BatchNorm2D")


def _weights(layer):
    return [layer.weight] + ([layer.bias] if layer.bias is not None else [])


def _outs(stage):
    """The launcher's output arguments for the stage's weight (and bias) gradient: the optimizer's flat-gradient
    slots where the step set them (``stage.grad_outs``, GraphStep.capture), else new arrays."""
    outs = getattr(stage, "grad_outs", None)
    if not outs:
        return {}
    return {"grad_weight_out": outs[0], "grad_bias_out": outs[1] if len(outs) > 1 else None}


def _fused():
    from . import launch as fused  # imported at use: it needs CuPy
    return fused


class _ConvStage:
    """Conv2D, with the ReLU that follows it when ``relu``: y = relu(conv(x) + b)."""

    takes_grad_outs = True  # its weight gradients may be written into given arrays (``grad_outs``)

    def __init__(self, layer, relu):
        self.layer, self.relu = layer, relu
        self.name = "Conv2D+ReLU" if relu else "Conv2D"
        self.width, self.params = 1 + relu, _weights(layer)

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
                                                  need_bias=layer.bias is not None, **_outs(self))
        self.grads = [grad_w] + ([grad_b] if layer.bias is not None else [])
        grad_x = fused.conv2d_data_grad(grad, layer.weight.data, x.shape, layer.window) if need_input_grad else None
        return grad_x, False


class _ConvPoolStage(_ConvStage):
    """Conv2D [+ ReLU] + MaxPool2D of windows the convolution's epilogue pools (``pool_fuses``): one launch, the
    convolution's output never written; the backward scatters through the argmax (the ReLU's mask in it), then
    runs the convolution's."""

    def __init__(self, layer, relu, pool_layer):
        super().__init__(layer, relu)
        self.pool = pool_layer
        self.name += "+MaxPool2D"
        self.width += 1

    def forward(self, x):
        layer = self.layer
        bias = layer.bias.data if layer.bias is not None else None
        y, argmax = _fused().conv2d_pool_forward(x, layer.weight.data, bias, layer.window, self.pool.window,
                                                 relu=self.relu, mask=self.relu)
        n, _, h, w = x.shape
        self.pool_cache = ((n, layer.out_channels) + tuple(layer.window.output_size(h, w)), argmax)
        self.cache = (x, None)
        return y

    def backward(self, grad, need_input_grad, masked):
        conv_shape, argmax = self.pool_cache
        layer, fused = self.layer, _fused()
        if not need_input_grad and fused.pool_covers(self.pool.window, *conv_shape[2:]):
            # the first stage: only dW, db, whose GEMM unpools as it loads (no conv-sized gradient)
            x = self.cache[0]
            grad_w, grad_b = fused.conv2d_weight_grad_pooled(grad, argmax, x, layer.weight.shape, layer.window,
                                                             self.pool.window, need_bias=layer.bias is not None,
                                                             **_outs(self))
            self.grads = [grad_w] + ([grad_b] if layer.bias is not None else [])
            return None, False
        grad = fused.max_pool2d_backward(grad, argmax, conv_shape, self.pool.window)
        return super().backward(grad, need_input_grad, masked=True)  # the argmax carried the ReLU's mask


class _DenseStage:
    """Dense, with the ReLU that follows it when ``relu``: y = relu(x @ W.T + b)."""

    takes_grad_outs = True

    def __init__(self, layer, relu):
        self.layer, self.relu = layer, relu
        self.name = "Dense+ReLU" if relu else "Dense"
        self.width, self.params = 1 + relu, _weights(layer)

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
        grad_w, grad_b = fused.linear_weight_grad(grad, x, mask, need_bias=layer.bias is not None, **_outs(self))
        self.grads = [grad_w] + ([grad_b] if layer.bias is not None else [])
        grad_x = fused.linear_data_grad(grad, layer.weight.data, mask) if need_input_grad else None
        return grad_x, False


class _MaxPoolStage:
    """MaxPool2D; ``fold_relu``: its input is a ReLU output, whose mask its backward applies."""

    def __init__(self, layer, fold_relu):
        self.layer, self.fold_relu = layer, fold_relu
        self.name = "MaxPool2D(+ReLU mask)" if fold_relu else "MaxPool2D"
        self.grads, self.params, self.width = [], [], 1

    def forward(self, x):
        # fold_relu: the argmax records the mask (255 where the window's max is not > 0), so the backward reads
        # only grad and argmax, not x
        y, argmax = _fused().max_pool2d_forward(x, self.layer.window, mask=self.fold_relu)
        self.cache = (x.shape, argmax)
        return y

    def backward(self, grad, need_input_grad, masked):
        x_shape, argmax = self.cache
        return _fused().max_pool2d_backward(grad, argmax, x_shape, self.layer.window), self.fold_relu


class _ElementwiseStage:
    """A layer computed with the readable ops (elementwise or our own pool kernels), which capture."""

    def __init__(self, layer):
        self.layer = layer
        self.name = type(layer).__name__
        self.grads, self.params, self.width = [], [], 1

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


def _unfused_geometry(layer):
    """The window option of a Conv2D / MaxPool2D / AvgPool2D that the graph's kernels do not take, or ''."""
    window = getattr(layer, "window", None)
    if window is None:
        return ""
    if not isinstance(window, Window2D):
        return "padding='same' at a stride above 1 (padding that depends on the input size)"
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        if window.asymmetric:
            return "asymmetric padding"
        if window.dilated:
            return "dilation"
        if window.ceil_mode:
            return "ceil_mode=True"
        if not getattr(layer, "count_include_pad", True):
            return "count_include_pad=False"
    return ""


def take(match, rank):
    """What the graph runs of a planner match (gpucnn/compile/plan.py): everything matched but LeakyReLU and
    Sigmoid; a dilated or grouped convolution is refused with the reason (the fused kernels do
    not take it)."""
    first = match.layers[0]
    for offset, layer in enumerate(match.layers):
        option = _unfused_geometry(layer)
        if option:
            raise NotImplementedError(f"compile_step: layer {match.start + offset} ({layer!r}) has {option}; the "
                                      f"graph step's kernels take the default pooling/padding geometry only (the "
                                      f"eager step runs this model)")
    if match.kind == "conv" and (first.dilation != (1, 1) or first.groups != 1):
        raise NotImplementedError(f"compile_step: layer {match.start} ({first!r}) is dilated or grouped; the "
                                  f"fused convolution kernels handle dilation 1 and groups 1 only (use the eager "
                                  f"path for this model)")
    if match.kind == "elementwise":
        return int(type(first) in (ReLU, Tanh))
    return len(match.layers)


def stages_of(match):
    """The fused stages of a match ``take`` took."""
    layers = match.layers
    if match.kind == "batchnorm":
        return [BatchNormStage(layers[0])]
    relu = len(layers) > 1 and type(layers[1]) is ReLU
    if match.kind in ("conv", "dense"):
        if match.kind == "conv" and type(layers[-1]) is MaxPool2D and pool_fuses(layers[-1].window):
            return [_ConvPoolStage(layers[0], relu, layers[-1])]  # the pool in the convolution's epilogue
        stages = [(_ConvStage if match.kind == "conv" else _DenseStage)(layers[0], relu)]
        if type(layers[-1]) is MaxPool2D:  # conv [+ ReLU] + max-pool: the pool's backward applies the ReLU mask
            stages.append(_MaxPoolStage(layers[-1], fold_relu=relu))
        return stages
    if type(layers[0]) is MaxPool2D:
        return [_MaxPoolStage(layers[0], fold_relu=False)]
    return [_ElementwiseStage(layers[0])]
