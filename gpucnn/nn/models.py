"""Named reference models."""
import functools

import numpy

from ..config import make_rng
from .layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Tanh
from .resnet import resnet8, resnet20
from .sequential import Sequential

__all__ = ["fashion_cnn", "lenet5", "resnet8", "resnet20", "MODELS", "INPUT_SHAPES"]


def fashion_cnn(num_classes=10, dtype=numpy.float32, rng=None):
    """The Keras tutorial's Fashion-MNIST classifier (91% test accuracy), for (N, 1, 28, 28) inputs:
    conv 3x3 32 same - ReLU - maxpool 2 - conv 3x3 64 same - ReLU - maxpool 2 - dense 128 - ReLU - dense 10."""
    rng = make_rng(rng)
    return Sequential([
        Conv2D(1, 32, 3, padding="same", dtype=dtype, rng=rng), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 3, padding="same", dtype=dtype, rng=rng), ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(64 * 7 * 7, 128, dtype=dtype, rng=rng), ReLU(),
        Dense(128, num_classes, dtype=dtype, rng=rng),
    ])


def lenet5(num_classes=10, dtype=numpy.float32, rng=None):
    """LeNet-5 (LeCun et al., 1998) for (N, 1, 28, 28) inputs, with 'same' padding on the first
    convolution so that 28x28 images take the 32x32 path: conv 5x5 6 - tanh - avgpool 2 -
    conv 5x5 16 - tanh - avgpool 2 - dense 120 - tanh - dense 84 - tanh - dense 10."""
    rng = make_rng(rng)
    return Sequential([
        Conv2D(1, 6, 5, padding=2, dtype=dtype, rng=rng), Tanh(), AvgPool2D(2),
        Conv2D(6, 16, 5, dtype=dtype, rng=rng), Tanh(), AvgPool2D(2),
        Flatten(),
        Dense(16 * 5 * 5, 120, dtype=dtype, rng=rng), Tanh(),
        Dense(120, 84, dtype=dtype, rng=rng), Tanh(),
        Dense(84, num_classes, dtype=dtype, rng=rng),
    ])


#: the named models of ``gpucnn train --model``, built for Fashion-MNIST's (1, 28, 28) images
MODELS = {"fashion_cnn": fashion_cnn, "lenet5": lenet5,
          "resnet8": functools.partial(resnet8, in_channels=1, input_size=28),
          "resnet20": functools.partial(resnet20, in_channels=1, input_size=28)}

#: the shape of one sample each named model is built for (C, H, W)
INPUT_SHAPES = {"fashion_cnn": (1, 28, 28), "lenet5": (1, 28, 28), "resnet8": (1, 28, 28), "resnet20": (1, 28, 28)}
