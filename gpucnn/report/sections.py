"""The sections of the run report, each a function returning HTML (see gpucnn/report/__init__.py for the order).

Section ids: recipe, curves, confusion, wrong, filters, features, throughput.
"""
import numpy

from ..backend import asnumpy
from . import analysis, figures
from .charts import line_chart
from .html import escape, image, key_values, section, table

__all__ = ["SECTIONS", "STEP_LR_KEYS", "recipe", "curves", "confusion", "wrong", "filters", "features", "throughput"]

#: (id, heading) of every section, in the page's order
SECTIONS = (("recipe", "Recipe and environment"), ("curves", "Loss, accuracy and learning rate"),
            ("confusion", "Confusion matrix and per-class accuracy"), ("wrong", "Most confidently wrong test images"),
            ("filters", "First convolution's filters"), ("features", "Feature maps of one test image"),
            ("throughput", "Throughput"))
_HEADINGS = dict(SECTIONS)
#: where a history may hold the learning rate of every step (a per-step schedule), drawn when present
STEP_LR_KEYS = ("step_lr", "lr_per_step", "lr_steps")


def _percent(x):
    return f"{100 * x:.2f}%"


def _layer_name(name):
    """'layer 0' for a Sequential's index, the dotted name ('layer1.0.conv1') of a Model's layer."""
    return f"layer {name}" if name.isdigit() else name


def recipe(info):
    """The command line and every option, the environment, and the results."""
    def part(heading, pairs):
        pairs = [(k, v) for k, v in pairs if v is not None]
        return f"<h3>{heading}</h3>" + key_values(pairs) if pairs else ""

    options = [(f"--{k.replace('_', '-')}", v) for k, v in sorted(info.get("options", {}).items())]
    body = (key_values([("command", info.get("command")), ("recipe", info.get("recipe"))])
            + f'<div class="charts"><div>{part("Options", options)}</div>'
            + f'<div>{part("Environment", info.get("environment", {}).items())}'
            + f'{part("Result", info.get("results", {}).items())}</div></div>')
    return section("recipe", _HEADINGS["recipe"], body)


def curves(history):
    """Loss and accuracy per epoch (train and test), and the learning rate (per epoch; per step when recorded)."""
    epochs = history.get("epoch", [])
    loss = [("train", epochs, history.get("loss", []))]
    acc = [("train", epochs, [100 * a for a in history.get("accuracy", [])])]
    if history.get("val_loss"):
        loss.append(("test", epochs, history["val_loss"]))
        acc.append(("test", epochs, [100 * a for a in history["val_accuracy"]]))
    lr = history.get("lr", [])
    spread = bool(lr) and min(lr) > 0 and max(lr) / min(lr) > 10
    charts = [line_chart(loss, "Loss", "epoch", "cross-entropy"), line_chart(acc, "Accuracy", "epoch", "accuracy (%)"),
              line_chart([("lr", epochs, lr)], "Learning rate (per epoch)", "epoch", "learning rate", log=spread)]
    steps = next((history[k] for k in STEP_LR_KEYS if history.get(k)), [])
    if steps:
        charts.append(line_chart([("lr", numpy.arange(1, len(steps) + 1), steps)], "Learning rate (per step)",
                                 "step", "learning rate", log=min(steps) > 0 and max(steps) / min(steps) > 10,
                                 markers=False))
    note = ('<p class="note">Train loss and accuracy are the means over each epoch\'s steps (the weights change '
            'during the epoch); test ones are measured after the epoch. The learning rate per epoch is the '
            'optimizer\'s at the epoch\'s last step.</p>')
    return section("curves", _HEADINGS["curves"], f'<div class="charts">{"".join(charts)}</div>{note}')


def confusion(matrix, names):
    """The confusion matrix (rows: true class, columns: predicted), shaded by row share, and per-class accuracy."""
    matrix = numpy.asarray(matrix)
    total = int(matrix.sum())
    rows_sum = matrix.sum(axis=1)
    share = matrix / numpy.maximum(rows_sum, 1)[:, None]
    diagonal = numpy.eye(len(names), dtype=bool)
    alpha = numpy.where(diagonal, share, numpy.minimum(1.0, 4 * share))
    head = '<tr><th></th>' + "".join(f'<th class="col">{escape(n)}</th>' for n in names) + "</tr>"
    body = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            colour = "78,121,167" if i == j else "225,87,89"
            ink = "#fff" if alpha[i, j] > 0.55 else "#222"
            cells.append(f'<td class="cm" data-true="{i}" data-predicted="{j}" data-count="{matrix[i, j]}" '
                         f'style="background:rgba({colour},{alpha[i, j]:.3f});color:{ink}" '
                         f'title="true {escape(name)}, predicted {escape(names[j])}">{matrix[i, j]}</td>')
        body.append(f'<tr><th>{escape(name)}</th>{"".join(cells)}</tr>')
    grid = f'<table class="confusion" data-total="{total}">{head}{"".join(body)}</table>'
    accuracy = numpy.diag(matrix) / numpy.maximum(rows_sum, 1)
    per_class = table(["class", "test images", "right", "accuracy", ""],
                      [(escape(n), int(rows_sum[k]), int(matrix[k, k]), _percent(accuracy[k]),
                        f'<span class="bar" style="width:{120 * accuracy[k]:.0f}px"></span>')
                       for k, n in enumerate(names)], css="numbers perclass")
    overall = numpy.trace(matrix) / max(total, 1)
    note = (f'<p class="note">{total} test images, {_percent(overall)} right. Rows are the true class, columns the '
            'predicted one; the diagonal is shaded blue by the share of its row, the mistakes red (four times '
            'stronger, so that small ones show).</p>')
    return section("confusion", _HEADINGS["confusion"],
                   f'<div class="charts"><div>{grid}</div><div>{per_class}</div></div>{note}')


