"""gpucnn train --recipe: a recipe is its plain options, printed at the start; given options win."""
import json

import pytest

from gpucnn.commands import recipes, train_options
from gpucnn.commands import train
from gpucnn.commands.recipes import RECIPES, Recipe, expand_recipe
from .test_train_and_bench import tiny_fashion  # noqa: F401 (a fixture)


@pytest.fixture
def toy_recipe(monkeypatch):
    recipe = Recipe(about="toy", options=("--epochs", "3", "--lr", "0.01", "--batch-size", "32"), target=0.5)
    monkeypatch.setitem(recipes.RECIPES, "toy", recipe)
    return recipe


def test_a_recipe_expands_to_its_options_first(toy_recipe):
    argv, name = expand_recipe(["--recipe", "toy", "--epochs", "7"])
    assert name == "toy"
    assert argv == ["--epochs", "3", "--lr", "0.01", "--batch-size", "32", "--epochs", "7"]
    assert expand_recipe(["--epochs", "2"]) == (["--epochs", "2"], None)


def test_given_options_win_over_the_recipe(toy_recipe):
    args = train_options.parse_args(["--recipe", "toy", "--epochs", "7"], prog="gpucnn train")
    assert (args.recipe, args.epochs, args.lr, args.batch_size) == ("toy", 7, 0.01, 32)
    assert {"epochs", "lr", "batch_size"} <= args.explicit  # the recipe's options count as given (resume)
    assert args.command == "gpucnn train --recipe toy --epochs 7"


def test_an_unknown_recipe_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        train_options.parse_args(["--recipe", "nope"], prog="gpucnn train")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "fast" in err


def test_the_command_line_is_printable():
    for name, recipe in RECIPES.items():
        assert recipe.command().startswith("--model "), name
        assert 0 < recipe.target < 1



def test_stop_at_ends_the_run_at_the_first_epoch_reaching_it(tiny_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16", "--out", str(out),
                       "--no-progress", "--no-report", "--epochs", "4", "--stop-at", "0.01"]) == 0
    assert "reached --stop-at 0.01 after epoch 1: stopping" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["epoch"] == [1]
    with pytest.raises(SystemExit):
        train.main(["--stop-at", "1.5"])
    assert "--stop-at must be a test accuracy in (0, 1]" in capsys.readouterr().err
