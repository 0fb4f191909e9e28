"""`gpucnn train --augment crop,flip,erase`: built with the documented defaults for 28x28 and 32x32 images,
printed and recorded (checkpoint info, summary.json), kept by --resume unless given again, which then ends where
a straight run ends."""
import json
import re

import pytest

from gpucnn.commands import train as train_command
from gpucnn.commands import train_options
from gpucnn.commands.train_augment import make_transform
from gpucnn.data.transforms import Compose, RandomCrop, RandomErasing, RandomHorizontalFlip
from gpucnn.train.checkpoint import read_training_meta
from . import test_train_and_bench as base
from .test_train_loss_options import run

tiny_fashion = base.tiny_fashion  # the fixture: a 64/32-image Fashion-MNIST in IDX files


@pytest.fixture
def common(tiny_fashion, tmp_path):
    quiet = ["--no-report"] if "--no-report" in train_options.parser("gpucnn train").format_help() else []
    return ["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16", "--no-progress"] + quiet


@pytest.mark.parametrize("shape, padding", [((1, 28, 28), 2), ((3, 32, 32), 4)])
def test_the_defaults_for_fashion_mnist_and_cifar10(shape, padding):
    t = make_transform("crop,flip,erase", shape, seed=0)
    assert isinstance(t, Compose) and [type(c) for c in t.transforms] == [RandomCrop, RandomHorizontalFlip,
                                                                          RandomErasing]
    crop, flip, erase = t.transforms
    assert crop.size == shape[1:] and crop.padding == (padding,) * 4 and crop.padding_mode == "zeros"
    assert flip.p == 0.5 and (erase.p, erase.scale, erase.ratio, erase.value) == (0.25, (0.02, 0.33), (0.3, 3.3),
                                                                                  (0.0,))
    assert make_transform("none", shape, 0) is None
    again, other = make_transform("crop,flip,erase", shape, 0), make_transform("crop,flip,erase", shape, 1)
    assert again.state()["rng"] == t.state()["rng"] != other.state()["rng"]


def test_names_are_put_in_order_and_unknown_ones_refused(capsys):
    assert train_options.parse_args(["--augment", "erase, crop"], "gpucnn train").augment == "crop,erase"
    assert train_options.parse_args([], "gpucnn train").augment == "none"
    with pytest.raises(SystemExit):
        train_options.parse_args(["--augment", "crop,rotate"], "gpucnn train")
    err = capsys.readouterr().err
    assert re.search(r"--augment: unknown 'rotate'; give a comma-separated list of crop, flip, erase, or none", err)


def test_resume_keeps_the_augmentation_and_ends_where_a_straight_run_ends(capsys, common, tmp_path, monkeypatch):
    options = ["--augment", "crop,flip,erase", "--epochs", "2"]
    straight = tmp_path / "straight"
    status, printed, _ = run(capsys, *common, "--out", str(straight), *options)
    assert status == 0
    assert "augmentation (--augment crop,flip,erase, seeded by --seed): Compose([RandomCrop(size=(28, 28), " \
           "padding=(2, 2, 2, 2)" in printed
    stopped = tmp_path / "stopped"
    row = train_command.print_row

    def stop_after_the_first_epoch(history):  # as Ctrl-C would, once the epoch's checkpoint is written
        row(history)
        raise KeyboardInterrupt("stopped by the test")

    monkeypatch.setattr(train_command, "print_row", stop_after_the_first_epoch)
    assert run(capsys, *common, "--out", str(stopped), *options)[0] == 130
    monkeypatch.setattr(train_command, "print_row", row)
    meta = read_training_meta(str(stopped / "checkpoint.npz"))
    assert meta["info"]["augment"] == "crop,flip,erase" and "RandomErasing" in meta["transform"]["transform"]
    status, printed, _ = run(capsys, *common, "--out", str(stopped), "--epochs", "2", "--resume")
    assert status == 0 and "--augment: the checkpoint's crop,flip,erase is used" in printed
    histories = [json.loads((d / "metrics.json").read_text()) for d in (straight, stopped)]
    assert histories[1]["loss"] == histories[0]["loss"] and histories[1]["val_loss"] == histories[0]["val_loss"]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, stopped)]
    assert summaries[0]["augment"] == summaries[1]["augment"] == "crop,flip,erase"
    assert summaries[0]["transform"].startswith("Compose([RandomCrop")
    assert summaries[0]["test_loss"] == summaries[1]["test_loss"]
    plain = tmp_path / "plain"
    assert run(capsys, *common, "--out", str(plain), "--epochs", "2")[0] == 0
    assert json.loads((plain / "metrics.json").read_text())["loss"] != histories[0]["loss"]


def test_augment_given_again_on_resume_wins_and_says_so(capsys, common, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, *common, "--out", str(out), "--epochs", "1", "--augment", "flip")[0] == 0
    status, printed, _ = run(capsys, *common, "--out", str(out), "--epochs", "2", "--resume", "--augment", "crop")
    assert status == 0 and "--augment: the command line's crop wins over the checkpoint's flip" in printed
    assert json.loads((out / "summary.json").read_text())["augment"] == "crop"
