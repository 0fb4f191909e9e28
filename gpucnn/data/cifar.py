"""CIFAR-10 (Krizhevsky, 2009), read from its BINARY distribution: 60000 32x32 colour images, 10 classes.

The binary version, ``cifar-10-binary.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html), unpacks to
``cifar-10-batches-bin/`` holding ``data_batch_1.bin`` ... ``data_batch_5.bin`` (training) and
``test_batch.bin`` (test), each 10000 records of 3073 bytes: one label byte (0..9), then 3072 pixel
bytes, the 1024 red ones, then the 1024 green, then the 1024 blue, each plane row-major 32x32. So a
record's pixels reshape to (3, 32, 32) as they are: channels first, as gpucnn's layers take them.

The pickled Python version (``cifar-10-python.tar.gz``, ``cifar-10-batches-py/``) is never read:
unpickling a file runs whatever code it names. Found where the binary version should be, it is
refused with a line that says so and where the binary version comes from.

Where, as for Fashion-MNIST (gpucnn/data/datasets.py): a ``data_dir`` names THE place and nothing
else is searched: a directory holding ``cifar-10-binary.tar.gz``, or ``cifar-10-batches-bin/``, or
the six ``.bin`` files themselves, or the archive file itself. Without one: ``$GPUCNN_DATA/cifar10``,
``$GPUCNN_DATA``, then ``~/.cache/gpucnn/cifar10``; when none has it and ``download=True``, the
archive is fetched into that cache through gpucnn/data/download.py (HTTPS, a size cap, a temporary
name until its SHA-256 matched ``SHA256``).

The archive is read as a stream (``tarfile``), nothing extracted to disk: a member is read only
when its name and declared size are those of a CIFAR-10 file (the readme and the class names are
skipped unread), so a corrupt or hostile archive stops with CorruptDataError naming the file, and
nothing is returned half-loaded. Files of the real size are checked against ``MEMBER_SHA256``.
"""
import gzip
import hashlib
import os
import pathlib
import tarfile
import zlib

import numpy

from . import download
from .datasets import DataNotFoundError, cache_dir, search_dirs
from .idx import CorruptDataError

__all__ = ["load_cifar10", "find_cifar10", "download_cifar10", "read_cifar10_batches", "NAME", "ARCHIVE_NAME",
           "BATCHES_DIR", "TRAIN_FILES", "TEST_FILES", "URL", "SHA256", "MEMBER_SHA256", "RECORDS_PER_FILE",
           "RECORD_BYTES", "SAMPLE_SHAPE", "NUM_CLASSES"]

NAME = "cifar10"  # gpucnn train --dataset cifar10; the cache is ~/.cache/gpucnn/cifar10
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
BATCHES_DIR = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
_MIRROR = "https://www.cs.toronto.edu/~kriz/"  # the authors' page; the only address fetched
URL = _MIRROR + ARCHIVE_NAME

# SHA-256 of cifar-10-binary.tar.gz (170052171 bytes). The dataset page lists only its MD5,
# c32a1d4ab5d03f1284b67883e8d87530; this SHA-256 is the one public loaders pin for the same URL:
# gomlx/gomlx examples/cifar/cifar.go (DownloadCifar10) and ankane/torchvision-ruby
# lib/torchvision/datasets/cifar10.rb (tgz_sha256), and projects that record the archive's size,
# MD5 and SHA-256 together. No copy of the archive was at hand here to recompute it.
SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"

RECORDS_PER_FILE = 10000  # records in each .bin file (tests patch it to write small files)
SAMPLE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + SAMPLE_SHAPE[0] * SAMPLE_SHAPE[1] * SAMPLE_SHAPE[2]
NUM_CLASSES = 10

