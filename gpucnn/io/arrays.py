"""Files of named arrays: written atomically, read without pickle, sized before allocation.

A file is a NumPy .npz archive whose member ``__meta__`` holds JSON (as bytes). Writes
go to a temporary file in the same directory, then ``os.replace`` it over the target and
fsync the directory, so a crash or a power cut mid-write leaves the previous file whole;
the temporaries of a killed save are removed by the next save of the same target.

Reads never trust the file: ``CheckpointReader`` reads the zip directory, the JSON
metadata and every member's ``.npy`` header (dtype and shape) before any array data,
so a caller can check names, dtypes and shapes against what it expects before a
byte of data is inflated or allocated. Object arrays (pickles) are refused unread.
Every way a file can be unusable is a ``CheckpointError`` naming the file and the reason.
"""
import ast
import glob
import json
import os
import tempfile
import zipfile
import zlib

import numpy

from ..backend import asnumpy

__all__ = ["CheckpointError", "CheckpointReader", "save_arrays", "load_arrays", "check_cast", "write_file"]

_META = "__meta__"
_MAX_META_BYTES = 16 << 20
_MAX_HEADER_BYTES = 64 << 10
# Deflate cannot inflate more than about 1032:1; a larger declared ratio is a lie or a bomb.
_MAX_DEFLATE_RATIO = 1100
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, carrying a pickle, or not matching the model."""


def save_arrays(path, arrays, meta=None):
    """Write {name: array} (any device; copied to the host) and a JSON-able ``meta`` dict to ``path``.

    Atomic: the file appears whole under its name or not at all, and the rename is fsynced.
    Stale temporaries left by a killed save of the same target are removed first.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    payload = {name: asnumpy(value) for name, value in arrays.items()}
    if _META in payload:
        raise ValueError(f"array name {_META!r} is reserved")
    payload[_META] = numpy.frombuffer(json.dumps(meta or {}).encode("utf-8"), dtype=numpy.uint8)
    prefix = "." + os.path.basename(path) + "."
    for stale in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*.tmp")):
        if _save_in_flight(stale[len(os.path.join(directory, prefix)):]):
            continue  # another live process is writing it: not stale
        try:
            os.remove(stale)
        except OSError:
            pass  # already gone
    # The writer's PID in the name tells a killed save's leftover from another process's save in flight.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{prefix}{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            numpy.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def write_file(path, data):
    """Write ``data`` (bytes) to ``path`` atomically: a temporary file beside it, renamed over it, so the file
    appears whole or not at all; it gets an ordinary new file's permissions (0o666 less the umask)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0o600 would keep a shared page or model file private
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _save_in_flight(name):
    """True when a temporary's name ('<pid>.<random>.tmp') names another process that is still alive."""
    pid = name.split(".", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, but another user's
        return True
    return True


def _fsync_directory(directory):
    """Make a rename in ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename itself has happened
    finally:
        os.close(fd)


def load_arrays(path, expected=None):
    """(arrays, meta) from a file written by ``save_arrays``; CheckpointError naming the file when unusable.

    Args:
        path: the file.
        expected: optional {name: (shape, dtype or None)}; the file must hold exactly these
            names with these shapes (and dtypes, where given), checked before any data is read.
    """
    with CheckpointReader(path) as reader:
        if expected is not None:
            reader.check_members(expected)
        return reader.read_all(), reader.meta


class CheckpointReader:
    """An open checkpoint whose directory, metadata and array headers are read and checked, data not yet.

    Attributes:
        path: the file. meta: the JSON metadata (a dict).
        headers: {name: (shape, dtype)} of every array, from the ``.npy`` headers.

    Example:
        >>> with CheckpointReader("run/checkpoint.npz") as reader:
        ...     reader.check_members({"0.weight": ((32, 1, 3, 3), None)})
        ...     weight = reader.read("0.weight")
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._file = _open_file(self.path)
        try:
            self._zip = _open_zip(self._file, self.path)
            self._members = self._check_directory()
            self.headers = {}
            self._offsets = {}
            for name, info in self._members.items():
                self.headers[name], self._offsets[name] = self._read_header(name, info)
            self.meta = self._read_meta()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        zip_file = getattr(self, "_zip", None)
        if zip_file is not None:
            zip_file.close()
        self._file.close()

    def _error(self, reason):
        return CheckpointError(f"{self.path}: {reason}")

    def _check_directory(self):
        members = {}
        for info in self._zip.infolist():
            if info.flag_bits & 0x1:
                raise self._error(f"member {info.filename!r} is encrypted; gpucnn checkpoints never are")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self._error(f"member {info.filename!r} uses zip compression method {info.compress_type}; "
                                  f"only stored (0) and deflate (8) are read")
            if not info.filename.endswith(".npy"):
                raise self._error(f"member {info.filename!r} is not a .npy array; not a gpucnn checkpoint")
            name = info.filename[:-len(".npy")]
            if name in members:
                raise self._error(f"member {info.filename!r} appears twice")
            stored_limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else \
                info.compress_size * _MAX_DEFLATE_RATIO + 1024
            if info.file_size > stored_limit:
                raise self._error(f"member {info.filename!r} declares {info.file_size} bytes from "
                                  f"{info.compress_size} stored; refused unread (corrupt or a zip bomb)")
            members[name] = info
        if _META not in members:
            raise self._error(f"not a gpucnn checkpoint (no {_META} entry)")
        return members

    def _read_header(self, name, info):
        """((shape, dtype), data offset) of a member, from its .npy header alone."""
        with self._open_member(info) as stream:
            head = _read_exactly(stream, 10, self, name)
            if head[:6] != _NPY_MAGIC:
                raise self._error(f"member {name!r} is not a .npy array (bad magic {head[:6]!r})")
            major = head[6]
            if major == 1:
                header_len, offset = int.from_bytes(head[8:10], "little"), 10
            elif major in (2, 3):
                header_len, offset = int.from_bytes(head[8:10] + _read_exactly(stream, 2, self, name), "little"), 12
            else:
                raise self._error(f"member {name!r} has unknown .npy format version {major}")
            if header_len > _MAX_HEADER_BYTES:
                raise self._error(f"member {name!r} declares a {header_len}-byte .npy header; refused")
            text = _read_exactly(stream, header_len, self, name)
        shape, dtype = _parse_npy_header(text, major, name, self)
        nbytes = dtype.itemsize
        for size in shape:
            nbytes *= size
        if offset + header_len + nbytes != info.file_size:
            raise self._error(f"member {name!r} declares shape {shape} of {dtype} ({_size(nbytes)}) but holds "
                              f"{max(info.file_size - offset - header_len, 0)} bytes of data (corrupt or truncated)")
        return (shape, dtype), offset + header_len

    def _read_meta(self):
        shape, dtype = self.headers[_META]
        if dtype != numpy.uint8 or len(shape) != 1:
            raise self._error(f"corrupt metadata: {_META} is {dtype} of shape {shape}, expected uint8 bytes")
        if shape[0] > _MAX_META_BYTES:
            raise self._error(f"metadata of {_size(shape[0])} is larger than any gpucnn checkpoint writes")
        raw = self.read(_META).tobytes()
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._error(f"corrupt metadata ({exc})") from None
        except RecursionError:
            raise self._error("corrupt metadata (JSON nested too deeply)") from None
        if not isinstance(meta, dict):
            raise self._error(f"corrupt metadata: a JSON {type(meta).__name__}, expected an object")
        return meta

    def check_members(self, expected):
        """CheckpointError unless the arrays are exactly ``expected`` {name: (shape, dtype or None)}."""
        have = set(self.headers) - {_META}
        missing, unexpected = sorted(set(expected) - have), sorted(have - set(expected))
        if missing or unexpected:
            raise self._error(f"does not match (missing {missing}, unexpected {unexpected})")
        for name, (shape, dtype) in expected.items():
            got_shape, got_dtype = self.headers[name]
            if tuple(got_shape) != tuple(shape):
                raise self._error(f"{name} has shape {tuple(got_shape)}, expected {tuple(shape)}")
            if dtype is not None and got_dtype != numpy.dtype(dtype):
                raise self._error(f"{name} has dtype {got_dtype}, expected {numpy.dtype(dtype)}")

    def read(self, name):
        """The array ``name``; its CRC is checked."""
        info = self._members[name]
        shape, dtype = self.headers[name]
        nbytes = info.file_size - self._offsets[name]
        with self._open_member(info) as stream:
            _read_exactly(stream, self._offsets[name], self, name)
            data = _read_exactly(stream, nbytes, self, name)
            try:
                if stream.read(1):
                    raise self._error(f"member {name!r} is longer than it declares")
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise self._error(f"corrupt member {name!r} ({type(exc).__name__}: {exc})") from None
        array = numpy.frombuffer(data, dtype=dtype, count=nbytes // max(dtype.itemsize, 1))
        return array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)

    def read_all(self):
        """{name: array} of every array but the metadata."""
        return {name: self.read(name) for name in self.headers if name != _META}

    def _open_member(self, info):
        try:
            return self._zip.open(info)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
                ValueError) as exc:
            raise self._error(f"corrupt member {info.filename!r} ({type(exc).__name__}: {exc})") from None


