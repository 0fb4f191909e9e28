"""gpucnn: a convolutional-neural-network framework you can read, on NumPy or on CUDA (CuPy).

Example:
    >>> import gpucnn
    >>> model = gpucnn.models.fashion_cnn()
    >>> loss_fn = gpucnn.losses.SoftmaxCrossEntropy()
    >>> opt = gpucnn.optim.Adam(model.parameters(), lr=1e-3)
    >>> loss = loss_fn.forward(model.forward(x), y)
    >>> opt.zero_grad(); model.backward(loss_fn.backward()); opt.step()

The other modules (``gpucnn.data``, ``gpucnn.train``, ``gpucnn.functional``, ``gpucnn.onnx``,
``gpucnn.commands`` ...) are imported on first use: ``import gpucnn; gpucnn.data.load_mnist()`` works.
"""
import importlib

from . import backend, gradcheck, layers, losses, models, optim
from .config import config, seed
from .fused.step import compile_step
from .model import Sequential
from .parameter import Parameter

__version__ = "0.1.0"  # the one place the version is written (setup.cfg reads it)

__all__ = ["Parameter", "Sequential", "backend", "compile_step", "config", "seed", "gradcheck", "layers", "losses",
           "models",
           "optim", "__version__"]

# Imported when first touched, so that `import gpucnn` stays quick and pulls in no optional package.
_LAZY = ("architecture", "checkpoint", "commands", "data", "functional", "onnx", "ops", "predict", "progress",
         "state_dict", "summary", "train", "training_checkpoint")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
