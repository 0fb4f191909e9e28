"""gpucnn train --recipe: a recipe is its plain options, printed at the start; given options win."""
import pytest

from gpucnn.commands import recipes, train_options
from gpucnn.commands.recipes import RECIPES, Recipe, expand_recipe


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
