"""Downloads through a fake opener (no network in tests): HTTPS first, the next mirror on bad bytes,
a size cap; and local files checked against the digests of their decompressed content."""
import gzip
import hashlib
import io
import urllib.error
import urllib.request

import pytest

from gpucnn.data import CorruptDataError, datasets, download, load_fashion_mnist, load_mnist
from .test_datasets import fake_files, first_label, write_dataset


REAL_FETCH_URL = download.fetch_url  # the isolated fixture replaces it; these tests replace the opener below it


class FakeResponse(io.BytesIO):
    def __init__(self, body, length=None):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body) if length is None else length)}


def serve_through_opener(monkeypatch, tag, bodies):
    """Replace the opener: ``bodies(url, good_gz_bytes)`` gives what a mirror answers; SHA256 set to the fakes'."""
    gz_files = {name + ".gz": gzip.compress(contents, mtime=0) for name, contents in fake_files(tag).items()}
    table = {name: hashlib.sha256(contents).hexdigest() for name, contents in gz_files.items()}
    monkeypatch.setattr(datasets, "SHA256", {"fashion-mnist": table, "mnist": table})
    opened = []

    def fake_open(url):
        opened.append(url)
        answer = bodies(url, gz_files[url.rsplit("/", 1)[1]])
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, FakeResponse) else FakeResponse(answer)

    monkeypatch.setattr(download, "open_url", fake_open)
    monkeypatch.setattr(download, "fetch_url", REAL_FETCH_URL)
    return opened


def test_every_data_set_tries_https_first():
    for name, mirrors in datasets.MIRRORS.items():
        assert mirrors[0].startswith("https://"), name


def test_a_web_page_or_wrong_bytes_move_on_to_the_next_mirror(monkeypatch):
    first, second = datasets.MIRRORS["fashion-mnist"]

    def bodies(url, good):
        if url.startswith(first):
            return b"<html>Rate limit exceeded</html>" if "images" in url else gzip.compress(b"other file")
        return good

    opened = serve_through_opener(monkeypatch, 3, bodies)
    assert first_label(load_fashion_mnist()) == 3
    assert [url.startswith(first) for url in opened] == [True, False] * 4


def test_every_mirror_wrong_is_corrupt_data_and_leaves_nothing(monkeypatch, isolated):
    serve_through_opener(monkeypatch, 3, lambda url, good: gzip.compress(b"not it"))
    with pytest.raises(CorruptDataError, match="no mirror delivered the right bytes") as info:
        load_mnist()
    assert str(info.value).count("downloaded file has SHA-256") == 2
    assert not (isolated / ".cache/gpucnn/mnist").exists()


def test_downloads_are_capped(monkeypatch, isolated):
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 1000)
    first = datasets.MIRRORS["mnist"][0]

    def bodies(url, good):
        if url.startswith(first):  # lies about its length: the count while reading stops it
            return FakeResponse(b"\x1f\x8b" + bytes(5000), length=10)
        return FakeResponse(good, length=10 ** 12)  # declares too much: refused before reading

    serve_through_opener(monkeypatch, 3, bodies)
    with pytest.raises(CorruptDataError) as info:
        load_mnist()
    assert "body exceeds 1000 bytes" in str(info.value) and "serves 1000000000000 bytes" in str(info.value)


def test_https_never_redirects_to_http():
    handler = download.NoDowngrade()
    request = urllib.request.Request("https://example.org/a.gz")
    with pytest.raises(urllib.error.URLError, match="refused a redirect from HTTPS"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://example.org/a.gz")
    assert handler.redirect_request(request, None, 302, "Found", {}, "https://mirror.example.org/a.gz") is not None


def test_local_files_are_checked_by_the_digest_of_their_content(tmp_path, monkeypatch):
    files = fake_files(5)
    monkeypatch.setitem(datasets.PAYLOAD_SHA256, "fashion-mnist", {
        name: (len(contents), hashlib.sha256(contents).hexdigest()) for name, contents in files.items()})
    # another gzip header (as Debian's copies have) over the same payload: accepted
    directory = tmp_path / "d"
    directory.mkdir()
    for name, contents in files.items():
        (directory / (name + ".gz")).write_bytes(gzip.compress(contents, mtime=123456))
    assert first_label(load_fashion_mnist(directory, download=False)) == 5
    # the same size, other content: refused, naming the file
    damaged = bytearray(files["t10k-images-idx3-ubyte"])
    damaged[-1] ^= 1
    write_dataset(tmp_path / "e", 5, files={**files, "t10k-images-idx3-ubyte": bytes(damaged)})
    with pytest.raises(CorruptDataError, match=r"t10k-images-idx3-ubyte.gz: its decompressed content has SHA-256"):
        load_fashion_mnist(tmp_path / "e", download=False)


def test_fashion_payload_digests_are_recorded_and_mnist_says_why_not():
    assert sorted(datasets.PAYLOAD_SHA256["fashion-mnist"]) == sorted(datasets.FILE_NAMES.values())
    assert datasets.PAYLOAD_SHA256["mnist"] == {}
