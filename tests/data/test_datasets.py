"""load_fashion_mnist / load_mnist on tiny fake data sets: search order, checks, download, errors.

The sample counts the loader insists on (60000 / 10000) are patched down to 6 / 4
so every fixture stays a few kilobytes; no test touches the network.
"""
import gzip
import hashlib
import pathlib
import struct
import urllib.error

import numpy
import pytest

from gpucnn.data import CorruptDataError, DataNotFoundError, datasets, download, load_fashion_mnist, load_mnist
from .test_idx import idx_bytes

from .conftest import NUM_TEST, NUM_TRAIN  # noqa: E402 (the counts the isolated fixture patches in)
FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


def fake_files(tag, num_train=NUM_TRAIN, num_test=NUM_TEST):
    """file name -> uncompressed IDX bytes; ``tag`` (0..9), the first training label, tells copies apart."""
    rng = numpy.random.default_rng(tag)
    train_labels = rng.integers(0, 10, num_train, dtype=numpy.uint8)
    train_labels[0] = tag
    return {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (num_train, 28, 28), dtype=numpy.uint8)),
        "train-labels-idx1-ubyte": idx_bytes(train_labels),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (num_test, 28, 28), dtype=numpy.uint8)),
        "t10k-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, num_test, dtype=numpy.uint8)),
    }


def write_dataset(directory, tag, compress=True, files=None):
    directory.mkdir(parents=True, exist_ok=True)
    for name, contents in (files or fake_files(tag)).items():
        if compress:
            (directory / (name + ".gz")).write_bytes(gzip.compress(contents))
        else:
            (directory / name).write_bytes(contents)
    return directory


def first_label(result):
    (_, y_train), _ = result
    return int(y_train[0])


def test_shapes_dtypes_and_normalization(tmp_path):
    files = fake_files(3)
    write_dataset(tmp_path / "d", 3, files=files)

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(tmp_path / "d")
    (raw_train, _), _ = load_fashion_mnist(tmp_path / "d", normalize=False)

    assert x_train.shape == (NUM_TRAIN, 1, 28, 28) and x_train.dtype == numpy.float32
    assert x_test.shape == (NUM_TEST, 1, 28, 28)
    assert y_train.dtype == numpy.int64 and y_train.shape == (NUM_TRAIN,) and y_test.shape == (NUM_TEST,)
    assert raw_train.dtype == numpy.uint8 and raw_train.shape == (NUM_TRAIN, 1, 28, 28)
    numpy.testing.assert_allclose(x_train, raw_train / 255.0, rtol=1e-6)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    expected_pixels = numpy.frombuffer(files["train-images-idx3-ubyte"][16:], dtype=numpy.uint8)
    numpy.testing.assert_array_equal(raw_train.ravel(), expected_pixels)
    assert y_train[0] == 3


def test_uncompressed_and_mixed_files_are_found(tmp_path):
    write_dataset(tmp_path / "raw", 4, compress=False)
    (tmp_path / "raw" / "t10k-labels-idx1-ubyte").rename(tmp_path / "raw" / "t10k-labels-idx1-ubyte.tmp")
    (tmp_path / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress((tmp_path / "raw" / "t10k-labels-idx1-ubyte.tmp").read_bytes()))

    assert first_label(load_mnist(tmp_path / "raw", download=False)) == 4


def test_search_order(tmp_path, monkeypatch, isolated):
    given, env, system = tmp_path / "given", tmp_path / "env", tmp_path / "system"
    cache = isolated / ".cache/gpucnn/fashion-mnist"
    monkeypatch.setenv("GPUCNN_DATA", str(env))
    write_dataset(system, 1)
    assert first_label(load_fashion_mnist(download=False)) == 1
    write_dataset(cache, 2)
    assert first_label(load_fashion_mnist(download=False)) == 2
    write_dataset(env, 3)
    assert first_label(load_fashion_mnist(download=False)) == 3
    write_dataset(env / "fashion-mnist", 4)
    assert first_label(load_fashion_mnist(download=False)) == 4
    write_dataset(given, 5)
    assert first_label(load_fashion_mnist(given, download=False)) == 5
    assert datasets.find_dataset("fashion-mnist", given)["directory"] == given


