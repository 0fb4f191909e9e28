"""scripts/speedrun.py: both frameworks train the same recipe on the same data order, to the same accuracies."""
import json

import pytest

from .test_train_and_bench import load_script, tiny_fashion  # noqa: F401 (tiny_fashion: a fixture)


def test_gpucnn_and_pytorch_run_the_same_recipe(tiny_fashion, tmp_path, capsys):
    pytest.importorskip("torch")
    speedrun = load_script("speedrun")
    out = tmp_path / "speedrun.json"
    assert speedrun.main(["--recipe", "fast", "--data-dir", str(tiny_fashion), "--epochs", "2", "--target", "0.999",
                          "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CPU: " in printed and "framework" in printed
    results = json.loads(out.read_text())["results"]
    ours, theirs = results
    assert (ours["framework"], theirs["framework"]) == ("gpucnn", "pytorch")
    # the same initial weights, batches, schedule and loss: the same test accuracy after every epoch
    assert ours["per_epoch"] == pytest.approx(theirs["per_epoch"], abs=1.5 / 32)
    assert ours["epochs"] == theirs["epochs"] == 2


def test_the_same_augmentation_on_both_sides(tiny_fashion, tmp_path):
    pytest.importorskip("torch")
    speedrun = load_script("speedrun")
    out = tmp_path / "speedrun.json"
    assert speedrun.main(["--data-dir", str(tiny_fashion), "--epochs", "2", "--target", "0.999", "--json", str(out),
                          "--augment", "crop,flip,erase"]) == 0
    ours, theirs = json.loads(out.read_text())["results"]
    assert ours["per_epoch"] == pytest.approx(theirs["per_epoch"], abs=1.5 / 32)
