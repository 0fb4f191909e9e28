"""`gpucnn train --schedule onecycle|warmup-cosine|plateau --warmup-epochs --clip-grad-norm --ema --no-decay-bn-bias`:
built as documented, recorded, and kept by --resume (the checkpoint's unless given again), which ends where a
straight run ends."""
import json
import re

import numpy
import pytest

from gpucnn import Parameter, optim
from gpucnn.commands import train as train_command
from gpucnn.commands import train_options
from . import test_train_and_bench as base
from .test_train_loss_options import run

tiny_fashion = base.tiny_fashion  # the fixture: a 64/32-image Fashion-MNIST in IDX files


@pytest.fixture
def common(tiny_fashion, tmp_path):
    quiet = ["--no-report"] if "--no-report" in train_options.parser("gpucnn train").format_help() else []
    return ["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16", "--no-progress"] + quiet


def _built(*argv):
    args = train_options.parse_args(list(argv), "gpucnn train")
    params = [Parameter(numpy.zeros(s)) for s in ((3, 3), (3,))]
    opt = train_options.make_optimizer(args, params)
    return args, opt, train_options.make_schedule(args, opt, steps_per_epoch=5)


def test_each_schedule_is_built_as_documented():
    args, opt, sched = _built("--schedule", "onecycle", "--lr", "0.01", "--epochs", "3")
    assert isinstance(sched, optim.OneCycleLR) and sched.total_steps == 15 and sched.max_lrs == [0.01]
    assert opt.lr == pytest.approx(0.01 / 25, rel=1e-14) and opt.betas[0] == 0.95
    _, opt, sched = _built("--schedule", "warmup-cosine", "--warmup-epochs", "2", "--epochs", "6", "--lr", "0.3",
                           "--optimizer", "sgd")
    assert isinstance(sched, optim.SequentialLR) and sched.milestones == [2]
    assert [sched.lr_at(e) for e in (0, 2, 6)] == pytest.approx([0.1, 0.3, 0.0], rel=1e-14, abs=1e-17)
    _, _, sched = _built("--schedule", "plateau")
    assert isinstance(sched, optim.ReduceLROnPlateau) and (sched.factor, sched.patience) == (0.5, 2)
    _, opt, _ = _built("--optimizer", "adamw", "--no-decay-bn-bias")
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-2, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]


@pytest.mark.parametrize("argv, message", [
    (["--ema", "1.5"], "--ema must lie in \\(0, 1\\)"),
    (["--clip-grad-norm", "0"], "--clip-grad-norm must be > 0"),
    (["--schedule", "warmup-cosine", "--warmup-epochs", "3", "--epochs", "3"], "must be fewer than --epochs"),
])
def test_bad_values_are_refused_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit):
        train_options.parse_args(argv, "gpucnn train")
    assert re.search(message, capsys.readouterr().err)


def test_resume_keeps_the_extras_and_ends_where_a_straight_run_ends(capsys, common, tmp_path, monkeypatch):
    options = ["--schedule", "onecycle", "--lr", "0.004", "--clip-grad-norm", "1.0", "--ema", "0.9",
               "--no-decay-bn-bias", "--optimizer", "adamw"]
    straight = tmp_path / "straight"
    status, printed, _ = run(capsys, *common, "--out", str(straight), "--epochs", "2", *options)
    assert status == 0 and "the model now holds the weights' moving average (--ema 0.9)" in printed
    stopped = tmp_path / "stopped"
    row = train_command.print_row

    def stop_after_the_first_epoch(history):  # as Ctrl-C would, once the epoch's checkpoint is written
        row(history)
        raise KeyboardInterrupt("stopped by the test")

    monkeypatch.setattr(train_command, "print_row", stop_after_the_first_epoch)
    assert run(capsys, *common, "--out", str(stopped), "--epochs", "2", *options)[0] == 130
    monkeypatch.setattr(train_command, "print_row", row)
    status, printed, _ = run(capsys, *common, "--out", str(stopped), "--epochs", "2", "--optimizer", "adamw",
                             "--resume")
    assert status == 0
    for flag, value in (("--schedule", "onecycle"), ("--ema", "0.9"), ("--clip-grad-norm", "1.0"),
                        ("--no-decay-bn-bias", "True"), ("--lr", "0.004")):
        assert f"{flag}: the checkpoint's {value} is used" in printed
    histories = [json.loads((d / "metrics.json").read_text()) for d in (straight, stopped)]
    assert histories[1]["loss"] == histories[0]["loss"] and histories[1]["val_loss"] == histories[0]["val_loss"]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, stopped)]
    assert summaries[0]["extras"] == summaries[1]["extras"] and summaries[0]["test_loss"] == summaries[1]["test_loss"]
