"""Reading IDX files, the format MNIST and Fashion-MNIST are published in.

Layout (http://yann.lecun.com/exdb/mnist/): two zero bytes, one byte naming the
element type, one byte giving the number of dimensions, one big-endian uint32
per dimension, then the elements in C order, multi-byte ones big-endian. Files
are usually gzipped; gzip is recognised by its magic bytes, not by the name.
"""
import gzip
import os
import struct
import zlib

import numpy

__all__ = ["read_idx", "idx_payload", "parse_idx", "CorruptDataError", "IDX_DTYPES"]

# type code -> big-endian dtype of the stored elements
IDX_DTYPES = {
    0x08: numpy.dtype(">u1"),
    0x09: numpy.dtype(">i1"),
    0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"),
    0x0D: numpy.dtype(">f4"),
    0x0E: numpy.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


class CorruptDataError(ValueError):
    """A data file exists but its contents are not what they must be."""


def read_idx(path):
    """Read an IDX file (gzipped or not) into a NumPy array.

    Args:
        path: file name (str or os.PathLike). Gzip is detected from the first
            two bytes (1f 8b), so the name need not end in ``.gz``.

    Returns:
        A writable, native-endian ``numpy.ndarray`` with the shape and element
        type the header declares.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptDataError: the gzip stream is damaged, the header is not an IDX
            header, or the data is shorter or longer than the header declares.
            The message names the file and what is wrong.

    Example:
        >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
        >>> labels.shape, labels.dtype
        ((10000,), dtype('uint8'))
    """
    path = os.fspath(path)
    return parse_idx(idx_payload(path), path)


def idx_payload(path):
    """The uncompressed IDX bytes of ``path`` (gunzipped when it starts with the gzip magic).

    Raises CorruptDataError naming the file when the gzip stream is damaged, and
    CorruptDataError too (not a bare OSError) when the file cannot be read.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as stream:
            contents = stream.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptDataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if contents[:2] == _GZIP_MAGIC:
        try:
            contents = gzip.decompress(contents)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise CorruptDataError(f"{path}: damaged gzip data ({exc})") from exc
    return contents


def parse_idx(contents, source):
    """Array held by the uncompressed IDX bytes ``contents``; ``source`` names them in errors."""
    if len(contents) < 4:
        raise CorruptDataError(
            f"{source}: too short for an IDX header: {len(contents)} bytes, "
            "the header alone needs at least 4")
    if contents[0] != 0 or contents[1] != 0:
        raise CorruptDataError(
            f"{source}: not an IDX file: it must start with bytes 00 00, found {contents[:2].hex(' ')}")
    type_code, ndim = contents[2], contents[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise CorruptDataError(f"{source}: unknown IDX element type code 0x{type_code:02X} (known: {known})")
    if ndim == 0:
        raise CorruptDataError(f"{source}: IDX header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(contents) < header_size:
        raise CorruptDataError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header_size} header bytes, "
            f"the file has {len(contents)}")
    shape = struct.unpack(f">{ndim}I", contents[4:header_size])
    stored_dtype = IDX_DTYPES[type_code]
    # Python ints: a product of uint32 dims must not wrap around as it could in int64
    count = 1
    for size in shape:
        count *= size
    expected_bytes = count * stored_dtype.itemsize
    found_bytes = len(contents) - header_size
    if found_bytes != expected_bytes:
        if found_bytes < expected_bytes:
            problem = "truncated"
        else:
            problem = f"{found_bytes - expected_bytes} bytes too many"
        raise CorruptDataError(
            f"{source}: expected {expected_bytes} bytes of data for shape {shape} of {stored_dtype.name}, "
            f"found {found_bytes} ({problem})")
    stored = numpy.frombuffer(contents, dtype=stored_dtype, count=count, offset=header_size)
    # astype copies: the result owns writable memory instead of viewing immutable bytes
    return stored.astype(stored_dtype.newbyteorder("="), copy=True).reshape(shape)
