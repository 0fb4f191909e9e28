"""All window arithmetic in one place: kernel, stride, dilation, padding and output sizes.

Convolution and pooling both slide a (kh, kw) window with strides (sy, sx) over an
input padded by (top, bottom, left, right). A dilated window (dilation (dy, dx), as in
PyTorch's ``dilation``) spreads its taps dy rows and dx columns apart: tap (i, j) of
window (oy, ox) reads padded row oy*sy + i*dy and column ox*sx + j*dx, so the window
spans d*(k-1) + 1 elements along an axis (its extent). The output size along one axis is

    out = (n + pad_before + pad_after - extent) // s + 1

which is the tutorials' (n + 2p - f) / s + 1 when the padding is symmetric and d = 1.
With ``ceil_mode`` (pooling, PyTorch's rule) the division rounds up, so a last partial
window may reach past the padded input (its taps there are ignored), and PyTorch's
proviso drops it again when it would start past the input and the leading padding:

    out = ceil((n + pad_before + pad_after - extent) / s) + 1;  if (out - 1)*s >= n + pad_before: out -= 1

'same' padding (TensorFlow's rule, at any stride) makes out = ceil(n / s): the total padding
max((out - 1)*s + extent - n, 0) is split total // 2 before, the rest (one more) after. At a
stride above 1 that depends on n, so such a layer holds a ``SameWindow2D`` and resolves it
per input shape into a ``Window2D`` (``resolve(h, w)``; a ``Window2D`` resolves to itself).
"""
from dataclasses import dataclass

import numpy

__all__ = ["Window2D", "SameWindow2D", "conv_window", "pool_window", "check_groups", "to_pair", "check_input"]


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
    ceil_mode: bool = False

    def resolve(self, h, w):
        """The window for an (h, w) input: itself (its padding does not depend on the input size)."""
        return self

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
        return (_out_len(h, self.pt, self.pb, eh, self.sy, self.ceil_mode),
                _out_len(w, self.pl, self.pr, ew, self.sx, self.ceil_mode))

    def covered_size(self, h, w):
        """(rows, cols) of the padded (h, w) input that its windows reach, at least the padded input itself;
        more only in ceil mode, where the last window may overhang (taps there are no input, no padding)."""
        oh, ow = self.output_size(h, w)
        return (max((oh - 1) * self.sy + self.extent_h, h + self.pt + self.pb),
                max((ow - 1) * self.sx + self.extent_w, w + self.pl + self.pr))

    def divisors(self, h, w, count_include_pad=True):
        """(oh, ow) int64: an average pool's divisor per window, PyTorch's rule. count_include_pad: the taps
        inside the padded input (rows [-pt, h + pb), columns [-pl, w + pr); a ceil-mode overhang is not
        counted); otherwise the taps on real input elements (rows [0, h), columns [0, w))."""
        oh, ow = self.output_size(h, w)
        rows = numpy.arange(oh)[:, None] * self.sy - self.pt + numpy.arange(self.kh)[None, :] * self.dy
        cols = numpy.arange(ow)[:, None] * self.sx - self.pl + numpy.arange(self.kw)[None, :] * self.dx
        if count_include_pad:
            n_rows = ((rows >= -self.pt) & (rows < h + self.pb)).sum(axis=1)
            n_cols = ((cols >= -self.pl) & (cols < w + self.pr)).sum(axis=1)
        else:
            n_rows = ((rows >= 0) & (rows < h)).sum(axis=1)
            n_cols = ((cols >= 0) & (cols < w)).sum(axis=1)
        return n_rows[:, None].astype(numpy.int64) * n_cols[None, :]

    @property
    def dilated(self):
        return (self.dy, self.dx) != (1, 1)

    @property
    def padded(self):
        return bool(self.pt or self.pb or self.pl or self.pr)

    @property
    def asymmetric(self):
        """True when the padding differs before and after along an axis."""
        return self.pt != self.pb or self.pl != self.pr


def _out_len(n, before, after, extent, stride, ceil_mode):
    """Output length along one axis (the module docstring's formulas)."""
    span = n + before + after - extent
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= n + before:   # PyTorch: the last window must start inside the input or the padding
        out -= 1
    return out


