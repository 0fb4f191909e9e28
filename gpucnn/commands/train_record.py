"""What ``gpucnn train`` writes and prints about a run: the per-epoch table, metrics.csv and
metrics.json, curves.png, and fit's notes (the one naming the training step goes to summary.json)."""
import csv
import json
import os

__all__ = ["write_metrics", "plot_curves", "print_row", "Notes"]


def write_metrics(out, history):
    """metrics.csv (one row per epoch, the columns that have values) and metrics.json (the whole history)."""
    keys = [k for k in history if history[k]]
    with open(os.path.join(out, "metrics.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        writer.writerows(zip(*(history[k] for k in keys)))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(history, f, indent=1)


def plot_curves(out, history):
    """curves.png: loss and accuracy per epoch; skipped (with a note) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = history["epoch"]
    ax_loss.plot(epochs, history["loss"], "o-", label="train")
    ax_acc.plot(epochs, [100 * a for a in history["accuracy"]], "o-", label="train")
    if history["val_loss"]:
        ax_loss.plot(epochs, history["val_loss"], "s-", label="test")
        ax_acc.plot(epochs, [100 * a for a in history["val_accuracy"]], "s-", label="test")
    for ax, label in ((ax_loss, "cross-entropy"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_row(history):
    """The table's row of the last epoch in ``history`` (and the header before the first)."""
    i = len(history["epoch"]) - 1
    if i == 0:
        print(f"{'epoch':>5} {'loss':>8} {'acc %':>7} {'test loss':>9} {'test acc %':>10} {'lr':>9} "
              f"{'seconds':>8} {'img/s':>8}")
    val_loss = f"{history['val_loss'][i]:9.4f}" if history["val_loss"] else f"{'-':>9}"
    val_acc = f"{100 * history['val_accuracy'][i]:10.2f}" if history["val_accuracy"] else f"{'-':>10}"
    print(f"{history['epoch'][i]:5d} {history['loss'][i]:8.4f} {100 * history['accuracy'][i]:7.2f} {val_loss} "
          f"{val_acc} {history['lr'][i]:9.2e} {history['seconds'][i]:8.1f} {history['images_per_second'][i]:8.0f}",
          flush=True)


class Notes:
    """fit's notes, printed as they come; keeps the one saying which training step ran (for summary.json)."""

    def __init__(self, stream):
        self.stream, self.step = stream, None

    def write(self, text):
        if text.startswith("training step: "):
            self.step = text[len("training step: "):].strip()
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()
