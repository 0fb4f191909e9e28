"""A run directory's lock: one live process at a time writes into a ``gpucnn train --out`` directory.

The lock is the file ``<out>/.gpucnn-train.lock``, created atomically (``O_CREAT | O_EXCL``) and
holding JSON ``{"pid", "start_time", "command", "host", "locked_at"}`` (``start_time``: the process's
start in clock ticks after boot, from ``/proc/<pid>/stat``, where there is a /proc). The process that
created it holds an exclusive ``flock`` on it while it runs, and removes it when it ends: ``release``
belongs in a ``finally``, which runs on a normal end, an error, Ctrl-C and a SIGTERM that training
turned into an exception. A process killed outright leaves the file behind; the kernel still drops
its flock.

Another run that finds the file asks whether the process that wrote it is alive:

- where ``fcntl.flock`` exists (Linux, macOS, the BSDs), the flock is the test: it cannot be taken
  while that process lives, however it ends. A free flock still counts as held when the file names
  a process of this host that runs and provably started when the file says (a writer that did not
  flock);
- elsewhere, the named process of this host runs and, where both are known, started at the recorded
  start time; a lock of another host counts as held.

Held: ``acquire`` raises ``RunDirectoryInUse`` (one line naming the process and its command) and has
changed nothing in the directory. Not held (the process is gone, or its PID now belongs to a process
that started later): the lock is taken over, with a one-line note. A file that is still being
written (empty, or held by a process that is not running yet or any more) is given a moment first.
"""
import contextlib
import datetime
import json
import os
import socket
import time

from .errors import CommandError

try:
    import fcntl
except ImportError:  # no flock on this platform: the recorded process is the test
    fcntl = None

__all__ = ["LOCK_NAME", "RunLock", "RunDirectoryInUse", "acquire", "read_lock", "process_alive",
           "process_start_time", "process_command"]

LOCK_NAME = ".gpucnn-train.lock"
SETTLE_S = 2.0  # how long a lock file that is still being written (or handed over) is waited for
_POLL_S = 0.05
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class RunDirectoryInUse(CommandError):
    """Another live process is writing into the run directory; ``holder`` is its lock record."""

    def __init__(self, message, holder):
        super().__init__(message)
        self.holder = holder


class RunLock:
    """The lock of one run directory, held by this process until ``release`` (or the ``with`` block's end)."""

    def __init__(self, directory, path, fd, record):
        self.directory, self.path, self.record = directory, path, record
        self._fd = fd

    @property
    def held(self):
        return self._fd is not None

    def release(self):
        """Remove the lock file (while it is still this one) and drop the flock. Safe to call twice."""
        if self._fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                if _same_file(self.path, self._fd):
                    os.unlink(self.path)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()


def acquire(directory, command=None, option="--out", note=print):
    """The lock of the run directory ``directory`` (which must exist), for this process.

    Args:
        command: the command line to record (shown to a run that is refused).
        option: the command-line option that named the directory, for the messages.
        note: called with a one-line note when a dead process's lock is taken over.

    Raises:
        RunDirectoryInUse: a live process holds the lock; nothing in ``directory`` was changed.
        CommandError: the lock file cannot be created (the directory is not writable).
    """
    path = os.path.join(directory, LOCK_NAME)
    settle_until = time.monotonic() + SETTLE_S
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o644)
        except FileExistsError:
            pass
        except OSError as exc:
            raise CommandError(f"{option} {directory}: cannot write there ({exc.strerror or exc})") from None
        else:
            return _own(directory, path, fd, command)
        state, record, fd = _inspect(path)
        if state == "gone":  # removed or replaced while we looked: try again
            continue
        if state == "settling" and time.monotonic() < settle_until:
            time.sleep(_POLL_S)
            continue
        if state in ("held", "settling"):
            raise RunDirectoryInUse(_refusal(directory, path, record, option), record)
        try:  # stale; fd (where not None) holds the flock of the file, so no one else takes it over meanwhile
            if fd is None or _same_file(path, fd):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            if fd is not None:
                os.close(fd)
        if record is not None:
            note(f"note: {directory} was locked by {_who(record)}, which is no longer running; "
                 f"taking the lock over")
        else:
            note(f"note: {directory} held an unreadable lock file ({LOCK_NAME}) that no process holds; "
                 f"taking the lock over")


def read_lock(directory):
    """The record in ``directory``'s lock file, or None when there is none (or it cannot be read)."""
    try:
        with open(os.path.join(directory, LOCK_NAME), "rb") as f:
            return _parse(f.read())
    except OSError:
        return None


