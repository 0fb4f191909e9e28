"""The report's raster figures as uint8 arrays, assembled with NumPy (no per-pixel loops): images as
shown, colour maps, grids of tiles. ``png.data_uri`` turns each into an <img> of the page.

A grid is a reshape: N tiles (N, H, W, C), padded to (rows * cols, H + pad, W + pad, C), viewed as
(rows, cols, H + pad, W + pad, C), transposed to (rows, H + pad, cols, W + pad, C) and flattened to
one (rows * (H + pad), cols * (W + pad), C) image.
"""
import numpy

__all__ = ["VIRIDIS", "DIVERGING", "colormap", "to_unit", "upscale", "tile", "as_pictures", "filter_grid",
           "feature_grid"]

#: perceptually ordered dark-blue -> green -> yellow (matplotlib's viridis at five points)
VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
#: negative blue, zero white, positive red (ColorBrewer's RdBu), for weights of either sign
DIVERGING = ((33, 102, 172), (146, 197, 222), (247, 247, 247), (244, 165, 130), (178, 24, 43))


def colormap(values, anchors=VIRIDIS):
    """uint8 RGB (..., 3) for ``values`` in [0, 1], interpolated linearly between the ``anchors`` colours."""
    values = numpy.clip(numpy.nan_to_num(numpy.asarray(values, numpy.float64)), 0.0, 1.0)
    stops = numpy.linspace(0.0, 1.0, len(anchors))
    table = numpy.asarray(anchors, numpy.float64)
    rgb = [numpy.interp(values, stops, table[:, c]) for c in range(3)]
    return numpy.rint(numpy.stack(rgb, axis=-1)).astype(numpy.uint8)


def to_unit(arrays, symmetric=False):
    """Each of the N arrays (N, ...) scaled into [0, 1] on its own: min..max, or -m..m about 0.5 when
    ``symmetric`` (m its largest magnitude), so that zero stays in the middle of a diverging map."""
    a = numpy.asarray(arrays, numpy.float64)
    axes = tuple(range(1, a.ndim))
    if symmetric:
        m = numpy.abs(a).max(axis=axes, keepdims=True)
        return 0.5 + 0.5 * a / numpy.where(m > 0, m, 1.0)
    low, high = a.min(axis=axes, keepdims=True), a.max(axis=axes, keepdims=True)
    span = high - low
    return numpy.where(span > 0, (a - low) / numpy.where(span > 0, span, 1.0), 0.5)


def upscale(images, factor):
    """Each pixel as a ``factor`` x ``factor`` block (nearest neighbour): (N, H, W[, C]) -> (N, fH, fW[, C])."""
    return numpy.repeat(numpy.repeat(images, factor, axis=1), factor, axis=2)


def tile(images, columns, pad=1, fill=255):
    """One image of the tiles (N, H, W[, C]) in rows of ``columns``, ``pad`` pixels of ``fill`` between and around."""
    images = numpy.asarray(images)
    grey = images.ndim == 3
    if grey:
        images = images[..., None]
    n, h, w, c = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    padded = numpy.full((rows * columns, h + pad, w + pad, c), fill, images.dtype)
    padded[:n, pad:, pad:] = images
    grid = padded.reshape(rows, columns, h + pad, w + pad, c).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * (h + pad), columns * (w + pad), c)
    grid = numpy.concatenate([grid, numpy.full((pad, grid.shape[1], c), fill, images.dtype)], axis=0)
    grid = numpy.concatenate([grid, numpy.full((grid.shape[0], pad, c), fill, images.dtype)], axis=1)
    return grid[..., 0] if grey else grid


def as_pictures(x):
    """Input images (N, C, H, W) as uint8 pictures: (N, H, W) grey for one channel, (N, H, W, 3) for three.
    Values already in [0, 1] (the loaders' scaling) are shown as they are; anything else is stretched per image."""
    x = numpy.asarray(x, numpy.float64)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"as_pictures: expected images (N, 1 or 3, H, W), got shape {x.shape}")
    unit = x if x.size and x.min() >= 0.0 and x.max() <= 1.0 else to_unit(x)
    pictures = numpy.rint(255 * unit).astype(numpy.uint8).transpose(0, 2, 3, 1)
    return pictures[..., 0] if x.shape[1] == 1 else pictures


def filter_grid(weight, target=48, columns=16):
    """The first convolution's filters (out, in, kh, kw) as one RGB grid: one-channel filters in the diverging
    map (blue negative, red positive, each filter scaled to its own largest magnitude), three-channel ones as
    colours (each filter stretched to its own range)."""
    w = numpy.asarray(weight, numpy.float64)
    if w.ndim != 4:
        raise ValueError(f"filter_grid: expected a convolution weight (out, in, kh, kw), got shape {w.shape}")
    kh, kw = w.shape[2:]
    if w.shape[1] == 3:
        rgb = numpy.rint(255 * to_unit(w)).astype(numpy.uint8).transpose(0, 2, 3, 1)
    else:
        rgb = colormap(to_unit(w.mean(axis=1) if w.shape[1] != 1 else w[:, 0], symmetric=True), DIVERGING)
    return tile(upscale(rgb, max(1, target // max(kh, kw))), columns, pad=3, fill=150)  # grey between the tiles


def feature_grid(maps, columns=16, target=64):
    """One image's feature maps (C, H, W) after a layer as an RGB grid, each map stretched to its own range
    (viridis), enlarged by a whole factor to about ``target`` pixels."""
    maps = numpy.asarray(maps, numpy.float64)
    factor = max(1, target // max(maps.shape[1], maps.shape[2]))
    return tile(upscale(colormap(to_unit(maps)), factor), columns, pad=2)
