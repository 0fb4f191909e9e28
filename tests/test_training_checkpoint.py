"""Bad training checkpoints: every one refused with a CheckpointError naming the file, nothing half-loaded.

The attacks live in scripts/checkpoint_attack.py (which also runs them over every byte and
prints the figures); here they run over every 13th byte, with a smaller inflating member.
"""
import os
import tracemalloc

import checkpoint_attack as attack  # scripts/ (put on sys.path by tests/conftest.py)
import numpy
import pytest

from gpucnn.io import arrays as checkpoint_module
from gpucnn.io.arrays import CheckpointError, load_arrays, save_arrays
from gpucnn.nn.layers import Dense
from gpucnn.nn.sequential import Sequential
from gpucnn.train.checkpoint import load_training_checkpoint, read_training_meta


@pytest.fixture
def good(tmp_path):
    path = str(tmp_path / "good.npz")
    attack.write_good_checkpoint(path)
    return path


def test_every_attack_is_refused_clearly_and_changes_nothing(tmp_path):
    tallies, problems = attack.attack(str(tmp_path), stride=13, bomb_mib=64)
    assert problems == []
    assert tallies["refused clearly"] == tallies["unchanged after refusal"]
    assert tallies["refused clearly"] + tallies["loaded intact"] == tallies["tried"]
    assert tallies["crafted cases"] >= 60 and tallies["refused clearly"] > 500


def test_crafted_cases_each_give_their_true_reason(good, tmp_path):
    reasons = {label: attack.try_load(path)[1] for label, path in attack.crafted_cases(good, str(tmp_path), 0)}
    expected = {
        "text file": "a text file", "random bytes": "not a zip archive", "one byte": "only 1 byte long",
        "directory": "is a directory", "zip encrypted flag": "encrypted", "zip unknown compression": "method 99",
        "meta is a list": "a JSON list, expected an object", "meta deeply nested": "nested too deeply",
        "declares 4 TiB array": "4.0 TiB", "nan weight": "NaN or infinite", "lossy float64": "lossy",
        "missing optimizer state": "missing ['optimizer.0.exp_avg_sq']", "epoch string": "epoch is '1'",
        "optimizer missing lr": "learning rate None", "schedule malformed": "base_lr 'x'",
        "other batch size": "batch size 32, this run has 16", "raw pickle": "pickled",
        "object member (pickle)": "pickled",
    }
    for label, fragment in expected.items():
        assert fragment in reasons[label], (label, reasons[label])
    assert not any("pickle" in reasons[label] for label in ("text file", "random bytes", "one byte"))


def test_unreadable_file_is_called_unreadable(good, monkeypatch):
    def refuse(path, mode="r", *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(checkpoint_module, "open", refuse, raising=False)
    with pytest.raises(CheckpointError, match=r"good.npz: cannot be read \(Permission denied\)"):
        load_arrays(good)


def test_huge_declared_array_and_inflating_member_allocate_nothing(good, tmp_path):
    huge, bomb = str(tmp_path / "huge.npz"), str(tmp_path / "bomb.npz")
    attack.huge_header_file(huge, (2 ** 40,))
    attack.inflating_file(good, bomb, 256 << 20)
    assert os.path.getsize(huge) < 1024 and os.path.getsize(bomb) < 1 << 20
    model, opt, sched = attack.toy_setup()
    tracemalloc.start()
    try:
        for path, message in ((huge, "declares shape"), (bomb, r"has shape \(67108864,\), expected")):
            with pytest.raises(CheckpointError, match=message):
                load_training_checkpoint(path, model, opt, sched)
        with pytest.raises(CheckpointError, match="declares shape"):
            load_arrays(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_lossy_float64_to_float16_is_refused_and_exact_values_load(tmp_path):
    model = Sequential([Dense(4, 3, dtype=numpy.float16, rng=0)])
    before = model.layers[0].weight.data.copy()
    path = tmp_path / "w.npz"
    state = {k: v.astype(numpy.float64) for k, v in model.named_state().items()}
    state["0.weight"] = state["0.weight"] + 1e-6
    save_arrays(path, state, {"format": "gpucnn.Sequential/1"})
    with pytest.raises(CheckpointError, match="float16 cannot hold its values exactly"):
        model.load(path)
    assert model.layers[0].weight.data.tobytes() == before.tobytes()
    state["0.weight"] = before.astype(numpy.float64) * 2  # exactly representable: loads
    save_arrays(path, state, {"format": "gpucnn.Sequential/1"})
    model.load(path)
    numpy.testing.assert_array_equal(model.layers[0].weight.data, before * 2)


def test_failure_while_applying_puts_everything_back(good, monkeypatch):
    model, opt, sched = attack.toy_setup(seed=4)
    before = attack.snapshot(model, opt, sched)

    def broken(*args, **kwargs):
        raise RuntimeError("device went away")

    monkeypatch.setattr(sched, "set_state", broken)
    with pytest.raises(RuntimeError, match="device went away"):
        load_training_checkpoint(good, model, opt, sched)
    assert attack.snapshot(model, opt, sched) == before


def test_save_removes_stale_temporaries_and_fsyncs_the_directory(tmp_path, monkeypatch):
    target = tmp_path / "c.npz"
    for stale in (".c.npz.abc123.tmp", ".c.npz.zz.tmp"):
        (tmp_path / stale).write_bytes(b"half a save")
    (tmp_path / ".other.npz.q.tmp").write_bytes(b"another target's")
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else True)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    save_arrays(target, {"w": numpy.ones(2)}, {"a": 1})
    assert sorted(os.listdir(tmp_path)) == [".other.npz.q.tmp", "c.npz"]
    assert synced[-1] is True  # the last fsync is the directory's, after the rename


def test_a_live_process_save_in_flight_is_not_taken_for_stale(tmp_path):
    """Two processes saving one target (ranks sharing a file system, say): a temporary whose PID is alive
    stays; a dead writer's leftover goes."""
    import subprocess
    import sys
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (tmp_path / f".c.npz.{live.pid}.abc.tmp").write_bytes(b"being written")
        (tmp_path / f".c.npz.{dead.pid}.def.tmp").write_bytes(b"half a save")
        save_arrays(tmp_path / "c.npz", {"w": numpy.ones(2)}, {"a": 1})
        assert sorted(os.listdir(tmp_path)) == [f".c.npz.{live.pid}.abc.tmp", "c.npz"]
    finally:
        live.kill()
        live.wait()


def test_read_training_meta_reads_no_arrays(good):
    meta = read_training_meta(good)
    assert meta["epoch"] == 1 and meta["step"] == 0 and meta["batch_size"] == 16 and meta["num_samples"] == 48
    assert meta["optimizer"]["hyper"]["betas"] == [0.9, 0.999]
