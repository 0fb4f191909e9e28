"""Every expected failure of `gpucnn train` / `gpucnn bench` is one line, "error: ...", and a non-zero exit;
resuming says what it does."""
import errno
import json
import tempfile

import pytest

from gpucnn.io import arrays as checkpoint_module
from gpucnn.commands import bench as bench_command
from gpucnn.commands import train as train_command
from gpucnn.commands import train_options
from gpucnn.data import idx as idx_module
from . import test_train_and_bench as base

tiny_fashion = base.tiny_fashion  # the fixture: a 64/32-image Fashion-MNIST in IDX files


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `gpucnn train argv`; argparse's exits count as status 2."""
    try:
        status = train_command.main(list(argv))
    except SystemExit as exit_info:
        status = exit_info.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


@pytest.fixture
def common(tiny_fashion, tmp_path):
    return ["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16", "--no-progress",
            "--out", str(tmp_path / "run")]


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--momentum", "-0.5"], "--momentum must be >= 0"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--limit", "-5"], "--limit must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--betas", "0.9"], "expected two numbers"),
    (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
])
def test_bad_arguments_are_one_line(capsys, argv, message):
    status, _, err = run(capsys, *argv)
    assert status == 2 and message in err


def test_help_shows_every_default(capsys):
    for parser in (train_options.parser("gpucnn train"), bench_command._parser("gpucnn bench")):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.dest != "help":
                assert "(default: " in formatter._expand_help(action), action.dest
    text = train_options.parser("gpucnn train").format_help()
    assert "(default: 128)" in text and "(default: 0.001)" in text


def test_bench_refuses_bad_sizes_and_unusable_devices(capsys):
    for argv in (["--batch-sizes", "0"], ["--batch-sizes", "8,x"], ["--repeats", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            bench_command.main(argv)
        assert exit_info.value.code == 2
    assert bench_command.main(["--device", "tpu"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: unknown device 'tpu'")


def test_bench_out_of_memory_names_the_batch_size(capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 9 GiB")

    monkeypatch.setattr(bench_command, "compare", no_memory)
    monkeypatch.setattr(bench_command, "matmul_peak", lambda device, sync: 1.0)
    assert bench_command.main(["--device", "cpu", "--batch-sizes", "512", "--no-torch"]) == 2
    assert "error: out of memory at batch size 512; try smaller batch sizes, e.g. --batch-sizes 256" in \
        capsys.readouterr().err


def test_resume_says_what_it_does_and_refuses_other_terms(capsys, common, tmp_path):
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    status, _, err = run(capsys, *common, "--epochs", "1", "--resume")
    assert status == 2 and f"--resume: there is no checkpoint at {checkpoint}" in err
    assert not (tmp_path / "run").exists()

    status, out, _ = run(capsys, *common, "--epochs", "1", "--resume-or-start")
    assert status == 0 and "starting a new run" in out and f"data: fashion-mnist from {common[1]}" in out

    status, _, err = run(capsys, *common, "--epochs", "2", "--resume", "--batch-size", "32")
    assert status == 2 and "was written with --batch-size 16, this run has --batch-size 32" in err
    status, _, err = run(capsys, *common, "--epochs", "2", "--resume", "--limit", "48")
    assert status == 2 and "was written with --limit none, this run has --limit 48" in err

    status, out, _ = run(capsys, *common, "--epochs", "2", "--resume", "--lr", "0.01", "--betas", "0.8,0.99")
    assert status == 0 and f"resuming from epoch 2, step 0 of {checkpoint}" in out
    assert "--lr: the command line's 0.01 wins over the checkpoint's 0.001" in out
    assert "--betas: the command line's 0.8,0.99 wins over the checkpoint's 0.9,0.999" in out
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert history["epoch"] == [1, 2] and history["lr"] == [0.001, 0.01]

    status, out, _ = run(capsys, *common, "--epochs", "3", "--resume")
    assert status == 0 and "--lr: the checkpoint's 0.01 is used (give --lr to override it)" in out


def test_corrupt_checkpoint_and_unreadable_data_are_one_line(capsys, common, tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.npz").write_text("epoch 3\n")
    status, _, err = run(capsys, *common, "--resume")
    assert status == 2 and err.startswith("error: ") and "checkpoint.npz: a text file" in err

    def refuse(path, mode="r", *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(idx_module, "open", refuse, raising=False)
    status, _, err = run(capsys, *common)
    assert status == 2 and "cannot be read (Permission denied)" in err


def test_unwritable_out_is_found_before_training_and_leaves_nothing(capsys, common, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err = run(capsys, *common, "--out", str(blocker / "run"))
    assert status == 2 and "--out" in err and "cannot create it" in err

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    status, out, err = run(capsys, *common, "--out", str(tmp_path / "a" / "b"))
    assert status == 2 and "cannot write there (Read-only file system)" in err and "epoch" not in out
    assert not (tmp_path / "a").exists()


def test_full_disk_and_out_of_memory_are_one_line(capsys, common, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "run/.checkpoint.npz.x.tmp")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module.numpy, "savez", full)
        status, _, err = run(capsys, *common, "--epochs", "1")
    assert status == 2 and err == "error: no space left on the device writing run/.checkpoint.npz.x.tmp; " \
                                  "free some space or give another --out\n"

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 12.0 GiB for an array")

    monkeypatch.setattr(train_command, "fit", no_memory)
    status, _, err = run(capsys, *common, "--epochs", "1")
    assert status == 2 and "out of memory at batch size 16; try a smaller batch, e.g. --batch-size 8" in err


def test_ctrl_c_writes_metrics_for_the_epochs_done(capsys, common, tmp_path, monkeypatch):
    def interrupt_after_first(history):
        if len(history["epoch"]) == 1:
            raise KeyboardInterrupt("training interrupted at epoch 2, step 1")

    monkeypatch.setattr(train_command, "print_row", interrupt_after_first)
    status, _, err = run(capsys, *common, "--epochs", "3")
    assert status == 130 and "for the 1 epochs done" in err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epoch"] == [1]
    assert (tmp_path / "run" / "metrics.csv").exists()


def test_ctrl_c_before_training_is_one_line_and_leaves_nothing(capsys, common, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "find_dataset", interrupted)
    status, _, err = run(capsys, *common)
    assert status == 130 and "interrupted before training started" in err
    assert not (tmp_path / "run").exists()
