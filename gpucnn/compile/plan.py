"""The one planner of the fast paths: a model's layers matched against patterns, each match handed to an executor.

Patterns (the first that fits, each taking every optional layer that follows in order):

    conv         Conv2D [ReLU] [MaxPool2D]      the fused convolution (bias, ReLU, pooling in or after it)
    dense        Dense [ReLU]
    pool         MaxPool2D | AvgPool2D
    elementwise  ReLU | LeakyReLU | Sigmoid | Tanh
    flatten      Flatten
    batchnorm    BatchNorm2D                    (its statistics cut the CPU segment into phases in training)

Each layer type declares its places in these patterns in the registry (gpucnn/nn/registry.py).
A pattern matches only the exact layer classes (a subclass of the user's own may compute
something else). The planner also follows the rank of the data (4: feature maps, 2: feature
vectors) from the model's input, because which executor can take a match depends on it.

An executor (``gpucnn.compile.cpu`` on threads, ``gpucnn.compile.cuda_graph`` in one CUDA graph)
declares what it runs with ``take(match, rank) -> number of the match's layers it runs`` (0:
none; fewer than all: the rest is planned again, so ``Conv2D ReLU MaxPool2D`` can become a conv
stage and a pool stage), and makes its stages from the matches it took. What no executor
takes is a ``Step`` of one layer: the CPU path runs it as itself on the reference path, the
graph refuses the model and names it.

A model is a chain of layers today (Sequential); the plan is a list of steps in order. For a
graph of layers, the patterns match along chains of layers whose outputs have one consumer, and
every other node becomes a step of its own.
"""
from ..nn.registry import LAYER_TYPES, layer_type

__all__ = ["PATTERNS", "Match", "Step", "plan", "rank_after"]


def _patterns():
    """pattern name -> the classes allowed at each position (the first is required, the rest optional), from
    the ``patterns`` each layer type declares in the registry (gpucnn/nn/registry.py)."""
    places = {}
    for entry in LAYER_TYPES.values():
        for kind, position in entry.patterns:
            places.setdefault(kind, {}).setdefault(position, []).append(entry.cls)
    order = ("conv", "dense", "pool", "elementwise", "flatten")  # first fit wins; others after, by name
    kinds = [k for k in order if k in places] + sorted(set(places) - set(order))
    return {k: tuple(tuple(places[k][i]) for i in sorted(places[k])) for k in kinds}


#: pattern name -> the classes allowed at each position
PATTERNS = _patterns()


class Match:
    """Consecutive layers matching pattern ``kind``, starting at layer ``start`` of the model."""

    def __init__(self, kind, layers, start):
        self.kind, self.layers, self.start = kind, list(layers), start

    def __repr__(self):
        names = " + ".join(type(layer).__name__ for layer in self.layers)
        return f"Match({self.kind}: {names} at {self.start})"


class Step:
    """One planned step: the ``match`` an executor took (``executor`` names it), or a lone ``layer``."""

    def __init__(self, match=None, layer=None, rank=None):
        self.match, self.layer, self.rank = match, layer, rank

    @property
    def layers(self):
        return self.match.layers if self.match is not None else [self.layer]


def _match_at(layers, i):
    """The longest pattern match starting at layer i, or None."""
    for kind, positions in PATTERNS.items():
        if type(layers[i]) not in positions[0]:
            continue
        taken = [layers[i]]
        for allowed in positions[1:]:  # each optional: taken when the next layer fits, else skipped
            j = i + len(taken)
            if j < len(layers) and type(layers[j]) in allowed:
                taken.append(layers[j])
        return Match(kind, taken, i)
    return None


def rank_after(layer, rank):
    """The rank of the data after ``layer`` (None: not known, for a layer of the user's own)."""
    entry = layer_type(layer)
    if entry is None:
        return None
    return rank if entry.rank == "same" else entry.rank


def plan(layers, take, rank=None):
    """[Step]: the layers matched left to right; ``take(match, rank)`` says how many of a match's layers the
    executor runs (see the module docstring). ``rank``: that of the model's input (None: unknown)."""
    layers = list(layers)
    steps, i = [], 0
    while i < len(layers):
        match = _match_at(layers, i)
        count = take(match, rank) if match is not None else 0
        if count:
            taken = Match(match.kind, match.layers[:count], i)
            steps.append(Step(match=taken, rank=rank))
        else:
            steps.append(Step(layer=layers[i], rank=rank))
            count = 1
        for layer in layers[i:i + count]:
            rank = rank_after(layer, rank)
        i += count
    return steps
