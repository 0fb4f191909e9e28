"""gpucnn: a convolutional-neural-network framework you can read, on NumPy or on CUDA (CuPy).

Example:
    >>> import gpucnn
    >>> model = gpucnn.models.fashion_cnn()
    >>> loss_fn = gpucnn.losses.SoftmaxCrossEntropy()
    >>> opt = gpucnn.optim.Adam(model.parameters(), lr=1e-3)
    >>> loss = loss_fn.forward(model.forward(x), y)
    >>> opt.zero_grad(); model.backward(loss_fn.backward()); opt.step()

The house (docs/architecture.md): ``backend`` -> ``ops`` (the readable math, CUDA launchers beside it)
-> ``nn`` (layers, Sequential, losses, models) -> ``optim`` / ``compile`` (the fast paths) -> ``train``
/ ``io`` -> ``commands``. The other modules (``gpucnn.data``, ``gpucnn.train``, ``gpucnn.functional``,
``gpucnn.onnx``, ``gpucnn.commands`` ...) are imported on first use: ``import gpucnn;
gpucnn.data.load_mnist()`` works.
"""
import importlib
import importlib.abc
import importlib.util
import sys

from . import backend, optim
from .compile.cuda_graph.step import compile_step
from .config import config, seed
from .nn import gradcheck, layers, losses, models
from .nn.graph import Input
from .nn.model import Model
from .nn.sequential import Sequential
from .parameter import Parameter

__version__ = "0.1.0"  # the one place the version is written (setup.cfg reads it)

__all__ = ["Input", "Model", "Parameter", "Sequential", "backend", "compile_step", "config", "seed", "gradcheck",
           "layers", "losses",
           "models", "optim", "__version__"]

# Where modules that users import by name live now: `import gpucnn.losses`, `from gpucnn.layers.conv import
# Conv2D`, `gpucnn.onnx.export(...)` keep working (a name or a package prefix, e.g. gpucnn.layers.*).
MOVED = {
    "architecture": "nn.architecture", "checkpoint": "io.arrays", "fast": "compile.cpu",
    "functional": "nn.functional", "fused": "compile.cuda_graph", "gradcheck": "nn.gradcheck",
    "layers": "nn.layers", "losses": "nn.losses", "model": "nn.sequential", "models": "nn.models",
    "onnx": "io.onnx", "optim_flat": "optim.flat", "predict": "nn.predict", "progress": "train.progress",
    "selftest": "commands.checks", "state_dict": "nn.state_dict", "summary": "nn.summary",
    "training_checkpoint": "train.checkpoint",
}
# Imported when first touched, so that `import gpucnn` stays quick and pulls in no optional package.
_LAZY = ("commands", "data", "distributed", "io", "ops", "train") + tuple(name for name in MOVED if "." not in name)


def _new_name(fullname):
    """The module's present name for an old ``gpucnn.<name>[.<sub>]``, or None."""
    head, _, rest = fullname[len(__name__) + 1:].partition(".")
    if not fullname.startswith(__name__ + ".") or head not in MOVED:
        return None
    return f"{__name__}.{MOVED[head]}" + (f".{rest}" if rest else "")


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of an old module path with the module at its new path (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        new = _new_name(fullname)
        if new is None or importlib.util.find_spec(new) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(_new_name(spec.name))
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its new name; the import machinery has just set __spec__ to the old name's,
        # which relative imports inside the module would then resolve against: put its own back.
        module.__spec__ = module.__spec__.loader_state


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())  # before the path finders, which would load a second copy


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{MOVED.get(name, name)}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
