"""The options of ``gpucnn train``: its parser, and the optimizer and schedule they ask for."""
import argparse
import os
import shlex
import sys

from ..config import PATHS
from ..nn.models import MODELS
from ..optim import optimizers as optim
from .recipes import RECIPES, expand_recipe
from .train_data import DATASETS
from .train_augment import add_augment, check_augment
from .train_extras import SCHEDULES, add_extras, check_extras, optimizer_params, schedule_of

#: what ``gpucnn train --help`` prints above the options
USAGE = 'Train the reference CNN (the Keras tutorial\'s Fashion-MNIST classifier) and record the run.\n\n    gpucnn train                       # 10 epochs of Adam, lr 1e-3, batch 128, device auto\n    gpucnn train --device cuda --epochs 20 --out runs/gpu\n    gpucnn train --resume              # continue runs/fashion_cnn/checkpoint.npz exactly\n    gpucnn train --dataset cifar10 --model resnet20   # ResNet-20 on CIFAR-10 (binary version), built for 3x32x32\n    mpirun -np 2 gpucnn train --distributed   # data-parallel over 2 processes (one GPU each, or the CPU)\n\nWrites to --out: metrics.csv, metrics.json, curves.png (when matplotlib is installed),\nmodel.npz (the final weights), checkpoint.npz (updated after every epoch and on Ctrl-C), and\nreport.html with predictions.npz (the run report, also on Ctrl-C; gpucnn report RUN_DIR rebuilds it).\nWhile a run writes there, --out holds its lock (.gpucnn-train.lock, gpucnn/commands/run_lock.py):\na second run into the same directory is refused, naming the process that holds it; the lock of\na process that has ended is taken over. Under --distributed, rank 0 holds it.\nExpected failures (bad arguments, missing or damaged data, a bad checkpoint, a full disk,\nout of memory, an --out in use) end with one line, "error: ...", and exit status 2.\n'


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default in --help."""


def _betas(text):
    try:
        beta1, beta2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers like 0.9,0.999, got {text!r}") from None
    return beta1, beta2


def parser(prog):
    p = argparse.ArgumentParser(prog=prog, description=USAGE, formatter_class=_HelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="fashion_cnn", help="network to train")
    p.add_argument("--init-from", default=None, metavar="MODEL.onnx",
                   help="fine-tune the network and weights of an ONNX file (gpucnn.onnx.load) instead of --model; "
                        "the run is named after the file (runs/<its name>)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist", help="data set")
    p.add_argument("--data-dir", default=None,
                   help="directory holding the data set: the four IDX files, or for cifar10 cifar-10-binary.tar.gz "
                        "or cifar-10-batches-bin/; when not given: $GPUCNN_DATA, the cache, the Debian package's "
                        "directory (Fashion-MNIST), then a download")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (the GPU when one is usable)")
    p.add_argument("--epochs", type=int, default=10, help="total epochs (a resumed run continues up to this)")
    p.add_argument("--batch-size", type=int, default=128, help="images per training step")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam", help="update rule")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="learning rate; on --resume the checkpoint's unless given here")
    p.add_argument("--betas", type=_betas, default=(0.9, 0.999),
                   help="Adam's beta1,beta2; on --resume the checkpoint's unless given here")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 (adam, sgd) or decoupled (adamw) weight decay; None means 0, or 0.01 for adamw")
    p.add_argument("--schedule", choices=SCHEDULES, default="none",
                   help="learning-rate schedule: step (x0.1 every third of the epochs), cosine (to 0), onecycle "
                        "(OneCycleLR, max_lr --lr, stepped per batch), warmup-cosine (linear warm-up over "
                        "--warmup-epochs, then cosine), plateau (halve after 2 epochs without a lower test loss); "
                        "see gpucnn/commands/train_extras.py")
    add_extras(p)  # --warmup-epochs, --clip-grad-norm, --ema, --no-decay-bn-bias (train_extras.py)
    add_augment(p)  # --augment crop,flip,erase (train_augment.py)
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the shuffling")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (quick runs)")
    p.add_argument("--stop-at", type=float, default=None, metavar="ACCURACY",
                   help="stop after the first epoch whose test accuracy reaches ACCURACY (a fraction, e.g. 0.91): "
                        "time to accuracy")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="mix the one-hot targets toward the uniform distribution by this much, in [0, 1] (PyTorch's "
                        "label_smoothing); on --resume the checkpoint's unless given here")
    p.add_argument("--class-weights", choices=["none", "balanced"], default="none",
                   help="weigh each class in the loss; balanced: n_samples / (n_classes * count_c) of the training "
                        "labels (scikit-learn's 'balanced'), for imbalanced data; on --resume the checkpoint's unless "
                        "given here")
    p.add_argument("--out", default=None, help="output directory; None means runs/<model>")
    p.add_argument("--checkpoint", default=None, help="checkpoint path; None means <out>/checkpoint.npz")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint, which must exist")
    p.add_argument("--resume-or-start", action="store_true",
                   help="continue from the checkpoint when it exists, else start a new run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true",
                   help="no report.html (and no predictions.npz) at the end of the run "
                        "(gpucnn report RUN_DIR builds it later)")
    p.add_argument("--path", choices=PATHS, default=None,
                   help="CPU path: fast (the default) or reference, the readable per-layer ops (gpucnn.config.path)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of an MPI job (start with mpirun -np N); "
                        "--batch-size is the global batch, shared among them")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="a named recipe: the plain options it expands to (gpucnn/commands/recipes.py) come first, "
                        "and are printed at the start; options given here win over them")
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=None,
                   help="run each training step as one captured CUDA graph on the fused kernels (CUDA only). "
                        "Default on CUDA: the graph where the model, loss and optimizer allow it, its first step "
                        "verified against the eager step (which takes over on a mismatch); --no-graph: the eager "
                        "step")
    return p


def parse_args(argv=None, prog=None):
    given = sys.argv[1:] if argv is None else list(argv)
    argv, recipe = expand_recipe(given, prog)  # --recipe NAME: its options first, so the given ones win
    p = parser(prog)
    args = p.parse_args(argv)
    args.recipe = recipe
    # the command line, as the run directory's lock records it for a run that is refused
    args.command = " ".join([prog or p.prog] + [shlex.quote(a) for a in given])
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.lr > 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    for name in ("seed", "momentum"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.weight_decay is not None and not args.weight_decay >= 0:
        p.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be >= 1 (the number of training images), got {args.limit}")
    if args.stop_at is not None and not 0 < args.stop_at <= 1:
        p.error(f"--stop-at must be a test accuracy in (0, 1], got {args.stop_at}")
    if not 0 <= args.label_smoothing <= 1:
        p.error(f"--label-smoothing must lie in [0, 1], got {args.label_smoothing}")
    if not all(0 <= b < 1 for b in args.betas):
        p.error(f"--betas must lie in [0, 1), got {args.betas}")
    check_extras(p, args)
    check_augment(p, args)
    if args.resume and args.resume_or_start:
        p.error("give --resume or --resume-or-start, not both")
    # Which options were given on the command line: they win over a resumed checkpoint's settings.
    quiet = parser(prog)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    args.explicit = set(vars(quiet.parse_args(argv)))
    if args.init_from:
        if "model" in args.explicit:
            p.error("give --model or --init-from, not both")
        args.model = os.path.splitext(os.path.basename(args.init_from))[0]  # the run's name (runs/<it>)
    return args


def make_optimizer(args, params):
    weight_decay = (1e-2 if args.optimizer == "adamw" else 0.0) if args.weight_decay is None else args.weight_decay
    params = optimizer_params(args, params, weight_decay)  # --no-decay-bn-bias: two groups
    if args.optimizer == "adam":
        return optim.Adam(params, lr=args.lr, betas=args.betas, weight_decay=weight_decay)
    if args.optimizer == "adamw":
        return optim.AdamW(params, lr=args.lr, betas=args.betas, weight_decay=weight_decay)
    return optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=weight_decay)


def make_schedule(args, optimizer, steps_per_epoch=None):
    """The schedule of --schedule (``steps_per_epoch``: for onecycle, which steps per batch)."""
    extra = schedule_of(args, optimizer, steps_per_epoch)
    if extra is not None:
        return extra
    if args.schedule == "step":
        return optim.StepLR(optimizer, step_size=max(args.epochs // 3, 1), gamma=0.1)
    if args.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=args.epochs)
    return None
