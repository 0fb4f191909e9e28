"""``RandomErasing`` (gpucnn.data.transforms): a random rectangle of each sample overwritten, as
torchvision.transforms.RandomErasing (Zhong et al., "Random Erasing Data Augmentation", 2017).

torchvision's ``get_params``, for one image of H x W with probability p:

    for attempt in range(10):
        erase_area = H * W * uniform(scale[0], scale[1])
        aspect_ratio = exp(uniform(log(ratio[0]), log(ratio[1])))
        h = int(round(sqrt(erase_area * aspect_ratio)));  w = int(round(sqrt(erase_area / aspect_ratio)))
        if h < H and w < W:
            i = randint(0, H - h + 1);  j = randint(0, W - w + 1)       -> erase img[:, i:i+h, j:j+w]
    (no attempt fits: the image is left as it is)

Here every sample draws all ten attempts at once (``draw``), the first attempt that fits is found
along the attempts axis, and the corner comes from one more uniform draw per axis,
``i = floor(u * (H - h + 1))``; the rectangles become one broadcast mask for ``where``.
"""
import math

import numpy

from ..backend import get_array_module
from .transform_base import Transform, check_probability, check_range

__all__ = ["RandomErasing", "ATTEMPTS"]

#: tries per sample for a rectangle that fits, as torchvision
ATTEMPTS = 10


class RandomErasing(Transform):
    """Overwrite a random rectangle of each sample with probability ``p``.

    Args:
        p: probability that a sample is erased, in [0, 1].
        scale: (min, max) of the erased area as a fraction of the image, within [0, 1].
        ratio: (min, max) of the rectangle's aspect ratio (height / width), both > 0.
        value: what is written: a number, one number per channel, or 'random' (standard normal values,
            drawn on the host).
        seed: None, an int or a ``numpy.random.Generator``.
    """

    def __init__(self, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0, seed=None):
        super().__init__(seed)
        self.p = check_probability(p, "RandomErasing")
        self.scale = check_range(scale, "RandomErasing", "scale", 0.0, 1.0)
        self.ratio = check_range(ratio, "RandomErasing", "ratio")
        if not self.ratio[0] > 0:
            raise ValueError(f"RandomErasing: ratio must be (min, max) with 0 < min <= max, got {ratio!r}")
        if isinstance(value, str):
            if value != "random":
                raise ValueError(f"RandomErasing: value must be a number, a sequence of numbers or 'random', "
                                 f"got {value!r}")
            self.value = value
        else:
            values = (value,) if numpy.ndim(value) == 0 else value
            try:
                self.value = tuple(float(v) for v in values)
            except (TypeError, ValueError):
                raise ValueError(f"RandomErasing: value must be a number, a sequence of numbers or 'random', "
                                 f"got {value!r}") from None
            if not self.value:
                raise ValueError("RandomErasing: value is an empty sequence")

    def draw(self, n, rng):
        """The uniform draws of ``n`` samples: {'erase': (n,) [0, 1), 'area': (n, ATTEMPTS) in scale,
        'log_ratio': (n, ATTEMPTS) in log(ratio), 'corner': (n, 2) [0, 1)}."""
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        return {"erase": rng.random(n), "area": rng.uniform(self.scale[0], self.scale[1], (n, ATTEMPTS)),
                "log_ratio": rng.uniform(log_low, log_high, (n, ATTEMPTS)), "corner": rng.random((n, 2))}

    def get_params(self, draws, image_shape):
        """The rectangles (n, 4) int64 [top, left, height, width] for ``draws`` ((0, 0, 0, 0): not erased)."""
        _, img_h, img_w = image_shape
        erase_area = img_h * img_w * draws["area"]
        aspect = numpy.exp(draws["log_ratio"])
        h = numpy.rint(numpy.sqrt(erase_area * aspect)).astype(numpy.int64)  # round half to even, as round()
        w = numpy.rint(numpy.sqrt(erase_area / aspect)).astype(numpy.int64)
        fits = (h < img_h) & (w < img_w)
        first = numpy.argmax(fits, axis=1)
        rows = numpy.arange(len(h))
        erased = (draws["erase"] < self.p) & fits.any(axis=1)
        h = numpy.where(erased, h[rows, first], 0)
        w = numpy.where(erased, w[rows, first], 0)
        top = numpy.minimum((draws["corner"][:, 0] * (img_h - h + 1)).astype(numpy.int64), img_h - h)
        left = numpy.minimum((draws["corner"][:, 1] * (img_w - w + 1)).astype(numpy.int64), img_w - w)
        top, left = numpy.where(erased, top, 0), numpy.where(erased, left, 0)
        return numpy.stack([top, left, h, w], axis=1).astype(numpy.int64)

    def sample(self, n, image_shape, rng):
        params = {"boxes": self.get_params(self.draw(n, rng), image_shape)}
        if self.value == "random":
            params["values"] = rng.standard_normal((n, *image_shape))
        return params

    def apply(self, x, params):
        xp = get_array_module(x)
        n, c, img_h, img_w = x.shape
        boxes = params["boxes"]
        top, left, h, w = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
        rows, cols = xp.arange(img_h), xp.arange(img_w)
        in_rows = (rows >= top) & (rows < top + h)  # (n, H)
        in_cols = (cols >= left) & (cols < left + w)  # (n, W)
        mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (n, 1, H, W)
        if self.value == "random":
            value = params["values"].astype(x.dtype)
        else:
            if len(self.value) not in (1, c):
                raise ValueError(f"RandomErasing: value has {len(self.value)} numbers for a batch of {c} channels")
            value = xp.asarray(numpy.asarray(self.value, dtype=x.dtype).reshape(1, -1, 1, 1))
        return xp.where(mask, value, x)

    def __repr__(self):
        value = repr(self.value) if self.value == "random" else \
            (f"{self.value[0]:g}" if len(self.value) == 1 else repr(self.value))
        return f"RandomErasing(p={self.p:g}, scale={self.scale}, ratio={self.ratio}, value={value})"