def check_cast(value, dtype, what):
    """ValueError unless ``value`` holds only finite numbers that ``dtype`` represents exactly."""
    if value.dtype.kind not in "fiu":
        raise ValueError(f"{what} has dtype {value.dtype}, expected numbers")
    if value.dtype.kind == "f" and not numpy.isfinite(value).all():
        bad = int(numpy.count_nonzero(~numpy.isfinite(value)))
        raise ValueError(f"{what} holds {bad} NaN or infinite value{'s' if bad != 1 else ''}")
    if not numpy.can_cast(value.dtype, dtype, "safe"):
        with numpy.errstate(all="ignore"):
            cast = value.astype(dtype)
        if not numpy.array_equal(cast.astype(value.dtype), value):
            raise ValueError(f"{what} is {value.dtype}, and {dtype} cannot hold its values exactly "
                             f"(a lossy conversion; refused)")


def _open_file(path):
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        head = f.read(8)
    except OSError as exc:
        f.close()
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head.startswith(_ZIP_MAGICS):
        f.close()
        raise CheckpointError(f"{path}: {_what_it_is(path, head)}")
    f.seek(0)
    return f


def _what_it_is(path, head):
    """The true reason a file that is not a zip archive is not a checkpoint."""
    size = os.path.getsize(path)
    if size < len(_ZIP_MAGICS[0]):
        return f"only {size} byte{'s' if size != 1 else ''} long; too short to be a checkpoint (truncated?)"
    if head.startswith(_NPY_MAGIC):
        return "not a gpucnn checkpoint (a bare .npy array, not an archive)"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "holds a pickled Python object; refused without loading it (pickles can run code)"
    with open(path, "rb") as f:
        sample = f.read(4096)
    try:
        text = sample.decode("utf-8")
        if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
            return f"a text file ({text.strip().splitlines()[0][:40]!r}...), not a checkpoint archive" \
                if text.strip() else "a blank text file, not a checkpoint archive"
    except UnicodeDecodeError:
        pass
    return f"not a gpucnn checkpoint: not a zip archive (starts with bytes {head[:4].hex(' ')})"


