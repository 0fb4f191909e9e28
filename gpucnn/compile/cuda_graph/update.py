"""The optimizer update of the graph-captured step: gpucnn's multi-tensor optimizer (SGD, Adam, AdamW), captured.

``compile_step`` uses ``MultiTensorUpdate(optimizer)`` when the optimizer has no ``fused_step``
of its own. It splits the eager ``Optimizer._multi_tensor_step`` (gpucnn/optim/optimizers.py) at the
graph's edges, per flat group (gpucnn/optim/flat.py):

    outside the graph, per epoch:    group.prepare(lr)              (``sync_from``: a new lr from a scheduler,
                                                                     each parameter group's into its own hyper)
    inside the graph, every step:    group.grad <- the step's gradients   (the Conv2D and Dense stages write
                                                                     theirs in place, ``grad_view``; a device
                                                                     copy for the others)
                                     optimizer.update_group(group)  (two launches, no host read, no allocation)
    outside the graph, per replay:   group.advance_host_state(...)  (``after_step``: the host's step counts)

so that ``optimizer.state`` and ``optimizer.lr`` are exactly what the eager path would hold
after the same steps: checkpoints read them, and exact resume works as on the eager path.

The graph holds the addresses of the flat buffers. Anything that replaces them (loading a
checkpoint, ``model.to``, replacing ``optimizer.state``) makes ``is_current()`` false; the
step then captures again after ``refresh()`` builds the groups from the current values.

Each parameter group has flat groups of its own: its learning rate is read from its own device
scalars, so a schedule may set every group's rate between epochs. The other settings (momentum,
betas, eps, weight decay) are launch arguments, fixed in the graph: ``is_current()`` is false
once one of them changed (a schedule cycling the momentum per epoch), and the step captures again.
"""

__all__ = ["MultiTensorUpdate", "default_update"]


class MultiTensorUpdate:
    """The capture-safe ``update(params, grads)`` over ``optimizer``'s flat groups (see the module docstring)."""

    def __init__(self, optimizer):
        if not (hasattr(optimizer, "multi_tensor_groups") and hasattr(optimizer, "update_group")):
            raise TypeError(f"MultiTensorUpdate: {type(optimizer).__name__} is not a multi-tensor optimizer "
                            f"(gpucnn.optim.SGD, Adam or AdamW)")
        self.optimizer = optimizer
        self.groups = None
        self.refresh()

    def refresh(self):
        """Build (or keep) the optimizer's flat groups and this update's views of their gradient buffers."""
        groups = self.optimizer.multi_tensor_groups()
        if groups is None:
            raise ValueError(f"compile_step: {type(self.optimizer).__name__} cannot step its parameters with one "
                             f"multi-tensor launch per group (parameters on the CPU, or step counts that differ "
                             f"between parameters of one device and dtype)")
        self.groups = groups
        self._settings = self._captured_settings()
        self._grad_views = {}  # id(parameter data) -> (parameter, view of its group's flat gradient)
        for group in groups:
            offset = 0
            for p in group.params:  # the FlatGroup lays the parameters out in this order
                n = int(p.data.size)
                self._grad_views[id(p.data)] = (p, group.grad[offset:offset + n].reshape(p.shape))
                offset += n

    def _captured_settings(self):
        """Each parameter group's settings but its lr (which the graph reads from the device)."""
        return [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in self.optimizer.param_groups]

    def is_current(self):
        """True while the flat buffers the graph captured are still the parameters' and the optimizer's, and
        the groups' launch settings those it captured."""
        return self.groups is not None and all(g.is_current(self.optimizer) for g in self.groups) \
            and self._captured_settings() == self._settings

    def sync_from(self, optimizer):
        """Before an epoch (outside the graph): write each parameter group's changed learning rate into its
        flat groups' device scalars."""
        for group in self.groups:
            group.prepare(optimizer.param_groups[group.group_index]["lr"])

    def grad_view(self, param):
        """The view of ``param``'s slot in its group's flat gradient buffer (None: the optimizer does not hold it):
        a stage that writes its gradient there saves the copy ``__call__`` would make."""
        entry = self._grad_views.get(id(param.data))
        return None if entry is None else entry[1]

    def __call__(self, params, grads):
        """Capture-safe: copy ``grads`` into the flat gradient buffers (unless a gradient is its slot already) and
        launch the update of every group. Parameters the optimizer does not hold are left as they are."""
        for data, grad in zip(params, grads):
            entry = self._grad_views.get(id(data))
            if entry is not None and grad is not entry[1]:
                entry[1][...] = grad
        for group in self.groups:
            self.optimizer.update_group(group)

    def after_step(self):
        """After one step ran on the device (a replay): the host's step counts, and ``grad`` holds the step's
        gradients (as after an eager backward), not a cleared mark."""
        for group in self.groups:
            group.advance_host_state(self.optimizer)
        for p, view in self._grad_views.values():
            written = p.grad_out()
            if written is not None:
                p.accumulate_grad(written)  # the buffer already holds it: this only ends the cleared state


def default_update(optimizer):
    """compile_step's update for ``optimizer``: its own ``fused_step``, else the multi-tensor launch for
    gpucnn's SGD, Adam and AdamW; None when it has neither."""
    fused_step = getattr(optimizer, "fused_step", None)
    if fused_step is not None:
        return fused_step
    if hasattr(optimizer, "multi_tensor_groups") and hasattr(optimizer, "update_group"):
        return MultiTensorUpdate(optimizer)
    return None
