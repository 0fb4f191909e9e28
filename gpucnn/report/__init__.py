"""The run report: one self-contained HTML page about a training run (``runs/<name>/report.html``).

    html = render(history, info, model, x_test, y_test, probs)   # the page, as a string
    write(path, html)                                            # atomically

Sections, in order (gpucnn/report/sections.py): the recipe and environment; loss, accuracy and
learning-rate curves (inline SVG, gpucnn/report/charts.py; the learning rate of every step too
when the history holds it, as 'step_lr'); the confusion matrix and per-class
accuracy; the most confidently wrong test images; the first convolution's filters; one test image's
feature maps after each convolution; the measured throughput. Raster figures are assembled with
NumPy (gpucnn/report/figures.py) and embedded as PNG data: URIs written by our own encoder
(gpucnn/report/png.py), so the page needs no plotting library and fetches nothing.

``gpucnn train`` writes it at the end of a run; ``gpucnn report RUN_DIR`` rebuilds it from the run's
files (gpucnn/commands/report.py).
"""
import os
import platform
import subprocess

import numpy

from .. import __version__
from ..backend import asnumpy, cupy_or_none, device_scope, get_array_module
from ..io.arrays import write_file
from . import analysis, sections
from .figures import as_pictures
from .html import page

__all__ = ["render", "write", "environment", "SECTIONS"]

SECTIONS = sections.SECTIONS


def render(history, info, model, x_test, y_test, probs, wrong_count=24, feature_index=0):
    """The report's HTML for a run.

    Args:
        history: fit's history (metrics.json). info: {'title', 'dataset', 'command', 'options', 'environment',
            'results', 'batch_size', 'training_step', 'subtitle'} (all optional but 'dataset').
        model: the trained network (filters, feature maps). x_test, y_test: the test set (NumPy or CuPy).
        probs: (N, classes) test-set probabilities from ``model`` (``analysis.probabilities``).
    """
    probs = numpy.asarray(probs, numpy.float64)
    labels = asnumpy(y_test).astype(numpy.int64)
    if probs.shape[0] != len(labels):
        raise ValueError(f"render: {probs.shape[0]} rows of probabilities for {len(labels)} test labels")
    names = analysis.class_names(info.get("dataset"), probs.shape[1])
    matrix = analysis.confusion_matrix(labels, probs.argmax(axis=1), probs.shape[1])
    wrong = analysis.confidently_wrong(probs, labels, wrong_count)
    feature_index = min(feature_index, len(labels) - 1)
    image = _rows(x_test, [feature_index])[0]
    parts = [sections.recipe(info), sections.curves(history), sections.confusion(matrix, names),
             sections.wrong(as_pictures(_rows(x_test, wrong)) if len(wrong) else None, wrong, probs, labels, names),
             sections.filters(analysis.convolutions(model)),
             sections.features(analysis.feature_maps(model, image), as_pictures(image[None])[0], feature_index,
                               labels[feature_index], names),
             sections.throughput(history, info.get("batch_size"), info.get("training_step"))]
    return page(info.get("title", "gpucnn run"), info.get("subtitle", ""), parts)


def _rows(x, indices):
    """x[indices] as a NumPy array, whichever device x is on."""
    xp = get_array_module(x)
    with device_scope(x):
        return asnumpy(x[xp.asarray(numpy.asarray(indices, numpy.int64))])


def write(path, text):
    """Write ``text`` to ``path`` atomically (gpucnn.io.arrays.write_file)."""
    return write_file(path, text.encode("utf-8"))


def environment(device):
    """{what: version or description} of where a run ran: device, gpucnn, Python, NumPy, CuPy, git commit."""
    env = {"device": device}
    cupy = cupy_or_none()
    if device != "cpu" and cupy is not None:
        try:
            name = cupy.cuda.runtime.getDeviceProperties(int(device.split(":")[1]))["name"]
            env["gpu"] = name.decode() if isinstance(name, bytes) else name
        except Exception:  # noqa: BLE001 (a report about a run never fails on a description)
            pass
    env.update({"gpucnn": __version__, "git commit": git_commit(), "python": platform.python_version(),
                "numpy": numpy.__version__, "cupy": getattr(cupy, "__version__", None),
                "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus, {platform.system()}"})
    return env


def git_commit():
    """``git describe --always --dirty`` of the checkout gpucnn runs from, or None (an installed package)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        done = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty", "--abbrev=12"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