def _open_zip(f, path):
    try:
        return zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError,
            KeyError, IndexError, OverflowError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint (zip directory unreadable: {exc})") from None


def _read_exactly(stream, n, reader, name):
    try:
        data = stream.read(n)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise reader._error(f"corrupt member {name!r} ({type(exc).__name__}: {exc})") from None
    if len(data) != n:
        raise reader._error(f"member {name!r} is truncated")
    return data


def _parse_npy_header(text, major, name, reader):
    """(shape, dtype) from a .npy header dict; refuses object dtypes (pickles) and Fortran order."""
    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        raise reader._error(f"member {name!r} has a corrupt .npy header ({type(exc).__name__})") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise reader._error(f"member {name!r} has a corrupt .npy header")
    shape = header["shape"]
    if (not isinstance(shape, tuple) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                for s in shape)):
        raise reader._error(f"member {name!r} declares an invalid shape {shape!r}")
    try:
        dtype = numpy.lib.format.descr_to_dtype(header["descr"])
    except (TypeError, ValueError) as exc:
        raise reader._error(f"member {name!r} declares an invalid dtype ({exc})") from None
    if dtype.hasobject:
        raise reader._error(f"member {name!r} holds pickled Python objects; refused without loading them "
                            f"(pickles can run code)")
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise reader._error(f"member {name!r} has dtype {dtype}; a checkpoint holds numbers only")
    if header["fortran_order"] is not False:
        raise reader._error(f"member {name!r} is in Fortran order; gpucnn writes C order")
    return shape, dtype


def _size(nbytes):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
