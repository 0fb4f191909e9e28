"""How a Sequential model runs on the fast path: its layers cut into segments, each run chunk by chunk.

The one planner (gpucnn/compile/plan.py) walks the layers once per input rank; ``take`` says which of
its matches this path runs: runs of them become a ``Segment`` of stages (gpucnn/compile/cpu/stages.py,
batchnorm_stage.py); any other layer (BatchNorm1D, Dropout, a subclass, a layer of the user's own) stays
itself and runs on the whole batch as on the reference path. A segment takes and returns the public layout
((N, C, H, W) or (N, F)); inside it, each chunk of the batch lives in the internal layout, in its own arena,
on its own thread.

Determinism: a chunk's arithmetic does not depend on the other chunks but through BatchNorm's batch
statistics in training, whose per-chunk sums are combined in chunk order, and the per-chunk
parameter gradients are added in chunk order, so results repeat bit for bit for a given thread
count. Between thread counts, forward values agree bit for bit where BLAS computes each output
column the same way whatever the width (OpenBLAS does); parameter gradients differ in float
rounding, since the batch is summed in one partial sum per chunk.
"""
import numpy

from ...config import PATHS, config
from ...nn.network import Network
from ..plan import plan
from .arena import Arena
from .checking import FastPathMismatch, compare as _compare, layer_state, reference_path, restore_layer_state
from .checking import verify_mode as _verify_mode
from .graph_runner import graph_runner_for
from .stage_plan import internal, public_into, stage_for, take
from .threads import chunk_bounds, num_threads, run_chunks, single_threaded_blas

__all__ = ["runner_for", "FastRunner", "FastPathMismatch", "Segment"]

_KEPT_SHAPES = 2  # batch shapes whose buffers a segment keeps in training (the batch size, the last batch)
_KEPT_RUNNERS = 4  # input ranks / layer lists a model keeps a runner for
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


class _Chunk:
    """One chunk's buffers, what its stages saved for backward, and its parameter gradients."""

    def __init__(self):
        self.arena = Arena()
        self.saved = {}
        self.grads = {}


class Segment:
    """Consecutive layers run as stages, chunk by chunk, on the worker threads."""

    def __init__(self, stages):
        self.stages = stages
        self.layers = [layer for stage in stages for layer in stage.layers]
        self._shapes = {}
        self._chunks = {}
        self._last = None  # (bounds, chunks, input shape, output shape) of the forward not yet differentiated

    def _out_shape(self, shape, dtype):
        key = (shape, dtype)
        if key not in self._shapes:
            for stage in self.stages:
                shape, dtype = stage.out_shape(shape, dtype)
            self._shapes[key] = (shape, dtype)
        return self._shapes[key]

    def _chunks_for(self, n, count):
        key = (n, count)
        if key not in self._chunks:
            if len(self._chunks) >= _KEPT_SHAPES:
                self._chunks.pop(next(iter(self._chunks)))
            self._chunks[key] = [_Chunk() for _ in range(count)]
        return self._chunks[key]

    def forward(self, x, keep=True):
        """``keep=False`` (evaluation) uses buffers that go when the next forward comes, so that a large
        evaluation batch does not stay in memory beside the training buffers.

        Phases: a stage whose ``whole_batch`` is true (BatchNorm in training, batchnorm_stage.py) cuts the run:
        every chunk runs up to it and gives its sums, the threads join (the barrier), the stage combines the sums
        in chunk order, and the next phase goes on from it."""
        out_shape, out_dtype = self._out_shape(tuple(x.shape), x.dtype)
        bounds = chunk_bounds(x.shape[0], num_threads())
        chunks = self._chunks_for(x.shape[0], len(bounds)) if keep else [_Chunk() for _ in bounds]
        out = numpy.empty(out_shape, dtype=out_dtype)
        stages = self.stages
        cuts = [k for k, stage in enumerate(stages) if getattr(stage, "whole_batch", False)]
        held, parts = [None] * len(bounds), [None] * len(bounds)

        def phase(lo, hi, stats):
            def work(i):
                start, stop = bounds[i]
                chunk = chunks[i]
                if stats is None:
                    chunk.saved.clear()
                    h, k = internal(x[start:stop]), 0
                else:
                    h, k = stages[lo].forward_apply(chunk, held[i], stats), lo + 1
                for stage in stages[k:hi]:
                    h = stage.forward(chunk, h)
                if hi < len(stages):
                    held[i], parts[i] = h, stages[hi].forward_sums(chunk, h)
                else:
                    public_into(h, out[start:stop])
            return work

        self._last = None
        with single_threaded_blas(len(bounds)):
            lo, stats = 0, None
            for hi in cuts + [len(stages)]:
                run_chunks(phase(lo, hi, stats), len(bounds))
                if hi < len(stages):
                    lo, stats = hi, stages[hi].combine_forward(parts)
        self._last = (bounds, chunks, tuple(x.shape), out_shape, cuts)
        return out

    def backward(self, grad_out, need_input_grad):
        if self._last is None:
            raise RuntimeError(f"{self.layers[-1].name}: backward() called before forward(), or twice after one "
                               "forward (the fast path reuses the forward's buffers for the gradients; use "
                               "gpucnn.config.path = 'reference' to differentiate one forward more than once)")
        bounds, chunks, in_shape, out_shape, cuts = self._last
        if tuple(grad_out.shape) != out_shape:
            raise ValueError(f"{self.layers[-1].name}: backward expected a gradient of shape {out_shape}, "
                             f"got {tuple(grad_out.shape)}")
        self._last = None
        stages = self.stages
        grad_in, held, parts = [None] * len(bounds), [None] * len(bounds), [None] * len(bounds)

        def phase(hi, lo, sums):  # stages hi (with the combined sums, if any) down to lo + 1, then lo's sums
            def work(i):
                start, stop = bounds[i]
                chunk = chunks[i]
                if sums is None:
                    chunk.grads.clear()
                    h = internal(grad_out[start:stop])
                else:
                    h = stages[hi].backward_apply(chunk, held[i], sums, need_input_grad or hi > 0)
                for k in range(hi - 1, lo, -1):
                    h = stages[k].backward(chunk, h, need_input_grad or k > 0)
                if lo >= 0:
                    held[i], parts[i] = h, stages[lo].backward_sums(chunk, h)
                else:
                    grad_in[i] = h
            return work

        with single_threaded_blas(len(bounds)):
            hi, sums = len(stages), None
            for lo in cuts[::-1] + [-1]:
                run_chunks(phase(hi, lo, sums), len(bounds))
                if lo >= 0:
                    hi, sums = lo, stages[lo].combine_backward(parts)
        for stage in self.stages:
            for k, param in enumerate(stage.params()):
                for chunk in chunks:  # chunk order: the same sums every run
                    param.grad += chunk.grads[stage.index][k]
        if not need_input_grad:
            return None
        grad_x = numpy.empty(in_shape, dtype=grad_in[0].dtype)
        for (start, stop), g in zip(bounds, grad_in):
            public_into(g, grad_x[start:stop])
        return grad_x


