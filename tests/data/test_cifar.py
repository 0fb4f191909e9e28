"""CIFAR-10's binary version on synthetic files in its exact format (a few records per file): pixel order and
labels round-trip, the archive is read as a checked stream, the pickled version and damaged or hostile files
are refused in one line naming the file, and downloads go through gpucnn/data/download.py (never the network:
tests/data/conftest.py's fixture replaces the fetch)."""
import gzip
import hashlib
import io
import pickle
import tarfile
import urllib.error

import numpy
import pytest

from gpucnn.data import CorruptDataError, DataNotFoundError, cifar, download, load_cifar10

RECORDS = 3  # per file, instead of 10000
NAMES = cifar.TRAIN_FILES + cifar.TEST_FILES


@pytest.fixture(autouse=True)
def few_records(monkeypatch):
    monkeypatch.setattr(cifar, "RECORDS_PER_FILE", RECORDS)


def batch_files(seed=0, records=RECORDS):
    """{file name: bytes} of the six files: random pixels, label = (seed + record number) % 10."""
    rng = numpy.random.default_rng(seed)
    files = {}
    for index, name in enumerate(NAMES):
        rows = rng.integers(0, 256, (records, cifar.RECORD_BYTES), dtype=numpy.uint8)
        rows[:, 0] = (seed + index * records + numpy.arange(records)) % 10
        files[name] = rows.tobytes()
    return files


