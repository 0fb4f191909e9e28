"""evaluate(): accuracy (and mean loss) of a model on a data set, in eval mode, batch by batch."""
import contextlib
import math

from ..backend import device_scope, get_array_module
from .progress import ProgressBar

__all__ = ["evaluate", "evaluate_with_bar"]


def evaluate(model, x, y, loss_fn=None, batch_size=1024, progress=False, stream=None, ema=None):
    """Accuracy of ``model`` on (x, y), and the mean loss when ``loss_fn`` is given; in eval mode (restored after).

    Args:
        model: a Sequential. x, y: inputs and integer labels (NumPy or CuPy).
        loss_fn: optional, e.g. SoftmaxCrossEntropy(); without it only the accuracy is computed.
        batch_size: samples per forward pass. progress: show a bar ("eval [###...]"). stream: default stderr.
        ema: optional gpucnn.optim.EMA of ``model``: evaluate its averaged weights (the model's own are put
            back after).

    Returns:
        {'accuracy': float}, plus 'loss' when ``loss_fn`` is given.

    Example:
        >>> evaluate(model, x_test, y_test)["accuracy"]
        0.9187
    """
    bar = ProgressBar(math.ceil(len(x) / batch_size), "eval ", stream, enabled=progress)
    return evaluate_with_bar(model, x, y, loss_fn, batch_size, bar, ema)


def evaluate_with_bar(model, x, y, loss_fn, batch_size, bar, ema=None):
    """``evaluate`` with a given ProgressBar (fit shows validation inside its epoch line)."""
    if ema is not None and ema.model is not model:
        raise ValueError("evaluate: ema averages another model than the one given")
    with ema.average_parameters() if ema is not None else contextlib.nullcontext():
        return _evaluate(model, x, y, loss_fn, batch_size, bar)


def _evaluate(model, x, y, loss_fn, batch_size, bar):
    was_training = model.training
    model.eval()
    try:
        total = len(x)
        if total == 0:
            raise ValueError("evaluate: got no samples (len(x) == 0)")
        if len(y) != total:
            raise ValueError(f"evaluate: {total} inputs but {len(y)} labels")
        loss_sum, correct = 0.0, 0
        for i, start in enumerate(range(0, total, batch_size)):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = model.forward(xb)
            batch_correct = None
            if loss_fn is not None:
                loss_sum += float(loss_fn.forward(logits, yb)) * len(xb)
                batch_correct = getattr(loss_fn, "correct", None)  # the loss's own count, when it makes one
            if batch_correct is None:
                with device_scope(logits):
                    batch_correct = (logits.argmax(axis=1) == get_array_module(logits).asarray(yb)).sum()
            correct += int(batch_correct)
            bar.update(i + 1)
        bar.close()
        result = {"accuracy": correct / total}
        if loss_fn is not None:
            result["loss"] = loss_sum / total
        return result
    finally:
        model.train(was_training)
