"""The commands' expected failures, each reported as one line ("error: ...", exit status 2).

``CommandError`` is a failure a command found itself (bad terms, a directory in use, ...);
``out_of_memory`` and ``os_error`` turn the MemoryError and OSError of a run into a line that
says what to do.
"""
import errno

__all__ = ["CommandError", "out_of_memory", "os_error"]


class CommandError(Exception):
    """An expected failure of the command, reported as one line."""


def out_of_memory(exc, batch_size):
    """The line for a MemoryError at ``batch_size``: it names the batch size and a smaller one to try."""
    text = str(exc)
    if "batch size" in text:
        return text
    return (f"out of memory at batch size {batch_size}; try a smaller batch, e.g. --batch-size "
            f"{max(batch_size // 2, 1)} ({text or type(exc).__name__})")


def os_error(exc):
    """The line for an OSError: a full disk and a read-only or forbidden place are named as such."""
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device writing{where}; free some space or give another --out"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where}: {exc.strerror}"
    return f"{exc.strerror or exc}{':' + where if where else ''}"