def tar_gz(members, extras=True):
    """The bytes of a .tar.gz holding ``members`` ({name: bytes or a TarInfo}), under cifar-10-batches-bin/ unless
    a name has a '/' already, with the directory entry, readme.html and batches.meta.txt as the real one."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        directory = tarfile.TarInfo(cifar.BATCHES_DIR)
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        more = {"readme.html": b"<meta http-equiv='refresh'>", "batches.meta.txt": b"airplane\n"} if extras else {}
        for name, contents in {**more, **members}.items():
            if isinstance(contents, tarfile.TarInfo):
                archive.addfile(contents)
                continue
            info = tarfile.TarInfo(name if "/" in name else f"{cifar.BATCHES_DIR}/{name}")
            info.size = len(contents)
            archive.addfile(info, io.BytesIO(contents))
    return buffer.getvalue()


def write_archive(directory, files=None, name=cifar.ARCHIVE_NAME):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(tar_gz(batch_files() if files is None else files))
    return directory / name


def write_unpacked(directory, files=None):
    directory.mkdir(parents=True, exist_ok=True)
    for name, contents in (batch_files() if files is None else files).items():
        (directory / name).write_bytes(contents)
    return directory


def refused(error, directory, match, **kwargs):
    with pytest.raises(error, match=match) as info:
        load_cifar10(directory, download=False, **kwargs)
    assert "\n" not in str(info.value), "one line"
    return str(info.value)


def test_pixels_and_labels_round_trip_exactly(tmp_path):
    files = batch_files(seed=4)
    (x_train, y_train), (x_test, y_test) = load_cifar10(write_archive(tmp_path, files).parent, download=False)
    assert x_train.shape == (5 * RECORDS, 3, 32, 32) and x_test.shape == (RECORDS, 3, 32, 32)
    assert x_train.dtype == numpy.float32 and y_train.dtype == numpy.int64 and 0 <= x_train.min() <= x_train.max() <= 1
    (raw_train, raw_labels), (raw_test, _) = load_cifar10(tmp_path, download=False, normalize=False)
    assert raw_train.dtype == numpy.uint8 and raw_train.flags.c_contiguous and raw_train.flags.writeable
    numpy.testing.assert_array_equal(x_train, raw_train / numpy.float32(255))
    # record r of data_batch_2.bin: its label byte, then R plane, G plane, B plane, each row-major 32x32
    record = numpy.frombuffer(files["data_batch_2.bin"], numpy.uint8)[cifar.RECORD_BYTES:2 * cifar.RECORD_BYTES]
    image, label = raw_train[RECORDS + 1], raw_labels[RECORDS + 1]
    assert label == record[0]
    for channel, row, column in ((0, 0, 0), (0, 1, 2), (1, 0, 0), (2, 31, 30), (2, 31, 31)):
        assert image[channel, row, column] == record[1 + channel * 1024 + row * 32 + column]
    numpy.testing.assert_array_equal(image.reshape(-1), record[1:])
    numpy.testing.assert_array_equal(y_train, (4 + numpy.arange(5 * RECORDS)) % 10)
    numpy.testing.assert_array_equal(y_test, (4 + 5 * RECORDS + numpy.arange(RECORDS)) % 10)
    numpy.testing.assert_array_equal(raw_test.reshape(RECORDS, -1), numpy.frombuffer(
        files["test_batch.bin"], numpy.uint8).reshape(RECORDS, -1)[:, 1:])


def test_the_archive_its_unpacked_directory_and_the_archive_file_read_the_same(tmp_path):
    archive = write_archive(tmp_path / "a")
    expected = load_cifar10(archive.parent, download=False, normalize=False)
    for place in (write_unpacked(tmp_path / "b" / cifar.BATCHES_DIR).parent, write_unpacked(tmp_path / "c"), archive):
        got = load_cifar10(place, download=False, normalize=False)
        for ours, theirs in zip(got[0] + got[1], expected[0] + expected[1]):
            numpy.testing.assert_array_equal(ours, theirs)
    assert cifar.find_cifar10(tmp_path / "b")["source"] == tmp_path / "b" / cifar.BATCHES_DIR
    assert not any(path.suffix == ".bin" for path in (tmp_path / "a").rglob("*")), "nothing extracted to disk"


def test_searched_places_follow_fashion_mnist(tmp_path, monkeypatch, isolated):
    cache = isolated / ".cache" / "gpucnn" / "cifar10"
    write_archive(cache)
    assert cifar.find_cifar10(download=False) == {"directory": cache, "source": cache / cifar.ARCHIVE_NAME,
                                                  "downloaded": False}
    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path / "env"))
    write_unpacked(tmp_path / "env" / "cifar10" / cifar.BATCHES_DIR)
    assert cifar.find_cifar10(download=False)["source"] == tmp_path / "env" / "cifar10" / cifar.BATCHES_DIR


def test_a_truncated_file_is_refused_naming_it(tmp_path):
    files = batch_files()
    write_unpacked(tmp_path / "d", {**files, "data_batch_3.bin": files["data_batch_3.bin"][:-5]})
    message = refused(CorruptDataError, tmp_path / "d", r"data_batch_3\.bin: 9214 bytes, expected 9219 .*truncated")
    assert str(tmp_path / "d" / "data_batch_3.bin") in message
    # a member that declares another size: refused before it is read
    write_archive(tmp_path / "e", {**files, "test_batch.bin": files["test_batch.bin"] + b"x"})
    refused(CorruptDataError, tmp_path / "e", r"cifar-10-binary\.tar\.gz: cifar-10-batches-bin/test_batch\.bin: "
                                              r"9220 bytes, expected 9219 .*1 bytes too many")
    # an archive cut short, as an interrupted copy leaves it
    whole = tar_gz(files)
    for cut in (len(whole) // 2, len(whole) - 4):
        (tmp_path / "f").mkdir(exist_ok=True)
        (tmp_path / "f" / cifar.ARCHIVE_NAME).write_bytes(whole[:cut])
        refused(CorruptDataError, tmp_path / "f", r"cifar-10-binary\.tar\.gz: damaged or not a \.tar\.gz archive")
    flipped = bytearray(whole)
    flipped[-8] ^= 1  # gzip's CRC-32 of the data: checked when the stream is read to its end
    (tmp_path / "f" / cifar.ARCHIVE_NAME).write_bytes(bytes(flipped))
    refused(CorruptDataError, tmp_path / "f", r"damaged or not a \.tar\.gz archive \(BadGzipFile: CRC check failed")


def test_members_of_unexpected_names_types_or_sizes_are_refused(tmp_path):
    files = batch_files()
    link = tarfile.TarInfo(f"{cifar.BATCHES_DIR}/data_batch_1.bin")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    huge = tarfile.TarInfo(f"{cifar.BATCHES_DIR}/readme.html")
    huge.size = 2 << 20
    cases = [({**files, "data_batch_6.bin": files["test_batch.bin"]}, r"unexpected member '.*/data_batch_6"),
             ({**files, "../../etc/cron.d/x": b"* * * * * root sh"}, r"unexpected member '\.\./\.\./etc"),
             ({**files, "cifar-10-batches-bin/sub/test_batch.bin": b""}, "unexpected member"),
             ({"data_batch_1.bin": link}, r"data_batch_1\.bin is not a regular file"),
             ({**files, "readme.html": huge}, r"readme\.html declares 2097152 bytes"),
             ({name: files[name] for name in NAMES[1:]}, r"lacks cifar-10-batches-bin/data_batch_1\.bin"),
             ({**files, "cifar-10-batches-bin/./test_batch.bin": files["test_batch.bin"]}, "unexpected member")]
    for number, (members, match) in enumerate(cases):
        directory = tmp_path / str(number)
        directory.mkdir()
        (directory / cifar.ARCHIVE_NAME).write_bytes(tar_gz(members))
        refused(CorruptDataError, directory, match)
    # the same member twice, and bytes after the tar's end
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in NAMES + NAMES[:1]:
            info = tarfile.TarInfo(f"{cifar.BATCHES_DIR}/{name}")
            info.size = len(files[name])
            archive.addfile(info, io.BytesIO(files[name]))
    (tmp_path / "twice").mkdir()
    (tmp_path / "twice" / cifar.ARCHIVE_NAME).write_bytes(gzip.compress(buffer.getvalue()))
    refused(CorruptDataError, tmp_path / "twice", r"holds cifar-10-batches-bin/data_batch_1\.bin twice")
    (tmp_path / "tail").mkdir()
    (tmp_path / "tail" / cifar.ARCHIVE_NAME).write_bytes(gzip.compress(gzip.decompress(tar_gz(files)) + b"#!/bin/sh"))
    refused(CorruptDataError, tmp_path / "tail", "holds data after the end of the tar archive")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / cifar.ARCHIVE_NAME).write_bytes(b"<html>not found</html>")
    refused(CorruptDataError, tmp_path / "plain", r"damaged or not a \.tar\.gz archive \(BadGzipFile")


def test_labels_outside_0_to_9_and_a_wrong_digest_are_refused(tmp_path, monkeypatch):
    files = batch_files()
    bad = bytearray(files["data_batch_4.bin"])
    bad[cifar.RECORD_BYTES] = 10  # the second record's label
    write_archive(tmp_path / "a", {**files, "data_batch_4.bin": bytes(bad)})
    refused(CorruptDataError, tmp_path / "a", r"data_batch_4\.bin: labels must lie in 0\.\.9, found 1 outside \(max 10")
    # files of the real size are checked against the digests of the real ones
    monkeypatch.setitem(cifar.MEMBER_SHA256, "test_batch.bin", (len(files["test_batch.bin"]), "0" * 64))
    write_unpacked(tmp_path / "b", files)
    refused(CorruptDataError, tmp_path / "b", r"test_batch\.bin: has SHA-256 [0-9a-f]{64}, the CIFAR-10 file's is 0+ ")
    assert all(size == 10000 * 3073 for size, _ in cifar.MEMBER_SHA256.values() if _ != "0" * 64)


class RunsCode:
    """What a hostile pickle does when unpickled: here, create a file."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return open, (str(self.sentinel), "w")


