"""read_idx: every element type, gzip by magic bytes, and loud failures on damaged files."""
import gzip
import struct

import numpy
import pytest

from gpucnn.data import CorruptDataError, read_idx

TYPE_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


def idx_bytes(array):
    """IDX encoding of ``array``, written independently of the reader under test."""
    array = numpy.asarray(array)
    header = bytes([0, 0, TYPE_CODES[array.dtype.name], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, contents, compress=False):
    path.write_bytes(gzip.compress(contents) if compress else contents)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", list(TYPE_CODES))
def test_round_trip_every_type_code(tmp_path, dtype, compress):
    rng = numpy.random.default_rng(0)
    expected = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write(tmp_path / "array.idx", idx_bytes(expected), compress)

    result = read_idx(path)

    assert result.dtype == numpy.dtype(dtype)
    assert result.dtype.isnative
    assert result.shape == (3, 4, 5)
    numpy.testing.assert_array_equal(result, expected)
    assert result.flags.writeable
    result[0, 0, 0] = 1  # must not raise


def test_gzip_detected_by_magic_bytes_not_by_name(tmp_path):
    labels = numpy.arange(10, dtype=numpy.uint8)
    gz_without_suffix = write(tmp_path / "labels-idx1-ubyte", idx_bytes(labels), compress=True)
    raw_with_gz_suffix = write(tmp_path / "labels-idx1-ubyte.gz", idx_bytes(labels))

    numpy.testing.assert_array_equal(read_idx(gz_without_suffix), labels)
    numpy.testing.assert_array_equal(read_idx(str(raw_with_gz_suffix)), labels)


def test_one_dimension_and_empty_dimension(tmp_path):
    vector = numpy.array([1, -2, 3], dtype=numpy.int32)
    empty = numpy.zeros((0, 28, 28), dtype=numpy.uint8)

    numpy.testing.assert_array_equal(read_idx(write(tmp_path / "v", idx_bytes(vector))), vector)
    assert read_idx(write(tmp_path / "e", idx_bytes(empty))).shape == (0, 28, 28)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_truncated_data_names_file_and_sizes(tmp_path, compress):
    images = numpy.zeros((5, 28, 28), dtype=numpy.uint8)
    path = write(tmp_path / "images", idx_bytes(images)[:-100], compress)

    expected = r"expected 3920 bytes of data.*found 3820 \(truncated\)"
    with pytest.raises(CorruptDataError, match=expected) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_too_long_data_is_refused(tmp_path):
    path = write(tmp_path / "labels", idx_bytes(numpy.arange(4, dtype=numpy.uint8)) + b"\x00\x00")

    with pytest.raises(CorruptDataError, match="2 bytes too many") as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("contents, message", [
    (b"", "too short for an IDX header"),
    (b"\x00\x00", "too short for an IDX header"),
    (b"PK\x03\x04" + bytes(20), "must start with bytes 00 00, found 50 4b"),
    (b"\x00\x00\x0a\x01" + bytes(8), "unknown IDX element type code 0x0A"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03" + bytes(6), "truncated IDX header: 3 dimensions need 16 header bytes"),
], ids=["empty", "two-bytes", "zip-magic", "bad-type", "zero-dims", "short-header"])
def test_bad_header_names_file(tmp_path, contents, message):
    path = write(tmp_path / "bad.idx", contents)

    with pytest.raises(CorruptDataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(numpy.arange(1000, dtype=numpy.int32)))
    path = write(tmp_path / "cut.gz", compressed[: len(compressed) // 2])

    with pytest.raises(CorruptDataError, match="damaged gzip data") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_gzip_with_flipped_byte(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(numpy.arange(1000, dtype=numpy.int32))))
    compressed[len(compressed) // 2] ^= 0xFF
    path = write(tmp_path / "flipped.gz", bytes(compressed))

    with pytest.raises(CorruptDataError, match="damaged gzip data") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_gzip_magic_followed_by_garbage(tmp_path):
    path = write(tmp_path / "garbage", b"\x1f\x8b" + b"this is not deflate data at all")

    with pytest.raises(CorruptDataError, match="damaged gzip data"):
        read_idx(path)


def test_corrupt_data_error_is_value_error_and_missing_file_is_file_not_found(tmp_path):
    assert issubclass(CorruptDataError, ValueError)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")
