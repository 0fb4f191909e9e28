"""Sequential: layers applied in order, backward in reverse."""
from .registry import describe
from ..backend import asnumpy, device_of, device_scope
from ..io.arrays import CheckpointError, CheckpointReader, check_cast, save_arrays
from ..compile.cpu import runner_for
from .layers.base import Layer
from .predict import predict
from .state_dict import load_state_dict
from .summary import summarize

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
        self.input_shape = None  # of one sample, remembered from the first forward (for summary, save, export)

    def forward(self, x):
        """The model's output; on the CPU through gpucnn.compile.cpu unless ``gpucnn.config.path = 'reference'``."""
        sample_shape = tuple(int(d) for d in x.shape[1:]) if hasattr(x, "shape") else None
        self._fast = runner_for(self, x)  # backward takes the path its forward took
        y = self._fast.forward(x) if self._fast is not None else self.reference_forward(x)
        if self.input_shape is None:  # only a shape the model took
            self.input_shape = sample_shape
        return y

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

    def expected_state(self):
        """{'<index>.<name>': (shape, None)}: what a file must hold to load into this model."""
        return {key: (tuple(value.shape), None) for key, value in self.named_state().items()}

    def check_state(self, state, source="state"):
        """CheckpointError unless ``state`` fits: the same names and shapes, finite values, no lossy dtype change."""
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
            try:
                check_cast(asnumpy(state[key]), value.dtype, key)
            except ValueError as exc:
                raise CheckpointError(f"{source}: {exc}") from None

    def load_state(self, state, source="state"):
        """Set every parameter and buffer from ``state``; checks everything first, so a mismatch changes nothing."""
        self.check_state(state, source)
        own = self.named_state()
        try:
            for key in own:
                index, name = key.split(".", 1)
                self.layers[int(index)].set_state(name, state[key])
        except BaseException:
            self._restore(own)  # set_state replaces arrays, so the old ones are intact: put them back
            raise

    def _restore(self, saved):
        for key, value in saved.items():
            index, name = key.split(".", 1)
            layer = self.layers[int(index)]
            current = getattr(layer, name)
            if hasattr(current, "grad"):
                current.data = value
            else:
                setattr(layer, name, value)

    def state_dict(self):
        """{'<index>.<name>': array} of every parameter and buffer, keyed as PyTorch keys an nn.Sequential
        ("0.weight", "3.running_mean"). The arrays are the model's own, not copies (as in PyTorch).

        Example:
            >>> torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
        """
        return dict(self.named_state())

    def load_state_dict(self, state_dict, strict=True):
        """Copy ``state_dict``'s arrays (NumPy, CuPy, CPU torch tensors) into the model, cast to its dtype, on
        its device.

        strict=True: the keys must be exactly the model's (ValueError otherwise). strict=False loads the
        keys both have. Either way a wrong shape (ValueError) or a non-float array (TypeError) changes
        nothing. Returns (missing_keys, unexpected_keys), as PyTorch does.

        Example:
            >>> model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})
        """
        return load_state_dict(self, state_dict, strict)

    def summary(self, input_shape=None, print_fn=print):
        """Print and return a table of the layers, their output shapes and parameter counts, with totals.

        Args:
            input_shape: one sample's shape, e.g. (1, 28, 28); default: the shape of the first forward's input.
            print_fn: where the table goes (None: nowhere).

        Returns:
            a ``gpucnn.summary.Summary``: ``.rows``, ``.total_params``; ``str()`` gives the table.

        Example:
            >>> gpucnn.models.fashion_cnn().summary((1, 28, 28)).total_params
            421642
        """
        input_shape = self.input_shape if input_shape is None else tuple(input_shape)
        if input_shape is None:
            raise ValueError("summary: give input_shape (one sample's shape, e.g. (1, 28, 28)), or run a forward "
                             "pass first so that the model knows it")
        result = summarize(self, input_shape)
        if print_fn is not None:
            print_fn(str(result))
        return result

    def predict(self, x, batch_size=256):
        """The outputs (logits) for ``x``, in eval mode (restored after), ``batch_size`` samples at a time, on
        the model's device (inputs elsewhere are moved batch by batch).

        For probabilities: ``gpucnn.functional.softmax(model.predict(x))``; for classes: ``.argmax(axis=1)``.
        """
        return predict(self, x, batch_size)

    def save(self, path):
        """Write the weights to ``path`` (.npz, atomically, no pickle); the model stays on its device.

        The file also records the architecture when every layer is one of gpucnn's own, so that
        ``gpucnn export`` (or ``gpucnn.architecture.build``) can rebuild the model from the file alone.
        """
        save_arrays(path, self.named_state(), {"format": _FORMAT, "layers": [repr(layer) for layer in self.layers],
                                               "architecture": describe(self, self.input_shape)})

    def load(self, path):
        """Read weights written by ``save``; on any error the model's weights are left as they were.

        The file's names and array shapes are checked against the model before any data is read.
        """
        with CheckpointReader(path) as reader:
            if reader.meta.get("format") != _FORMAT:
                raise CheckpointError(f"{path}: not a saved Sequential (format {reader.meta.get('format')!r})")
            reader.check_members(self.expected_state())
            arrays = reader.read_all()
            meta = reader.meta
        self.load_state(arrays, source=str(path))
        recorded = (meta.get("architecture") or {}).get("input_shape")
        if self.input_shape is None and recorded:
            self.input_shape = tuple(recorded)
        return self

    def __repr__(self):
        inner = "\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
