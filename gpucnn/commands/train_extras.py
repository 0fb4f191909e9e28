"""``gpucnn train``'s schedule and optimizer extras: ``--schedule onecycle|warmup-cosine|plateau``,
``--warmup-epochs``, ``--clip-grad-norm``, ``--ema DECAY`` and ``--no-decay-bn-bias``.

What each builds (gpucnn.optim):
- ``onecycle``: OneCycleLR with max_lr = ``--lr`` over every step of ``--epochs`` (stepped per batch; Adam's
  beta1 or SGD's momentum cycled between 0.95 and 0.85);
- ``warmup-cosine``: SequentialLR of LinearWarmup over ``--warmup-epochs`` epochs, then a cosine to 0 over the
  rest (per epoch);
- ``plateau``: ReduceLROnPlateau(factor 0.5, patience 2) on the test-set loss after each epoch;
- ``--no-decay-bn-bias``: two parameter groups, weight decay on the weights only (param_groups_no_decay);
- ``--clip-grad-norm MAX``: clip_grad_norm_ before every optimizer step;
- ``--ema DECAY``: EMA of the weights, updated after every step; the validation, the final test, model.npz
  and the report use the averaged weights.

They are recorded in the checkpoint's info ('extras'); ``--resume`` uses the checkpoint's unless the option
is given again (then the command line's wins), each said in one line, as for the loss (train_loss.py).
"""
import math

from .. import optim
from ..train.checkpoint import read_training_meta

__all__ = ["add_extras", "check_extras", "adopt_extras", "extras_info", "make_ema", "schedule_of", "optimizer_params",
           "steps_per_epoch", "SCHEDULES", "EXTRAS"]

SCHEDULES = ["none", "step", "cosine", "onecycle", "warmup-cosine", "plateau"]

#: the settings a checkpoint records -> their command-line option
EXTRAS = {"schedule": "--schedule", "warmup_epochs": "--warmup-epochs", "clip_grad_norm": "--clip-grad-norm",
          "ema": "--ema", "no_decay_bn_bias": "--no-decay-bn-bias"}


def add_extras(p):
    """The options, on ``gpucnn train``'s parser (``--schedule`` itself stays where the parser has it)."""
    p.add_argument("--warmup-epochs", type=int, default=1,
                   help="--schedule warmup-cosine: epochs of linear warm-up before the cosine")
    p.add_argument("--clip-grad-norm", type=float, default=None, metavar="MAX",
                   help="clip the gradients' total 2-norm to MAX before every step (clip_grad_norm_)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999), updated every step; "
                        "validation, the final test and model.npz use it")
    p.add_argument("--no-decay-bn-bias", action="store_true",
                   help="weight decay on convolution and dense weights only, not on biases and BatchNorm")


def check_extras(p, args):
    """argparse errors (``p.error``) for bad values."""
    if args.warmup_epochs < 1:
        p.error(f"--warmup-epochs must be >= 1, got {args.warmup_epochs}")
    if args.schedule == "warmup-cosine" and args.warmup_epochs >= args.epochs:
        p.error(f"--warmup-epochs ({args.warmup_epochs}) must be fewer than --epochs ({args.epochs})")
    if args.clip_grad_norm is not None and not args.clip_grad_norm > 0:
        p.error(f"--clip-grad-norm must be > 0, got {args.clip_grad_norm}")
    if args.ema is not None and not 0 < args.ema < 1:
        p.error(f"--ema must lie in (0, 1), got {args.ema}")


def adopt_extras(args, checkpoint):
    """On ``--resume``: take the checkpoint's recorded extras for the options not given (before the optimizer
    and the schedule are built, since they decide its groups and its kind)."""
    try:
        held = (read_training_meta(checkpoint).get("info") or {}).get("extras")
    except (OSError, ValueError):
        return  # a missing or unreadable checkpoint is resume_plan's to report
    for key, flag in EXTRAS.items():
        if not held or key not in held or held[key] == getattr(args, key):
            continue
        if key in args.explicit:
            print(f"{flag}: the command line's {_shown(getattr(args, key))} wins over the checkpoint's "
                  f"{_shown(held[key])}")
        else:
            print(f"{flag}: the checkpoint's {_shown(held[key])} is used (give {flag} to override it)")
            setattr(args, key, held[key])


def extras_info(args):
    """What the checkpoint's info records (and summary.json)."""
    return {key: getattr(args, key) for key in EXTRAS}


def optimizer_params(args, params, weight_decay):
    """The optimizer's ``params``: the parameters, or with ``--no-decay-bn-bias`` the two groups."""
    return optim.param_groups_no_decay(params, weight_decay) if args.no_decay_bn_bias else params


def schedule_of(args, optimizer, steps_per_epoch):
    """The schedule of ``--schedule`` for the extras' kinds, or None for the others."""
    if args.schedule == "onecycle":
        return optim.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch)
    if args.schedule == "warmup-cosine":
        warmup = args.warmup_epochs
        return optim.SequentialLR(optimizer, [optim.LinearWarmup(optimizer, warmup),
                                              optim.CosineAnnealingLR(optimizer, T_max=args.epochs - warmup)],
                                  milestones=[warmup])
    if args.schedule == "plateau":
        return optim.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    return None


def make_ema(args, model):
    return optim.EMA(model, decay=args.ema) if args.ema is not None else None


def steps_per_epoch(num_samples, batch_size):
    return math.ceil(num_samples / batch_size)


def _shown(value):
    return "none" if value is None else str(value)
