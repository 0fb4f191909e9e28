"""The run directory's lock: a second `gpucnn train` into a --out that a live process writes is refused in one
line naming that process, and changes nothing there; a dead process's lock is taken over; the lock file is gone
after every kind of end (gpucnn/commands/run_lock.py)."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

import gpucnn.commands
from gpucnn.commands import run_lock
from gpucnn.commands import train as train_command
from gpucnn.distributed import communicator
from gpucnn.train.signals import TrainingInterrupted
from . import test_train_and_bench as base

tiny_fashion = base.tiny_fashion  # the fixture: a 64/32-image Fashion-MNIST in IDX files
COUNTS = ("64", "32")  # its sample counts, for the worker processes
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lock_worker.py")

pytestmark = pytest.mark.skipif(run_lock.fcntl is None, reason="the tests start lock holders that flock")


@pytest.fixture
def common(tiny_fashion, tmp_path):
    return ["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16", "--no-progress",
            "--out", str(tmp_path / "run")]


def gpucnn_train(capsys, *argv):
    """(exit status, stdout, stderr) of `gpucnn train argv` run in this process, through the entry point."""
    status = gpucnn.commands.main(["train", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


def start_worker(*argv):
    """A worker process (lock_worker.py) that has printed HOLDING: it holds the lock until it reads a line."""
    process = subprocess.Popen([sys.executable, WORKER, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=base.ROOT)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.strip() == "HOLDING":
            return process
    process.wait(timeout=60)
    raise AssertionError(f"the worker ended (status {process.returncode}) before holding the lock:\n"
                         + "".join(lines) + process.stderr.read())


def finish(process):
    """Let a worker go on; (exit status, stdout, stderr)."""
    out, err = process.communicate("go\n", timeout=120)
    return process.returncode, out, err


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of tmp_path/run (gpucnn's own code, nothing else); killed at the end."""
    (tmp_path / "run").mkdir()
    process = start_worker("hold", str(tmp_path / "run"))
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=60)  # reaps it and closes the pipes


def snapshot(directory):
    """What a run could change in ``directory``: its entries, their sizes and modification times, its own."""
    entries = {entry.name: (entry.stat().st_size, entry.stat().st_mtime_ns) for entry in os.scandir(directory)}
    return entries, os.stat(directory).st_mtime_ns


def dead_pid():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def write_lock(directory, **record):
    directory.mkdir(exist_ok=True)
    (directory / run_lock.LOCK_NAME).write_text(json.dumps(record))


def test_a_second_train_process_into_the_same_out_is_refused_and_changes_nothing(common, tmp_path, capsys):
    out = tmp_path / "run"
    first = start_worker("train", *COUNTS, "--hold", *common, "--epochs", "1")
    try:
        held = run_lock.read_lock(out)
        assert held["pid"] == first.pid and held["host"] == socket.gethostname()
        assert held["command"].startswith("gpucnn train --data-dir ") and held["start_time"] is not None
        before = snapshot(out)
        second = subprocess.run([sys.executable, WORKER, "train", *COUNTS, *common, "--epochs", "1"],
                                capture_output=True, text=True, cwd=base.ROOT, timeout=120)
        assert second.returncode == 2
        assert second.stderr.splitlines() == [
            f"error: {out} is in use by process {first.pid} ({held['command']}); wait for it to end or choose "
            f"another --out"]
        assert "epoch" not in second.stdout
        assert snapshot(out) == before  # the refused run wrote, created and removed nothing there
    finally:
        status, printed, err = finish(first)
    assert status == 0, err
    assert "test accuracy" in printed
    assert not (out / run_lock.LOCK_NAME).exists()
    # the first run has ended: its directory takes a resumed run
    status, printed, _ = gpucnn_train(capsys, *common, "--epochs", "2", "--resume")
    assert status == 0 and "resuming from epoch 2" in printed
    assert json.loads((out / "metrics.json").read_text())["epoch"] == [1, 2]
    assert not (out / run_lock.LOCK_NAME).exists()


def test_a_lock_held_by_another_process_refuses_this_run_in_one_line(holder, common, tmp_path, capsys):
    out = tmp_path / "run"
    before = snapshot(out)
    status, printed, err = gpucnn_train(capsys, *common, "--epochs", "1")
    assert status == 2 and printed == ""
    assert err == (f"error: {out} is in use by process {holder.pid} (lock_worker.py hold); wait for it to end or "
                   f"choose another --out\n")
    assert snapshot(out) == before
    with pytest.raises(run_lock.RunDirectoryInUse) as refused:
        run_lock.acquire(str(out))
    assert refused.value.holder["pid"] == holder.pid


