"""The train and bench commands end to end (through the scripts/ wrappers) on a tiny IDX data set."""
import gzip
import importlib
import json
import os

import numpy
import pytest

from gpucnn.data import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script(name):
    """scripts/<name>.py, imported as ``scripts.<name>`` (tests/conftest.py puts the repository root on the path)."""
    return importlib.import_module(f"scripts.{name}")


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(numpy.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    rng = numpy.random.default_rng(0)
    counts = {"train": 64, "test": 32}
    monkeypatch.setitem(datasets._NUM_SAMPLES, "train", counts["train"])
    monkeypatch.setitem(datasets._NUM_SAMPLES, "test", counts["test"])
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = rng.integers(0, 10, counts[split])
        images = rng.integers(0, 40, (counts[split], 28, 28))
        images[numpy.arange(counts[split]), 2 * labels + 3, 5:20] = 255  # a bright bar whose row says the class
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_train_script_writes_metrics_model_and_resumes(tiny_fashion, tmp_path, capsys):
    train = load_script("train")
    out = tmp_path / "run"
    args = ["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16", "--out", str(out),
            "--no-progress"]
    assert train.main(args + ["--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "test acc %" in printed and "test accuracy" in printed
    for name in ("metrics.csv", "metrics.json", "model.npz", "checkpoint.npz", "summary.json"):
        assert (out / name).exists(), name
    history = json.loads((out / "metrics.json").read_text())
    assert history["epoch"] == [1, 2]
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy")

    assert train.main(args + ["--epochs", "3", "--resume"]) == 0
    history = json.loads((out / "metrics.json").read_text())
    assert history["epoch"] == [1, 2, 3]


def test_train_script_rejects_bad_arguments(capsys):
    train = load_script("train")
    with pytest.raises(SystemExit):
        train.main(["--epochs", "0"])
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_train_graph_needs_a_cuda_device(capsys):
    train = load_script("train")
    assert train.main(["--graph", "--device", "cpu", "--epochs", "1"]) == 2
    assert "--graph needs a CUDA device" in capsys.readouterr().err
    from gpucnn.commands import train as command
    assert command.parse_args(["--graph"]).graph is True and command.parse_args(["--no-graph"]).graph is False
    assert command.parse_args([]).graph is None  # fit's graph='auto': the graph on CUDA where it can run


def test_bench_script_runs_on_cpu(capsys):
    bench = load_script("bench")
    assert bench.main(["--device", "cpu", "--batch-sizes", "8", "--repeats", "1", "--warmup", "0",
                       "--no-torch", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["batch"] == 8 and report["results"][0]["gpucnn"]["step_s"] > 0


def test_train_script_reports_missing_data_and_devices_without_a_traceback(tmp_path, monkeypatch, capsys):
    train = load_script("train")
    monkeypatch.setattr(datasets, "_download", lambda name, target: ["offline (test)"])
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GPUCNN_DATA", raising=False)
    assert train.main(["--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--device", "cpu",
                       "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST: data directory") and str(tmp_path / "none") + " does not exist" in err
    assert not (tmp_path / "out").exists()  # a run that fails before training leaves no directory
    assert train.main(["--dataset", "mnist", "--device", "cpu", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: MNIST was not found")
    assert train.main(["--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_gpucnn_command_dispatches_and_explains(capsys):
    from gpucnn.commands import main
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "0"])
    assert exit_info.value.code == 2


def test_python_dash_m_gpucnn_runs_the_same_entry_point():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "gpucnn", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("gpucnn ")


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_train_script_takes_the_cpu_path(path, tiny_fashion, tmp_path):
    import gpucnn
    train = load_script("train")
    out = tmp_path / "run"
    assert train.main(["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16", "--out", str(out),
                       "--no-progress", "--epochs", "1", "--path", path]) == 0
    assert json.loads((out / "summary.json").read_text())["path"] == path
    assert gpucnn.config.path == path


def test_bench_times_both_cpu_paths_and_names_the_cpu(capsys):
    bench = load_script("bench")
    assert bench.main(["--device", "cpu", "--batch-sizes", "8", "--repeats", "1", "--warmup", "0",
                       "--no-torch", "--json", "--path", "both"]) == 0
    report = json.loads(capsys.readouterr().out)
    result = report["results"][0]
    assert report["cpu"] and report["fast_threads"] >= 1
    assert result["gpucnn"]["path"] == "fast" and result["gpucnn_reference"]["path"] == "reference"
    assert result["gpucnn_reference"]["step_s"] > 0
