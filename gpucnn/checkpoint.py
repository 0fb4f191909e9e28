"""Files of named arrays: written atomically, read without pickle.

A file is a NumPy .npz archive whose member ``__meta__`` holds JSON (as bytes). Writes
go to a temporary file in the same directory, then ``os.replace`` it over the target,
so a crash mid-write leaves the previous file whole. Reads use ``allow_pickle=False``:
an archive carrying a pickle is refused without running it.
"""
import json
import os
import tempfile
import zipfile
import zlib

import numpy

from .backend import asnumpy

__all__ = ["CheckpointError", "save_arrays", "load_arrays"]

_META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, carrying a pickle, or not matching the model."""


def save_arrays(path, arrays, meta=None):
    """Write {name: array} (any device; copied to the host) and a JSON-able ``meta`` dict to ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    payload = {name: asnumpy(value) for name, value in arrays.items()}
    if _META in payload:
        raise ValueError(f"array name {_META!r} is reserved")
    payload[_META] = numpy.frombuffer(json.dumps(meta or {}).encode("utf-8"), dtype=numpy.uint8)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
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


def load_arrays(path):
    """(arrays, meta) from a file written by ``save_arrays``; CheckpointError naming the file when unusable."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        # We own the file handle: numpy.load leaks its own when the archive is unreadable.
        with open(path, "rb") as f:
            archive = numpy.load(f, allow_pickle=False)
            if not hasattr(archive, "files"):
                raise CheckpointError(f"{path}: not a gpucnn checkpoint (a bare .npy array, not an archive)")
            with archive:
                arrays = {name: archive[name] for name in archive.files}
    except CheckpointError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise CheckpointError(f"{path}: holds pickled Python objects; refused without loading them "
                                  f"(pickles can run code)") from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({exc})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})") from None
    if _META not in arrays:
        raise CheckpointError(f"{path}: not a gpucnn checkpoint (no {_META} entry)")
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt metadata ({exc})") from None
    return arrays, meta
