"""MNIST and Fashion-MNIST: find the four IDX files locally, or download them once.

A ``data_dir`` argument names THE directory: it must hold all four files (each plain
or ``.gz``), or loading fails naming what is missing; nothing else is searched.
Without one, the places searched, in order, for a directory holding all four are:

1. ``$GPUCNN_DATA/<name>``, then ``$GPUCNN_DATA`` itself;
2. ``~/.cache/gpucnn/<name>`` (where downloads go);
3. for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu
   package ``dataset-fashion-mnist``).

``<name>`` is ``fashion-mnist`` or ``mnist``. When none has them and
``download=True``, the gzipped files are fetched into ``~/.cache/gpucnn/<name>``
over HTTPS first, each checked against the SHA-256 in ``SHA256`` before it gets its
final name; a mirror that serves other bytes (or a web page) is skipped for the next
(the fetching itself: gpucnn/data/download.py).

Local and cached files are checked against ``PAYLOAD_SHA256``, digests of the
decompressed IDX bytes: gzip headers differ between copies (Debian's carry no file
name and another mtime) but the payload is the same.
"""
import hashlib
import os
import pathlib

import numpy

from . import download
from .idx import CorruptDataError, idx_payload, parse_idx

__all__ = ["load_fashion_mnist", "load_mnist", "DataNotFoundError", "SHA256", "PAYLOAD_SHA256", "MIRRORS",
           "FILE_NAMES", "SAMPLE_SHAPE", "search_dirs", "cache_dir", "find_dataset"]


class DataNotFoundError(FileNotFoundError):
    """A data set is in none of the searched places and could not be downloaded."""


# split part -> file name without ".gz"
FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_NUM_SAMPLES = {"train": 60000, "test": 10000}
_IMAGE_SIDE = 28
_NUM_CLASSES = 10
SAMPLE_SHAPE = (1, _IMAGE_SIDE, _IMAGE_SIDE)  # one image of either data set, (C, H, W)

# Download addresses, tried in order; a file is fetched as MIRROR + name + ".gz".
MIRRORS = {
    # HTTPS first: the GitHub copy of the upstream repository. The S3 *website* endpoint
    # the Fashion-MNIST README links to serves plain HTTP only (S3 website endpoints have
    # no TLS); it comes last, and the SHA-256 check is what makes it safe.
    "fashion-mnist": [
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
    # yann.lecun.com no longer serves the files reliably; torchvision's mirror
    # first, then the one TensorFlow uses.
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
}

# SHA-256 of the upstream .gz files. Sources:
# fashion-mnist: tensorflow/datasets tensorflow_datasets/url_checksums/fashion_mnist.txt
#   (other public loaders list the same four values), sizes 26421880, 29515, 4422102, 5148.
#   Checked against the Debian files in /usr/share/datasets/fashion-mnist: Debian rewrote
#   the 10-byte gzip headers (file name dropped, mtime set to the package date), so their
#   own digests differ; putting back the upstream header (FNAME flag, the file name, mtime
#   2017-08-31 10:50:06/27 UTC) reproduces these SHA-256s and torchvision's MD5s exactly,
#   i.e. the compressed data is upstream's (tests/data/test_datasets.py re-checks this).
# mnist: tensorflow/datasets tensorflow_datasets/url_checksums/mnist.txt (cvdf mirror);
#   the same values appear in public loaders that fetch from the ossci mirror, and the
#   file sizes (9912422, 28881, 1648877, 4542) match torchvision's copies, whose MD5s
#   torchvision lists (f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d...).
SHA256 = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
}