def _plan(layers, rank):
    """[Segment or Layer]: the planner's steps, consecutive stages grouped into fast segments, the rest kept as
    themselves."""
    parts, stages = [], []
    for step in plan(layers, take, rank):
        if step.match is None:
            if stages:
                parts.append(Segment(stages))
                stages = []
            parts.append(step.layer)
        else:
            stages.append(stage_for(len(stages), step.match))
    if stages:
        parts.append(Segment(stages))
    return parts


class FastRunner:
    """The fast path of one model for one input rank; verify mode compares it with the reference path."""

    def __init__(self, model, rank):
        self.model = model
        self.parts = _plan(model.layers, rank)
        self.verified = set()  # input shapes whose first step verify mode has checked
        self._verifying = None

    @property
    def segments(self):
        return [p for p in self.parts if isinstance(p, Segment)]

    def _run_forward(self, x):
        for part in self.parts:
            x = part.forward(x, keep=self.model.training) if isinstance(part, Segment) else part.forward(x)
        return x

    def _run_backward(self, grad, need_input_grad):
        for i in range(len(self.parts) - 1, -1, -1):
            need = need_input_grad or i > 0
            grad = self.parts[i].backward(grad, need) if isinstance(self.parts[i], Segment) else \
                self.parts[i].backward(grad, need_input_grad=need)
        return grad

    def forward(self, x):
        mode = _verify_mode()
        key = tuple(x.shape)
        self._verifying = key if mode and key not in self.verified else None
        if self._verifying is None:
            return self._run_forward(x)
        before = layer_state(self.model.layers)
        y = self._run_forward(x)
        restore_layer_state(self.model.layers, before)  # the reference forward draws the same dropout masks, and
        with reference_path():
            reference = self.model.reference_forward(x)
        _compare("forward output", y, reference, mode)  # moves running statistics once
        return y

    def backward(self, grad_out, need_input_grad=True):
        key, self._verifying = self._verifying, None
        if key is None:
            return self._run_backward(grad_out, need_input_grad)
        # Verify: both paths from the same starting gradients; the reference's gradients are kept.
        params = self.model.parameters()
        before = [p.grad.copy() for p in params]
        grad_x = self._run_backward(grad_out, need_input_grad)
        fast_grads = [p.grad.copy() for p in params]
        for p, g in zip(params, before):
            p.grad[...] = g
        with reference_path():
            ref_x = self.model.reference_backward(grad_out, need_input_grad)
        mode = _verify_mode()
        if need_input_grad:
            _compare("input gradient", grad_x, ref_x, mode)
        # A gradient that is zero in exact arithmetic (a bias before BatchNorm) is rounding noise on both
        # paths: measured against the largest gradient of the model, not against itself.
        largest = max((float(numpy.max(numpy.abs(p.grad), initial=0.0)) for p in params), default=0.0)
        for i, (p, g) in enumerate(zip(params, fast_grads)):
            _compare(f"gradient of parameter {i} ({p.name}, shape {tuple(p.shape)})", g, p.grad, mode, largest)
        self.verified.add(key)
        return grad_x


def runner_for(model, x):
    """The FastRunner that should run ``model`` on ``x``, or None for the reference path (config.path
    'reference', arrays on a GPU, an input rank or a dtype other than float32/float64, nothing it can speed up)."""
    path = config.path
    if path not in PATHS:
        raise ValueError(f"gpucnn.config.path must be one of {PATHS}, got {path!r}")
    if path == "reference" or type(x) is not numpy.ndarray or x.ndim not in (2, 4) or x.dtype not in _FLOATS:
        return None
    params = model.parameters()
    if any(type(p.data) is not numpy.ndarray or p.data.dtype not in _FLOATS for p in params):
        return None  # GPU arrays; float16, whose sums the reference path widens
    if any(isinstance(layer, Network) for layer in model.layers):  # blocks: one graph, in the fast layout throughout
        return graph_runner_for(model, [x])
    key = (x.ndim,) + tuple((id(layer), type(layer)) for layer in model.layers)
    cache = model.__dict__.setdefault("_fast_runners", {})
    runner = cache.get(key)
    if runner is None:
        if len(cache) >= _KEPT_RUNNERS:
            cache.pop(next(iter(cache)))
        runner = cache[key] = FastRunner(model, x.ndim)
    return runner if runner.segments else None
