"""`gpucnn train --label-smoothing EPS --class-weights balanced`: said at the start, recorded, used for training and
the test loss, and kept by --resume (the checkpoint's unless given again)."""
import json

import numpy
import pytest

import gpucnn
from gpucnn.commands import train_options
from gpucnn.data import load_fashion_mnist
from gpucnn.nn.losses import SoftmaxCrossEntropy, balanced_class_weights
from gpucnn.train.loop import evaluate
from . import test_train_and_bench as base
from .test_train_errors import run  # noqa: F401 ((status, out, err) of gpucnn train)

tiny_fashion = base.tiny_fashion  # the fixture: a 64/32-image Fashion-MNIST in IDX files


@pytest.fixture
def common(tiny_fashion, tmp_path):
    quiet = ["--no-report"] if "--no-report" in train_options.parser("gpucnn train").format_help() else []
    return ["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16", "--no-progress"] + quiet


def _balanced_by_hand(labels, classes=10):
    """scikit-learn's formula, one class at a time: n_samples / (n_classes present * count_c)."""
    present = len(set(labels.tolist()))
    return [len(labels) / (present * int((labels == c).sum())) if (labels == c).any() else 0.0 for c in range(classes)]


def test_balanced_class_weights_is_scikit_learns_formula():
    labels = numpy.array([0, 0, 0, 1, 2, 2, 4])
    numpy.testing.assert_allclose(balanced_class_weights(labels, 5), _balanced_by_hand(labels, 5), rtol=1e-15)
    with pytest.raises(ValueError, match="balanced_class_weights: labels must lie in \\[0, 4\\]"):
        balanced_class_weights(numpy.array([0, 5]), 5)


def test_options_are_said_recorded_and_used(capsys, common, tiny_fashion, tmp_path):
    out = tmp_path / "run"
    status, printed, _ = run(capsys, *common, "--out", str(out), "--epochs", "1", "--label-smoothing", "0.1",
                             "--class-weights", "balanced")
    assert status == 0
    (_, y_train), (x_test, y_test) = load_fashion_mnist(str(tiny_fashion))
    want = _balanced_by_hand(y_train)
    assert "loss: softmax cross-entropy, label smoothing 0.1, class weights balanced" in printed
    assert " ".join(f"{w:.4g}" for w in want) in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loss"]["label_smoothing"] == 0.1 and summary["loss"]["class_weights"] == "balanced"
    numpy.testing.assert_allclose(summary["loss"]["weight"], want, rtol=1e-12)
    model = gpucnn.models.fashion_cnn()
    model.load(str(out / "model.npz"))
    used = evaluate(model, x_test, y_test, SoftmaxCrossEntropy(weight=want, label_smoothing=0.1))["loss"]
    plain = evaluate(model, x_test, y_test, SoftmaxCrossEntropy())["loss"]
    assert summary["test_loss"] == pytest.approx(used, rel=1e-6) and abs(used - plain) > 1e-3


def test_resume_keeps_the_checkpoints_loss_and_ends_where_a_straight_run_ends(capsys, common, tmp_path):
    options = ["--label-smoothing", "0.2", "--class-weights", "balanced"]
    straight = tmp_path / "straight"
    assert run(capsys, *common, "--out", str(straight), "--epochs", "2", *options)[0] == 0
    resumed = tmp_path / "resumed"
    assert run(capsys, *common, "--out", str(resumed), "--epochs", "1", *options)[0] == 0
    status, printed, _ = run(capsys, *common, "--out", str(resumed), "--epochs", "2", "--resume")
    assert status == 0
    assert "--label-smoothing: the checkpoint's 0.2 is used (give --label-smoothing to override it)" in printed
    assert "--class-weights: the checkpoint's balanced is used" in printed
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, resumed)]
    assert summaries[0]["loss"] == summaries[1]["loss"]
    histories = [json.loads((d / "metrics.json").read_text()) for d in (straight, resumed)]
    assert histories[1]["loss"] == histories[0]["loss"] and histories[1]["val_loss"] == histories[0]["val_loss"]
    assert summaries[1]["test_loss"] == summaries[0]["test_loss"]


def test_resume_with_the_option_given_again_lets_the_command_line_win(capsys, common, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, *common, "--out", str(out), "--epochs", "1", "--label-smoothing", "0.2")[0] == 0
    status, printed, _ = run(capsys, *common, "--out", str(out), "--epochs", "2", "--resume",
                             "--label-smoothing", "0.05")
    assert status == 0 and "--label-smoothing: the command line's 0.05 wins over the checkpoint's 0.2" in printed
    assert json.loads((out / "summary.json").read_text())["loss"] == {"label_smoothing": 0.05,
                                                                      "class_weights": "none", "weight": None}


@pytest.mark.parametrize("argv, message", [
    (["--label-smoothing", "1.5"], "--label-smoothing must lie in [0, 1], got 1.5"),
    (["--label-smoothing", "-0.1"], "--label-smoothing must lie in [0, 1], got -0.1"),
    (["--label-smoothing", "nan"], "--label-smoothing must lie in [0, 1], got nan"),
    (["--class-weights", "inverse"], "--class-weights: invalid choice: 'inverse'"),
])
def test_bad_values_are_one_line(capsys, common, tmp_path, argv, message):
    status, _, err = run(capsys, *common, "--out", str(tmp_path / "run"), *argv)
    assert status == 2 and message in err
