"""What Sequential and Model share: their state under dotted names, checked loading, save/load, predict, devices.

A network provides ``layers`` (its layers in execution order), ``named_state()`` ({dotted name:
array}), ``locate(name) -> (layer, the rest of the name)``, ``architecture()`` (a JSON-able record that rebuilds it, or
None) and ``FORMAT`` (the format string of its saved files); the rest is here.
"""
from ..backend import asnumpy, device_of
from ..io.arrays import CheckpointError, CheckpointReader, check_cast, save_arrays
from .predict import predict
from .state_dict import load_state_dict

__all__ = ["Network"]


class Network:
    """The state, file and device methods of a network of layers (see the module docstring)."""

    FORMAT = None
    layers = ()

    def leaf_layers(self):
        """Every layer that is not itself a network, nested ones included, in the order they run."""
        leaves = []
        for layer in self.layers:
            leaves.extend(layer.leaf_layers() if isinstance(layer, Network) else [layer])
        return leaves

    def parameters(self):
        """Every Parameter, in the order the layers run."""
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

    def expected_state(self):
        """{name: (shape, None)}: what a file must hold to load into this model."""
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
                self.set_state(key, state[key])
        except BaseException:
            self.restore_state(own)  # set_state replaces arrays, so the old ones are intact: put them back
            raise

    def restore_state(self, saved):
        """Put back the arrays of an earlier ``named_state()`` (the same objects, no copy)."""
        for key, value in saved.items():
            self.restore_array(key, value)

    def set_state(self, key, value):
        """Replace the array called ``key`` (a dotted name of ``named_state``) with a copy of ``value``."""
        layer, name = self.locate(key)
        layer.set_state(name, value)

    def restore_array(self, key, value):
        """Make ``value`` itself (no copy) the array called ``key`` again."""
        layer, name = self.locate(key)
        if isinstance(layer, Network):
            layer.restore_array(name, value)
            return
        current = getattr(layer, name)
        if hasattr(current, "grad"):
            current.data = value
        else:
            setattr(layer, name, value)

    def state_dict(self):
        """{name: array} of every parameter and buffer, keyed as PyTorch keys the same network ("0.weight" in a
        Sequential, "conv1.weight" in a Model). The arrays are the model's own, not copies (as in PyTorch).

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

    def predict(self, x, batch_size=256, ema=None):
        """The outputs (logits) for ``x``, in eval mode (restored after), ``batch_size`` samples at a time, on
        the model's device (inputs elsewhere are moved batch by batch); with ``ema`` (a gpucnn.optim.EMA of
        this model), those of the averaged weights.

        For probabilities: ``gpucnn.functional.softmax(model.predict(x))``; for classes: ``.argmax(axis=1)``.
        """
        return predict(self, x, batch_size, ema)

    def save(self, path):
        """Write the weights to ``path`` (.npz, atomically, no pickle); the model stays on its device.

        The file also records the architecture when every layer is one of gpucnn's own, so that
        ``gpucnn export`` (or ``gpucnn.architecture.build``) can rebuild the model from the file alone.
        """
        save_arrays(path, self.named_state(), {"format": self.FORMAT, "layers": [repr(layer) for layer in self.layers],
                                               "architecture": self.architecture()})

    def load(self, path):
        """Read weights written by ``save``; on any error the model's weights are left as they were.

        The file's names and array shapes are checked against the model before any data is read.
        """
        with CheckpointReader(path) as reader:
            if reader.meta.get("format") != self.FORMAT:
                raise CheckpointError(f"{path}: not a saved {type(self).__name__} (format "
                                      f"{reader.meta.get('format')!r})")
            reader.check_members(self.expected_state())
            arrays = reader.read_all()
            meta = reader.meta
        self.load_state(arrays, source=str(path))
        recorded = (meta.get("architecture") or {}).get("input_shape")
        if getattr(self, "input_shape", None) is None and recorded:
            self.input_shape = tuple(recorded)
        return self