def process_start_time(pid):
    """When process ``pid`` started, in clock ticks after boot (field 22 of /proc/<pid>/stat); None where
    there is no /proc or no such process."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def process_alive(pid, start_time=None):
    """Whether process ``pid`` runs (a zombie does not) and, where ``start_time`` and its own are both known,
    started then (not a later process that got the same PID)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill would end it: say alive, the safe answer
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    if state == "Z":
        return False
    return start_time is None or started == start_time


def process_command(pid):
    """The command line of process ``pid`` from /proc/<pid>/cmdline, or None where it cannot be read."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except (OSError, TypeError, ValueError):
        return None
    text = " ".join(w.decode(errors="replace") for w in words if w)
    return text or None


def _own(directory, path, fd, command):
    """The new lock file ``fd``: flock it, then write this process's record into it."""
    try:
        _flock(fd, blocking=True)  # waits only while another run looks at the new file
        record = {"pid": os.getpid(), "start_time": process_start_time(os.getpid()), "command": command,
                  "host": socket.gethostname(),
                  "locked_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.write(fd, (json.dumps(record) + "\n").encode())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        raise
    return RunLock(directory, path, fd, record)


def _inspect(path):
    """(state, record, fd) of the lock file at ``path``. state: 'gone' (no longer there), 'held' (its process
    lives), 'settling' (being written or handed over: look again shortly), 'stale' (its process is gone;
    fd, when not None, holds the file's flock for the takeover and is the caller's to close)."""
    try:
        fd = os.open(path, os.O_RDWR | _CLOEXEC)  # for writing: an exclusive lock over NFS needs it
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY | _CLOEXEC)
        except FileNotFoundError:
            return "gone", None, None
    except FileNotFoundError:
        return "gone", None, None
    keep = False
    try:
        flocked = _flock(fd, blocking=False)  # True: ours now; False: another process holds it; None: no flock
        record = _parse(_read_all(fd))
        if not _same_file(path, fd):
            return "gone", None, None
        if flocked is False:
            # held; but a record naming a process of this host that is not running is a file between
            # owners (a takeover in progress) or not written yet
            settling = record is None or (_this_host(record) and not process_alive(record.get("pid")))
            return ("settling" if settling else "held"), record, None
        if record is None:
            young = time.time() - os.fstat(fd).st_mtime < SETTLE_S
            if young:
                return "settling", None, None
        elif _recorded_process_alive(record, flocked):
            return "held", record, None
        keep = flocked is True
        return "stale", record, (fd if keep else None)
    finally:
        if not keep:
            os.close(fd)


def _recorded_process_alive(record, flocked):
    """Whether the lock's process runs, where its flock is free (flocked True) or the platform has none (None)."""
    if not _this_host(record):
        return flocked is None  # with flock, a free one is the answer (it reaches hosts sharing the file system)
    pid, started = record.get("pid"), record.get("start_time")
    if flocked is True and (started is None or process_start_time(pid) is None):
        return False  # the flock is free and nothing proves the PID is still the same process
    return process_alive(pid, started)


def _refusal(directory, path, record, option):
    record = record or {}
    pid = record.get("pid")
    who = _who(record) if pid else "another process"
    command = record.get("command") or (process_command(pid) if pid and _this_host(record) else None)
    if command and f"({command})" not in who:
        who += f" ({command})"
    hint = "" if fcntl is not None or _this_host(record) else f"; if it has ended, delete {path}"
    return f"{directory} is in use by {who}; wait for it to end or choose another {option}{hint}"


def _who(record):
    who = f"process {record.get('pid')}"
    if not _this_host(record):
        who += f" on {record.get('host')}"
    if record.get("command"):
        who += f" ({record['command']})"
    return who


def _this_host(record):
    return not record.get("host") or record.get("host") == socket.gethostname()


def _flock(fd, blocking):
    """True when the exclusive flock on ``fd`` is now ours, False when another open file holds it, None where
    the platform or the file system has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP: a file system without locks
        return None


def _same_file(path, fd):
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st, ours = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino)


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _parse(data):
    try:
        record = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _proc_stat(pid):
    """(state, start ticks) of process ``pid`` from /proc, or None."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read()
    except (OSError, TypeError, ValueError):
        return None
    try:
        fields = data[data.rindex(b")") + 2:].split()  # the name in parentheses may hold spaces
        return fields[0].decode(), int(fields[19])  # fields 3 (state) and 22 (starttime) of proc(5)
    except (ValueError, IndexError):
        return None
