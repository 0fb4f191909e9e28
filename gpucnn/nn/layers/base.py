"""What every layer shares: parameters, buffers, train/eval mode, moving between devices."""
from ...backend import device_of, device_scope, get_array_module, to_device
from ...parameter import Parameter
from ..graph import check_name, is_symbolic, record

__all__ = ["Layer", "check_grad_array"]


def check_grad_array(grad_out, layer):
    """TypeError naming ``layer`` unless the gradient is a real floating-point array (as PyTorch requires)."""
    if not hasattr(grad_out, "dtype") or not hasattr(grad_out, "shape"):
        raise TypeError(f"{layer}: backward expected a NumPy or CuPy array as the gradient, "
                        f"got {type(grad_out).__name__}")
    if grad_out.dtype.kind != "f":
        raise TypeError(f"{layer}: backward expected a floating-point gradient, got dtype {grad_out.dtype}")


class Layer:
    """Base class. A layer owns its parameters and calls functional ops for its math.

    ``forward(x)`` keeps what ``backward`` needs; ``backward(grad_out)`` returns dL/dx
    and adds dL/dparam into each parameter's ``.grad``.
    """

    #: names of non-trainable arrays that belong to the layer's state (saved, moved)
    buffer_names = ()

    def __init__(self, name=None):
        self.training = True
        self.given_name = check_name(name)

    @property
    def name(self):
        """The name given at construction (``Conv2D(..., name="conv1")``), else the type's name."""
        return self.given_name or type(self).__name__

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out, need_input_grad=True):
        """dL/dx from dL/dy. ``need_input_grad=False`` may skip computing it (returns None then);
        layers without parameters ignore the flag, their input gradient costs next to nothing."""
        raise NotImplementedError

    def __call__(self, x):
        """``forward(x)`` on arrays; on the symbolic tensors of ``gpucnn.Input`` it records a node of a graph
        (gpucnn/nn/graph.py) and checks the shapes at once."""
        if is_symbolic(x):
            return record(self, x)
        return self.forward(x)

    def parameters(self):
        """The layer's Parameters, in the order they were created."""
        return [v for v in vars(self).values() if isinstance(v, Parameter)]

    def named_state(self):
        """{name: array} of parameters and buffers: what a checkpoint holds."""
        state = {k: v.data for k, v in vars(self).items() if isinstance(v, Parameter)}
        state.update({k: getattr(self, k) for k in self.buffer_names})
        return state

    def set_state(self, name, value):
        """Replace the array called ``name`` (parameter data or buffer), keeping the layer's device."""
        current = getattr(self, name)
        target = current.data if isinstance(current, Parameter) else current
        with device_scope(target):
            value = get_array_module(target).array(value, dtype=target.dtype)  # a copy: never alias the source
        if isinstance(current, Parameter):
            current.data = value
        else:
            setattr(self, name, value)

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device):
        """Move parameters (with their gradients) and buffers to ``device``; returns self."""
        for p in self.parameters():
            p.to(device)
        for k in self.buffer_names:
            setattr(self, k, to_device(getattr(self, k), device))
        return self

    def _match_input(self, x):
        """Cast x to the parameters' dtype and refuse an input on another device."""
        params = self.parameters()
        if not params:
            return x
        ref = params[0].data
        if device_of(x) != device_of(ref):
            raise TypeError(f"{self.name}: the input is on {device_of(x)} but the parameters are on "
                            f"{device_of(ref)}; move one of them (model.to(device) or gpucnn.backend.to_device)")
        return x.astype(ref.dtype, copy=False)

    def _saved(self, attr="_cache"):
        saved = getattr(self, attr, None)
        if saved is None:
            raise RuntimeError(f"{self.name}: backward() called before forward()")
        return saved

    def _accumulate(self, grad_weight, grad_bias):
        """Add parameter gradients into .grad (backward accumulates, as in every framework); the first
        gradient after zero_grad() is written instead (see Parameter)."""
        self.weight.accumulate_grad(grad_weight)
        if self.bias is not None:
            self.bias.accumulate_grad(grad_bias)

    def _grad_outs(self):
        """(weight, bias) gradient buffers that backward may write straight into, or None each
        (``Parameter.grad_out``)."""
        return self.weight.grad_out(), (self.bias.grad_out() if self.bias is not None else None)

    @staticmethod
    def _check_grad(grad_out, shape, layer):
        check_grad_array(grad_out, layer)
        if tuple(grad_out.shape) != tuple(shape):
            raise ValueError(f"{layer}: backward expected a gradient of shape {tuple(shape)}, "
                             f"got {tuple(grad_out.shape)}")

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{self.name}({self.extra_repr()})"
