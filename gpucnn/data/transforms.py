"""Data augmentation on whole batches: ``RandomCrop``, ``RandomHorizontalFlip``, ``RandomErasing``,
``Normalize`` and ``Compose``, with torchvision's names and semantics, applied to a batch (N, C, H, W)
at once, each sample drawing its own random parameters.

Vectorised over the batch, on the batch's device (NumPy arrays with NumPy, CuPy arrays with CuPy):
- a crop is one gather with per-sample offsets (fancy indexing), after one padding of the batch;
- a flip is ``where`` on a per-sample mask;
- an erasure is ``where`` on a broadcast mask of per-sample rectangles.
The random parameters are drawn on the host from the transform's own seeded ``numpy.random.Generator``
and copied to the device once per batch (transform_base.py), so a seed augments alike on every device,
and the generator's state goes into the training checkpoint (``fit(..., transform=...)``).

Example:
    >>> augment = Compose([RandomCrop(28, padding=2), RandomHorizontalFlip(), RandomErasing(p=0.25)], seed=0)
    >>> xb = augment(x_train[:128])            # same shape and device as the input
"""
import numbers

import numpy

from ..backend import device_scope, get_array_module
from .erasing import RandomErasing
from .transform_base import Transform, check_batch, check_probability, params_to_device

__all__ = ["Transform", "Compose", "RandomCrop", "RandomHorizontalFlip", "RandomErasing", "Normalize"]

PADDING_MODES = ("zeros", "reflect")


class Compose(Transform):
    """Transforms applied one after the other, drawing from one generator of their own.

    Args:
        transforms: a list of transforms (RandomCrop, ...). Inside a Compose they draw from the Compose's
            generator, in order, batch after batch (their own generators are left untouched).
        seed: None (fresh entropy), an int, or a ``numpy.random.Generator``.

    Example:
        >>> Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()], seed=0)(xb)
    """

    def __init__(self, transforms, seed=None):
        super().__init__(seed)
        if isinstance(transforms, Transform) or not hasattr(transforms, "__iter__"):
            raise ValueError(f"Compose: transforms must be a list of transforms, got {type(transforms).__name__}")
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not isinstance(t, Transform):
                raise ValueError(f"Compose: transforms[{i}] is a {type(t).__name__}, expected a transform "
                                 f"(RandomCrop, RandomHorizontalFlip, RandomErasing, Normalize, Compose)")

    def sample(self, n, image_shape, rng):
        params = []
        for t in self.transforms:
            params.append(t.sample(n, image_shape, rng))
            image_shape = t.output_shape(image_shape)
        return params

    def apply(self, x, params):
        for t, p in zip(self.transforms, params):
            x = t.apply(x, p)
        return x

    def output_shape(self, image_shape):
        for t in self.transforms:
            image_shape = t.output_shape(image_shape)
        return image_shape

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomCrop(Transform):
    """Crop each sample at a random place, after padding its borders (torchvision.transforms.RandomCrop).

    Args:
        size: the crop, an int (square) or (height, width).
        padding: None, an int (every border), (left/right, top/bottom) or (left, top, right, bottom).
        padding_mode: 'zeros' (constant 0) or 'reflect' (mirrored without repeating the edge, as
            numpy.pad's and torch's 'reflect'; each padding must be smaller than the image's side).
        seed: as for Compose.

    Each sample's top-left corner (i, j) in the padded image is drawn uniformly from
    [0, H_padded - height] x [0, W_padded - width], as torchvision's ``get_params``.
    """

    def __init__(self, size, padding=None, padding_mode="zeros", seed=None):
        super().__init__(seed)
        self.size = _size(size)
        self.padding = _padding(padding)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"RandomCrop: padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode

    def _padded(self, image_shape):
        _, h, w = image_shape
        left, top, right, bottom = self.padding
        if self.padding_mode == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
            raise ValueError(f"RandomCrop: padding {self.padding} must be smaller than the image ({h}x{w}) "
                             f"for padding_mode='reflect'")
        ph, pw = h + top + bottom, w + left + right
        if self.size[0] > ph or self.size[1] > pw:
            raise ValueError(f"RandomCrop: size {self.size[0]}x{self.size[1]} is larger than the padded image "
                             f"{ph}x{pw}")
        return ph, pw

    def sample(self, n, image_shape, rng):
        ph, pw = self._padded(image_shape)
        th, tw = self.size
        top = rng.integers(0, ph - th + 1, size=n)
        left = rng.integers(0, pw - tw + 1, size=n)
        return {"corners": numpy.stack([top, left], axis=1).astype(numpy.int64)}

    def apply(self, x, params):
        xp = get_array_module(x)
        n, c = x.shape[:2]
        left, top, right, bottom = self.padding
        if any(self.padding):
            mode = "constant" if self.padding_mode == "zeros" else "reflect"
            x = xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=mode)
        th, tw = self.size
        corners = params["corners"]
        rows = corners[:, 0:1] + xp.arange(th)  # (n, th): the rows each sample keeps
        cols = corners[:, 1:2] + xp.arange(tw)  # (n, tw)
        samples = xp.arange(n)[:, None, None, None]
        channels = xp.arange(c)[None, :, None, None]
        return x[samples, channels, rows[:, None, :, None], cols[:, None, None, :]]

    def output_shape(self, image_shape):
        return (image_shape[0], *self.size)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding}, padding_mode={self.padding_mode!r})"


