"""``gpucnn train --graph`` end to end on the emulated GPU: a tiny IDX data set, the captured step with the real
loss and optimizer, verified against the eager step, then resumed at an epoch boundary."""
import json

import numpy
import pytest

from support import emulated_cupy
from commands.test_train_and_bench import load_script, write_idx
from gpucnn.data import datasets
from support.kernel_harness import FakeKernel

pytestmark = [pytest.mark.kernels, pytest.mark.graph]


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    rng = numpy.random.default_rng(0)
    counts = {"train": 10, "test": 4}  # 10 at batch 4: two replays and a partial batch per epoch
    for split, prefix in (("train", "train"), ("test", "t10k")):
        monkeypatch.setitem(datasets._NUM_SAMPLES, split, counts[split])
        labels = rng.integers(0, 10, counts[split])
        images = rng.integers(0, 40, (counts[split], 28, 28))
        images[numpy.arange(counts[split]), 2 * labels + 3, 5:20] = 255
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


@pytest.mark.parametrize("optimizer,schedule", [("adam", "step"), ("sgd", "none")])
def test_train_graph_runs_on_the_emulated_gpu_and_resumes(harness, tiny_fashion, tmp_path, capsys,
                                                          optimizer, schedule):
    train = load_script("train")
    out = tmp_path / "run"
    args = ["--data-dir", str(tiny_fashion), "--device", "cuda", "--graph", "--batch-size", "4", "--out", str(out),
            "--no-progress", "--optimizer", optimizer, "--schedule", schedule, "--lr", "0.001"]
    with emulated_cupy.installed(harness, FakeKernel):
        assert train.main(args + ["--epochs", "1"]) == 0, capsys.readouterr().err
        assert train.main(args + ["--epochs", "2", "--resume"]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert "disagrees" not in captured.err  # the verify step passed: no fallback to the eager path
    history = json.loads((out / "metrics.json").read_text())
    assert history["epoch"] == [1, 2] and all(numpy.isfinite(history["loss"]))
    assert all(0 <= a <= 1 for a in history["val_accuracy"])


def test_train_runs_the_graph_by_default_on_cuda_and_the_eager_step_on_request(harness, tiny_fashion,
                                                                               tmp_path, capsys):
    train = load_script("train")
    args = ["--data-dir", str(tiny_fashion), "--device", "cuda", "--batch-size", "4", "--epochs", "1",
            "--no-progress"]  # the note saying which step runs is printed all the same
    with emulated_cupy.installed(harness, FakeKernel):
        assert train.main(args + ["--out", str(tmp_path / "default")]) == 0
        default = capsys.readouterr()
        assert train.main(args + ["--out", str(tmp_path / "eager"), "--no-graph"]) == 0
        eager = capsys.readouterr()
    assert "training step: one CUDA graph launch" in default.out and "disagrees" not in default.err
    assert "training step" not in eager.out + eager.err
    summaries = {run: json.loads((tmp_path / run / "summary.json").read_text()) for run in ("default", "eager")}
    assert summaries["default"]["training_step"].startswith("one CUDA graph launch")
    assert "training_step" not in summaries["eager"]
    for run in ("default", "eager"):
        history = json.loads((tmp_path / run / "metrics.json").read_text())
        assert history["epoch"] == [1] and numpy.isfinite(history["loss"][0])
