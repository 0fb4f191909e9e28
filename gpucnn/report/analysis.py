"""What the report computes from a model and the test set: probabilities, the confusion matrix, the most
confidently wrong images, the convolutions and one image's feature maps after each of them."""
import numpy

from ..backend import asnumpy
from ..config import config
from ..nn.functional import softmax
from ..nn.layers.conv import Conv2D
from ..nn.network import Network

__all__ = ["CLASS_NAMES", "class_names", "probabilities", "confusion_matrix", "confidently_wrong", "convolutions",
           "describe", "feature_maps"]

#: --dataset name -> its classes, in label order
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "mnist": tuple(str(d) for d in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def class_names(dataset, count):
    """The names of ``count`` classes of ``dataset`` (its own names when known, else '0', '1', ...)."""
    names = CLASS_NAMES.get(dataset)
    return list(names) if names is not None and len(names) == count else [str(k) for k in range(count)]


def probabilities(model, x, batch_size=500):
    """softmax(model(x)) as a float32 NumPy array (N, classes), in eval mode, batch by batch."""
    out = [asnumpy(softmax(model.predict(x[i:i + batch_size], batch_size=batch_size))).astype(numpy.float32)
           for i in range(0, len(x), batch_size)]
    return numpy.concatenate(out)


def confusion_matrix(labels, predicted, count):
    """(count, count) int64: row = true class, column = predicted class."""
    labels, predicted = numpy.asarray(labels, numpy.int64), numpy.asarray(predicted, numpy.int64)
    return numpy.bincount(labels * count + predicted, minlength=count * count).reshape(count, count)


def confidently_wrong(probs, labels, count=24):
    """Indices of the misclassified samples, most confident first (at most ``count``)."""
    predicted = probs.argmax(axis=1)
    wrong = numpy.flatnonzero(predicted != numpy.asarray(labels))
    confidence = probs[wrong, predicted[wrong]]
    return wrong[numpy.argsort(-confidence, kind="stable")[:count]]


def convolutions(model):
    """[(dotted name, Conv2D layer)] of every convolution, in the order the model holds them."""
    found, seen = [], set()
    for key in model.named_state():
        owner, name = model, key
        while isinstance(owner, Network):
            owner, name = owner.locate(name)
        if isinstance(owner, Conv2D) and id(owner) not in seen:
            seen.add(id(owner))
            found.append((key.rpartition(".")[0] or key, owner))
    return found


def feature_maps(model, image):
    """[(dotted name, ``describe(layer)``, maps (C, H, W) float NumPy)] for one ``image`` (C, H, W): each
    convolution's output.

    Runs the readable path (config.path 'reference', restored after), where every layer's forward is called,
    with each Conv2D's forward wrapped for the one call to keep its output."""
    convs = convolutions(model)
    captured = {}

    def keeping(layer, forward):
        def forward_and_keep(x):
            y = forward(x)
            captured[id(layer)] = asnumpy(y[0]).astype(numpy.float64)
            return y
        return forward_and_keep

    previous = config.path
    config.path = "reference"
    try:
        for _, layer in convs:
            layer.forward = keeping(layer, layer.forward)
        model.predict(numpy.asarray(image)[None], batch_size=1)
    finally:
        for _, layer in convs:
            vars(layer).pop("forward", None)
        config.path = previous
    return [(name, describe(layer), captured[id(layer)]) for name, layer in convs if id(layer) in captured]


def describe(conv):
    """'Conv2D 1→32, 3×3, stride 1, padding 1' (dilation and groups when not 1): what a convolution does."""
    w = conv.window
    if not hasattr(w, "pt"):  # padding='same' above stride 1: resolved per input size (gpucnn.ops.geometry)
        padding = "'same'"
    elif len({w.pt, w.pb, w.pl, w.pr}) == 1:
        padding = str(w.pt)
    else:
        padding = f"({w.pt}, {w.pb}, {w.pl}, {w.pr})"
    stride = str(w.sy) if w.sy == w.sx else f"({w.sy}, {w.sx})"
    text = f"Conv2D {conv.in_channels}\u2192{conv.out_channels}, {w.kh}\u00d7{w.kw}, stride {stride}, padding {padding}"
    if (w.dy, w.dx) != (1, 1):
        text += f", dilation ({w.dy}, {w.dx})"
    return text + (f", groups {conv.groups}" if conv.groups != 1 else "")
