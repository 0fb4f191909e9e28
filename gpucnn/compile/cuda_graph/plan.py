"""The graph step's program: a model's fused stages in the order they run, each reading and writing named values.

A Sequential is one chain; a Model (gpucnn/nn/model.py) is a graph of them. ``build_program`` flattens
either, nested Models and Sequentials included, into layer nodes over values (the model's input is
value 0), then:

    chains    consecutive one-input layers, each reading the value the one before wrote and nothing else
              reading it, are planned by the one planner (gpucnn/compile/plan.py) and become the fused
              stages of gpucnn/compile/cuda_graph/plan.py (a BatchNorm2D followed by ReLU: one stage)
    joins     Add, Concatenate: stages of their own (gpucnn/compile/cuda_graph/join_stages.py)

``Program.forward`` runs the nodes in order. ``Program.backward`` runs them in reverse and sums the
gradients of a value read by several nodes (the skip connection's dL/dx = dL/dh + dL/dskip); a node
whose inputs are all the model's input computes no input gradient. A layer without a fused stage
makes ``build_program`` refuse the model, naming the layer.
"""
import re

from ...nn.layers import Add, BatchNorm2D, Concatenate, Conv2D, Dense, GlobalAvgPool2D, ReLU
from ...nn.model import Model
from ...nn.sequential import Sequential
from ..plan import plan, rank_after
from . import chain_stages, join_stages

__all__ = ["Program", "ProgramNode", "build_program", "build_stages", "take", "SUPPORTED_LAYERS"]

#: the layer types the graph-captured step runs
SUPPORTED_LAYERS = chain_stages.SUPPORTED_LAYERS + ("Add", "Concatenate", "GlobalAvgPool2D")

#: what the graph runs of a planner match (the registry's path table reads it)
take = chain_stages.take

_JOINS = {Add: join_stages.AddStage, Concatenate: join_stages.ConcatenateStage}


class ProgramNode:
    """One stage, the values it reads (``inputs``, keys) and the value it writes; ``label`` names its layer."""

    def __init__(self, stage, inputs, output, label, multi=False):
        self.stage, self.inputs, self.output, self.label, self.multi = stage, list(inputs), output, label, multi


class Program:
    """The nodes of a model's step in order; value 0 is the model's input, ``output`` the key of its output."""

    INPUT = 0

    def __init__(self, nodes, output):
        self.nodes, self.output = nodes, output

    @property
    def stages(self):
        return [node.stage for node in self.nodes]

    def forward(self, x):
        values = {self.INPUT: x}
        for node in self.nodes:
            args = [values[k] for k in node.inputs]
            values[node.output] = node.stage.forward(args if node.multi else args[0])
        return values[self.output]

    def backward(self, grad):
        """Every stage's gradients (``stage.grads``) from dL/d(output); returns nothing (the input's gradient is
        not needed by the training step)."""
        grads, masked = {self.output: grad}, {self.output: False}
        for node in reversed(self.nodes):
            g = grads.pop(node.output, None)
            if g is None:
                raise RuntimeError(f"compile_step: the output of {node.label} reaches no loss")
            need = any(k != self.INPUT for k in node.inputs)
            result, was_masked = node.stage.backward(g, need, masked.pop(node.output))
            if not need:
                continue
            for key, r in zip(node.inputs, result if node.multi else [result]):
                if key == self.INPUT:
                    continue
                if key in grads:  # read by several nodes: the sum (a new array; r may be shared)
                    if was_masked or masked[key]:
                        raise RuntimeError(f"compile_step: a ReLU-masked gradient meets another at {node.label}")
                    grads[key] = grads[key] + r
                else:
                    grads[key], masked[key] = r, was_masked

    def param_grads(self, params):
        """The gradients of the last backward in the order of ``params`` (the model's parameters)."""
        by_param = {id(p): g for stage in self.stages for p, g in zip(stage.params, stage.grads)}
        missing = [i for i, p in enumerate(params) if id(p) not in by_param]
        if missing:
            raise RuntimeError(f"compile_step: parameters {missing} of the model get no gradient in the graph step")
        return [by_param[id(p)] for p in params]

    def buffers(self):
        """The arrays the step updates in place besides the parameters (BatchNorm2D's running statistics)."""
        return [b for stage in self.stages for b in getattr(stage, "buffers", lambda: [])()]


