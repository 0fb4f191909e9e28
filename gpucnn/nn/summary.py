"""model.summary(): a Keras-like table of layers, output shapes and parameter counts."""
from dataclasses import dataclass

import numpy

from ..backend import device_scope, get_array_module

__all__ = ["Summary", "SummaryRow", "summarize", "output_shapes"]


def _batch_shape(shape):
    """(None, 32, 28, 28): Keras's way of saying that the batch can be any size."""
    return "(" + ", ".join(["None"] + [str(d) for d in shape]) + ")"


@dataclass(frozen=True)
class SummaryRow:
    index: int
    layer: str
    output_shape: tuple
    params: int


@dataclass(frozen=True)
class Summary:
    """What ``Sequential.summary`` found: ``rows`` (one per layer) and the totals; ``str()`` is the table.

    ``total_params`` counts the trainable values; ``buffer_values`` the non-trained state
    (BatchNorm's running statistics), which checkpoints and state_dict also hold.
    """
    input_shape: tuple
    rows: tuple
    total_params: int
    buffer_values: int
    param_bytes: int
    title: str = "Sequential"

    def __str__(self):
        table = [("Layer", "Output shape", "Params")]
        table += [(r.layer if r.index is None else f"{r.index}: {r.layer}", _batch_shape(r.output_shape),
                   f"{r.params:,}") for r in self.rows]  # index None: a row nested in the one above
        widths = [max(len(row[k]) for row in table) for k in range(3)]
        rule = "=" * (sum(widths) + 4)

        def line(row):
            return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"

        lines = [f"{self.title}, input {_batch_shape(self.input_shape)}", rule, line(table[0]), rule]
        lines += [line(row) for row in table[1:]]
        lines += [rule, f"Total params: {self.total_params:,} ({self.param_bytes / 2 ** 20:.2f} MiB)"]
        if self.buffer_values:
            lines.append(f"Buffers (not trained): {self.buffer_values:,} values")
        return "\n".join(lines)

    def __repr__(self):
        return f"Summary({len(self.rows)} layers, {self.total_params:,} parameters, input {self.input_shape})"


def output_shapes(model, input_shape):
    """Per-layer output shapes (without the batch) for inputs of shape ``input_shape`` (without the batch).

    Runs one forward pass of a single zero sample in eval mode on the model's device, so
    nothing trains: BatchNorm's statistics and Dropout's random numbers are untouched, the
    layers' saved activations are put back, and train/eval mode is restored. A shape the
    model cannot take raises the error of the layer that refuses it.
    """
    input_shape = tuple(int(d) for d in input_shape)
    params = model.parameters()
    if params:
        ref = params[0].data
        xp, dtype = get_array_module(ref), ref.dtype
    else:
        ref, xp, dtype = None, numpy, numpy.float32
    was_training = model.training
    saved = [layer.__dict__.get("_cache") for layer in model.layers]
    model.eval()
    try:
        with device_scope(ref):
            x = xp.zeros((1,) + input_shape, dtype=dtype)
            shapes = []
            for layer in model.layers:
                x = layer.forward(x)
                shapes.append(tuple(int(d) for d in x.shape[1:]))
        return shapes
    finally:
        model.train(was_training)
        for layer, cache in zip(model.layers, saved):
            if "_cache" in layer.__dict__:
                layer._cache = cache


def summarize(model, input_shape):
    """The Summary of ``model`` for inputs of shape ``input_shape`` (C, H, W) or (features,), batch left out."""
    shapes = output_shapes(model, input_shape)
    rows = tuple(SummaryRow(i, repr(layer), shape, sum(int(p.data.size) for p in layer.parameters()))
                 for i, (layer, shape) in enumerate(zip(model.layers, shapes)))
    params = model.parameters()
    buffers = [getattr(layer, name) for layer in model.layers for name in layer.buffer_names]
    return Summary(tuple(int(d) for d in input_shape), rows, sum(r.params for r in rows),
                   sum(int(b.size) for b in buffers), sum(int(p.data.nbytes) for p in params))