def test_the_pickled_python_version_is_refused_and_never_unpickled(tmp_path):
    sentinel = tmp_path / "unpickled"
    payload = pickle.dumps({b"data": RunsCode(sentinel)})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in ("data_batch_1", "test_batch"):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    pickled = buffer.getvalue()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cifar-10-python.tar.gz").write_bytes(pickled)
    message = refused(DataNotFoundError, tmp_path / "a", "pickled Python version, which gpucnn does not read")
    assert "unpickling runs code" in message and cifar.URL in message
    refused(DataNotFoundError, tmp_path / "a" / "cifar-10-python.tar.gz", "pickled Python version")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / cifar.ARCHIVE_NAME).write_bytes(pickled)  # renamed: found out by its members
    refused(CorruptDataError, tmp_path / "b", r"holds cifar-10-batches-py/data_batch_1: this is CIFAR-10's pickled")
    (tmp_path / "c" / "cifar-10-batches-py").mkdir(parents=True)
    refused(DataNotFoundError, tmp_path / "c", "cifar-10-batches-py, CIFAR-10's pickled Python version")
    assert not sentinel.exists()


def test_a_data_dir_without_the_files_says_what_it_lacks(tmp_path):
    message = refused(DataNotFoundError, tmp_path / "none", "does not exist")
    assert f"put {cifar.ARCHIVE_NAME}" in message and str(tmp_path / "none") in message
    files = batch_files()
    write_unpacked(tmp_path / "part", {name: files[name] for name in NAMES[:2]})
    refused(DataNotFoundError, tmp_path / "part", r"lacks .*data_batch_3\.bin.*test_batch\.bin and cifar-10-binary")
    (tmp_path / "empty").mkdir()
    refused(DataNotFoundError, tmp_path / "empty", "holds neither cifar-10-binary.tar.gz nor cifar-10-batches-bin/")