# (size, SHA-256) of the unpacked .bin files, from ankane/torchvision-ruby
# lib/torchvision/datasets/cifar10.rb (train_list, test_list), whose loader refuses files that do not
# match them. Only a file of the real size is compared: any other size is refused before.
MEMBER_SHA256 = {
    "data_batch_1.bin": (30730000, "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5"),
    "data_batch_2.bin": (30730000, "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed"),
    "data_batch_3.bin": (30730000, "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67"),
    "data_batch_4.bin": (30730000, "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48"),
    "data_batch_5.bin": (30730000, "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"),
    "test_batch.bin": (30730000, "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b"),
}

# the archive's other members, skipped unread, and the most bytes each may declare
_EXTRA_MEMBERS = {"batches.meta.txt": 1 << 20, "readme.html": 1 << 20}
# past the tar's end, at most this much (zero padding) is read, so that gzip checks its CRC
_MAX_TRAILER_BYTES = 1 << 20
_PICKLED = ("cifar-10-python.tar.gz", "cifar-10-batches-py", "data_batch_1")
_PICKLED_WHY = "CIFAR-10's pickled Python version, which gpucnn does not read (unpickling runs code)"


def load_cifar10(data_dir=None, download=True, normalize=True):
    """CIFAR-10: 50000 training and 10000 test colour images of 32x32, 10 classes, from the binary version.

    Args:
        data_dir: the one place to read (a directory holding cifar-10-binary.tar.gz or
            cifar-10-batches-bin/, that directory itself, or the archive file); None to search
            ``$GPUCNN_DATA/cifar10``, ``$GPUCNN_DATA`` and ``~/.cache/gpucnn/cifar10``.
        download: fetch the archive into ``~/.cache/gpucnn/cifar10`` when no searched place has it.
        normalize: float32 images scaled to [0, 1] when True, the raw uint8 pixels when False.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``; images of shape (N, 3, 32, 32) (channels R, G, B),
        labels int64 of shape (N,) with values 0..9, as :func:`gpucnn.data.load_fashion_mnist`.

    Raises:
        DataNotFoundError: not found and not downloadable (one line: where it looked, where to put it),
            or only the pickled Python version was found.
        CorruptDataError: a file or archive member is damaged, truncated, of another size or name, or
            the archive is the pickled version; the message names the file.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_cifar10()
        >>> x_train.shape, x_train.dtype, y_test[:3]
        ((50000, 3, 32, 32), dtype('float32'), array([3, 8, 8]))
    """
    batches = read_cifar10_batches(find_cifar10(data_dir, download)["source"])
    splits = []
    for names in (TRAIN_FILES, TEST_FILES):
        records = numpy.concatenate([batches[name] for name in names])
        images = records[:, 1:].reshape((len(records),) + SAMPLE_SHAPE)
        if normalize:
            images = images.astype(numpy.float32)
            images /= numpy.float32(255.0)
        else:
            images = numpy.ascontiguousarray(images)
        splits.append((images, records[:, 0].astype(numpy.int64)))
    return splits[0], splits[1]


def find_cifar10(data_dir=None, download=True):
    """Where CIFAR-10 comes from: {'directory': Path, 'source': the archive or the directory of the .bin
    files, 'downloaded': bool}. DataNotFoundError (one line) as :func:`load_cifar10`."""
    if data_dir is not None:
        place = pathlib.Path(data_dir).expanduser()
        source, problem = _source_in(place)
        if source is None:
            raise DataNotFoundError(f"CIFAR-10: data directory {place} {problem}; {_where_to_put(place)}. "
                                    f"Other places are searched only when no data directory is given.")
        return {"directory": place, "source": source, "downloaded": False}
    looked = [] if os.environ.get("GPUCNN_DATA") else ["$GPUCNN_DATA (not set)"]
    for directory in search_dirs(NAME):
        source, problem = _source_in(directory)
        if source is not None:
            return {"directory": directory, "source": source, "downloaded": False}
        looked.append(f"{directory} ({problem})")
    target = cache_dir(NAME)
    if not download:
        fetched = "nothing was downloaded (download=False)"
    else:
        errors = download_cifar10(target)
        if not errors:
            return {"directory": target, "source": target / ARCHIVE_NAME, "downloaded": True}
        fetched = f"downloading it failed ({'; '.join(errors)})"
    raise DataNotFoundError(f"CIFAR-10 was not found (looked in {'; '.join(looked)}) and {fetched}; "
                            f"{_where_to_put(target)}, or give the directory holding it as data_dir "
                            f"(gpucnn train --data-dir) or in $GPUCNN_DATA.")