def test_a_killed_holder_leaves_a_lock_the_next_run_takes_over(holder, common, tmp_path, capsys):
    out = tmp_path / "run"
    holder.send_signal(signal.SIGKILL)  # no finally runs: the file stays, the kernel drops the flock
    holder.wait()
    assert run_lock.read_lock(out)["pid"] == holder.pid
    status, printed, _ = gpucnn_train(capsys, *common, "--epochs", "1")
    assert status == 0
    assert (f"note: {out} was locked by process {holder.pid} (lock_worker.py hold), which is no longer running; "
            f"taking the lock over") in printed.splitlines()
    assert not (out / run_lock.LOCK_NAME).exists()


def test_a_lock_naming_a_dead_pid_or_a_reused_one_is_taken_over(common, tmp_path, capsys):
    out = tmp_path / "run"
    pid = dead_pid()
    write_lock(out, pid=pid, start_time=12345, command="gpucnn train --epochs 10", host=socket.gethostname())
    status, printed, _ = gpucnn_train(capsys, *common, "--epochs", "1")
    assert status == 0
    assert f"was locked by process {pid} (gpucnn train --epochs 10), which is no longer running" in printed
    assert not (out / run_lock.LOCK_NAME).exists()
    # a PID that now belongs to a live process that started later (this one): still stale
    started = run_lock.process_start_time(os.getpid())
    write_lock(out, pid=os.getpid(), start_time=(started or 0) + 1, command="an earlier run", host=socket.gethostname())
    status, printed, _ = gpucnn_train(capsys, *common, "--epochs", "2", "--resume")
    assert status == 0 and f"locked by process {os.getpid()} (an earlier run), which is no longer" in printed
    assert not (out / run_lock.LOCK_NAME).exists()


def test_the_lock_is_held_while_training_and_gone_after_every_end(common, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    seen = []
    real_print_row = train_command.print_row

    def looking(history):
        seen.append(run_lock.read_lock(out))
        real_print_row(history)

    with monkeypatch.context() as patch:
        patch.setattr(train_command, "print_row", looking)
        status, _, _ = gpucnn_train(capsys, *common, "--epochs", "1")
    assert status == 0 and seen[0]["pid"] == os.getpid() and seen[0]["command"].startswith("gpucnn train ")
    assert not (out / run_lock.LOCK_NAME).exists()

    (out / "checkpoint.npz").write_text("epoch 3\n")  # an expected failure after the lock was taken
    status, _, err = gpucnn_train(capsys, *common, "--resume")
    assert status == 2 and "checkpoint.npz: a text file" in err
    assert not (out / run_lock.LOCK_NAME).exists()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in training")

    with monkeypatch.context() as patch:  # an unexpected error: it propagates, the lock goes all the same
        patch.setattr(train_command, "fit", broken)
        with pytest.raises(RuntimeError, match="a bug in training"):
            gpucnn.commands.main(["train", *common, "--epochs", "1"])
    assert not (out / run_lock.LOCK_NAME).exists()

    for stop, expected in ((KeyboardInterrupt("interrupted at epoch 2"), 130),
                           (TrainingInterrupted("terminated at epoch 2", signal.SIGTERM), 143)):
        def interrupt_after_first(history, stop=stop):
            if len(history["epoch"]) == 1:
                raise stop

        with monkeypatch.context() as patch:
            patch.setattr(train_command, "print_row", interrupt_after_first)
            status, _, _ = gpucnn_train(capsys, *common, "--epochs", "3")
        assert status == expected
        assert not (out / run_lock.LOCK_NAME).exists()


def test_a_lock_file_that_cannot_be_created_is_one_line_and_leaves_nothing(common, tmp_path, capsys, monkeypatch):
    real_open = os.open

    def refuse_the_lock(path, *args, **kwargs):  # as a directory this user cannot write to would (root can)
        if os.path.basename(path) == run_lock.LOCK_NAME:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_the_lock)
    status, _, err = gpucnn_train(capsys, *common, "--out", str(tmp_path / "a" / "b"))
    assert status == 2 and err == f"error: --out {tmp_path / 'a' / 'b'}: cannot write there (Permission denied)\n"
    assert not (tmp_path / "a").exists()


class FakeRank:
    """A rank of a two-process job, as distributed.init() answers."""

    def __init__(self, rank):
        self.rank, self.size, self.local_rank, self.local_size = rank, 2, rank, 2
        self.is_root = rank == 0


def test_under_distributed_only_rank_0_takes_the_lock(holder, common, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    trained = []

    def fit(*args, **kwargs):  # stands in for the data-parallel fit: says what the lock is meanwhile
        trained.append(run_lock.read_lock(out))
        return {"epoch": []}

    monkeypatch.setattr(train_command, "fit", fit)
    monkeypatch.setattr(communicator, "_world", [FakeRank(1)])
    args = train_command.parse_args([*common, "--epochs", "1", "--distributed"])
    assert train_command.run(args) == 0  # rank 1 neither takes nor minds the lock that another process holds
    assert trained[0]["pid"] == holder.pid

    monkeypatch.setattr(communicator, "_world", [FakeRank(0)])
    assert train_command.run(args) == 2
    assert f"is in use by process {holder.pid}" in capsys.readouterr().err
    assert len(trained) == 1