class RandomHorizontalFlip(Transform):
    """Mirror each sample left to right with probability ``p`` (torchvision.transforms.RandomHorizontalFlip).

    Args:
        p: the probability of a flip, in [0, 1]. seed: as for Compose.
    """

    def __init__(self, p=0.5, seed=None):
        super().__init__(seed)
        self.p = check_probability(p, "RandomHorizontalFlip")

    def sample(self, n, image_shape, rng):
        return {"flip": rng.random(n) < self.p}

    def apply(self, x, params):
        xp = get_array_module(x)
        return xp.where(params["flip"][:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p:g})"


class Normalize(Transform):
    """``(x - mean[c]) / std[c]`` per channel (torchvision.transforms.Normalize); draws nothing.

    Args:
        mean, std: one number per channel (or one number for all), cast to the batch's float dtype.
    """

    def __init__(self, mean, std):
        super().__init__(0)
        self.mean, self.std = _per_channel(mean, "mean"), _per_channel(std, "std")
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(f"Normalize: mean and std must have one number per channel each, got "
                             f"{len(self.mean)} and {len(self.std)}")

    def apply(self, x, params):
        xp = get_array_module(x)
        if x.dtype.kind != "f":
            raise ValueError(f"Normalize: expects a floating-point batch, got dtype {x.dtype}")
        channels = x.shape[1]
        for what, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(f"Normalize: {what} has {len(values)} values for a batch of {channels} channels")
        std = numpy.asarray(self.std, dtype=x.dtype)
        if (std == 0).any():
            raise ValueError(f"Normalize: std evaluated to zero after conversion to {x.dtype}, leading to "
                             f"division by zero")
        mean = xp.asarray(numpy.asarray(self.mean, dtype=x.dtype).reshape(1, -1, 1, 1))
        return (x - mean) / xp.asarray(std.reshape(1, -1, 1, 1))

    def __call__(self, x):
        check_batch(x, "Normalize")
        with device_scope(x):
            return self.apply(x, params_to_device({}, x))

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


def _size(size):
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    try:
        height, width = size
    except (TypeError, ValueError):
        raise ValueError(f"RandomCrop: size must be an int or (height, width), got {size!r}") from None
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in (height, width)):
        raise ValueError(f"RandomCrop: size must be integers >= 1, got {size!r}")
    return int(height), int(width)


def _padding(padding):
    """(left, top, right, bottom) from torchvision's three spellings."""
    if padding is None:
        return (0, 0, 0, 0)
    values = (padding,) if isinstance(padding, numbers.Number) else padding
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    if len(values) not in (1, 2, 4) or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                               and v >= 0 for v in values):
        raise ValueError(f"RandomCrop: padding must be None, an int >= 0, (left/right, top/bottom) or "
                         f"(left, top, right, bottom), got {padding!r}")
    if len(values) == 1:
        values = values * 4
    elif len(values) == 2:
        values = values * 2
    return tuple(int(v) for v in values)


def _per_channel(values, what):
    values = (values,) if isinstance(values, numbers.Number) else values
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"Normalize: {what} must be a number or a sequence of numbers, got {values!r}") from None
    if not values or not all(numpy.isfinite(values)):
        raise ValueError(f"Normalize: {what} must be finite numbers, one per channel, got {values!r}")
    return values