def download_cifar10(target_dir):
    """Fetch the archive into ``target_dir`` through gpucnn/data/download.py, kept only when its SHA-256
    is ``SHA256``; a list of short error lines, empty on success (CorruptDataError on wrong bytes)."""
    return download.fetch_missing(target_dir, [ARCHIVE_NAME], [_MIRROR], {ARCHIVE_NAME: SHA256})


def read_cifar10_batches(source):
    """{file name: uint8 records of shape (RECORDS_PER_FILE, RECORD_BYTES)} for the six .bin files of
    ``source``: the archive (a file) or a directory holding them. CorruptDataError names what is wrong."""
    source = pathlib.Path(source)
    return _read_archive(source) if source.is_file() else _read_directory(source)


def _where_to_put(directory):
    return f"put {ARCHIVE_NAME} (the binary version, from {URL}) or its unpacked {BATCHES_DIR}/ into {directory}"


def _source_in(place):
    """(the archive or directory to read in ``place``, None) or (None, what is wrong there)."""
    if place.is_file():
        if place.name == _PICKLED[0]:
            return None, f"is {_PICKLED_WHY}"
        return place, None
    if not place.is_dir():
        return None, "does not exist"
    for directory in (place, place / BATCHES_DIR):
        if all((directory / name).is_file() for name in TRAIN_FILES + TEST_FILES):
            return directory, None
    if (place / ARCHIVE_NAME).is_file():
        return place / ARCHIVE_NAME, None
    for directory in (place, place / BATCHES_DIR):
        present = [name for name in TRAIN_FILES + TEST_FILES if (directory / name).is_file()]
        if present:
            missing = [name for name in TRAIN_FILES + TEST_FILES if name not in present]
            return None, f"lacks {', '.join(str(directory / name) for name in missing)} and {ARCHIVE_NAME}"
    for name in _PICKLED:
        if (place / name).exists():
            return None, f"holds {place / name}, {_PICKLED_WHY}"
    return None, f"holds neither {ARCHIVE_NAME} nor {BATCHES_DIR}/"


def _records(data, name, where):
    """The uint8 records in the bytes ``data`` of file ``name``, checked; ``where`` names them in errors."""
    if len(data) != RECORDS_PER_FILE * RECORD_BYTES:
        raise CorruptDataError(f"{where}: {_wrong_size(len(data))}")
    known = MEMBER_SHA256.get(name)
    if known is not None and len(data) == known[0]:
        digest = hashlib.sha256(data).hexdigest()
        if digest != known[1]:
            raise CorruptDataError(f"{where}: has SHA-256 {digest}, the CIFAR-10 file's is {known[1]} "
                                   f"(damaged, or another data set)")
    records = numpy.frombuffer(data, dtype=numpy.uint8).reshape(RECORDS_PER_FILE, RECORD_BYTES)
    labels = records[:, 0]
    if len(labels) and labels.max() >= NUM_CLASSES:
        bad = int(numpy.count_nonzero(labels >= NUM_CLASSES))
        raise CorruptDataError(f"{where}: labels must lie in 0..{NUM_CLASSES - 1}, found {bad} outside "
                               f"(max {int(labels.max())}); not CIFAR-10's binary format")
    return records


def _read_directory(directory):
    batches = {}
    for name in TRAIN_FILES + TEST_FILES:
        path = directory / name
        try:
            size = path.stat().st_size
            if size != RECORDS_PER_FILE * RECORD_BYTES:  # refused before reading
                raise CorruptDataError(f"{path}: {_wrong_size(size)}")
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptDataError(f"{path}: missing; {directory} must hold all of "
                                   f"{', '.join(TRAIN_FILES + TEST_FILES)}") from None
        except OSError as exc:
            raise CorruptDataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        batches[name] = _records(data, name, path)
    return batches


