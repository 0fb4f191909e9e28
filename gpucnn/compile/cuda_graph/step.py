"""``compile_step``: the whole training step of a model (a Sequential, or a Model: a ResNet) as one CUDA graph launch.

What one launch does, all on the device (gpucnn/compile/cuda_graph/plan.py for the layers: the model's
fused stages in order, branches and joins included):

    xb, yb = x_train[order[counter * B + arange(B)]], ...          (the batch gathered in the graph: one
                                                                    launch each, step_batch.py)
    logits = program.forward(xb)                                   (fused kernels)
    loss, dlogits, correct = loss(logits, yb)                      (pluggable, capture-safe)
    grads = program.backward(dlogits)                              (fused kernels; a value read twice sums)
    update(params, grads)                                          (pluggable, capture-safe)
    stats += [loss * B, correct];  counter += 1                    (one launch; read once per epoch)

Static buffers: the training set, the shuffled order, the step counter, the statistics,
the parameters (updated in place), BatchNorm2D's running statistics (updated in place) and the
gradients stay at fixed addresses; every
intermediate comes from a memory pool private to the step (``cupy.cuda.using_allocator``),
warmed by two uncaptured runs (undone) before the capture, so that no block the graph uses
is ever handed to another array.

The last partial batch of an epoch (``len(x) % B`` samples) runs the same fused step
outside the graph (an eager step), accumulating into the same statistics: one graph, no
second capture, still one host read per epoch.

Pluggable, capture-safe pieces (they must not read device memory back, call cuBLAS or
synchronise):
- ``loss(logits, labels) -> (mean loss: 0-d array, dL/dlogits, correct count: 0-d array)``;
  by default ``loss_fn.fused`` (``SoftmaxCrossEntropy.fused``: the one-launch softmax
  cross-entropy kernel into buffers it keeps, with every option of the loss: class weights,
  ignore_index, label smoothing, reduction 'sum', probability targets (bound as (N, C) floats);
  reduction='none' is refused, naming it);
- ``update(params, grads)``, updating the parameter arrays in place; by default
  ``optimizer.fused_step`` where the optimizer has one, else, for gpucnn's SGD, Adam and
  AdamW, ``MultiTensorUpdate(optimizer)`` (gpucnn/compile/cuda_graph/update.py: the multi-tensor
  launch with the step count and lr on the device). Optional hooks of the update object,
  all called outside the graph: ``sync_from(optimizer)`` before every epoch (a new learning
  rate from a scheduler, say), ``after_step()`` after every step it ran (the host's step
  counts), ``is_current()`` (False: the buffers it captured were replaced, capture again)
  and ``refresh()`` before a capture.

Verify mode (``verify=True``): before the first replay, one step is run on the eager
path (model.forward, loss_fn, model.backward, optimizer.step) and the captured step
replays on the same batch, parameters and optimizer state; the loss and every gradient
must agree with the eager step's, and every updated parameter with the eager optimizer's
step from the same state and the graph's gradients (gpucnn/compile/cuda_graph/verify_step.py says why),
to a relative tolerance of 1e-4 (float32) or 1e-10 (float64) of the tensor's largest
magnitude (the fused kernels sum in another order than cuBLAS). In between, the parameters
and the optimizer's state (its state arrays, step counts and device scalars) are restored
in place, so that every address the graph holds stays valid. On disagreement a
``GraphMismatchWarning`` names the first tensor that differs, the parameters and the
optimizer are restored, and training continues on the eager path. ``verify_every=N``
repeats the check every N graph steps.

Devices: the step's stream, memory pool and graph belong to the model's device (``GraphStep.device``,
the device of its first parameter): they are made under it, and every use of the stream enters it
first, so a model on 'cuda:1' trains while device 0 is current (CuPy refuses a stream entered under
another device than the one it was made on). The caller's current device is left as it was.
"""
import numpy

from ...backend import cupy_or_none
from ..verify import TOLERANCES as VERIFY_TOLERANCES
from .plan import build_program
from .snapshot import OptimizerSnapshot
from .update import default_update
from .verify_step import GraphMismatchWarning, verify_replay

__all__ = ["compile_step", "GraphStep", "GraphMismatchWarning", "TOLERANCES"]

#: relative tolerance of the verify mode per dtype in strict FP32 (the one table: gpucnn/compile/verify.py)
TOLERANCES = {numpy.dtype(name): limit for (name, mode), limit in VERIFY_TOLERANCES.items() if mode == "fp32"}


#: uncaptured runs of the step (undone) before the capture, to warm the step's private memory pool
WARMUP_RUNS = 2


