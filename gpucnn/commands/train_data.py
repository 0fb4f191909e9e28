"""``gpucnn train --dataset``: the data sets it reads, and the model built for the data set's sample shape.

Fashion-MNIST and MNIST hold (1, 28, 28) images, CIFAR-10 (3, 32, 32) ones. The ResNets are built for
the data set's shape (their stem takes any number of channels, global average pooling any size), as
He et al. built ResNet-20 for CIFAR-10; fashion_cnn and lenet5 take (1, 28, 28) only, and are refused
on another shape, in one line, before any data is read.
"""
from ..data import cifar, datasets, load_cifar10, load_fashion_mnist, load_mnist
from ..nn.models import INPUT_SHAPES, MODELS
from ..nn.resnet import resnet8, resnet20
from .errors import CommandError

__all__ = ["DATASETS", "SAMPLE_SHAPES", "ANY_SHAPE", "check_model", "build_model"]

#: --dataset name -> its loader (``loader(data_dir)`` -> ``(x_train, y_train), (x_test, y_test)``)
DATASETS = {"fashion-mnist": load_fashion_mnist, "mnist": load_mnist, cifar.NAME: load_cifar10}

#: --dataset name -> the shape of one sample, (C, H, W)
SAMPLE_SHAPES = {"fashion-mnist": datasets.SAMPLE_SHAPE, "mnist": datasets.SAMPLE_SHAPE, cifar.NAME: cifar.SAMPLE_SHAPE}

#: the models built for any sample shape: builder(in_channels=C, input_size=(H, W), rng=seed)
ANY_SHAPE = {"resnet8": resnet8, "resnet20": resnet20}

# gpucnn.nn.models.MODELS builds its models for Fashion-MNIST's images
_MODELS_SHAPE = datasets.SAMPLE_SHAPE


def check_model(model, dataset):
    """CommandError (one line) unless ``model`` can be built for the samples of ``dataset``."""
    if model in ANY_SHAPE:
        return
    takes, has = tuple(INPUT_SHAPES.get(model, _MODELS_SHAPE)), SAMPLE_SHAPES[dataset]
    if takes != has:
        fitting = [name for name in sorted(MODELS) if name in ANY_SHAPE or INPUT_SHAPES.get(name, _MODELS_SHAPE) == has]
        raise CommandError(f"--model {model} takes {_shape(takes)} images and --dataset {dataset} has {_shape(has)} "
                           f"ones; on {dataset} train one of: {', '.join(fitting)}")


def build_model(model, dataset, seed):
    """The network ``model`` for the samples of ``dataset``, its weights drawn from ``seed``."""
    check_model(model, dataset)
    if model in ANY_SHAPE:
        channels, height, width = SAMPLE_SHAPES[dataset]
        return ANY_SHAPE[model](in_channels=channels, input_size=(height, width), rng=seed)
    return MODELS[model](rng=seed)


def _shape(shape):
    return "x".join(str(size) for size in shape)
