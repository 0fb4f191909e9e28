"""state_dict / load_state_dict with PyTorch's keys and PyTorch's ``strict`` rules.

Keys are the dotted names of ``named_state``: ``"<layer index>.<name>"`` in a Sequential ("0.weight",
"3.running_mean"), the names PyTorch gives the same arrays in an ``nn.Sequential`` of the same layers,
and ``"<layer name>.<name>"`` in a Model ("conv1.weight", "block2.bn1.running_mean"), PyTorch's
attribute paths; so weights cross over with one loop:

    model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()}, strict=False)

(``strict=False`` there because PyTorch's BatchNorm also keeps ``num_batches_tracked``, which
gpucnn's has no use for: it comes back among the unexpected keys. The other way needs no such
care: PyTorch's BatchNorm accepts a state without it.)
"""
from collections import namedtuple

import numpy

from ..backend import device_of, to_device

__all__ = ["IncompatibleKeys", "load_state_dict"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _as_array(key, value):
    """NumPy and CuPy arrays as they are; anything else that NumPy can read (a CPU torch tensor, a list)
    through numpy.asarray."""
    if hasattr(value, "dtype") and hasattr(value, "shape") and hasattr(value.dtype, "kind"):
        return value
    try:
        array = numpy.asarray(value)
    except Exception as exc:
        raise TypeError(f"load_state_dict: {key} is a {type(value).__name__}, not an array ({exc})") from None
    if array.dtype == object:
        raise TypeError(f"load_state_dict: {key} is a {type(value).__name__}, not an array of numbers")
    return array


def load_state_dict(model, state_dict, strict=True):
    """Copy the arrays of ``state_dict`` into ``model``'s parameters and buffers; see Sequential.load_state_dict."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"load_state_dict: expected a dict of arrays, got {type(state_dict).__name__}")
    own = model.named_state()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    if strict and (missing or unexpected):
        raise ValueError(f"load_state_dict: the keys do not match this model: missing {missing}, unexpected "
                         f"{unexpected} (strict=False loads the keys both have)")
    # Check every array before changing anything, so that a bad entry leaves the model as it was.
    checked = {}
    for key, target in own.items():
        if key not in state_dict:
            continue
        value = _as_array(key, state_dict[key])
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"load_state_dict: {key} has shape {tuple(value.shape)}, the model's has "
                             f"{tuple(target.shape)}")
        if value.dtype.kind != "f":
            raise TypeError(f"load_state_dict: {key} has dtype {value.dtype}, expected floats (the model's is "
                            f"{target.dtype}; values are cast to it)")
        checked[key] = value
    for key, value in checked.items():
        # CuPy refuses implicit copies between host and device: move each array to its target's device first.
        model.set_state(key, to_device(value, device_of(own[key])))
    return IncompatibleKeys(missing, unexpected)