# (size, SHA-256) of the decompressed IDX bytes, keyed by file name without ".gz". Computed here from
# the Debian package dataset-fashion-mnist (0.0~git20200523.55506a9-1), whose compressed data is
# upstream's byte for byte (see the note above). MNIST: no copy of the files was at hand to compute
# them from, so MNIST has none yet and its local files get the structural checks only.
PAYLOAD_SHA256 = {
    "fashion-mnist": {
        "train-images-idx3-ubyte": (47040016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte": (60008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte": (7840016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte": (10008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
    "mnist": {},
}

_DISPLAY_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}
_SYSTEM_DIRS = {"fashion-mnist": [pathlib.Path("/usr/share/datasets/fashion-mnist")], "mnist": []}


def load_fashion_mnist(data_dir=None, download=True, normalize=True):
    """Fashion-MNIST: 60000 training and 10000 test images of clothes, 10 classes.

    Args:
        data_dir: directory to look in first (see the module docstring for the
            other places). None to use only the standard places.
        download: fetch the files into ``~/.cache/gpucnn/fashion-mnist`` when no
            searched directory has them.
        normalize: float32 images scaled to [0, 1] when True, the raw uint8
            pixels when False.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``; images of shape (N, 1, 28, 28),
        labels int64 of shape (N,) with values 0..9.

    Raises:
        DataNotFoundError: not found anywhere and not downloadable; the message
            lists every place searched and how to get the data.
        CorruptDataError: a file is damaged or has the wrong sample count or
            shape; the message names the file.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
        >>> x_train.shape, x_train.dtype, y_test[:3]
        ((60000, 1, 28, 28), dtype('float32'), array([9, 2, 1]))
    """
    return _load("fashion-mnist", data_dir, download, normalize)


def load_mnist(data_dir=None, download=True, normalize=True):
    """MNIST: 60000 training and 10000 test images of handwritten digits.

    Args:
        data_dir: directory to look in first (see the module docstring for the
            other places). None to use only the standard places.
        download: fetch the files into ``~/.cache/gpucnn/mnist`` when no searched
            directory has them.
        normalize: float32 images scaled to [0, 1] when True, the raw uint8
            pixels when False.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``; images of shape (N, 1, 28, 28),
        labels int64 of shape (N,) with values 0..9.

    Raises:
        DataNotFoundError: not found anywhere and not downloadable.
        CorruptDataError: a file is damaged or has the wrong sample count or shape.

    Example:
        >>> (x_train, y_train), _ = load_mnist(data_dir="~/data/mnist", download=False)
        >>> y_train[:5]
        array([5, 0, 4, 1, 9])
    """
    return _load("mnist", data_dir, download, normalize)


def cache_dir(name):
    """``~/.cache/gpucnn/<name>``, where downloads of data set ``name`` go."""
    return pathlib.Path.home() / ".cache" / "gpucnn" / name


def search_dirs(name, data_dir=None):
    """The directories searched for data set ``name``, in order, without duplicates (only ``data_dir`` if given)."""
    if data_dir is not None:
        return [pathlib.Path(data_dir).expanduser()]
    candidates = []
    env_dir = os.environ.get("GPUCNN_DATA")
    if env_dir:
        # the subdirectory first: the two data sets share file names, so a bare
        # $GPUCNN_DATA holding one of them must not be taken for the other
        candidates += [pathlib.Path(env_dir).expanduser() / name, pathlib.Path(env_dir).expanduser()]
    candidates.append(cache_dir(name))
    candidates += _SYSTEM_DIRS.get(name, [])
    unique = []
    for directory in candidates:
        if directory not in unique:
            unique.append(directory)
    return unique


def _load(name, data_dir, download, normalize):
    if name not in MIRRORS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(MIRRORS)}")
    paths = find_dataset(name, data_dir, download)["files"]
    splits = []
    for split in ("train", "test"):
        images = _check_images(_read_checked(name, paths[f"{split}_images"]), paths[f"{split}_images"],
                               _NUM_SAMPLES[split])
        labels = _check_labels(_read_checked(name, paths[f"{split}_labels"]), paths[f"{split}_labels"],
                               _NUM_SAMPLES[split])
        images = images.reshape(len(images), 1, _IMAGE_SIDE, _IMAGE_SIDE)
        if normalize:
            images = images.astype(numpy.float32)
            images /= numpy.float32(255.0)
        splits.append((images, labels.astype(numpy.int64)))
    return splits[0], splits[1]


def _read_checked(name, path):
    """The array in the IDX file ``path``, its decompressed bytes checked against PAYLOAD_SHA256.

    Only a payload of the real file's size is compared: any other size fails the sample-count
    check that follows, so with the real counts every accepted file is digest-checked.
    """
    payload = idx_payload(path)
    known = PAYLOAD_SHA256.get(name, {}).get(path.name[:-3] if path.name.endswith(".gz") else path.name)
    if known is not None and len(payload) == known[0]:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != known[1]:
            raise CorruptDataError(f"{path}: its decompressed content has SHA-256 {digest}, the known "
                                   f"{_DISPLAY_NAMES[name]} file's is {known[1]} (damaged, or another data set)")
    return parse_idx(payload, path)


def _check_images(images, path, num_samples):
    expected_shape = (num_samples, _IMAGE_SIDE, _IMAGE_SIDE)
    if images.dtype != numpy.uint8 or images.shape != expected_shape:
        raise CorruptDataError(
            f"{path}: expected uint8 images of shape {expected_shape}, found {images.dtype} {images.shape}")
    return images


def _check_labels(labels, path, num_samples):
    if labels.dtype != numpy.uint8 or labels.shape != (num_samples,):
        raise CorruptDataError(
            f"{path}: expected {num_samples} uint8 labels, shape ({num_samples},), "
            f"found {labels.dtype} {labels.shape}")
    if labels.max() >= _NUM_CLASSES:  # uint8: never below 0
        bad = int(numpy.count_nonzero(labels >= _NUM_CLASSES))
        raise CorruptDataError(
            f"{path}: labels must lie in 0..{_NUM_CLASSES - 1}, "
            f"found {bad} outside (max {int(labels.max())})")
    return labels


def _files_in(directory):
    """part -> path for the parts present in ``directory`` (the .gz copy preferred: it carries a CRC)."""
    found = {}
    for part, file_name in FILE_NAMES.items():
        for candidate in (directory / (file_name + ".gz"), directory / file_name):
            if candidate.is_file():
                found[part] = candidate
                break
    return found


def find_dataset(name, data_dir=None, download=True):
    """Where data set ``name`` comes from: {'directory': Path, 'files': {part: Path}, 'downloaded': bool}.

    Raises DataNotFoundError (naming every place looked and what was missing) like the loaders.
    """
    if name not in MIRRORS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(MIRRORS)}")
    if data_dir is not None:
        directory = pathlib.Path(data_dir).expanduser()
        found = _files_in(directory)
        if len(found) != len(FILE_NAMES):
            raise DataNotFoundError(_data_dir_message(name, directory, found))
        return {"directory": directory, "files": found, "downloaded": False}
    before = _files_in(cache_dir(name))
    files = _find_or_download(name, None, download)
    directory = next(iter(files.values())).parent
    return {"directory": directory, "files": files,
            "downloaded": directory == cache_dir(name) and len(before) < len(FILE_NAMES)}


