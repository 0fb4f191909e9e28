"""All window arithmetic in one place: kernel, stride, padding and output sizes.

Convolution and pooling both slide a (kh, kw) window with strides (sy, sx) over an
input padded by (top, bottom, left, right). The output size along one axis is

    out = (n + pad_before + pad_after - k) // s + 1

which is the tutorials' (n + 2p - f) / s + 1 when the padding is symmetric.
"""
from dataclasses import dataclass

import numpy

__all__ = ["Window2D", "conv_window", "pool_window", "to_pair", "check_input"]


def to_pair(value, what, layer):
    """An int or a pair of ints as (h, w); anything else is a TypeError naming ``layer``."""
    if isinstance(value, (int, numpy.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, numpy.integer)) and not isinstance(v, bool) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{layer}: {what} must be an int or a pair of ints (h, w), got {value!r}")


@dataclass(frozen=True)
class Window2D:
    """A 2-D sliding window: kernel (kh, kw), stride (sy, sx), padding (top, bottom, left, right)."""
    kh: int
    kw: int
    sy: int
    sx: int
    pt: int
    pb: int
    pl: int
    pr: int
    layer: str = "layer"

    def output_size(self, h, w):
        """(out_h, out_w) for an (h, w) input; ValueError when the window does not fit."""
        hp, wp = h + self.pt + self.pb, w + self.pl + self.pr
        if self.kh > hp or self.kw > wp:
            raise ValueError(
                f"{self.layer}: window {self.kh}x{self.kw} is larger than the padded input "
                f"{hp}x{wp} (input {h}x{w}, padding top/bottom/left/right "
                f"{self.pt}/{self.pb}/{self.pl}/{self.pr})")
        return (hp - self.kh) // self.sy + 1, (wp - self.kw) // self.sx + 1

    @property
    def padded(self):
        return bool(self.pt or self.pb or self.pl or self.pr)


def _check_stride(stride, layer):
    sy, sx = to_pair(stride, "stride", layer)
    if sy < 1 or sx < 1:
        raise ValueError(f"{layer}: stride must be >= 1, got {stride!r}")
    return sy, sx


def _check_kernel(kernel_size, what, layer):
    kh, kw = to_pair(kernel_size, what, layer)
    if kh < 1 or kw < 1:
        raise ValueError(f"{layer}: {what} must be >= 1, got {kernel_size!r}")
    return kh, kw


def conv_window(kernel_size, stride=1, padding=0, layer="Conv2D"):
    """Window of a convolution, with PyTorch's meaning of ``padding``.

    ``padding`` is an int, (ph, pw), 'valid' (no padding) or 'same' (output size equals
    input size; stride 1 only, as in PyTorch). For an even kernel 'same' cannot be
    symmetric: like PyTorch, the extra row/column of zeros goes at the bottom/right.
    """
    kh, kw = _check_kernel(kernel_size, "kernel_size", layer)
    sy, sx = _check_stride(stride, layer)
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return Window2D(kh, kw, sy, sx, 0, 0, 0, 0, layer)
        if word == "same":
            if (sy, sx) != (1, 1):
                raise ValueError(f"{layer}: padding='same' needs stride 1 (as in PyTorch), got stride {(sy, sx)}")
            th, tw = kh - 1, kw - 1
            return Window2D(kh, kw, sy, sx, th // 2, th - th // 2, tw // 2, tw - tw // 2, layer)
        raise ValueError(f"{layer}: unknown padding {padding!r}; expected an int, (h, w), 'valid' or 'same'")
    ph, pw = to_pair(padding, "padding", layer)
    if ph < 0 or pw < 0:
        raise ValueError(f"{layer}: padding must be >= 0, got {padding!r}")
    return Window2D(kh, kw, sy, sx, ph, ph, pw, pw, layer)


def pool_window(kernel_size, stride=None, padding=0, layer="MaxPool2D"):
    """Window of a pooling layer; stride defaults to the kernel size, as in PyTorch.

    PyTorch allows at most half the kernel as padding, so that every window holds at
    least one real input value; we keep the same rule.
    """
    kh, kw = _check_kernel(kernel_size, "kernel_size", layer)
    sy, sx = _check_stride(kernel_size if stride is None else stride, layer)
    if isinstance(padding, str):
        if padding.lower() == "valid":
            padding = 0
        else:
            raise ValueError(f"{layer}: unknown padding {padding!r}; expected an int, (h, w) or 'valid'")
    ph, pw = to_pair(padding, "padding", layer)
    if ph < 0 or pw < 0:
        raise ValueError(f"{layer}: padding must be >= 0, got {padding!r}")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{layer}: padding {(ph, pw)} must be at most half the kernel size {(kh, kw)}")
    return Window2D(kh, kw, sy, sx, ph, ph, pw, pw, layer)


def check_input(x, layer, ndim, channels=None, axis=1, what="channels"):
    """Validate an input array: float dtype, rank, non-empty batch, and size along ``axis``."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{layer}: expected an array, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{layer}: expected a floating-point input, got dtype {x.dtype}")
    if x.ndim != ndim:
        layout = {4: "(N, C, H, W)", 2: "(N, features)"}.get(ndim, f"{ndim}-D")
        raise ValueError(f"{layer}: expected a {ndim}-D input {layout}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{layer}: got an empty batch (shape {tuple(x.shape)})")
    if 0 in x.shape:
        raise ValueError(f"{layer}: got an input with a zero-size axis (shape {tuple(x.shape)}); PyTorch refuses "
                         f"it too")
    if channels is not None and x.shape[axis] != channels:
        raise ValueError(f"{layer}: expected {channels} {what}, got {x.shape[axis]} (input shape {tuple(x.shape)})")
