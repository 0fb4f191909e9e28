"""The multi-tensor optimizer path: parameters gathered into flat buffers, stepped by one launch.

The optimizers (gpucnn/optim/optimizers.py) use it on the GPU when ``config.multi_tensor_optimizer``
is on. For the parameters of one parameter group, device and dtype, a ``FlatGroup`` allocates one flat buffer
each for the data, the gradients and every optimizer state array, copies the current
values in, and points each Parameter's ``data`` and ``grad`` and the optimizer's state
arrays at views of them (``Parameter.rebind``): after that, everything that updates a
parameter in place (backward writing ``.grad``, the step writing ``.data``) works on the
flat buffers, and one ``gpucnn.ops.multi_update`` call steps all parameters.

The learning rate and the step count live on the device too (``hyper``): the host writes
the learning rate only when it changes, and the device advances the step count itself, so
the update can be captured in a CUDA graph. Each parameter group (``optimizer.param_groups``) has
flat groups of its own, so each has its own learning rate in its own ``hyper``, and its own
settings (momentum, betas, weight decay) passed to its launch. The host keeps its own copies in step
(``Optimizer.state[i]['step']``, ``Optimizer.lr``): checkpoints read those, never the device.

A group stays valid while every array it handed out is still in place; anything that
replaces one (``model.to``, loading weights or an optimizer checkpoint, assigning ``.grad``)
makes the next step build the group again from the current values.
"""
from ..backend import device_of, device_scope, get_array_module, to_device
from ..ops.multi_update import HYPER_LR, make_hyper

__all__ = ["FlatGroup", "flat_groups"]


class FlatGroup:
    """Parameters ``indices`` of ``optimizer`` (one parameter group, device and dtype, the same step count) on
    flat buffers.

    Attributes: ``group_index`` (which of ``optimizer.param_groups``), ``data``, ``grad`` (flat arrays),
    ``states`` ({state name: flat array}),
    ``hyper`` (the device scalars of gpucnn.ops.multi_update), ``lr`` (the learning rate in
    ``hyper``), ``steps`` (steps taken, as in ``hyper``).
    """

    def __init__(self, optimizer, indices, group_index=0):
        self.indices = list(indices)
        self.group_index = group_index
        self.params = [optimizer.params[i] for i in self.indices]
        ref = self.params[0].data
        xp = get_array_module(ref)
        total = sum(int(p.data.size) for p in self.params)
        self.steps = optimizer.state[self.indices[0]].get("step", 0)
        self.lr = optimizer.param_groups[group_index]["lr"]
        with device_scope(ref):
            self.data = xp.empty(total, dtype=ref.dtype)
            self.grad = xp.empty(total, dtype=ref.dtype)
            self.states = {name: xp.empty(total, dtype=ref.dtype) for name in
                           optimizer.group_state_names(optimizer.param_groups[group_index])}
            self.hyper = xp.asarray(make_hyper(self.lr, self.steps))
            self._views = []
            offset = 0
            for i, p in zip(self.indices, self.params):
                n = int(p.data.size)

                def view(flat):
                    return flat[offset:offset + n].reshape(p.shape)

                data, grad = view(self.data), view(self.grad)
                data[...] = p.data
                if not p._grad_cleared:
                    grad[...] = p._grad
                p.rebind(data, grad)
                state = optimizer.state[i]
                views = {}
                for name, flat in self.states.items():
                    views[name] = view(flat)
                    if name in state:
                        views[name][...] = to_device(state[name], device_of(ref))
                    else:
                        views[name].fill(0)
                    state[name] = views[name]
                state["step"] = self.steps
                self._views.append((p, data, grad, state, views))
                offset += n

    def is_current(self, optimizer):
        """True while every parameter, gradient and state array still is the group's view (and the group
        still keeps the same state arrays: SGD's momentum may be switched on by a schedule)."""
        group = optimizer.param_groups[self.group_index] if self.group_index < len(optimizer.param_groups) else None
        if group is None or set(optimizer.group_state_names(group)) != set(self.states) \
                or any(optimizer.group_index[i] != self.group_index for i in self.indices):
            return False
        for i, (p, data, grad, state, views) in zip(self.indices, self._views):
            if p.data is not data or p._grad is not grad or optimizer.state[i] is not state \
                    or state.get("step") != self.steps:
                return False
            if any(state.get(name) is not v for name, v in views.items()):
                return False
        return True

    def prepare(self, lr):
        """Before a launch: zero the gradients still marked cleared, write a changed learning rate."""
        for p in self.params:
            if p._grad_cleared:
                p.grad  # reading it zeroes the buffer: a step without backward sees zeros
        if lr != self.lr:
            with device_scope(self.hyper):
                self.hyper[HYPER_LR] = lr
            self.lr = lr

    def advance_host_state(self, optimizer):
        """The host's copy of the step count, after one launch (or one replay of a captured launch)."""
        self.steps += 1
        for _, _, _, state, _ in self._views:
            state["step"] = self.steps


def flat_groups(optimizer):
    """FlatGroups for every (parameter group, device, dtype) of ``optimizer``'s parameters, or None where the
    multi-tensor path does not apply (parameters on the CPU, or step counts that differ within a group)."""
    keys = {}
    for i, p in enumerate(optimizer.params):
        if get_array_module(p.data).__name__ == "numpy":
            return None
        keys.setdefault((optimizer.group_index[i], device_of(p.data), str(p.data.dtype)), []).append(i)
    for indices in keys.values():
        if len({optimizer.state[i].get("step", 0) for i in indices}) != 1:
            return None
    return [FlatGroup(optimizer, indices, key[0]) for key, indices in keys.items()]