def _same_split(n, extent, stride):
    """TensorFlow's 'same' padding along one axis: (before, after), the extra one after."""
    total = max((-(-n // stride) - 1) * stride + extent - n, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class SameWindow2D:
    """A window with padding='same' at a stride above 1: its padding depends on the input size.

    ``resolve(h, w)`` gives the ``Window2D`` for an (h, w) input (TensorFlow's split); the fields
    that do not depend on the input (kernel, stride, dilation) read as a ``Window2D``'s.
    """
    kh: int
    kw: int
    sy: int
    sx: int
    layer: str = "layer"
    dy: int = 1
    dx: int = 1
    ceil_mode: bool = False

    extent_h = Window2D.extent_h
    extent_w = Window2D.extent_w
    dilated = Window2D.dilated
    padded = True   # in general (it depends on the input size)

    def resolve(self, h, w):
        pt, pb = _same_split(h, self.extent_h, self.sy)
        pl, pr = _same_split(w, self.extent_w, self.sx)
        return Window2D(self.kh, self.kw, self.sy, self.sx, pt, pb, pl, pr, self.layer, self.dy, self.dx,
                        self.ceil_mode)

    def output_size(self, h, w):
        return self.resolve(h, w).output_size(h, w)


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


def _is_int(v):
    return isinstance(v, (int, numpy.integer)) and not isinstance(v, bool)


def _padding_amounts(padding, layer):
    """(top, bottom, left, right) from an int, (h, w) or ((top, bottom), (left, right)); all >= 0."""
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
            isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(v) for v in p) for p in padding):
        (pt, pb), (pl, pr) = padding
        pads = tuple(int(v) for v in (pt, pb, pl, pr))
    elif _is_int(padding) or (isinstance(padding, (tuple, list)) and len(padding) == 2
                              and all(_is_int(v) for v in padding)):
        ph, pw = to_pair(padding, "padding", layer)
        pads = (ph, ph, pw, pw)
    else:
        raise TypeError(f"{layer}: padding must be an int, (h, w), ((top, bottom), (left, right)), 'valid' or "
                        f"'same', got {padding!r}")
    if min(pads) < 0:
        raise ValueError(f"{layer}: padding must be >= 0, got {padding!r}")
    return pads


def _window(kh, kw, sy, sx, padding, layer, dy=1, dx=1, ceil_mode=False):
    """Window2D (or SameWindow2D for 'same' at a stride above 1) for any accepted ``padding``."""
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return Window2D(kh, kw, sy, sx, 0, 0, 0, 0, layer, dy, dx, ceil_mode)
        if word != "same":
            raise ValueError(f"{layer}: unknown padding {padding!r}; expected an int, (h, w), "
                             f"((top, bottom), (left, right)), 'valid' or 'same'")
        same = SameWindow2D(kh, kw, sy, sx, layer, dy, dx, ceil_mode)
        # at stride 1 the split does not depend on the input size: d*(k-1) in all, the extra one after
        return same.resolve(1, 1) if (sy, sx) == (1, 1) else same
    pt, pb, pl, pr = _padding_amounts(padding, layer)
    return Window2D(kh, kw, sy, sx, pt, pb, pl, pr, layer, dy, dx, ceil_mode)


def _check_dilation(dilation, layer):
    dy, dx = to_pair(dilation, "dilation", layer)
    if dy < 1 or dx < 1:
        raise ValueError(f"{layer}: dilation must be >= 1, got {dilation!r}")
    return dy, dx


def conv_window(kernel_size, stride=1, padding=0, layer="Conv2D", dilation=1):
    """Window of a convolution, with PyTorch's meaning of ``padding`` and ``dilation``.

    ``padding`` is an int, (ph, pw), ((top, bottom), (left, right)), 'valid' (no padding) or
    'same' (output size ceil(n / stride); at stride 1 the input size). 'same' splits the padding
    as TensorFlow does (at stride 1 also PyTorch's split): the extra row/column of zeros at the
    bottom/right; above stride 1 the result is a ``SameWindow2D``, resolved per input shape.
    ``dilation`` is an int or (dy, dx), >= 1.
    """
    kh, kw = _check_kernel(kernel_size, "kernel_size", layer)
    sy, sx = _check_stride(stride, layer)
    dy, dx = _check_dilation(dilation, layer)
    return _window(kh, kw, sy, sx, padding, layer, dy, dx)


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


def pool_window(kernel_size, stride=None, padding=0, layer="MaxPool2D", dilation=1, ceil_mode=False):
    """Window of a pooling layer; stride defaults to the kernel size, as in PyTorch.

    ``padding`` as ``conv_window``'s. PyTorch allows at most half the kernel (kernel_size // 2,
    whatever the dilation) as explicit padding, so that every window holds at least one real
    input value; we keep the same rule ('same' never pads more than half the window's extent).
    ``ceil_mode``: round the output size up (PyTorch's rule, see the module docstring).
    """
    kh, kw = _check_kernel(kernel_size, "kernel_size", layer)
    sy, sx = _check_stride(kernel_size if stride is None else stride, layer)
    dy, dx = _check_dilation(dilation, layer)
    if not isinstance(ceil_mode, (bool, numpy.bool_)):
        raise TypeError(f"{layer}: ceil_mode must be True or False, got {ceil_mode!r}")
    window = _window(kh, kw, sy, sx, padding, layer, dy, dx, bool(ceil_mode))
    if isinstance(window, Window2D) and not (isinstance(padding, str) and padding.lower() == "same"):
        if max(window.pt, window.pb) > kh // 2 or max(window.pl, window.pr) > kw // 2:
            raise ValueError(f"{layer}: padding {padding!r} must be at most half the kernel size {(kh, kw)} "
                             f"(as in PyTorch)")
    return window


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
