"""Downloading a data set's files over HTTPS, each kept only when its SHA-256 is the expected one.

``fetch_missing`` fetches the files a directory lacks, trying the mirrors in order; a file
reaches its final name only after its digest matched (it is written next to it under a temporary
name first), so an interrupted or wrong download never leaves a file a later search would take
for the real one. Redirects never go from HTTPS to plain HTTP, and a body that is not a gzip file
(an error page served with status 200) or is larger than ``MAX_DOWNLOAD_BYTES`` moves on to the
next mirror. ``open_url`` is the one network call: tests replace it (or ``fetch_url``).

Which files, mirrors and digests: gpucnn/data/datasets.py (MNIST, Fashion-MNIST) and gpucnn/data/cifar.py.
"""
import hashlib
import os
import pathlib
import tempfile
import urllib.error
import urllib.request

from .idx import CorruptDataError

__all__ = ["fetch_missing", "download_verified", "fetch_url", "open_url", "sha256_of", "NoDowngrade",
           "MAX_DOWNLOAD_BYTES", "DOWNLOAD_TIMEOUT_S"]

DOWNLOAD_TIMEOUT_S = 60
# The largest file of any data set is CIFAR-10's binary archive, 170052171 bytes (162 MiB; the MNIST
# files are below 30 MB); a larger body is not the file.
MAX_DOWNLOAD_BYTES = 256 << 20


def fetch_missing(target_dir, gz_names, mirrors, digests):
    """Fetch each of ``gz_names`` into ``target_dir`` (created if needed) from the first of ``mirrors``
    (URL prefixes) that delivers the bytes whose SHA-256 ``digests[name]`` holds.

    Returns a list of short error lines, empty on success. Stops at the first file no mirror could
    deliver: the network is then most likely unreachable and the other files would only repeat the
    same errors. A mirror that delivers other bytes (a wrong SHA-256, a web page, too large a body)
    is skipped for the next; CorruptDataError when every mirror did so for a file (its message one
    line when there is one mirror).
    """
    target_dir = pathlib.Path(target_dir)
    created_dir = not target_dir.exists()
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"cannot create {target_dir}: {exc}"]
    for gz_name in gz_names:
        errors, wrong_bytes = [], 0
        for mirror in mirrors:
            url = mirror + gz_name
            try:
                download_verified(url, target_dir / gz_name, digests[gz_name])
                break
            except CorruptDataError as exc:
                wrong_bytes += 1
                errors.append(str(exc))
            except Exception as exc:  # URLError, HTTPError, timeouts, disk full, ...
                errors.append(f"{url}: {_short_error(exc)}")
        else:
            if created_dir and not any(target_dir.iterdir()):
                target_dir.rmdir()  # an offline machine keeps no empty cache directory
            if wrong_bytes == len(mirrors) == 1:
                raise CorruptDataError(errors[0])
            if wrong_bytes == len(mirrors):
                raise CorruptDataError("no mirror delivered the right bytes:\n" +
                                       "\n".join(f"  - {error}" for error in errors))
            return errors
    return []


def _short_error(exc):
    reason = getattr(exc, "reason", None)  # URLError wraps the socket error here
    return f"{type(exc).__name__}: {reason if reason is not None else exc}"


def download_verified(url, destination, expected_sha256):
    """Fetch ``url`` into ``destination`` only if its SHA-256 is ``expected_sha256``.

    The bytes go to a temporary file next to ``destination`` that is renamed when
    the digest matches, so an interrupted or wrong download never leaves a file
    that a later search would take for the real one.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part",
                                         dir=destination.parent)
    os.close(handle)
    temporary = pathlib.Path(temporary)
    try:
        fetch_url(url, temporary)
        digest = sha256_of(temporary)
        if digest != expected_sha256:
            raise CorruptDataError(
                f"{url}: downloaded file has SHA-256 {digest}, expected {expected_sha256}; "
                f"it was deleted, nothing was saved as {destination}")
        os.replace(temporary, destination)
    finally:
        if temporary.exists():
            temporary.unlink()


def fetch_url(url, destination):
    """Write the body of ``url`` to the file ``destination``, at most MAX_DOWNLOAD_BYTES.

    CorruptDataError (so the next mirror is tried) when the body is not a gzip file (an
    error page served with status 200) or is larger than any file of the data sets.
    """
    with open_url(url) as response, open(destination, "wb") as out:
        declared = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        if declared is not None and declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
            raise CorruptDataError(f"{url}: serves {declared} bytes, more than the {MAX_DOWNLOAD_BYTES} any "
                                   f"file of the data set has; not the file, nothing downloaded")
        total = 0
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            if total == 0 and not chunk.startswith(b"\x1f\x8b"):
                kind = "a web page" if chunk.lstrip()[:1] == b"<" else f"bytes {chunk[:4].hex(' ')}"
                raise CorruptDataError(f"{url}: served {kind}, not a gzip file; skipped")
            total += len(chunk)
            if total > MAX_DOWNLOAD_BYTES:
                raise CorruptDataError(f"{url}: body exceeds {MAX_DOWNLOAD_BYTES} bytes; not the file, stopped")
            out.write(chunk)


class NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from HTTPS to plain HTTP."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if req.full_url.startswith("https://") and not newurl.startswith("https://"):
            raise urllib.error.URLError(f"refused a redirect from HTTPS to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def open_url(url):
    """The response for ``url`` (the one network call; tests replace it with a fake opener)."""
    return urllib.request.build_opener(NoDowngrade).open(url, timeout=DOWNLOAD_TIMEOUT_S)


def sha256_of(path):
    """The SHA-256 of the file ``path``, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
