"""The CIFAR ResNets of He et al. (2015), "Deep Residual Learning for Image Recognition", section 4.2:
a 3x3 stem of 16 channels, three stages of n basic blocks at 16, 32 and 64 channels (stride 2 at the
first block of stages 2 and 3), global average pooling and one Dense layer: 6n + 2 weighted layers
(resnet8: n = 1, resnet20: n = 3).

A basic block: y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), where the shortcut is x itself,
or, where the shape changes, a 1x1 convolution of stride 2 followed by BatchNorm (a projection, the
paper's option B). The convolutions have no bias (BatchNorm follows each). Names follow the usual
PyTorch twin (conv1, bn1, layer1.0.conv1, layer2.0.shortcut.0, fc), so that state_dicts cross over.
"""
import numpy

from ..config import make_rng
from .graph import Input
from .layers import Add, BatchNorm2D, Conv2D, Dense, GlobalAvgPool2D, ReLU
from .model import Model
from .sequential import Sequential

__all__ = ["basic_block", "resnet", "resnet8", "resnet20"]


def basic_block(in_channels, out_channels, stride, input_size, dtype=numpy.float32, rng=None, name=None):
    """One basic block as a Model, for inputs of shape (in_channels, *input_size)."""
    rng = make_rng(rng)
    x = Input((in_channels,) + tuple(input_size), dtype=dtype)
    h = Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, dtype=dtype, rng=rng,
               name="conv1")(x)
    h = ReLU()(BatchNorm2D(out_channels, dtype=dtype, name="bn1")(h))
    h = Conv2D(out_channels, out_channels, 3, padding=1, bias=False, dtype=dtype, rng=rng, name="conv2")(h)
    h = BatchNorm2D(out_channels, dtype=dtype, name="bn2")(h)
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = Sequential([Conv2D(in_channels, out_channels, 1, stride=stride, bias=False, dtype=dtype, rng=rng),
                               BatchNorm2D(out_channels, dtype=dtype)], name="shortcut")(x)
    return Model(x, ReLU()(Add()([h, shortcut])), name=name)


def resnet(blocks_per_stage, in_channels=3, num_classes=10, input_size=32, dtype=numpy.float32, rng=None):
    """A CIFAR ResNet of 6 * blocks_per_stage + 2 layers for (N, in_channels, input_size, input_size) inputs."""
    rng = make_rng(rng)
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    x = Input((in_channels,) + size, dtype=dtype)
    h = Conv2D(in_channels, 16, 3, padding=1, bias=False, dtype=dtype, rng=rng, name="conv1")(x)
    h = ReLU()(BatchNorm2D(16, dtype=dtype, name="bn1")(h))
    channels = 16
    for stage, width in enumerate((16, 32, 64), start=1):
        blocks = []
        for i in range(blocks_per_stage):
            stride = 2 if stage > 1 and i == 0 else 1
            blocks.append(basic_block(channels, width, stride, h.shape[1:] if not blocks else
                                      blocks[-1].outputs[0].shape[1:], dtype=dtype, rng=rng))
            channels = width
        h = Sequential(blocks, name=f"layer{stage}")(h)
    y = Dense(64, num_classes, dtype=dtype, rng=rng, name="fc")(GlobalAvgPool2D()(h))
    return Model(x, y, name=f"resnet{6 * blocks_per_stage + 2}")


def resnet8(in_channels=3, num_classes=10, input_size=32, dtype=numpy.float32, rng=None):
    """ResNet-8: one basic block per stage (for tests and CPUs)."""
    return resnet(1, in_channels, num_classes, input_size, dtype, rng)


def resnet20(in_channels=3, num_classes=10, input_size=32, dtype=numpy.float32, rng=None):
    """ResNet-20 (He et al., 2015): three basic blocks per stage, 0.27 M parameters."""
    return resnet(3, in_channels, num_classes, input_size, dtype, rng)
