"""A tiny PNG encoder (zlib + struct), so that the run report never needs matplotlib or Pillow.

A PNG is an 8-byte signature and chunks, each ``length | type | data | crc32(type + data)``:
IHDR (width, height, bit depth 8, colour type 0 = grey or 2 = RGB), one IDAT (the zlib-compressed
rows, each prefixed with its filter byte, 0 = none) and IEND. That is all a browser needs.
"""
import base64
import struct
import zlib

import numpy

__all__ = ["SIGNATURE", "encode_png", "data_uri"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels):
    """The PNG file (bytes) of ``pixels``: uint8, (H, W) grey or (H, W, 3) RGB.

    Example:
        >>> open("x.png", "wb").write(encode_png(numpy.zeros((8, 8), numpy.uint8)))
    """
    pixels = numpy.asarray(pixels)
    if pixels.dtype != numpy.uint8:
        raise TypeError(f"encode_png: pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        colour_type = 0
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        colour_type = 2
    else:
        raise ValueError(f"encode_png: pixels must be (H, W) or (H, W, 3), got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"encode_png: an image needs at least one pixel, got shape {pixels.shape}")
    rows = pixels.reshape(height, -1)
    raw = numpy.hstack([numpy.zeros((height, 1), numpy.uint8), rows])  # filter byte 0 before every row
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
            + _chunk(b"IEND", b""))


def data_uri(pixels):
    """``data:image/png;base64,...`` for an <img src=...>: the image inside the HTML file itself."""
    return "data:image/png;base64," + base64.b64encode(encode_png(pixels)).decode("ascii")