def wrong(pictures, indices, probs, labels, names, scale=3):
    """The misclassified test images the model was surest of: predicted class and confidence, true class."""
    if len(indices) == 0:
        return section("wrong", _HEADINGS["wrong"], '<p class="note">No test image is misclassified.</p>')
    big = figures.upscale(pictures, scale)
    predicted = probs[indices].argmax(axis=1)
    items = []
    for k, (i, p) in enumerate(zip(indices, predicted)):
        items.append(f'<figure class="wrong">{image(big[k], f"test image {i}")}<figcaption><b>{escape(names[p])}</b> '
                     f'{100 * probs[i, p]:.1f}%<br>true: {escape(names[labels[i]])} '
                     f'({100 * probs[i, labels[i]]:.1f}%)<br><span class="note">#{i}</span></figcaption></figure>')
    note = ('<p class="note">Each image: the predicted class in red with the model\'s probability for it, the true '
            'class with its probability, and the index of the image in the test set.</p>')
    return section("wrong", _HEADINGS["wrong"], f'<div class="gallery">{"".join(items)}</div>{note}')


def filters(convs):
    """The first convolution's weights, one tile per output channel."""
    if not convs:
        return section("filters", _HEADINGS["filters"], '<p class="note">The model has no convolution.</p>')
    name, layer = convs[0]
    weight = asnumpy(layer.weight.data)
    out_c, in_c, kh, kw = weight.shape
    how = ("as colours (the three input channels as red, green, blue), stretched to the filter's range"
           if in_c == 3 else "blue negative, white zero, red positive, each filter scaled to its largest |w|"
           + ("" if in_c == 1 else f"; the mean over its {in_c} input channels"))
    body = (f'<p><b>{escape(_layer_name(name))}</b> {escape(analysis.describe(layer))}: {out_c} filters of '
            f'{in_c}&times;{kh}&times;{kw}, {how}.</p>'
            + image(figures.filter_grid(weight), f"{name} filters"))
    return section("filters", _HEADINGS["filters"], body)


def features(maps, picture, index, label, names, limit=16):
    """One test image, and after each convolution the first ``limit`` of its channels."""
    if not maps:
        return section("features", _HEADINGS["features"], '<p class="note">The model has no convolution.</p>')
    shown = figures.upscale(picture[None], 4)[0]
    parts = [f'<p>Test image #{index} (true class {escape(names[label])}); each map stretched to its own range '
             f'(dark low, yellow high), before the activation that follows the convolution.</p>',
             image(shown, f"test image {index}")]
    for name, layer, m in maps:
        channels = m.shape[0]
        what = f"{channels} channels" if channels <= limit else f"the first {limit} of {channels} channels"
        parts.append(f'<figure class="maps"><figcaption><b>{escape(_layer_name(name))}</b> {escape(layer)}: {what}, '
                     f'{m.shape[1]}&times;{m.shape[2]}</figcaption>'
                     f'{image(figures.feature_grid(m[:limit]), f"{name} feature maps")}</figure>')
    return section("features", _HEADINGS["features"], "".join(parts))


def throughput(history, batch_size, step=None):
    """Training images per second per epoch, seconds per epoch and the mean time of a step."""
    epochs, rate, seconds = history.get("epoch", []), history.get("images_per_second", []), history.get("seconds", [])
    chart = line_chart([("train", epochs, rate)], "Training throughput", "epoch", "images / s", from_zero=True)
    rows = [(e, f"{s:.1f}", f"{r:,.0f}", f"{1000 * batch_size / r:.1f}" if batch_size and r > 0 else "-")
            for e, s, r in zip(epochs, seconds, rate)]
    numbers = table(["epoch", "seconds", "images / s", f"ms / step ({batch_size} images)"], rows)
    median = f"median {numpy.median(rate):,.0f} images/s over {len(rate)} epochs" if rate else "no epoch recorded"
    note = (f'<p class="note">{median}{"; training step: " + escape(step) if step else ""}. The step time is '
            'the batch size over the measured images per second.</p>')
    body = f'<div class="charts">{chart}<div>{numbers}</div></div>{note}'
    return section("throughput", _HEADINGS["throughput"], body)