def _flatten(model):
    """([(layer, input keys, output key, label, multi)] in the order the layers run, the output's key) of
    ``model``, nested Models and Sequentials opened. Labels: 'layer 3' in a Sequential at the top, else the
    layer's PyTorch path ('layer 'layer1.0.bn1'')."""
    nodes = []

    def visit(net, inputs, prefix, multi=False, top=False):
        if isinstance(net, Model):
            if net.multi_input or net.multi_output:
                raise NotImplementedError(f"compile_step: {prefix or net.name} has several inputs or outputs; the "
                                          f"graph-captured step trains one-input, one-output models")
            keys = {net.inputs[0].id: inputs[0]}
            dot = f"{prefix}." if prefix else ""
            for node, name in zip(net.nodes, net.node_names):
                args = [keys[t.id] for t in node.inputs]
                keys[node.output.id] = visit(node.layer, args, f"{dot}{name}", node.multi)
            return keys[net.outputs[0].id]
        if isinstance(net, Sequential):
            key = inputs[0]
            for i, layer in enumerate(net.layers):
                key = visit(layer, [key], f"{prefix}.{i}" if prefix else str(i), top=top)
            return key
        key = len(nodes) + 1  # 0 is the model's input
        nodes.append((net, inputs, key, f"layer {prefix}" if top else f"layer {prefix!r}", multi))
        return key

    output = visit(model, [Program.INPUT], "", top=isinstance(model, Sequential))
    return nodes, output


def _input_rank(model):
    """The rank of the model's input (batch included) for the planner, where it is known: a Model's Input, a
    Sequential's remembered shape, else guessed from its first layer (None: unknown, as the planner allows)."""
    if isinstance(model, Model):
        return len(model.inputs[0].shape) + 1
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return len(shape) + 1
    first = next(iter(model.leaf_layers()), None)
    return 4 if isinstance(first, (Conv2D, BatchNorm2D)) else (2 if isinstance(first, Dense) else None)


def _refuse(layer, label):
    return NotImplementedError(f"compile_step: {label} ({type(layer).__name__}) has no fused stage; the "
                               f"graph-captured step supports {', '.join(SUPPORTED_LAYERS)} (use the eager path for "
                               f"this model)")


def _chain_nodes(chain, rank):
    """ProgramNodes of one chain [(layer, [key], key, label, multi)] of one-input layers."""
    layers = [item[0] for item in chain]
    out, position = [], 0
    try:
        steps = plan(layers, chain_stages.take, rank)
    except NotImplementedError as exc:  # name the layer by its place in the model, not in the chain
        index = re.match(r"compile_step: layer (\d+) ", str(exc))
        if index is None:
            raise
        label = chain[int(index.group(1))][3]
        raise NotImplementedError(str(exc).replace(f"layer {index.group(1)} ", f"{label} ", 1)) from None
    for step in steps:
        count = len(step.layers)
        items = chain[position:position + count]
        position += count
        if step.match is None:
            layer, label = items[0][0], items[0][3]
            if type(layer) is GlobalAvgPool2D:
                stages = [join_stages.GlobalAvgPoolStage(layer)]
            else:
                raise _refuse(layer, label)
        else:
            stages = chain_stages.stages_of(step.match)
        # one node per stage: a stage covers consecutive layers of the match (conv + ReLU, then the pool)
        cursor = 0
        for stage in stages:
            width = stage.width
            first, last = items[cursor], items[cursor + width - 1]
            out.append(ProgramNode(stage, first[1], last[2], first[3]))
            cursor += width
    return _fuse_batchnorm_relu(out)


def _fuse_batchnorm_relu(nodes):
    """BatchNorm2D then ReLU (as a ResNet writes them): one stage, the ReLU in the normalisation's kernel."""
    fused = []
    for node in nodes:
        previous = fused[-1] if fused else None
        if previous is not None and isinstance(previous.stage, join_stages.BatchNormStage) and \
                not previous.stage.relu and type(node.stage.layer) is ReLU and node.inputs == [previous.output]:
            previous.stage.relu = True
            previous.stage.name = "BatchNorm2D+ReLU"
            previous.output = node.output
            continue
        fused.append(node)
    return fused


def build_program(model):
    """The Program of ``model`` (a Sequential or a Model); NotImplementedError names a layer without a stage."""
    flat, output = _flatten(model)
    uses = {}
    for _, inputs, _, _, _ in flat:
        for k in inputs:
            uses[k] = uses.get(k, 0) + 1
    uses[output] = uses.get(output, 0) + 1
    nodes, chain, ranks = [], [], {Program.INPUT: _input_rank(model)}

    def close_chain():
        if chain:
            nodes.extend(_chain_nodes(chain, ranks[chain[0][1][0]]))
            chain.clear()

    for item in flat:
        layer, inputs, key, label, multi = item
        rank = ranks.get(inputs[0])
        ranks[key] = rank if multi else rank_after(layer, rank)
        if multi:
            close_chain()
            join = _JOINS.get(type(layer))
            if join is None:
                raise _refuse(layer, label)
            nodes.append(ProgramNode(join(layer), inputs, key, label, multi=True))
            continue
        if chain and not (inputs[0] == chain[-1][2] and uses[chain[-1][2]] == 1):
            close_chain()
        chain.append(item)
    close_chain()
    return Program(nodes, output)


def build_stages(model):
    """The fused stages of ``model`` in the order they run (``build_program(model).stages``)."""
    return build_program(model).stages
