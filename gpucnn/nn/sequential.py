"""Sequential: layers applied in order, backward in reverse."""
from .registry import describe
from ..backend import device_scope
from ..compile.cpu import runner_for
from .graph import check_name, is_symbolic, record
from .layers.base import Layer
from .network import Network
from .summary import summarize

__all__ = ["Sequential"]


class Sequential(Network):
    """A stack of layers.

    Example:
        >>> model = Sequential([Dense(4, 8), ReLU(), Dense(8, 3)])
        >>> logits = model.forward(x)
        >>> grad_x = model.backward(loss.backward())
    """

    FORMAT = "gpucnn.Sequential/1"

    #: a Sequential inside a Model holds no arrays of its own, only its layers'
    buffer_names = ()

    def __init__(self, layers, name=None):
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a gpucnn layer")
        self.layers = layers
        self.training = True
        self.input_shape = None  # of one sample, remembered from the first forward (for summary, save, export)
        self.given_name = check_name(name)

    @property
    def name(self):
        """The name given at construction (its prefix inside a Model: 'layer1.0.conv1.weight'), else 'Sequential'."""
        return self.given_name or "Sequential"

    def forward(self, x):
        """The model's output; on the CPU through gpucnn.compile.cpu unless ``gpucnn.config.path = 'reference'``."""
        sample_shape = tuple(int(d) for d in x.shape[1:]) if hasattr(x, "shape") else None
        self._fast = runner_for(self, x)  # backward takes the path its forward took
        y = self._fast.forward(x) if self._fast is not None else self.reference_forward(x)
        if self.input_shape is None:  # only a shape the model took
            self.input_shape = sample_shape
        return y

    def __call__(self, x):
        """``forward(x)``; on symbolic tensors (``gpucnn.Input``) it records a node of a Model's graph."""
        if is_symbolic(x):
            return record(self, x)
        return self.forward(x)

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

    def named_state(self):
        """{'<index>.<name>': array} for every parameter and buffer."""
        state = {}
        for i, layer in enumerate(self.layers):
            for name, value in layer.named_state().items():
                state[f"{i}.{name}"] = value
        return state

    def locate(self, key):
        """(layer, name within it) of a ``named_state`` key '<index>.<name>'."""
        index, name = key.split(".", 1)
        return self.layers[int(index)], name

    def architecture(self):
        """The JSON-able record that rebuilds this model (gpucnn.architecture.build), or None."""
        return describe(self, self.input_shape)

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

    def __repr__(self):
        inner = "\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
