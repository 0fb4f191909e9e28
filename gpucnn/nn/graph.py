"""Symbolic tensors: what ``gpucnn.Input`` returns, and what calling a layer on one records (Keras's functional style).

    x = gpucnn.Input((3, 32, 32))           # one sample's shape, as everywhere in gpucnn
    h = Conv2D(3, 16, 3, padding="same")(x)  # records a node: Conv2D applied to x; h.shape == (16, 32, 32)
    y = Add()([h, x2])                       # layers of several inputs take a list

Recording checks the shapes at once, by running the layer on one zero sample in eval mode (so
nothing trains and nothing random is drawn), and refuses a layer that is already in a graph:
each node owns its layer's saved activations, and sharing weights is out of scope.
``gpucnn.Model(inputs, outputs)`` (gpucnn/nn/model.py) then takes the nodes between them.
"""
import itertools
import re
import weakref

import numpy

from ..backend import device_scope, get_array_module

__all__ = ["SymbolicTensor", "Input", "Node", "record", "is_symbolic", "check_name", "GraphError"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ids = itertools.count()
_recorded = weakref.WeakKeyDictionary()  # layer -> its node: a layer is used once


class GraphError(ValueError):
    """A graph that cannot be built: a wrong shape, a layer used twice, an output not reached from the inputs."""


def check_name(name):
    """``name`` itself when it can be part of a dotted path ('conv1', 'block2'), None for None; ValueError else."""
    if name is None:
        return None
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a layer's name must be a Python identifier (letters, digits, _; it becomes part of "
                         f"dotted paths such as 'conv1.weight'), got {name!r}")
    return name


class SymbolicTensor:
    """A tensor of a graph being built: one sample's ``shape`` and ``dtype``, and the ``node`` that makes it
    (None for an Input)."""

    def __init__(self, shape, dtype, node=None, name=None):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = numpy.dtype(dtype)
        self.node = node
        self.name = name
        self.id = next(_ids)

    def __repr__(self):
        made_by = "Input" if self.node is None else type(self.node.layer).__name__
        return f"SymbolicTensor(shape={self.shape}, from {made_by})"


def Input(shape, dtype=numpy.float32, name=None):  # noqa: N802 - the functional API's name, as in Keras
    """A model's input: one sample's shape (no batch), e.g. ``Input((1, 28, 28))``."""
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if not shape or any(not isinstance(d, (int, numpy.integer)) or d <= 0 for d in shape):
        raise ValueError(f"Input: shape must be positive integers (one sample's shape, without the batch), "
                         f"got {shape!r}")
    return SymbolicTensor(shape, dtype, name=check_name(name))


class Node:
    """One application of ``layer`` to ``inputs`` (SymbolicTensors); ``multi``: the layer takes a list."""

    def __init__(self, layer, inputs, multi):
        self.layer, self.inputs, self.multi = layer, list(inputs), multi
        self.output = None


def is_symbolic(x):
    """True for a SymbolicTensor or a non-empty list/tuple of them."""
    if isinstance(x, SymbolicTensor):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, SymbolicTensor) for t in x)


def _probe_dtype(layer, inputs):
    params = layer.parameters()
    return params[0].data if params else None, (params[0].data.dtype if params else inputs[0].dtype)


def record(layer, x):
    """The SymbolicTensor of ``layer`` applied to ``x`` (a SymbolicTensor or a list of them), after checking
    the shapes by running ``layer`` on one zero sample; GraphError names the layer and the shapes."""
    if layer in _recorded:
        raise GraphError(f"{layer!r} is already used in a graph; a layer is used once (make another "
                         f"{type(layer).__name__}(...) for a second use: sharing weights is not supported)")
    multi = isinstance(x, (list, tuple))
    inputs = list(x) if multi else [x]
    ref, dtype = _probe_dtype(layer, inputs)
    xp = get_array_module(ref) if ref is not None else numpy
    was_training = layer.training
    layer.eval()
    try:
        with device_scope(ref):
            probes = [xp.zeros((1,) + t.shape, dtype=dtype) for t in inputs]
            y = layer.forward(probes if multi else probes[0])
    except (ValueError, TypeError) as exc:
        shapes = ", ".join(str(t.shape) for t in inputs)
        raise GraphError(f"{layer!r} cannot take input{'s' if multi else ''} of shape {shapes} (one sample, "
                         f"without the batch): {exc}") from None
    finally:
        layer.train(was_training)
    node = Node(layer, inputs, multi)
    node.output = SymbolicTensor(y.shape[1:], y.dtype, node)
    _recorded[layer] = node
    return node.output