def _data_dir_message(name, directory, found):
    if not directory.exists():
        problem = "does not exist"
    elif not directory.is_dir():
        problem = "is not a directory"
    else:
        missing = [FILE_NAMES[part] + "[.gz]" for part in FILE_NAMES if part not in found]
        problem = f"lacks {', '.join(missing)}"
    return (f"{_DISPLAY_NAMES[name]}: data directory {directory} {problem}; it must hold all four IDX files "
            f"({', '.join(f + '[.gz]' for f in FILE_NAMES.values())}). Other places are searched only "
            f"when no data directory is given.")


def _find_or_download(name, data_dir, download):
    """part -> path of all four files, from the first directory that has them all."""
    looked = []
    unset_env_note = None if os.environ.get("GPUCNN_DATA") else "$GPUCNN_DATA (not set)"
    for directory in search_dirs(name, data_dir):
        if unset_env_note and directory == cache_dir(name):
            looked.append(unset_env_note)  # where $GPUCNN_DATA would have come in the order
            unset_env_note = None
        found = _files_in(directory)
        if len(found) == len(FILE_NAMES):
            return found
        if not directory.is_dir():
            looked.append(f"{directory} (no such directory)")
        elif not found:
            looked.append(f"{directory} (none of the files)")
        else:
            missing = ", ".join(FILE_NAMES[part] for part in FILE_NAMES if part not in found)
            looked.append(f"{directory} (missing {missing})")
    download_errors = []
    if download:
        download_errors = _download(name, cache_dir(name))
        if not download_errors:
            return _files_in(cache_dir(name))
    raise DataNotFoundError(_not_found_message(name, looked, download, download_errors))


def _not_found_message(name, looked, download, download_errors):
    display_name = _DISPLAY_NAMES[name]
    file_list = ", ".join(f"{file_name}[.gz]" for file_name in FILE_NAMES.values())
    lines = [f"{display_name} was not found. Looked for {file_list} in:"]
    lines += [f"  - {place}" for place in looked]
    if download:
        lines.append(f"Downloading into {cache_dir(name)} failed:")
        lines += [f"  - {error}" for error in download_errors]
    else:
        lines.append("Nothing was downloaded (download=False).")
    lines.append("To get the data, any one of:")
    if name == "fashion-mnist":
        lines.append("  - apt-get install dataset-fashion-mnist (installs /usr/share/datasets/fashion-mnist)")
    lines += [
        f"  - download the four .gz files from {MIRRORS[name][0]} into a directory and "
        f"set GPUCNN_DATA to it (or to its parent, with the files in <parent>/{name}),",
        f"  - or pass data_dir=<that directory> to load_{name.replace('-', '_')}(),",
        f"  - or copy them into {cache_dir(name)}.",
    ]
    return "\n".join(lines)


def _download(name, target_dir):
    """Fetch the files missing from ``target_dir``; a list of short error lines, empty on success
    (gpucnn/data/download.py: mirrors in order, each file checked against ``SHA256``)."""
    present = _files_in(target_dir)
    missing = [file_name + ".gz" for part, file_name in FILE_NAMES.items() if part not in present]
    return download.fetch_missing(target_dir, missing, MIRRORS[name], SHA256[name])
