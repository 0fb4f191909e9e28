"""``gpucnn train --resume``: the checkpoint's terms checked against this run's, and which optimizer
settings win (the command line's where given, else the checkpoint's), each said in one line."""
import os

from ..train.checkpoint import read_training_meta
from .errors import CommandError

__all__ = ["resume_plan", "OPTIMIZER_SETTINGS"]

# command-line option -> the optimizer setting a checkpoint also holds
OPTIMIZER_SETTINGS = {"lr": "lr", "betas": "betas", "momentum": "momentum", "weight_decay": "weight_decay"}


def resume_plan(args, checkpoint, optimizer, schedule, num_samples):
    """(resume?, optimizer settings kept from the command line, {'history': what is done so far})."""
    if not (args.resume or args.resume_or_start):
        return False, (), {"history": None}
    if not os.path.exists(checkpoint):
        if args.resume:
            raise CommandError(f"--resume: there is no checkpoint at {checkpoint}; give --resume-or-start to "
                               f"start a new run when there is none")
        print(f"no checkpoint at {checkpoint}: starting a new run")
        return False, (), {"history": None}
    meta = read_training_meta(checkpoint)
    info = meta.get("info") or {}
    terms = [("--dataset", info, "dataset", args.dataset), ("--limit", info, "limit", args.limit),
             ("--batch-size", meta, "batch_size", args.batch_size), ("data-set size", meta, "num_samples", num_samples)]
    for what, held, key, ours in terms:
        if key in held and held[key] != ours:
            raise CommandError(f"{checkpoint}: was written with {what} {_shown(held[key])}, this run has "
                               f"{what} {_shown(ours)}; refusing to resume on other terms")
    print(f"resuming from epoch {meta['epoch'] + 1}, step {meta['step']} of {checkpoint}")
    keep = []
    held = dict(meta["optimizer"].get("hyper") or {}, lr=meta["optimizer"].get("lr"))
    if isinstance(meta.get("scheduler"), dict) and schedule is not None:  # the schedule's base, which --lr sets
        held["lr"] = (meta["scheduler"].get("max_lrs") or [meta["scheduler"].get("base_lr", held["lr"])])[0]
    for option, setting in OPTIMIZER_SETTINGS.items():
        if setting not in held or not hasattr(optimizer, setting):
            continue
        ours = getattr(optimizer, setting)
        if setting == "lr" and schedule is not None:  # OneCycleLR's max_lr, else the schedule's base
            ours = (getattr(schedule, "max_lrs", None) or [getattr(schedule, "base_lr", ours)])[0]
        ours = list(ours) if isinstance(ours, tuple) else ours
        flag = "--" + option.replace("_", "-")
        if option in args.explicit:
            keep.append(setting)
            if held[setting] != ours:
                print(f"{flag}: the command line's {_shown(ours)} wins over the checkpoint's {_shown(held[setting])}")
        elif held[setting] != ours:
            print(f"{flag}: the checkpoint's {_shown(held[setting])} is used (give {flag} to override it)")
    return True, tuple(keep), {"history": meta.get("history")}


def _shown(value):
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
