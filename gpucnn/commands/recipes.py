"""``gpucnn train --recipe NAME``: named training recipes, each nothing but the plain options it expands to.

A recipe is a list of ordinary ``gpucnn train`` options, written down here and printed at the start of
the run, so that what it does is never hidden: ``--recipe fast`` is exactly the same run as typing its
options. Options given on the command line win over the recipe's (they come after it), so
``--recipe fast --epochs 8`` is the fast recipe trained for 8 epochs.

How each recipe was chosen, and what it measured, is in docs/benchmarks.md ("Time to accuracy");
``scripts/speedrun.py`` trains a recipe with gpucnn and with PyTorch in the same run.
"""
import argparse
import shlex
from dataclasses import dataclass

__all__ = ["Recipe", "RECIPES", "expand_recipe"]


@dataclass(frozen=True)
class Recipe:
    """One named recipe: what it is for, the options it expands to, and the accuracy it targets."""
    about: str
    options: tuple
    target: float  # test accuracy (fraction) the recipe is meant to reach; scripts/speedrun.py stops there

    def command(self):
        """The options as one shell-quoted line, as printed at the start of a run."""
        return " ".join(shlex.quote(option) for option in self.options)


RECIPES = {
    "fast": Recipe(
        about="the fastest known way to 91% Fashion-MNIST test accuracy on a CPU: the Keras tutorial's CNN, a "
              "one-cycle schedule at a high peak learning rate, a large batch, label smoothing, no augmentation",
        options=("--model", "fashion_cnn", "--dataset", "fashion-mnist", "--epochs", "3", "--batch-size", "256",
                 "--optimizer", "adam", "--lr", "4e-3", "--schedule", "onecycle", "--label-smoothing", "0.1"),
        target=0.91),
    "best": Recipe(
        about="the highest Fashion-MNIST accuracy in a stated budget (about 40 minutes on 2 CPU cores): "
              "ResNet-8 with random crops, flips and erasing, a one-cycle schedule, label smoothing and "
              "decoupled weight decay that skips BatchNorm and biases",
        options=("--model", "resnet8", "--dataset", "fashion-mnist", "--epochs", "15", "--batch-size", "256",
                 "--optimizer", "adamw", "--lr", "4e-3", "--weight-decay", "5e-4", "--schedule", "onecycle",
                 "--label-smoothing", "0.1", "--augment", "crop,flip,erase", "--no-decay-bn-bias"),
        target=0.935),
}


def expand_recipe(argv, prog=None):
    """(argv with ``--recipe NAME`` replaced by the recipe's options, the Recipe's name or None).

    The recipe's options go first, so that the options given on the command line win; an unknown
    name is an argparse error listing the recipes.
    """
    argv = list(argv)
    pre = argparse.ArgumentParser(prog=prog, add_help=False)
    pre.add_argument("--recipe", choices=sorted(RECIPES), default=None)
    known, rest = pre.parse_known_args(argv)
    if known.recipe is None:
        return argv, None
    return list(RECIPES[known.recipe].options) + rest, known.recipe
