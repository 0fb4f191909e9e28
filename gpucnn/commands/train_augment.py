"""``gpucnn train --augment crop,flip,erase``: data augmentation of every training batch (gpucnn.data.transforms),
said at the start of the run and recorded (the checkpoint's info and summary.json).

What each name builds, for the data set's image of H x W (the defaults of the usual recipes):
- ``crop``: RandomCrop(H x W, padding 2 for 28x28 Fashion-MNIST / MNIST, 4 for 32x32 CIFAR-10, else H // 8;
  zero padding), a shift of up to that many pixels;
- ``flip``: RandomHorizontalFlip(p=0.5);
- ``erase``: RandomErasing(p=0.25, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0), torchvision's rectangle at a
  quarter of its default rate, since these images are small.
They run in that order (whatever the order given), in one Compose seeded from ``--seed`` (a stream of its own,
apart from the shuffling's); its generator's state is in every checkpoint.

On ``--resume`` the checkpoint's ``--augment`` is used unless the option is given again (then the command
line's wins, said in one line, and the augmentation continues from the checkpoint's random state), as for the
loss and the other settings (train_loss.py, train_extras.py).
"""
import numpy

from ..data.transforms import Compose, RandomCrop, RandomErasing, RandomHorizontalFlip
from ..train.checkpoint import read_training_meta

__all__ = ["add_augment", "check_augment", "adopt_augment", "make_transform", "AUGMENTATIONS", "crop_padding"]

AUGMENTATIONS = ("crop", "flip", "erase")

#: image side -> RandomCrop's padding
CROP_PADDING = {28: 2, 32: 4}

#: RandomErasing's probability in --augment erase
ERASE_P = 0.25


def add_augment(p):
    p.add_argument("--augment", default="none", metavar="LIST",
                   help="augment every training batch: a comma-separated list of crop (random shifts: padding 2 "
                        "for 28x28, 4 for 32x32), flip (horizontal, p=0.5), erase (RandomErasing, p=0.25), or none")


def check_augment(p, args):
    """argparse error (``p.error``) for an unknown name; ``args.augment`` becomes the names in canonical order."""
    names = [name.strip() for name in str(args.augment).split(",") if name.strip()]
    if names == ["none"] or not names:
        args.augment = "none"
        return
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        p.error(f"--augment: unknown {', '.join(map(repr, unknown))}; give a comma-separated list of "
                f"{', '.join(AUGMENTATIONS)}, or none")
    args.augment = ",".join(name for name in AUGMENTATIONS if name in names)


def crop_padding(side):
    return CROP_PADDING.get(side, max(side // 8, 1))


def make_transform(augment, image_shape, seed):
    """The Compose of ``augment`` ('crop,flip', ...) for images of ``image_shape`` (C, H, W), or None for 'none'."""
    if augment == "none":
        return None
    _, height, width = image_shape
    built = {"crop": lambda: RandomCrop((height, width), padding=crop_padding(min(height, width))),
             "flip": lambda: RandomHorizontalFlip(0.5),
             "erase": lambda: RandomErasing(p=ERASE_P)}
    rng = numpy.random.default_rng(numpy.random.SeedSequence(seed, spawn_key=(1,)))  # apart from the shuffling
    return Compose([built[name]() for name in augment.split(",")], seed=rng)


def adopt_augment(args, checkpoint):
    """On ``--resume``: the checkpoint's ``--augment`` unless the option was given (each case said in one line)."""
    try:
        held = (read_training_meta(checkpoint).get("info") or {}).get("augment")
    except (OSError, ValueError):
        return  # a missing or unreadable checkpoint is resume_plan's to report
    if held is None or held == args.augment:
        return
    if "augment" in args.explicit:
        print(f"--augment: the command line's {args.augment} wins over the checkpoint's {held}")
    else:
        print(f"--augment: the checkpoint's {held} is used (give --augment to override it)")
        args.augment = held
