"""Model: a graph of layers between inputs and outputs (Keras's functional API); Sequential is its chain.

    x = gpucnn.Input((3, 32, 32))
    h = ReLU()(BatchNorm2D(16, name="bn1")(Conv2D(3, 16, 3, padding="same", name="conv1")(x)))
    y = Dense(16, 10, name="fc")(Flatten()(GlobalAvgPool2D()(ReLU()(Add()([h, skip])))))
    model = gpucnn.Model(x, y, name="tiny_resnet")

forward evaluates the nodes in topological order. backward goes in reverse and sums the gradients
of a tensor used more than once: a skip connection's input gets dL/dx = dL/dh + dL/dskip, as a
tutorial writes it. A Model is a layer: it can be called on a tensor inside another Model, or
put in a Sequential, and a Sequential can be called inside a Model; names nest as PyTorch's
attribute paths ('block2.conv1.weight'). A layer without a name gets one from its type, unique
in its model ('conv2d_1', 'conv2d_2', ...), in the order the layers were called.
"""
import re

from ..backend import device_scope
from ..compile.cpu.graph_runner import graph_runner_for
from .graph import GraphError, SymbolicTensor, is_symbolic, record
from .layers.base import Layer, check_grad_array
from .network import Network
from .registry import describe, layer_type
from .sequential import Sequential
from .summary import Summary, SummaryRow, output_shapes

__all__ = ["Model"]


def _as_list(x, what):
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    if not items or not all(isinstance(t, SymbolicTensor) for t in items):
        raise TypeError(f"Model: {what} must be gpucnn.Input() tensors or tensors made from them (or a list of "
                        f"them), got {x!r}")
    return items


def _auto_name(layer, taken):
    base = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", type(layer).__name__).lower()  # BatchNorm2D -> batch_norm2d
    k = 1
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"


def _sequential_rows(chain, input_shape, indent):
    """The rows of a Sequential inside a Model: its layers by index, nested Models' rows below theirs."""
    for i, (layer, shape) in enumerate(zip(chain.layers, output_shapes(chain, input_shape))):
        yield SummaryRow(None, f"{indent}{i} ({type(layer).__name__})", shape,
                         sum(int(p.data.size) for p in layer.parameters()))
        if isinstance(layer, Model):
            yield from layer._rows(indent + "  ")


class _Step:
    """What forward runs at one point: ``runner`` (a layer, a nested network, or a chain of layers as a
    Sequential) from ``inputs`` to ``output``."""

    def __init__(self, runner, inputs, output, multi):
        self.runner, self.inputs, self.output, self.multi = runner, inputs, output, multi


