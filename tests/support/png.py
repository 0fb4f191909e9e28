"""read_png: an independent reader of the PNGs the run report embeds (every chunk's CRC checked)."""
import struct
import zlib

import numpy

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(data):
    """(width, height, colour type, pixels) of a PNG of 8-bit grey or RGB rows, all of filter type 0."""
    assert data[:8] == SIGNATURE, "not a PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and colour in (0, 2)
    raw = numpy.frombuffer(zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT")), numpy.uint8)
    rows = raw.reshape(height, -1)
    assert (rows[:, 0] == 0).all()
    return width, height, colour, rows[:, 1:].reshape((height, width) + ((3,) if colour == 2 else ()))
