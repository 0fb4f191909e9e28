"""A Model's graph, flattened and planned for the fast path: nested Models and Sequentials opened up into one
list of nodes on tensors, the chains among them planned by the one planner (gpucnn/compile/plan.py), the joins
(Add, Concatenate) and GlobalAvgPool2D given stages of their own (merge_stages.py).

Flattening: a node whose layer is a network (a block Model, a Sequential of blocks) is replaced by the nodes
inside it, wired to the tensors around it, so that a ResNet is one graph from its input to its output and the
data need not leave the internal layout at a block's edge. Tensors are numbered here (``Planned.inputs``,
``Planned.output``); the model's own symbolic tensors give their ranks, a Sequential's follow from its layers.

Planning: consecutive nodes of one-input layers, each reading only the previous one's output (used by nothing
else), form a chain, matched by the planner as any Sequential's layers are (so Conv2D -> ReLU -> MaxPool2D
still folds into one stage); every other node is planned alone. A node no stage takes keeps its layer and runs
as itself, on the whole batch, in the public layout (the fallback: graph_segment.FallbackNode).
"""
import itertools

from ...nn.layers import Add, Concatenate, GlobalAvgPool2D
from ...nn.network import Network
from ...nn.registry import layer_type
from ..plan import plan, rank_after
from .merge_stages import AddStage, ConcatenateStage, GlobalAvgPoolStage
from .stage_plan import stage_for, take

__all__ = ["Planned", "flatten", "plan_graph"]


class Planned:
    """What runs at one point of the graph: ``stage`` (a fast stage) or, where none, ``layer`` itself, from the
    tensors ``inputs`` to ``output``; ``multi``: it takes a list."""

    def __init__(self, inputs, output, multi, stage=None, layer=None):
        self.inputs, self.output, self.multi = list(inputs), output, multi
        self.stage, self.layer = stage, layer

    @property
    def layers(self):
        return list(self.stage.layers) if self.stage is not None else [self.layer]


class _Node:
    def __init__(self, layer, inputs, output, multi, rank):
        self.layer, self.inputs, self.output, self.multi, self.rank = layer, inputs, output, multi, rank


def _opens(layer, multi):
    """Whether a node of ``layer`` is replaced by the nodes inside it: a Model of one output, or a Sequential."""
    if not isinstance(layer, Network):
        return False
    if hasattr(layer, "nodes"):  # a Model
        return not layer.multi_output and layer.multi_input == multi
    return not multi


def flatten(model, input_ranks):
    """(nodes in an order that runs, input tensor numbers, output tensor numbers, {tensor: rank}) of ``model`` (a
    Model or a Sequential) for inputs of ``input_ranks``, nested networks opened up (rank None: not known)."""
    numbers, nodes = itertools.count(), []
    ranks = {}

    def new(rank):
        t = next(numbers)
        ranks[t] = rank
        return t

    def open_model(network, inputs):
        env = {t.id: i for t, i in zip(network.inputs, inputs)}
        for node in network.nodes:
            args = [env[t.id] for t in node.inputs]
            rank = len(node.output.shape) + 1
            if _opens(node.layer, node.multi):
                env[node.output.id] = open_network(node.layer, args)[0]
            else:
                env[node.output.id] = out = new(rank)
                nodes.append(_Node(node.layer, args, out, node.multi, rank))
        return [env[t.id] for t in network.outputs]

    def open_network(network, inputs):
        if hasattr(network, "nodes"):
            return open_model(network, inputs)
        (x,) = inputs
        for layer in network.layers:
            if _opens(layer, False):
                (x,) = open_network(layer, [x])
            else:
                out = new(rank_after(layer, ranks[x]))
                nodes.append(_Node(layer, [x], out, False, ranks[out]))
                x = out
        return [x]

    inputs = [new(rank) for rank in input_ranks]
    outputs = open_network(model, inputs)
    return nodes, inputs, outputs, ranks


def _node_stage(index, node, ranks):
    """The stage of a node planned alone (a join, a global average pool), or None."""
    kind, in_ranks = type(node.layer), [ranks[t] for t in node.inputs]
    if kind is Add and all(r in (2, 4) for r in in_ranks) and len(set(in_ranks)) == 1:
        return AddStage(index, node.layer)
    if kind is Concatenate and all(r in (2, 4) for r in in_ranks) and len(set(in_ranks)) == 1:
        return ConcatenateStage(index, node.layer, in_ranks[0])
    if kind is GlobalAvgPool2D and in_ranks == [4]:
        return GlobalAvgPoolStage(index, node.layer)
    return None


def _chains(nodes, uses):
    """[[node]]: consecutive one-input nodes of gpucnn's own layers, each reading the previous one's output
    (used by nothing else), grouped; every other node alone."""
    groups = []
    for node in nodes:
        chainable = not node.multi and layer_type(node.layer) is not None
        last = groups[-1] if groups else None
        if chainable and last is not None and last[0] and node.inputs[0] == last[1][-1].output \
                and uses[last[1][-1].output] == 1:
            last[1].append(node)
        else:
            groups.append((chainable, [node]))
    return [group for _, group in groups]


def plan_graph(model, input_ranks):
    """([Planned] in an order that runs, input tensor numbers, output tensor numbers) of ``model``."""
    nodes, inputs, outputs, ranks = flatten(model, input_ranks)
    uses = {}
    for t in [t for node in nodes for t in node.inputs] + outputs:
        uses[t] = uses.get(t, 0) + 1
    planned, index = [], 0
    for chain in _chains(nodes, uses):
        at = 0
        for step in plan([node.layer for node in chain], take, ranks[chain[0].inputs[0]]):
            first, last = chain[at], chain[at + len(step.layers) - 1]
            at += len(step.layers)
            stage = stage_for(index, step.match) if step.match is not None else _node_stage(index, first, ranks)
            if stage is not None:
                index += 1
            planned.append(Planned(first.inputs, last.output, first.multi, stage=stage,
                                   layer=None if stage is not None else first.layer))
    return planned, inputs, outputs