class Model(Network, Layer):
    """The layers between ``inputs`` and ``outputs`` (symbolic tensors, or lists of them).

    Example:
        >>> x = gpucnn.Input((1, 28, 28))
        >>> y = Dense(8 * 14 * 14, 10)(Flatten()(MaxPool2D(2)(ReLU()(Conv2D(1, 8, 3, padding=1)(x)))))
        >>> model = gpucnn.Model(x, y)
        >>> grad_x = model.backward(loss_fn.backward())   # after loss_fn.forward(model.forward(x_batch), labels)
    """

    FORMAT = "gpucnn.Model/1"

    def __init__(self, inputs, outputs, name=None):
        Layer.__init__(self, name)
        self.multi_input, self.multi_output = isinstance(inputs, (list, tuple)), isinstance(outputs, (list, tuple))
        self.inputs, self.outputs = _as_list(inputs, "inputs"), _as_list(outputs, "outputs")
        for t in self.inputs:
            if t.node is not None:
                raise GraphError(f"Model: input {t!r} is made by a layer; a model's inputs are gpucnn.Input() tensors")
        self.nodes = self._topological_nodes()
        self.layers = [node.layer for node in self.nodes]
        taken = {n.layer.given_name for n in self.nodes if n.layer.given_name}
        self.node_names = []
        for node in self.nodes:
            given = getattr(node.layer, "given_name", None)
            if given is not None and given in self.node_names:
                raise GraphError(f"Model: two layers are named {given!r}; names must be unique in a model")
            name_ = given if given is not None else _auto_name(node.layer, taken)
            taken.add(name_)
            self.node_names.append(name_)
        self._by_name = dict(zip(self.node_names, self.layers))
        self.input_shape = self.inputs[0].shape if not self.multi_input else None
        self.steps = self._chained_steps()

    def _chained_steps(self):
        """[Step]: what forward runs, in order. Consecutive nodes of gpucnn's own one-input layers, each reading
        only the previous one's output (used by nothing else), run as one chain: a Sequential of them, which
        the CPU fast path plans as it plans any chain (gpucnn/compile/plan.py); every other node runs alone."""
        uses = {}
        for t in [t for node in self.nodes for t in node.inputs] + self.outputs:
            uses[t.id] = uses.get(t.id, 0) + 1
        groups = []
        for node in self.nodes:
            chainable = not node.multi and layer_type(node.layer) is not None
            previous = groups[-1][1][-1] if groups else None
            if chainable and previous is not None and groups[-1][0] and \
                    node.inputs[0] is previous.output and uses[previous.output.id] == 1:
                groups[-1][1].append(node)
            else:
                groups.append((chainable, [node]))
        steps = []
        for _, nodes in groups:
            if len(nodes) == 1:
                steps.append(_Step(nodes[0].layer, nodes[0].inputs, nodes[0].output, nodes[0].multi))
            else:
                steps.append(_Step(Sequential([n.layer for n in nodes]), nodes[0].inputs, nodes[-1].output, False))
        return steps

    def _topological_nodes(self):
        """The nodes the outputs depend on, each after the nodes it reads (in the order they were recorded)."""
        inputs = {t.id for t in self.inputs}
        seen, order, stack = set(), [], [t for t in self.outputs]
        while stack:
            t = stack.pop()
            if t.id in inputs or t.node is None:
                if t.id not in inputs:
                    raise GraphError(f"Model: an output depends on {t!r}, which is not among the model's inputs")
                continue
            if id(t.node) in seen:
                continue
            seen.add(id(t.node))
            order.append(t.node)
            stack.extend(t.node.inputs)
        return sorted(order, key=lambda node: node.output.id)  # a node's output is made after its inputs

    def train(self, mode=True):
        """Train or eval mode for every layer, and for the chains that run them (their buffers follow it)."""
        Network.train(self, mode)
        for step in self.steps:
            step.runner.training = bool(mode)
        return self

    # ------------------------------------------------------------------ running

    def forward(self, x):
        """The outputs for ``x`` (an array, or a list of arrays for a model of several inputs); on the CPU the whole
        graph through gpucnn.compile.cpu (in its fast layout across joins and nested blocks) unless
        ``gpucnn.config.path = 'reference'``."""
        arrays = self._input_arrays(x)
        self._fast = graph_runner_for(self, arrays)  # backward takes the path its forward took
        outputs = self._fast.forward(arrays) if self._fast is not None else self._run_steps(arrays, readable=False)
        if self.input_shape is None and not self.multi_input:
            self.input_shape = self.inputs[0].shape
        return outputs if self.multi_output else outputs[0]

    def reference_forward(self, x):
        """The readable path: each step's forward in turn, chains and nested networks on their readable paths."""
        outputs = self._run_steps(self._input_arrays(x), readable=True)
        return outputs if self.multi_output else outputs[0]

    def _input_arrays(self, x):
        arrays = list(x) if self.multi_input else [x]
        if len(arrays) != len(self.inputs):
            raise ValueError(f"{self.name}: expected {len(self.inputs)} inputs, got {len(arrays)}")
        for t, a in zip(self.inputs, arrays):
            if tuple(getattr(a, "shape", ())[1:]) != t.shape:
                raise ValueError(f"{self.name}: expected inputs of shape (N, {', '.join(map(str, t.shape))}), got "
                                 f"{tuple(getattr(a, 'shape', ()))}")
        return arrays

    def _run_steps(self, arrays, readable):
        values = {t.id: a for t, a in zip(self.inputs, arrays)}
        with device_scope(arrays[0]):
            for step in self.steps:
                args = [values[t.id] for t in step.inputs]
                run = step.runner.forward
                if readable:  # a chain or a nested network on its readable path too
                    run = getattr(step.runner, "reference_forward", run)
                values[step.output.id] = run(args if step.multi else args[0])
        return [values[t.id] for t in self.outputs]

    def __call__(self, x):
        """``forward(x)``; on symbolic tensors it records this model as one node of another graph."""
        if is_symbolic(x):
            return record(self, x)
        return self.forward(x)

    def backward(self, grad_out, need_input_grad=True):
        """dL/d(inputs) from dL/d(outputs); every parameter's .grad is filled on the way. A tensor used by several
        layers receives the sum of their gradients. ``need_input_grad=False`` returns None and lets the layers
        that read only the model's inputs skip dL/dx."""
        if getattr(self, "_fast", None) is not None:
            grads_out = list(grad_out) if self.multi_output else [grad_out]
            if len(grads_out) != len(self.outputs):
                raise ValueError(f"{self.name}: expected {len(self.outputs)} output gradients, got {len(grads_out)}")
            for g in grads_out:
                check_grad_array(g, self.name)
            result = self._fast.backward(grads_out, need_input_grad)
            return None if result is None else result if self.multi_input else result[0]
        return self._backward_steps(grad_out, need_input_grad, readable=False)

    def reference_backward(self, grad_out, need_input_grad=True):
        """The readable path of ``backward``, after ``reference_forward``."""
        return self._backward_steps(grad_out, need_input_grad, readable=True)

    def _backward_steps(self, grad_out, need_input_grad, readable):
        grads_out = list(grad_out) if self.multi_output else [grad_out]
        if len(grads_out) != len(self.outputs):
            raise ValueError(f"{self.name}: expected {len(self.outputs)} output gradients, got {len(grads_out)}")
        grads = {}
        for t, g in zip(self.outputs, grads_out):
            check_grad_array(g, self.name)
            grads[t.id] = g if t.id not in grads else grads[t.id] + g
        inputs = {t.id for t in self.inputs}
        with device_scope(grads_out[0]):
            for step in reversed(self.steps):
                g = grads.pop(step.output.id)
                reads_inputs_only = all(t.id in inputs for t in step.inputs)
                need = need_input_grad or not reads_inputs_only
                run = step.runner.backward
                if readable:
                    run = getattr(step.runner, "reference_backward", run)
                result = run(g, need_input_grad=need)
                if not need:
                    continue
                for t, r in zip(step.inputs, result if step.multi else [result]):
                    grads[t.id] = r if t.id not in grads else grads[t.id] + r  # a new array: r may be shared
        if not need_input_grad:
            return None
        result = [grads[t.id] for t in self.inputs]
        return result if self.multi_input else result[0]

    # ------------------------------------------------------------------ names and state

    def named_children(self):
        """[(name, layer)] in the order the layers run."""
        return list(zip(self.node_names, self.layers))

    def named_state(self):
        """{'<layer name>.<name>': array}: PyTorch's attribute paths ('conv1.weight', 'block2.bn1.running_mean')."""
        return {f"{name}.{key}": value for name, layer in self.named_children()
                for key, value in layer.named_state().items()}

    def locate(self, key):
        head, _, rest = key.partition(".")
        if head not in self._by_name or not rest:
            raise KeyError(f"{self.name}: no layer named {head!r} holds {key!r}")
        return self._by_name[head], rest

    @property
    def buffer_names(self):
        return ()

    def architecture(self):
        """The JSON-able record that rebuilds this model (gpucnn.architecture.build), or None."""
        return describe(self, self.input_shape)

    def summary(self, input_shape=None, print_fn=print):
        """Print and return a table of the layers (nested models indented), their output shapes and parameters."""
        rows = tuple(self._rows(""))
        params = self.parameters()
        buffers = sum(int(v.size) for k, v in self.named_state().items()) - sum(int(p.data.size) for p in params)
        result = Summary(self.inputs[0].shape, rows, sum(int(p.data.size) for p in params), buffers,
                         sum(int(p.data.nbytes) for p in params), title=self.name)
        if print_fn is not None:
            print_fn(str(result))
        return result

    def _rows(self, indent):
        for i, (name, node) in enumerate(zip(self.node_names, self.nodes)):
            layer = node.layer
            yield SummaryRow(i if not indent else None, f"{indent}{name} ({type(layer).__name__})", node.output.shape,
                             sum(int(p.data.size) for p in layer.parameters()))
            if isinstance(layer, Model):
                yield from layer._rows(indent + "  ")
            elif isinstance(layer, Sequential):
                yield from _sequential_rows(layer, node.inputs[0].shape, indent + "  ")

    def extra_repr(self):
        return f"{len(self.nodes)} layers"

    def __repr__(self):
        inner = "\n".join(f"  ({name}) {layer!r}".replace("\n", "\n  ") for name, layer in self.named_children())
        return f"Model {self.name}(\n{inner}\n)"