def _read_archive(path):
    """The six files' records out of the archive ``path``, read as a stream, every member checked first."""
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise CorruptDataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    batches = {}
    try:
        with stream, gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            with tarfile.open(fileobj=unzipped, mode="r|") as archive:
                for member in archive:
                    name = _member_to_read(path, member)
                    if name is None:
                        continue
                    if name in batches:
                        raise CorruptDataError(f"{path}: holds {member.name} twice; not CIFAR-10's archive")
                    data = archive.extractfile(member).read(member.size)
                    batches[name] = _records(data, name, f"{path}: {member.name}")
            trailer = unzipped.read(_MAX_TRAILER_BYTES + 1)  # to the end: gzip checks its CRC and length there
            if len(trailer) > _MAX_TRAILER_BYTES or trailer.strip(b"\0"):
                raise CorruptDataError(f"{path}: holds data after the end of the tar archive; not CIFAR-10's archive")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise CorruptDataError(f"{path}: damaged or not a .tar.gz archive ({type(exc).__name__}: {exc})") from None
    missing = [name for name in TRAIN_FILES + TEST_FILES if name not in batches]
    if missing:
        raise CorruptDataError(f"{path}: lacks {', '.join(BATCHES_DIR + '/' + name for name in missing)}; "
                               f"not a complete {ARCHIVE_NAME}")
    return batches


def _member_to_read(path, member):
    """The .bin file name ``member`` holds (None for a member skipped unread); CorruptDataError for one that
    has no place in CIFAR-10's binary archive, or the declared size of another file."""
    name = member.name[2:] if member.name.startswith("./") else member.name
    top, _, rest = name.rstrip("/").partition("/")
    if top == _PICKLED[1]:
        raise CorruptDataError(f"{path}: holds {member.name}: this is {_PICKLED_WHY}; get the binary "
                               f"version, {URL}")
    if top != BATCHES_DIR or "/" in rest:
        raise CorruptDataError(f"{path}: unexpected member {member.name!r}; not CIFAR-10's {ARCHIVE_NAME}")
    if not rest:
        if not member.isdir():
            raise CorruptDataError(f"{path}: {member.name} is not a directory; not CIFAR-10's {ARCHIVE_NAME}")
        return None
    if rest in _EXTRA_MEMBERS or rest in TRAIN_FILES + TEST_FILES:
        if not member.isreg():
            raise CorruptDataError(f"{path}: {member.name} is not a regular file; not CIFAR-10's {ARCHIVE_NAME}")
    if rest in _EXTRA_MEMBERS:
        if member.size > _EXTRA_MEMBERS[rest]:
            raise CorruptDataError(f"{path}: {member.name} declares {member.size} bytes, more than the "
                                   f"{_EXTRA_MEMBERS[rest]} it may have; not CIFAR-10's {ARCHIVE_NAME}")
        return None
    if rest not in TRAIN_FILES + TEST_FILES:
        raise CorruptDataError(f"{path}: unexpected member {member.name!r}; not CIFAR-10's {ARCHIVE_NAME}")
    if member.size != RECORDS_PER_FILE * RECORD_BYTES:  # refused before a byte of it is read
        raise CorruptDataError(f"{path}: {member.name}: {_wrong_size(member.size)}")
    return rest


def _wrong_size(size):
    expected = RECORDS_PER_FILE * RECORD_BYTES
    problem = "truncated" if size < expected else f"{size - expected} bytes too many"
    return (f"{size} bytes, expected {expected} ({RECORDS_PER_FILE} records of {RECORD_BYTES} bytes: a label, "
            f"then 1024 R, 1024 G and 1024 B bytes) ({problem})")
