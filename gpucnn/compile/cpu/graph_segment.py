"""A run of a graph's stages (graph_plan.Planned with a stage), chunk by chunk on the worker threads, every tensor
between them in the internal layout; and the node that runs as its layer (the fallback).

A GraphSegment is runner.Segment for a graph: each chunk keeps its tensors by number (``values``), a stage
reads its inputs from there and a stage with ``multi`` takes several. Phases are cut, as there, at each stage
whose ``whole_batch`` is true (BatchNorm in training), the stages running in the graph's order. Only the
tensors it reads from outside (``reads``: the model's inputs, a fallback node's output) are converted from the
public layout, and only those it hands on (``writes``: the model's outputs, a fallback node's input) back.

Backward goes through the stages in reverse order, so every reader of a tensor has given its gradient before
the stage that made it runs; a tensor read twice (a block's input: its convolution and the shortcut) gets the
sum of its gradients, in a buffer of its own in the chunk's arena (the gradients themselves may be another
stage's buffers, or one array handed to both inputs of an Add), added in the order the readers run backward,
the later reader's first, as Model.backward does. Parameter gradients are added up in chunk order: results
repeat bit for bit for a thread count.
"""
import numpy

from . import profile
from .arena import Arena
from .stage_plan import internal, public_into
from .threads import chunk_bounds, num_threads, run_chunks, single_threaded_blas

__all__ = ["GraphSegment", "FallbackNode", "add_gradient"]

_KEPT_SHAPES = 2  # batch shapes whose buffers a segment keeps in training (the batch size, the last batch)
_TO_INTERNAL, _TO_PUBLIC = "layout (N,C,H,W) -> (C,H,W,N)", "layout (C,H,W,N) -> (N,C,H,W)"


def add_gradient(grads, t, g):
    """grads[t] += g for public arrays, as Model.backward: a new array (g may be another tensor's too)."""
    grads[t] = g if t not in grads else grads[t] + g


class _Chunk:
    def __init__(self):
        self.arena = Arena()
        self.saved, self.grads = {}, {}
        self.values, self.grad_of = {}, {}

    def add_grad(self, t, g):
        have = self.grad_of.get(t)
        if have is None:
            self.grad_of[t] = g
            return
        total = self.arena.get(("gradient sum", t), have.shape, have.dtype)
        numpy.add(have, g, out=total)
        self.grad_of[t] = total


def _timed(timer, kind, direction, fn, *args):
    return fn(*args) if timer is None else timer.timed(kind, direction, fn, *args)


