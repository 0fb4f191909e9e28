"""model.predict(): outputs for many inputs, in eval mode, batch by batch, on the model's device."""
from ..backend import device_scope, get_array_module, to_device

__all__ = ["predict"]


def predict(model, x, batch_size=256, ema=None):
    """The model's outputs for ``x``, computed ``batch_size`` samples at a time in eval mode (restored after).

    ``ema``: optional gpucnn.optim.EMA of ``model``: the outputs of its averaged weights (the model's own are
    put back after).

    Inputs on another device are moved batch by batch to the model's (so a NumPy data set can feed a
    model on the GPU without copying it whole); the outputs are on the model's device.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"predict: batch_size must be a positive int, got {batch_size!r}")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"predict: expected an array of inputs (N, ...), got {type(x).__name__}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"predict: expected a non-empty batch of inputs (N, ...), got shape {tuple(x.shape)}")
    if ema is not None:
        if ema.model is not model:
            raise ValueError("predict: ema averages another model than the one given")
        with ema.average_parameters():
            return predict(model, x, batch_size)
    # A model without parameters runs wherever its input is.
    device = model.device if model.parameters() else None
    was_training = model.training
    model.eval()
    try:
        batches = (x[start:start + batch_size] for start in range(0, x.shape[0], batch_size))
        outputs = [model.forward(batch if device is None else to_device(batch, device)) for batch in batches]
    finally:
        model.train(was_training)
    if len(outputs) == 1:
        return outputs[0]
    xp = get_array_module(outputs[0])
    with device_scope(outputs[0]):
        return xp.concatenate(outputs)