def compile_step(model, loss_fn, optimizer, batch_size, loss=None, update=None, verify=True, verify_every=None):
    """The training step of ``model`` as one CUDA graph launch (see the module docstring).

    Args:
        model: a Sequential or a Model (one input, one output) on a CUDA device (``model.to('cuda')``), of the
            layers in ``gpucnn.compile.cuda_graph.plan.SUPPORTED_LAYERS``.
        loss_fn, optimizer: the eager path's loss and optimizer (the reference of verify mode
            and the fallback); their capture-safe forms are ``loss`` and ``update``.
        batch_size: samples per graph step.
        loss, update: capture-safe callables (default ``loss_fn.fused``, and ``optimizer.fused_step`` or, for
            gpucnn's SGD, Adam and AdamW, ``MultiTensorUpdate(optimizer)``).
        verify: compare the first replay with an eager step. verify_every: repeat every N steps.

    Returns:
        A ``GraphStep``; ``bind(x, y)`` then ``run_epoch(order)`` per epoch.

    Example:
        >>> model = gpucnn.models.fashion_cnn().to('cuda')
        >>> loss_fn, optimizer = gpucnn.losses.SoftmaxCrossEntropy(), gpucnn.optim.Adam(model.parameters())
        >>> step = gpucnn.compile_step(model, loss_fn, optimizer, 256)
        >>> step.bind(x_train_gpu, y_train_gpu)
        >>> stats = step.run_epoch(numpy.random.default_rng(0).permutation(len(x_train_gpu)))
    """
    return GraphStep(model, loss_fn, optimizer, batch_size, loss, update, verify, verify_every)


def _missing(what, provider):
    return NotImplementedError(f"compile_step needs a capture-safe {what}: pass {what}=..., or use a "
                               f"{provider} (it must not read device memory back, call cuBLAS or synchronise)")


