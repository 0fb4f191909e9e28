"""``gpucnn train --label-smoothing EPS --class-weights balanced``: the run's loss, said at the start and recorded
(the checkpoint's info and summary.json), and the same loss again on ``--resume``.

On ``--resume`` the checkpoint's settings are used unless the option is given on the command line (then the
command line's wins, said in one line), as for the optimizer's settings (train_resume.py); balanced weights
come back as the checkpoint recorded them.
"""
from .. import backend
from ..data import cifar
from ..nn.losses import SoftmaxCrossEntropy, balanced_class_weights
from ..train.checkpoint import read_training_meta

__all__ = ["make_loss", "CLASSES", "LOSS_OPTIONS"]

#: --dataset name -> its number of classes (the models of gpucnn train are built with 10 outputs)
CLASSES = {"fashion-mnist": 10, "mnist": 10, cifar.NAME: cifar.NUM_CLASSES}

#: the loss settings a checkpoint records -> their command-line option
LOSS_OPTIONS = {"label_smoothing": "--label-smoothing", "class_weights": "--class-weights"}


def make_loss(args, checkpoint, y_train):
    """(SoftmaxCrossEntropy of this run, its settings as recorded: label_smoothing, class_weights, weight).

    ``checkpoint``: the checkpoint being resumed (its recorded loss settings win over the defaults), or None.
    """
    held = (read_training_meta(checkpoint).get("info") or {}).get("loss") if checkpoint else None
    settings = {key: getattr(args, key) for key in LOSS_OPTIONS}
    weight = None
    if held:
        for key, flag in LOSS_OPTIONS.items():
            if key not in held or held[key] == settings[key]:
                continue
            if key in args.explicit:
                print(f"{flag}: the command line's {settings[key]} wins over the checkpoint's {held[key]}")
            else:
                print(f"{flag}: the checkpoint's {held[key]} is used (give {flag} to override it)")
                settings[key] = held[key]
        if settings["class_weights"] == held.get("class_weights") and "class_weights" not in args.explicit:
            weight = held.get("weight")
    if settings["class_weights"] == "balanced" and weight is None:
        labels = backend.asnumpy(y_train)
        classes = CLASSES.get(args.dataset, int(labels.max()) + 1)
        weight = balanced_class_weights(labels, classes).tolist()
    settings["weight"] = weight if settings["class_weights"] == "balanced" else None
    loss_fn = SoftmaxCrossEntropy(weight=settings["weight"], label_smoothing=settings["label_smoothing"])
    said = ([f"label smoothing {settings['label_smoothing']:g}"] if settings["label_smoothing"] else []) + (
        ["class weights balanced (n_samples / (n_classes * count_c) of the training labels): "
         + " ".join(f"{w:.4g}" for w in settings["weight"])] if settings["weight"] is not None else [])
    if said:
        print("loss: softmax cross-entropy, " + ", ".join(said), flush=True)
    return loss_fn, settings
