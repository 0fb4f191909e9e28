"""gpucnn train --model resnet8: a Model trains from the command line, and its run directory resumes."""
import json

from gpucnn.commands.train import main

from .test_train_and_bench import tiny_fashion  # noqa: F401 - the fixture


def test_gpucnn_train_trains_and_resumes_a_resnet(tiny_fashion, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    args = ["--model", "resnet8", "--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16",
            "--out", str(out), "--no-progress"]
    assert main(args + ["--epochs", "1"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    history = json.loads((out / "metrics.json").read_text())
    assert history["epoch"] == [1, 2]
    assert (out / "model.npz").exists()
