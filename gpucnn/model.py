"""Sequential: layers applied in order, backward in reverse."""
from .backend import device_of, device_scope
from .checkpoint import CheckpointError, load_arrays, save_arrays
from .fast import runner_for
from .layers.base import Layer

__all__ = ["Sequential"]

_FORMAT = "gpucnn.Sequential/1"


class Sequential:
    """A stack of layers.

    Example:
        >>> model = Sequential([Dense(4, 8), ReLU(), Dense(8, 3)])
        >>> logits = model.forward(x)
        >>> grad_x = model.backward(loss.backward())
    """

    def __init__(self, layers):
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a gpucnn layer")
        self.layers = layers
        self.training = True

    def forward(self, x):
        """The model's output; on the CPU through gpucnn.fast unless ``gpucnn.config.path = 'reference'``."""
        self._fast = runner_for(self, x)  # backward takes the path its forward took
        if self._fast is not None:
            return self._fast.forward(x)
        return self.reference_forward(x)

    __call__ = forward

    def reference_forward(self, x):
        """The readable path: each layer's forward in turn."""
        with device_scope(x):
            for layer in self.layers:
                x = layer.forward(x)
        return x

    def backward(self, grad_out, need_input_grad=True):
        """Gradient of the loss with respect to the model's input; fills every parameter's .grad on the way.

        ``need_input_grad=False`` lets the first layer skip dL/dx (nothing uses the gradient of the data),
        and returns None.
        """
        if getattr(self, "_fast", None) is not None:
            return self._fast.backward(grad_out, need_input_grad)
        return self.reference_backward(grad_out, need_input_grad)

    def reference_backward(self, grad_out, need_input_grad=True):
        """The readable path: each layer's backward in reverse."""
        with device_scope(grad_out):
            for i in range(len(self.layers) - 1, -1, -1):
                if i == 0 and not need_input_grad:
                    return self.layers[0].backward(grad_out, need_input_grad=False)
                grad_out = self.layers[i].backward(grad_out)
        return grad_out

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()

    def train(self, mode=True):
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device):
        """Move every parameter and buffer to ``device`` ('cpu', 'cuda', 'cuda:N', 'auto'); returns self.

        ``model.device`` then says where it went ('auto' picks the GPU when one is usable).
        """
        for layer in self.layers:
            layer.to(device)
        return self

    @property
    def device(self):
        """'cpu' or 'cuda:N': where the parameters live ('cpu' for a model without any)."""
        params = self.parameters()
        return device_of(params[0].data) if params else "cpu"

    def named_state(self):
        """{'<index>.<name>': array} for every parameter and buffer."""
        state = {}
        for i, layer in enumerate(self.layers):
            for name, value in layer.named_state().items():
                state[f"{i}.{name}"] = value
        return state

    def load_state(self, state, source="state"):
        """Set every parameter and buffer from ``state``; checks everything first, so a mismatch changes nothing."""
        own = self.named_state()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(f"{source}: does not match this model (missing {missing}, unexpected {unexpected})")
        for key, value in own.items():
            if tuple(state[key].shape) != tuple(value.shape):
                raise CheckpointError(f"{source}: {key} has shape {tuple(state[key].shape)}, "
                                      f"the model expects {tuple(value.shape)}")
            if state[key].dtype.kind != "f":
                raise CheckpointError(f"{source}: {key} has dtype {state[key].dtype}, expected floats")
        for key in own:
            index, name = key.split(".", 1)
            self.layers[int(index)].set_state(name, state[key])

    def save(self, path):
        """Write the weights to ``path`` (.npz, atomically, no pickle); the model stays on its device."""
        save_arrays(path, self.named_state(), {"format": _FORMAT, "layers": [repr(layer) for layer in self.layers]})

    def load(self, path):
        """Read weights written by ``save``; on any error the model's weights are left as they were."""
        arrays, meta = load_arrays(path)
        if meta.get("format") != _FORMAT:
            raise CheckpointError(f"{path}: not a saved Sequential (format {meta.get('format')!r})")
        self.load_state(arrays, source=str(path))
        return self

    def __repr__(self):
        inner = "\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
