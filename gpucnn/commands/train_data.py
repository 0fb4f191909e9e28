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

__all__ = ["DATASETS", "SAMPLE_SHAPES", "ANY_SHAPE", "check_model", "build_model", "imported_model"]

#: --dataset name -> its loader (``loader(data_dir)`` -> ``(x_train, y_train), (x_test, y_test)``)
DATASETS = {"fashion-mnist": load_fashion_mnist, "mnist": load_mnist, cifar.NAME: load_cifar10}

#: --dataset name -> the shape of one sample, (C, H, W)
SAMPLE_SHAPES = {"fashion-mnist": datasets.SAMPLE_SHAPE, "mnist": datasets.SAMPLE_SHAPE, cifar.NAME: cifar.SAMPLE_SHAPE}

#: the classes of every data set above
NUM_CLASSES = 10

#: the models built for any sample shape: builder(in_channels=C, input_size=(H, W), rng=seed)
ANY_SHAPE = {"resnet8": resnet8, "resnet20": resnet20}

# gpucnn.nn.models.MODELS builds its models for Fashion-MNIST's images
_MODELS_SHAPE = datasets.SAMPLE_SHAPE


def check_model(model, dataset, init_from=None):
    """CommandError (one line) unless ``model`` (or the ONNX file ``init_from``) can be built for the samples of
    ``dataset``."""
    if init_from is not None:
        imported_model(init_from, dataset)
        return
    if model in ANY_SHAPE:
        return
    takes, has = tuple(INPUT_SHAPES.get(model, _MODELS_SHAPE)), SAMPLE_SHAPES[dataset]
    if takes != has:
        fitting = [name for name in sorted(MODELS) if name in ANY_SHAPE or INPUT_SHAPES.get(name, _MODELS_SHAPE) == has]
        raise CommandError(f"--model {model} takes {_shape(takes)} images and --dataset {dataset} has {_shape(has)} "
                           f"ones; on {dataset} train one of: {', '.join(fitting)}")


def build_model(model, dataset, seed, init_from=None):
    """The network ``model`` for the samples of ``dataset``, its weights drawn from ``seed``; or, with
    ``init_from``, the network and weights of that ONNX file."""
    if init_from is not None:
        return imported_model(init_from, dataset).train()
    check_model(model, dataset)
    if model in ANY_SHAPE:
        channels, height, width = SAMPLE_SHAPES[dataset]
        return ANY_SHAPE[model](in_channels=channels, input_size=(height, width), rng=seed)
    return MODELS[model](rng=seed)


def imported_model(path, dataset):
    """The Model of the ONNX file ``path`` (gpucnn.onnx.load); CommandError unless it maps the samples of
    ``dataset`` to one logit per class."""
    try:
        from ..io.onnx_import import load
        model = load(path)
    except (OSError, ImportError, ValueError) as exc:
        raise CommandError(f"--init-from {path}: {exc}") from None
    has = SAMPLE_SHAPES[dataset]
    if len(model.inputs) != 1 or model.inputs[0].shape != tuple(has) or len(model.outputs) != 1:
        takes = ", ".join(_shape(t.shape) for t in model.inputs)
        raise CommandError(f"--init-from {path}: the model takes {takes} inputs and gives {len(model.outputs)} "
                           f"outputs; --dataset {dataset} has {_shape(has)} images and one label each")
    softmax = model.outputs[0].node is not None and type(model.outputs[0].node.layer).__name__ == "Softmax"
    if model.outputs[0].shape != (NUM_CLASSES,) or softmax:
        raise CommandError(f"--init-from {path}: the model gives {_shape(model.outputs[0].shape)} values per image"
                           + (" after a Softmax" if softmax else "")
                           + f"; training takes {NUM_CLASSES} logits (the loss includes the softmax)")
    return model


def _shape(shape):
    return "x".join(str(size) for size in shape)
