"""gpucnn: a convolutional-neural-network framework you can read, on NumPy or on CUDA (CuPy).

Example:
    >>> import gpucnn
    >>> model = gpucnn.models.fashion_cnn()
    >>> loss_fn = gpucnn.losses.SoftmaxCrossEntropy()
    >>> opt = gpucnn.optim.Adam(model.parameters(), lr=1e-3)
    >>> loss = loss_fn.forward(model.forward(x), y)
    >>> opt.zero_grad(); model.backward(loss_fn.backward()); opt.step()
"""
from . import backend, gradcheck, layers, losses, models, optim
from .config import config, seed
from .fused.step import compile_step
from .model import Sequential
from .parameter import Parameter

__version__ = "0.1.0"

__all__ = ["Parameter", "Sequential", "backend", "compile_step", "config", "seed", "gradcheck", "layers", "losses",
           "models",
           "optim", "__version__"]