def serve(monkeypatch, body):
    fetched = []

    def fake_fetch(url, destination):
        fetched.append(url)
        destination.write_bytes(body)
    monkeypatch.setattr(download, "fetch_url", fake_fetch)
    return fetched


def test_download_goes_through_the_checked_fetch_into_the_cache(monkeypatch, isolated):
    body = tar_gz(batch_files(seed=2))
    fetched = serve(monkeypatch, body)
    monkeypatch.setattr(cifar, "SHA256", hashlib.sha256(body).hexdigest())
    (_, y_train), _ = load_cifar10()
    assert fetched == [cifar.URL] and y_train[0] == 2
    cache = isolated / ".cache" / "gpucnn" / "cifar10"
    assert [path.name for path in cache.iterdir()] == [cifar.ARCHIVE_NAME]
    fetched.clear()
    assert cifar.find_cifar10()["downloaded"] is False and fetched == [], "the second load reads the cache"


def test_a_download_with_another_sha256_is_refused_and_leaves_nothing(monkeypatch, isolated):
    assert cifar.URL == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert cifar.SHA256 == "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
    serve(monkeypatch, tar_gz(batch_files()))
    with pytest.raises(CorruptDataError, match=r"cifar-10-binary\.tar\.gz: downloaded file has SHA-256 [0-9a-f]{64}, "
                                               r"expected c4a38c50") as info:
        load_cifar10()
    assert "\n" not in str(info.value)
    assert not (isolated / ".cache" / "gpucnn" / "cifar10").exists()


def test_offline_it_says_in_one_line_where_it_looked_and_where_to_put_the_file(monkeypatch, isolated, tmp_path):
    def offline(url, destination):
        raise urllib.error.URLError("network disabled in tests")
    monkeypatch.setattr(download, "fetch_url", offline)
    with pytest.raises(DataNotFoundError) as info:
        load_cifar10()
    message = str(info.value)
    cache = isolated / ".cache" / "gpucnn" / "cifar10"
    assert "\n" not in message and message.startswith("CIFAR-10 was not found (looked in $GPUCNN_DATA (not set)")
    assert f"{cache} (does not exist)" in message and "network disabled in tests" in message
    assert f"put {cifar.ARCHIVE_NAME} (the binary version, from {cifar.URL}) or its unpacked" in message
    assert not cache.exists()
    with pytest.raises(DataNotFoundError, match=r"nothing was downloaded \(download=False\)"):
        load_cifar10(download=False)
