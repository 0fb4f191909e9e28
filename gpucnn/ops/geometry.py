"""All window arithmetic in one place: kernel, stride, dilation, padding and output sizes.

Convolution and pooling both slide a (kh, kw) window with strides (sy, sx) over an
input padded by (top, bottom, left, right). A dilated window (dilation (dy, dx), as in
PyTorch's ``dilation``) spreads its taps dy rows and dx columns apart: tap (i, j) of
window (oy, ox) reads padded row oy*sy + i*dy and column ox*sx + j*dx, so the window
spans d*(k-1) + 1 elements along an axis (its extent). The output size along one axis is

    out = (n + pad_before + pad_after - extent) // s + 1

which is the tutorials' (n + 2p - f) / s + 1 when the padding is symmetric and d = 1.
"""
from dataclasses import dataclass

import numpy

__all__ = ["Window2D", "conv_window", "pool_window", "check_groups", "to_pair", "check_input"]


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
    """A 2-D sliding window: kernel (kh, kw), stride (sy, sx), padding (top, bottom, left, right),
    dilation (dy, dx) (1: taps side by side)."""
    kh: int
    kw: int
    sy: int
    sx: int
    pt: int
    pb: int
    pl: int
    pr: int
    layer: str = "layer"
    dy: int = 1
    dx: int = 1

    @property
    def extent_h(self):
        """Padded rows one window spans: dy*(kh-1) + 1."""
        return self.dy * (self.kh - 1) + 1

    @property
    def extent_w(self):
        """Padded columns one window spans: dx*(kw-1) + 1."""
        return self.dx * (self.kw - 1) + 1

    def output_size(self, h, w):
        """(out_h, out_w) for an (h, w) input; ValueError when the window does not fit."""
        hp, wp = h + self.pt + self.pb, w + self.pl + self.pr
        eh, ew = self.extent_h, self.extent_w
        if eh > hp or ew > wp:
            dilated = f" (kernel {self.kh}x{self.kw} dilated by {(self.dy, self.dx)})" if self.dilated else ""
            raise ValueError(
                f"{self.layer}: window {eh}x{ew}{dilated} is larger than the padded input "
                f"{hp}x{wp} (input {h}x{w}, padding top/bottom/left/right "
                f"{self.pt}/{self.pb}/{self.pl}/{self.pr})")
        return (hp - eh) // self.sy + 1, (wp - ew) // self.sx + 1

    @property
    def dilated(self):
        return (self.dy, self.dx) != (1, 1)

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


def conv_window(kernel_size, stride=1, padding=0, layer="Conv2D", dilation=1):
    """Window of a convolution, with PyTorch's meaning of ``padding`` and ``dilation``.

    ``padding`` is an int, (ph, pw), 'valid' (no padding) or 'same' (output size equals
    input size; stride 1 only, as in PyTorch). 'same' pads d*(k-1) in total along an
    axis (the window's extent minus one); when that is odd it cannot be symmetric: like
    PyTorch, the extra row/column of zeros goes at the bottom/right.
    ``dilation`` is an int or (dy, dx), >= 1.
    """
    kh, kw = _check_kernel(kernel_size, "kernel_size", layer)
    sy, sx = _check_stride(stride, layer)
    dy, dx = to_pair(dilation, "dilation", layer)
    if dy < 1 or dx < 1:
        raise ValueError(f"{layer}: dilation must be >= 1, got {dilation!r}")
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return Window2D(kh, kw, sy, sx, 0, 0, 0, 0, layer, dy, dx)
        if word == "same":
            if (sy, sx) != (1, 1):
                raise ValueError(f"{layer}: padding='same' needs stride 1 (as in PyTorch), got stride {(sy, sx)}")
            th, tw = dy * (kh - 1), dx * (kw - 1)
            return Window2D(kh, kw, sy, sx, th // 2, th - th // 2, tw // 2, tw - tw // 2, layer, dy, dx)
        raise ValueError(f"{layer}: unknown padding {padding!r}; expected an int, (h, w), 'valid' or 'same'")
    ph, pw = to_pair(padding, "padding", layer)
    if ph < 0 or pw < 0:
        raise ValueError(f"{layer}: padding must be >= 0, got {padding!r}")
    return Window2D(kh, kw, sy, sx, ph, ph, pw, pw, layer, dy, dx)


def check_groups(groups, in_channels, out_channels, layer="Conv2D"):
    """``groups`` as an int that divides both channel counts (ValueError naming both otherwise).

    A grouped convolution splits the input channels into ``groups`` equal parts and the
    filters likewise: filter o sees only the input channels of its group
    o // (out_channels // groups). ``groups == in_channels`` is the depthwise convolution.
    """
    if not isinstance(groups, (int, numpy.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{layer}: groups must be a positive int, got {groups!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{layer}: groups={groups} must divide both in_channels={in_channels} and "
                         f"out_channels={out_channels}")
    return int(groups)


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
