"""How a Model runs on the fast path: its whole graph, nested blocks opened up (graph_plan.py), in the internal
layout from the model's input to its output (graph_segment.py).

Model.forward hands over to ``graph_runner_for``, as Sequential.forward does to runner.runner_for. The planned
nodes are cut into parts: each run of nodes that have stages is one GraphSegment (for a ResNet: the whole
model, stem to classifier); a node without a stage (a layer of the user's own, Dropout, BatchNorm1D) runs as
itself between them, and only there, and at the model's inputs and outputs, do the data change layout.

Verify mode (``gpucnn.config.verify``) holds the first step of each input shape against
Model.reference_forward / reference_backward, as the chain runner does.
"""
import numpy

from ...config import PATHS, config
from .checking import compare, layer_state, reference_path, restore_layer_state, verify_mode
from .graph_plan import plan_graph
from .graph_segment import FallbackNode, GraphSegment, add_gradient

__all__ = ["GraphRunner", "SequentialGraphRunner", "graph_runner_for"]

_KEPT_RUNNERS = 4
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def _parts(planned, inputs, outputs):
    """[GraphSegment | FallbackNode]: consecutive planned stages grouped, each segment told which tensors it
    reads from outside and which it hands on."""
    groups = []
    for item in planned:
        if item.stage is None:
            groups.append(item)
        elif groups and isinstance(groups[-1], list):
            groups[-1].append(item)
        else:
            groups.append([item])
    readers = []  # for each group, the tensors it reads
    for group in groups:
        items = group if isinstance(group, list) else [group]
        readers.append({t for item in items for t in item.inputs})
    parts = []
    for g, group in enumerate(groups):
        if not isinstance(group, list):
            parts.append(FallbackNode(group))
            continue
        made = {item.output for item in group}
        reads = sorted({t for item in group for t in item.inputs} - made)
        later = set(outputs).union(*readers[g + 1:])
        parts.append(GraphSegment(group, reads, sorted(made & later)))
    return parts


class GraphRunner:
    """The fast path of one Model: its parts in order; verify mode compares it with the reference path."""

    def __init__(self, model, input_ranks):
        self.model = model
        self.multi_input = getattr(model, "multi_input", False)  # a Sequential: one array in, one out
        self.multi_output = getattr(model, "multi_output", False)
        planned, self.inputs, self.outputs = plan_graph(model, input_ranks)
        self.parts = _parts(planned, self.inputs, self.outputs)
        self.verified = set()
        self._verifying = None

    @property
    def segments(self):
        return [p for p in self.parts if isinstance(p, GraphSegment)]

    def _run_forward(self, arrays):
        values = dict(zip(self.inputs, arrays))
        keep = self.model.training
        for part in self.parts:
            part.forward(values, keep)
        return [values[t] for t in self.outputs]

    def _run_backward(self, grads_out, need_input_grad):
        grads = {}
        for t, g in zip(self.outputs, grads_out):
            add_gradient(grads, t, g)
        skip = set() if need_input_grad else set(self.inputs)
        for part in reversed(self.parts):
            part.backward(grads, skip)
        return [grads[t] for t in self.inputs] if need_input_grad else None

    def forward(self, arrays):
        """[output arrays] for [input arrays]."""
        mode = verify_mode()
        key = tuple(tuple(a.shape) for a in arrays)
        self._verifying = key if mode and key not in self.verified else None
        if self._verifying is None:
            return self._run_forward(arrays)
        layers = self.model.leaf_layers()
        before = layer_state(layers)
        outputs = self._run_forward(arrays)
        restore_layer_state(layers, before)  # the reference draws the same dropout masks, moves the statistics once
        with reference_path():
            reference = self.model.reference_forward(arrays if self.multi_input else arrays[0])
        reference = reference if self.multi_output else [reference]
        for i, (y, r) in enumerate(zip(outputs, reference)):
            compare(f"output {i}" if len(outputs) > 1 else "forward output", y, r, mode)
        return outputs

    def backward(self, grads_out, need_input_grad=True):
        """[input gradients] (None when not ``need_input_grad``) for [output gradients]; fills .grad."""
        key, self._verifying = self._verifying, None
        if key is None:
            return self._run_backward(grads_out, need_input_grad)
        params = self.model.parameters()
        before = [p.grad.copy() for p in params]
        grads_x = self._run_backward(grads_out, need_input_grad)
        fast_grads = [p.grad.copy() for p in params]
        for p, g in zip(params, before):
            p.grad[...] = g
        with reference_path():
            ref = self.model.reference_backward(grads_out if self.multi_output else grads_out[0], need_input_grad)
        ref = ref if self.multi_input else [ref]
        mode = verify_mode()
        if need_input_grad:
            for i, (g, r) in enumerate(zip(grads_x, ref)):
                compare(f"gradient of input {i}" if len(grads_x) > 1 else "input gradient", g, r, mode)
        largest = max((float(numpy.max(numpy.abs(p.grad), initial=0.0)) for p in params), default=0.0)
        for i, (p, g) in enumerate(zip(params, fast_grads)):
            compare(f"gradient of parameter {i} ({p.name}, shape {tuple(p.shape)})", g, p.grad, mode, largest)
        self.verified.add(key)
        return grads_x


class SequentialGraphRunner(GraphRunner):
    """A Sequential with networks among its layers (a stack of blocks) as one graph: one array in, one out."""

    def forward(self, x):
        return super().forward([x])[0]

    def backward(self, grad_out, need_input_grad=True):
        result = super().backward([grad_out], need_input_grad)
        return None if result is None else result[0]


def graph_runner_for(model, arrays):
    """The runner of the graph of ``model`` (a Model; or a Sequential of blocks, given one array in a list) on
    ``arrays`` (its inputs), or None for the reference path (config.path 'reference', arrays on a GPU, a dtype
    other than float32/float64, no stage in it)."""
    path = config.path
    if path not in PATHS:
        raise ValueError(f"gpucnn.config.path must be one of {PATHS}, got {path!r}")
    if path == "reference" or any(type(a) is not numpy.ndarray or a.dtype not in _FLOATS for a in arrays):
        return None
    if any(type(p.data) is not numpy.ndarray or p.data.dtype not in _FLOATS for p in model.parameters()):
        return None  # GPU arrays; float16, whose sums the reference path widens
    key = tuple(a.ndim for a in arrays) + tuple((id(layer), type(layer)) for layer in model.leaf_layers())
    cache = model.__dict__.setdefault("_fast_graph_runners", {})
    runner = cache.get(key)
    if runner is None:
        if len(cache) >= _KEPT_RUNNERS:
            cache.pop(next(iter(cache)))
        kind = GraphRunner if hasattr(model, "nodes") else SequentialGraphRunner
        runner = cache[key] = kind(model, [a.ndim for a in arrays])
    return runner if runner.segments else None