class GraphSegment:
    """The stages of ``items`` (Planned, in an order that runs), reading ``reads`` and handing on ``writes``."""

    def __init__(self, items, reads, writes):
        self.items, self.reads, self.writes = items, list(reads), list(writes)
        self.kinds = [profile.kind_of(item.stage) for item in items]
        self.layers = [layer for item in items for layer in item.layers]
        self._shapes, self._chunks = {}, {}
        self._last = None

    def _tensor_shapes(self, values):
        key = tuple((tuple(values[t].shape), values[t].dtype) for t in self.reads)
        if key not in self._shapes:
            shapes = dict(zip(self.reads, key))
            for item in self.items:
                args = [shapes[t] for t in item.inputs]
                if item.multi:
                    shapes[item.output] = item.stage.out_shape([s for s, _ in args], [d for _, d in args])
                else:
                    shapes[item.output] = item.stage.out_shape(*args[0])
            self._shapes[key] = shapes
        return self._shapes[key]

    def _chunks_for(self, n, count):
        key = (n, count)
        if key not in self._chunks:
            if len(self._chunks) >= _KEPT_SHAPES:
                self._chunks.pop(next(iter(self._chunks)))
            self._chunks[key] = [_Chunk() for _ in range(count)]
        return self._chunks[key]

    def forward(self, values, keep=True):
        """values[t] for t in ``writes`` (public arrays), from values[t] for t in ``reads``."""
        shapes = self._tensor_shapes(values)
        n = values[self.reads[0]].shape[0]
        bounds = chunk_bounds(n, num_threads())
        chunks = self._chunks_for(n, len(bounds)) if keep else [_Chunk() for _ in bounds]
        outs = {t: numpy.empty(*shapes[t]) for t in self.writes}
        items, kinds = self.items, self.kinds
        cuts = [k for k, item in enumerate(items) if getattr(item.stage, "whole_batch", False)]
        parts = [None] * len(bounds)

        def phase(lo, hi, stats):
            def work(i):
                start, stop = bounds[i]
                chunk, timer = chunks[i], profile.active() if i == 0 else None
                if stats is None:
                    chunk.saved.clear()
                    chunk.values = {t: _timed(timer, _TO_INTERNAL, "forward", self._to_internal, chunk, t,
                                              values[t][start:stop]) for t in self.reads}
                    k = 0
                else:
                    item, k = items[lo], lo + 1
                    chunk.values[item.output] = _timed(timer, kinds[lo], "forward", item.stage.forward_apply, chunk,
                                                       chunk.values[item.inputs[0]], stats)
                for j in range(k, hi):
                    item = items[j]
                    args = [chunk.values[t] for t in item.inputs]
                    chunk.values[item.output] = _timed(timer, kinds[j], "forward", item.stage.forward, chunk,
                                                       args if item.multi else args[0])
                if hi < len(items):
                    item = items[hi]
                    parts[i] = _timed(timer, kinds[hi], "forward", item.stage.forward_sums, chunk,
                                      chunk.values[item.inputs[0]])
                else:
                    for t in self.writes:
                        _timed(timer, _TO_PUBLIC, "forward", public_into, chunk.values[t], outs[t][start:stop])
                    chunk.values = {}  # the stages keep what their backward needs
            return work

        self._last = None
        with single_threaded_blas(len(bounds)):
            lo, stats = 0, None
            for hi in cuts + [len(items)]:
                run_chunks(phase(lo, hi, stats), len(bounds))
                if hi < len(items):
                    lo, stats = hi, items[hi].stage.combine_forward(parts)
        values.update(outs)
        self._last = (bounds, chunks, cuts, {t: shapes[t] for t in self.reads})
        return values

    @staticmethod
    def _to_internal(chunk, t, x):
        """A contiguous internal-layout copy of the chunk's part of the public array ``x``."""
        buf = chunk.arena.get(("input", t), internal(x).shape, x.dtype)
        numpy.copyto(buf, internal(x))
        return buf

    def backward(self, grads, skip):
        """Adds to grads[t] (public arrays) for t in ``reads`` not in ``skip`` (tensors whose gradient nobody
        needs), from grads[t] for t in ``writes`` (popped); fills the parameters' .grad."""
        if self._last is None:
            raise RuntimeError(f"{self.layers[-1].name}: backward() called before forward(), or twice after one "
                               "forward (the fast path reuses the forward's buffers for the gradients; use "
                               "gpucnn.config.path = 'reference' to differentiate one forward more than once)")
        bounds, chunks, cuts, in_shapes = self._last
        self._last = None
        given = {t: grads.pop(t) for t in self.writes if t in grads}
        items, kinds = self.items, self.kinds
        needs = [any(t not in skip for t in item.inputs) for item in items]
        parts = [None] * len(bounds)

        def give(chunk, item, result):
            if result is not None:
                for t, g in zip(item.inputs, result if item.multi else [result]):
                    chunk.add_grad(t, g)

        def phase(hi, lo, sums):  # stages hi (with the combined sums, if any) down to lo + 1, then lo's sums
            def work(i):
                start, stop = bounds[i]
                chunk, timer = chunks[i], profile.active() if i == 0 else None
                if sums is None:
                    chunk.grads.clear()
                    chunk.grad_of = {t: _timed(timer, _TO_INTERNAL, "backward", self._to_internal, chunk,
                                               ("grad", t), g[start:stop]) for t, g in given.items()}
                else:
                    item = items[hi]
                    give(chunk, item, _timed(timer, kinds[hi], "backward", item.stage.backward_apply, chunk,
                                             chunk.held, sums, needs[hi]))
                for k in range(hi - 1, lo, -1):
                    item = items[k]
                    g = chunk.grad_of.pop(item.output, None)
                    if g is not None:  # None: nothing the loss depends on reads it
                        give(chunk, item, _timed(timer, kinds[k], "backward", item.stage.backward, chunk, g, needs[k]))
                if lo >= 0:
                    item = items[lo]
                    chunk.held = chunk.grad_of.pop(item.output)
                    parts[i] = _timed(timer, kinds[lo], "backward", item.stage.backward_sums, chunk, chunk.held)
            return work

        with single_threaded_blas(len(bounds)):
            hi, sums = len(items), None
            for lo in cuts[::-1] + [-1]:
                run_chunks(phase(hi, lo, sums), len(bounds))
                if lo >= 0:
                    hi, sums = lo, items[lo].stage.combine_backward(parts)
        for item in items:
            for k, param in enumerate(item.stage.params()):
                for chunk in chunks:  # chunk order: the same sums every run
                    if item.stage.index in chunk.grads:
                        param.grad += chunk.grads[item.stage.index][k]
        for t in self.reads:
            if t in skip or t not in chunks[0].grad_of:
                continue
            shape, dtype = in_shapes[t]
            g = numpy.empty(shape, dtype=chunks[0].grad_of[t].dtype)
            for (start, stop), chunk in zip(bounds, chunks):
                public_into(chunk.grad_of.pop(t), g[start:stop])
            add_gradient(grads, t, g)


class FallbackNode:
    """A node no stage takes: its layer, on the whole batch, in the public layout, as on the reference path."""

    def __init__(self, item):
        self.item = item
        self.layer = item.layer
        self.kind = f"{type(item.layer).__name__} (runs as its layer)"

    def forward(self, values, keep=True):
        item, timer = self.item, profile.active()
        args = [values[t] for t in item.inputs]
        values[item.output] = _timed(timer, self.kind, "forward", self.layer.forward, args if item.multi else args[0])
        return values

    def backward(self, grads, skip):
        item, timer = self.item, profile.active()
        g = grads.pop(item.output, None)
        if g is None:
            return
        need = any(t not in skip for t in item.inputs)
        result = _timed(timer, self.kind, "backward", lambda: self.layer.backward(g, need_input_grad=need))
        if need:
            for t, r in zip(item.inputs, result if item.multi else [result]):
                add_gradient(grads, t, r)