def test_data_dir_without_the_data_set_is_an_error_naming_what_is_missing(tmp_path, isolated):
    write_dataset(isolated / ".cache/gpucnn/fashion-mnist", 2)  # would have been a silent fallback
    with pytest.raises(DataNotFoundError, match=r"given does not exist"):
        load_fashion_mnist(tmp_path / "given")
    write_dataset(tmp_path / "given", 5)
    (tmp_path / "given" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=r"given lacks t10k-images-idx3-ubyte\[\.gz\]; it must hold"):
        load_fashion_mnist(tmp_path / "given")


def test_mnist_uses_its_own_subdirectories(tmp_path, monkeypatch, isolated):
    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path / "env"))
    write_dataset(tmp_path / "env" / "fashion-mnist", 1)
    write_dataset(tmp_path / "env" / "mnist", 2)

    assert first_label(load_mnist(download=False)) == 2
    assert first_label(load_fashion_mnist(download=False)) == 1


def test_directory_with_some_files_is_skipped(tmp_path, monkeypatch, isolated):
    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path / "env"))
    write_dataset(tmp_path / "env" / "mnist", 5)
    (tmp_path / "env" / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    write_dataset(isolated / ".cache/gpucnn/mnist", 6)

    assert first_label(load_mnist()) == 6


def test_not_found_message_lists_every_place_and_how_to_get_data(tmp_path, monkeypatch, isolated):
    write_dataset(tmp_path / "system", 1)
    (tmp_path / "system" / "t10k-images-idx3-ubyte.gz").unlink()

    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist()

    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for place in [isolated / ".cache/gpucnn/fashion-mnist", tmp_path / "system"]:
        assert str(place) in message
    assert "missing t10k-images-idx3-ubyte" in message
    assert "$GPUCNN_DATA (not set)" in message
    assert "network disabled in tests" in message
    assert "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/" \
        "train-images-idx3-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "GPUCNN_DATA" in message and "data_dir" in message
    assert not (isolated / ".cache/gpucnn/fashion-mnist").exists(), "failed download left an empty cache dir"

    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(download=False)
    message = str(info.value)
    assert str(tmp_path / "env" / "mnist") in message and str(tmp_path / "env") + " (no such" in message
    assert "download=False" in message and "network" not in message
    assert "apt-get" not in message  # no Debian package for MNIST


def serve(monkeypatch, tag, corrupt=None, failing_mirrors=()):
    """Serve fake files instead of the network, SHA256 set to their digests; returns the fetched URLs."""
    gz_files = {name + ".gz": gzip.compress(contents) for name, contents in fake_files(tag).items()}
    table = {name: hashlib.sha256(contents).hexdigest() for name, contents in gz_files.items()}
    monkeypatch.setattr(datasets, "SHA256", {"fashion-mnist": table, "mnist": table})
    fetched = []

    def fake_fetch(url, destination):
        fetched.append(url)
        if url.startswith(failing_mirrors):
            raise urllib.error.URLError("mirror down")
        name = url.rsplit("/", 1)[1]
        destination.write_bytes(b"tampered" if name == corrupt else gz_files[name])
    monkeypatch.setattr(download, "fetch_url", fake_fetch)
    return fetched


def test_download_verifies_and_renames_into_cache(monkeypatch, isolated):
    fetched = serve(monkeypatch, 7)

    assert first_label(load_mnist()) == 7

    cache = isolated / ".cache/gpucnn/mnist"
    assert sorted(path.name for path in cache.iterdir()) == sorted(
        name + ".gz" for name in datasets.FILE_NAMES.values())
    assert fetched == [datasets.MIRRORS["mnist"][0] + name + ".gz" for name in datasets.FILE_NAMES.values()]
    fetched.clear()
    assert first_label(load_mnist()) == 7
    assert fetched == [], "second load must come from the cache"


def test_download_falls_back_to_second_mirror_and_fetches_only_missing_files(monkeypatch, isolated):
    cache = isolated / ".cache/gpucnn/fashion-mnist"
    write_dataset(cache, 8)
    (cache / "t10k-labels-idx1-ubyte.gz").unlink()
    fetched = serve(monkeypatch, 8, failing_mirrors=(datasets.MIRRORS["fashion-mnist"][0],))

    assert first_label(load_fashion_mnist()) == 8
    assert [url.rsplit("/", 1)[1] for url in fetched] == ["t10k-labels-idx1-ubyte.gz"] * 2
    assert fetched[1].startswith(datasets.MIRRORS["fashion-mnist"][1])


def test_digest_mismatch_raises_and_leaves_no_file(monkeypatch, isolated):
    serve(monkeypatch, 7, corrupt="train-labels-idx1-ubyte.gz")

    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte.gz: downloaded file has SHA-256"):
        load_mnist()

    cache = isolated / ".cache/gpucnn/mnist"
    assert [path.name for path in cache.iterdir()] == ["train-images-idx3-ubyte.gz"]  # no .part left behind


def test_sha256_table_is_complete():
    for name in ("fashion-mnist", "mnist"):
        assert sorted(datasets.SHA256[name]) == sorted(f + ".gz" for f in datasets.FILE_NAMES.values())
        assert all(len(digest) == 64 and int(digest, 16) >= 0 for digest in datasets.SHA256[name].values())


@pytest.mark.parametrize("part, bad_files, message", [
    ("train-images-idx3-ubyte", {"train-images-idx3-ubyte": numpy.zeros((NUM_TRAIN, 28, 27), numpy.uint8)},
     r"expected uint8 images of shape \(6, 28, 28\), found uint8 \(6, 28, 27\)"),
    ("t10k-images-idx3-ubyte", {"t10k-images-idx3-ubyte": numpy.zeros((NUM_TEST + 1, 28, 28), numpy.uint8)},
     r"shape \(4, 28, 28\), found uint8 \(5, 28, 28\)"),
    ("train-labels-idx1-ubyte", {"train-labels-idx1-ubyte": numpy.zeros(NUM_TRAIN - 1, numpy.uint8)},
     r"expected 6 uint8 labels"),
    ("t10k-labels-idx1-ubyte", {"t10k-labels-idx1-ubyte": numpy.array([0, 1, 10, 2], numpy.uint8)},
     r"labels must lie in 0..9, found 1 outside \(max 10\)"),
    ("t10k-labels-idx1-ubyte", {"t10k-labels-idx1-ubyte": numpy.zeros(NUM_TEST, numpy.int32)},
     r"found int32"),
], ids=["image-shape", "image-count", "label-count", "label-range", "label-dtype"])
def test_wrong_counts_shapes_and_labels_name_the_file(tmp_path, part, bad_files, message):
    files = fake_files(0)
    files.update({name: idx_bytes(array) for name, array in bad_files.items()})
    write_dataset(tmp_path / "d", 0, files=files)

    with pytest.raises(CorruptDataError, match=message) as info:
        load_fashion_mnist(tmp_path / "d", download=False)
    assert str(tmp_path / "d" / (part + ".gz")) in str(info.value)


def test_damaged_file_in_data_dir_is_reported_not_skipped(tmp_path, isolated):
    write_dataset(tmp_path / "d", 0)
    (tmp_path / "d" / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    write_dataset(isolated / ".cache/gpucnn/mnist", 1)

    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path / "d")


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(monkeypatch):
    monkeypatch.setattr(datasets, "_NUM_SAMPLES", {"train": 60000, "test": 10000})
    monkeypatch.setattr(datasets, "_SYSTEM_DIRS", {"fashion-mnist": [FASHION_DIR], "mnist": []})

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(download=False)

    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == numpy.float32 and 0.0 == x_train.min() and x_train.max() == 1.0
    numpy.testing.assert_array_equal(numpy.bincount(y_train), [6000] * 10)
    numpy.testing.assert_array_equal(numpy.bincount(y_test), [1000] * 10)
    numpy.testing.assert_array_equal(y_test[:3], [9, 2, 1])


# gzip mtimes of the upstream Fashion-MNIST files; the Debian copies replaced them (and dropped the names)
UPSTREAM_GZIP_MTIMES = {"train-images-idx3-ubyte": 1504176606, "train-labels-idx1-ubyte": 1504176606,
                        "t10k-images-idx3-ubyte": 1504176627, "t10k-labels-idx1-ubyte": 1504176627}


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_sha256_table_matches_debian_files_with_upstream_gzip_header():
    for name, mtime in UPSTREAM_GZIP_MTIMES.items():
        debian = (FASHION_DIR / (name + ".gz")).read_bytes()
        assert debian[:4] == b"\x1f\x8b\x08\x00", "expected a gzip header without file name"
        named_gzip_start = b"\x1f\x8b\x08\x08"
        upstream_header = named_gzip_start + struct.pack("<I", mtime) + b"\x00\x03" + name.encode() + b"\x00"
        upstream = upstream_header + debian[10:]
        assert hashlib.sha256(upstream).hexdigest() == datasets.SHA256["fashion-mnist"][name + ".gz"], name