class GraphStep:
    """A captured training step and its static buffers (made by ``compile_step``)."""

    def __init__(self, model, loss_fn, optimizer, batch_size, loss=None, update=None, verify=True,
                 verify_every=None):
        cupy = cupy_or_none()
        if cupy is None:
            raise RuntimeError("compile_step needs CuPy and a CUDA device (the eager path runs on the CPU)")
        params = model.parameters()
        if not params or not all(isinstance(p.data, cupy.ndarray) for p in params):
            raise ValueError("compile_step: the model's parameters must be on a CUDA device (model.to('cuda'))")
        if int(batch_size) < 1:
            raise ValueError(f"compile_step: batch_size must be >= 1, got {batch_size!r}")
        if verify_every is not None and int(verify_every) < 1:
            raise ValueError(f"compile_step: verify_every must be >= 1 or None, got {verify_every!r}")
        self.device = params[0].data.device  # the device of the stream, the pool and the graph
        with self.device:
            self._build(cupy, model, params, loss_fn, optimizer, batch_size, loss, update, verify, verify_every)

    def _build(self, cupy, model, params, loss_fn, optimizer, batch_size, loss, update, verify, verify_every):
        """The rest of ``__init__``, under the model's device."""
        if hasattr(optimizer, "multi_tensor_groups"):
            # The multi-tensor optimizer moves parameters and gradients into flat buffers at its first step;
            # do it now, so that the addresses the graph captures are the ones every later step uses.
            optimizer.multi_tensor_groups()
        self.cupy = cupy
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.batch_size = int(batch_size)
        self.params = params
        self.dtype = numpy.dtype(params[0].dtype)
        self.program = build_program(model)
        self.stages = self.program.stages
        self.buffers = self.program.buffers()  # updated in place by the graph: restored with the parameters
        if loss is None and getattr(loss_fn, "reduction", "mean") == "none":
            raise ValueError("compile_step: loss_fn has reduction='none' (per-sample losses); the captured step "
                             "trains on a scalar loss (reduction 'mean' or 'sum')")
        self.loss = loss if loss is not None else getattr(loss_fn, "fused", None)
        if self.loss is None:
            raise _missing("loss", "loss whose .fused(logits, labels) returns (loss, dlogits, correct)")
        self.update = update if update is not None else default_update(optimizer)
        if self.update is None:
            raise _missing("update", "optimizer with .fused_step(params, grads) (or gpucnn's SGD, Adam, AdamW)")
        self.verify_first, self.verify_every = bool(verify), (int(verify_every) if verify_every else None)
        self.eager = False  # True after a failed verification: every later step runs on the eager path
        self.graph = None
        self.steps_done = 0  # graph steps over the lifetime (verify_every counts them)
        self.graph_launches = 0
        self.mismatch = None
        self._position = 0
        self._pool = cupy.cuda.MemoryPool()  # CuPy's serves the current device (one pool per device)
        self.stream = cupy.cuda.Stream(non_blocking=True)  # CuPy binds a stream to the device current here

    # ------------------------------------------------------------------ buffers and capture

    def bind(self, x, y):
        """Put the training set in static device buffers (a copy in the model's dtype; labels int64, probability
        targets (N, C) in the model's dtype)."""
        cp = self.cupy
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"GraphStep.bind: x and y must be non-empty and of one length, got {len(x)}, {len(y)}")
        with self.device:
            self.x = cp.ascontiguousarray(cp.asarray(x).astype(self.dtype))
            y = cp.asarray(y)
            self.y = cp.ascontiguousarray(y.astype(self.dtype if y.dtype.kind == "f" else numpy.int64))
            self.num_samples = len(x)
            self.order = cp.zeros(self.num_samples, dtype=numpy.int64)
            self.counter = cp.zeros(1, dtype=numpy.int64)
            self.stats = cp.zeros(2, dtype=numpy.float64)  # [sum of losses * batch size, correct predictions]
        self.graph = None
        return self

    def _train_on(self, xb, yb):
        """The fused step on one batch: returns (loss, correct, grads); updates the parameters in place."""
        logits = self.program.forward(xb)
        loss, grad, correct = self.loss(logits, yb)
        self.program.backward(grad)
        grads = self.program.param_grads(self.params)
        self.update([p.data for p in self.params], grads)
        return loss, correct, grads

    def _graph_body(self):
        """What the graph holds: gather the batch by the device counter, train on it, count."""
        from . import step_batch  # imported at use: it needs CuPy
        xb, yb = step_batch.gather_batch(self.x, self.y, self.order, self.counter, self.batch_size)
        loss, correct, grads = self._train_on(xb, yb)
        if step_batch.takes_step_end(loss, correct, self.dtype):
            step_batch.step_end(loss, correct, self.stats, self.counter, self.batch_size)
        else:  # a pluggable loss of other types: the expressions step_end replaces
            step_batch.reference_step_end(loss, correct, self.stats, self.counter, self.batch_size)
        self.grads = grads  # the graph writes these buffers: keep them (verify mode reads them)

    def _drop_intermediates(self):
        self.grads = None
        for stage in self.stages:
            stage.cache = None
            stage.grads = []

    def snapshot(self):
        """The parameters, the buffers and the optimizer's state, to restore in place (every address stays valid)."""
        with self.device:
            return ([p.data.copy() for p in self.params], [b.copy() for b in self.buffers],
                    OptimizerSnapshot(self.optimizer))

    def restore(self, snapshot):
        params, buffers, optimizer = snapshot
        with self.device:
            for p, saved in zip(self.params, params):
                p.data[...] = saved
            for b, saved in zip(self.buffers, buffers):
                b[...] = saved
            optimizer.restore()

    def _write_grads_in_place(self):
        """Point the Conv2D and Dense stages at the update's flat-gradient slots (``grad_view``): each writes its
        weight gradient there, and the update's copy of it goes (all or none of a stage's slots)."""
        view = getattr(self.update, "grad_view", None)
        for stage in self.stages:
            if not getattr(stage, "takes_grad_outs", False):
                continue
            outs = [view(p) for p in stage.params] if view is not None else []
            usable = outs and all(o is not None and o.dtype == self.dtype and o.flags.c_contiguous for o in outs)
            stage.grad_outs = outs if usable else None

    def _hook(self, name, *args):
        hook = getattr(self.update, name, None)
        if hook is None:
            return None
        with self.device:
            return hook(*args)

    def replay(self):
        """One launch of the captured graph on the step's stream (inside ``with step.device, step.stream``)."""
        self.graph.launch(self.stream)
        self.graph_launches += 1
        self._hook("after_step")

    def _ensure_current(self):
        """Capture again when the update's captured buffers or the model's running statistics were replaced (a
        checkpoint loaded, say)."""
        buffers = self.program.buffers()
        if any(a is not b for a, b in zip(buffers, self.buffers)):
            self.buffers = buffers
            self.graph = None
        if self.graph is not None and self._hook("is_current") is False:
            self.graph = None

    def capture(self):
        """Warm the private pool with WARMUP_RUNS uncaptured steps (then undone) and capture the step."""
        if self.num_samples < self.batch_size:
            raise ValueError(f"compile_step: {self.num_samples} samples do not fill one batch of {self.batch_size}")
        cp = self.cupy
        self._hook("refresh")  # the buffers the update will capture are the current ones
        self._write_grads_in_place()
        with self.device, self.stream:
            self.stream.wait_event(cp.cuda.Stream.null.record())
            saved = self.snapshot()
            self.counter.fill(0)  # a capture again (after a checkpoint was loaded) starts past the last epoch
            with cp.cuda.using_allocator(self._pool.malloc):
                # Warm-up, as PyTorch's graph recipe does too: the pool reaches a steady state of free blocks
                # (a first run from an empty pool splits blocks differently than later runs).
                for _ in range(WARMUP_RUNS):
                    self._graph_body()
                    self.restore(saved)
                    self._drop_intermediates()  # their blocks go back to the pool, for the capture to take
                    self.counter.fill(0)  # each run gathers the first batch: never past the order's end
                    self.stats.fill(0)
                self.stream.begin_capture()
                try:
                    self._graph_body()
                except BaseException:
                    try:
                        self.stream.end_capture()  # leave the stream usable; the body's error is the news
                    except Exception:  # noqa: BLE001 - the capture is invalid after that error anyway
                        pass
                    raise
                graph = self.stream.end_capture()
        self.graph = graph
        return graph

    def launch(self):
        """One graph step on the next batch of the current order (after ``run_epoch`` or ``start``); after the
        last full batch it starts over at the first (a device fill, outside the graph). For benchmarks."""
        if self.graph is None:
            raise RuntimeError("GraphStep.launch: nothing captured yet (call start(order) or run_epoch first)")
        with self.device, self.stream:
            if self._position >= self.num_samples // self.batch_size:
                self.counter.fill(0)
                self._position = 0
            self.replay()
        self._position += 1

    def start(self, order):
        """Capture if needed and load ``order`` without training: for ``launch`` (benchmarks)."""
        order = numpy.asarray(order, dtype=numpy.int64)
        self._ensure_current()
        if self.graph is None:
            self.capture()
        self._hook("sync_from", self.optimizer)
        with self.device, self.stream:
            self.stream.wait_event(self.cupy.cuda.Stream.null.record())
            self.order[...] = order
            self.counter.fill(0)
        self._position = 0

    def synchronize(self):
        """Wait for the step's stream (benchmarks time whole launches with it)."""
        with self.device:
            self.stream.synchronize()

    @property
    def captured(self):
        """Names of the captured operations, where the CuPy in use reports them (the emulated one does)."""
        return getattr(self.graph, "captured", None)

    # ------------------------------------------------------------------ epochs

    def run_epoch(self, order):
        """Train one epoch over the samples in ``order`` (a permutation of range(len(x)));
        returns {'loss', 'accuracy', 'seen'} after one host read."""
        cp = self.cupy
        order = numpy.asarray(order, dtype=numpy.int64)
        if order.shape != (self.num_samples,):
            raise ValueError(f"run_epoch: order must have {self.num_samples} entries, got shape {order.shape}")
        self._ensure_current()
        if self.graph is None and not self.eager:
            self.capture()
        if not self.eager:
            self._hook("sync_from", self.optimizer)
        full = self.num_samples // self.batch_size
        with self.device, self.stream:
            self.stream.wait_event(cp.cuda.Stream.null.record())
            self.order[...] = order  # host to device, outside the graph
            self.stats.fill(0)
            self.counter.fill(0)
            for step in range(full):
                if self.eager:
                    self.eager_step(step * self.batch_size, (step + 1) * self.batch_size)
                    continue
                due = self.verify_first if self.steps_done == 0 else (
                    self.verify_every is not None and self.steps_done % self.verify_every == 0)
                if due:
                    verify_replay(self, step)
                    if self.eager:
                        self.eager_step(step * self.batch_size, (step + 1) * self.batch_size)
                        continue
                else:
                    self.replay()
                self.steps_done += 1
            if full * self.batch_size < self.num_samples:
                if self.eager:
                    self.eager_step(full * self.batch_size, self.num_samples)
                else:
                    self._partial_step(full * self.batch_size)
            loss_sum, correct = (float(v) for v in cp.asnumpy(self.stats))  # the one host read of the epoch
        return {"loss": loss_sum / self.num_samples, "accuracy": correct / self.num_samples,
                "seen": self.num_samples}

    def _partial_step(self, start):
        """The last, smaller batch: the same fused step, outside the graph (default allocator)."""
        idx = self.order[start:]
        loss, correct, _ = self._train_on(self.x[idx], self.y[idx])
        self._hook("after_step")
        self.stats[0:1] += loss * (self.num_samples - start)
        self.stats[1:2] += correct

    def eager_step(self, start, stop):
        """One step on the eager (reference) path, counted on the device like the graph's."""
        idx = self.order[start:stop]
        xb, yb = self.x[idx], self.y[idx]
        logits = self.model.forward(xb)
        loss = self.loss_fn.forward(logits, yb)
        self.optimizer.zero_grad()
        self.model.backward(self.loss_fn.backward(), need_input_grad=False)
        self.optimizer.step()
        self.stats[0:1] += loss * (stop - start)
        correct = getattr(self.loss_fn, "correct", None)  # the loss's own count (it leaves ignored rows out)
        self.stats[1:2] += correct if correct is not None else (logits.argmax(axis=1) == yb).sum()
