"""report.html: written by every gpucnn train run, self-contained (every image embedded), every section there,
rebuilt by gpucnn report RUN_DIR; a report that fails is a warning, never a lost run."""
import base64
import html.parser
import json
import os
import shutil
import struct
import subprocess

import numpy
import pytest

import gpucnn.report
from gpucnn.commands import main as gpucnn_main
from gpucnn.commands import train as train_command
from gpucnn.data import load_fashion_mnist
from gpucnn.report import SECTIONS
from gpucnn.report.png import SIGNATURE
from support.png import read_png

from .test_train_and_bench import ROOT, tiny_fashion  # noqa: F401 (the fixture: 64 training, 32 test images)


class Page(html.parser.HTMLParser):
    """What the tests read from a report: images, references, sections, charts, the confusion matrix."""

    def __init__(self, text):
        super().__init__()
        self.images, self.references, self.tags, self.sections, self.svgs = [], [], [], [], 0
        self.cells, self.total, self.wrong, self.maps = [], None, 0, 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs)
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            if name in attrs and tag != "img":
                self.references.append((tag, name, attrs[name]))
        if tag == "section":
            self.sections.append(attrs["id"])
        self.svgs += tag == "svg"
        if tag == "table" and "confusion" in attrs.get("class", ""):
            self.total = int(attrs["data-total"])
        if tag == "td" and attrs.get("class") == "cm":
            self.cells.append((int(attrs["data-true"]), int(attrs["data-predicted"]), int(attrs["data-count"])))
        self.wrong += tag == "figure" and attrs.get("class") == "wrong"
        self.maps += tag == "figure" and attrs.get("class") == "maps"

    def confusion(self):
        k = 1 + max(i for i, _, _ in self.cells)
        matrix = numpy.zeros((k, k), numpy.int64)
        for i, j, n in self.cells:
            matrix[i, j] = n
        return matrix


@pytest.fixture
def trained(tiny_fashion, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    status = train_command.main(["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16",
                                 "--epochs", "2", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert f"wrote {out}/report.html" in printed.out
    return out


def test_the_report_is_self_contained_and_has_every_section(trained, tiny_fashion):  # noqa: F811
    text = (trained / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert "http:" not in text and "https:" not in text and "file:" not in text
    assert page.references == [] and "link" not in page.tags and "script" not in page.tags
    assert len(page.images) >= 3 + page.wrong  # filters, the image, a grid per convolution, the wrong ones
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        width, height, _, pixels = read_png(base64.b64decode(img["src"].split(",", 1)[1]))
        assert (width, height) == (int(img["width"]), int(img["height"]))
        assert pixels.max() > pixels.min()  # not an empty picture
    assert page.sections == [anchor for anchor, _ in SECTIONS]
    assert page.svgs >= 4  # loss, accuracy, learning rate, throughput
    assert page.maps == 2  # fashion_cnn's two convolutions

    (_, _), (_, y_test) = load_fashion_mnist(str(tiny_fashion))
    matrix = page.confusion()
    summary = json.loads((trained / "summary.json").read_text())
    assert matrix.shape == (10, 10) and matrix.sum() == page.total == len(y_test) == 32
    assert (matrix.sum(axis=1) == numpy.bincount(y_test, minlength=10)).all()  # rows: the true classes
    assert numpy.trace(matrix) == round(summary["test_accuracy"] * 32)  # the run's own measure
    assert page.wrong == min(24, 32 - numpy.trace(matrix))
    for name in ("T-shirt/top", "Ankle boot", "Sneaker"):
        assert name in text
    assert "--batch-size" in text and "numpy" in text and summary["numpy"] in text


def test_gpucnn_report_rebuilds_the_same_page(trained, tiny_fashion, capsys):  # noqa: F811
    written = (trained / "report.html").read_text(encoding="utf-8")
    assert gpucnn_main(["report", str(trained), "--out", str(trained / "again.html")]) == 0
    assert capsys.readouterr().out == f"wrote {trained / 'again.html'}\n"
    assert (trained / "again.html").read_text(encoding="utf-8") == written

    # without predictions.npz (a run of an earlier gpucnn): recomputed from model.npz, the same matrix
    os.remove(trained / "predictions.npz")
    assert gpucnn_main(["report", str(trained), "--data-dir", str(tiny_fashion)]) == 0
    rebuilt = Page((trained / "report.html").read_text(encoding="utf-8"))
    assert (rebuilt.confusion() == Page(written).confusion()).all()
    assert rebuilt.sections == [anchor for anchor, _ in SECTIONS]


def test_gpucnn_report_says_what_is_missing(tmp_path, capsys):
    assert gpucnn_main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: no metrics.json there; is it a directory written by " \
                                      "gpucnn train?\n"


def test_a_failing_report_is_one_warning_and_the_run_stands(tiny_fashion, tmp_path, capsys, monkeypatch):  # noqa: F811
    def broken(*args, **kwargs):
        raise RuntimeError("no room for figures")

    common = ["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16", "--epochs", "1",
              "--no-progress"]
    with monkeypatch.context() as patch:
        patch.setattr(gpucnn.report, "render", broken)
        assert train_command.main(common + ["--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: report.html not written (RuntimeError: no room for figures)" in err
    assert (tmp_path / "a" / "model.npz").exists() and not (tmp_path / "a" / "report.html").exists()

    assert train_command.main(common + ["--out", str(tmp_path / "b"), "--no-report"]) == 0
    assert not (tmp_path / "b" / "report.html").exists() and not (tmp_path / "b" / "predictions.npz").exists()


def test_an_interrupted_run_reports_the_epochs_done(tiny_fashion, tmp_path, capsys, monkeypatch):  # noqa: F811
    def interrupt_after_first(history):
        if len(history["epoch"]) == 1:
            raise KeyboardInterrupt("training interrupted at epoch 2, step 1")

    monkeypatch.setattr(train_command, "print_row", interrupt_after_first)
    out = tmp_path / "run"
    status = train_command.main(["--data-dir", str(tiny_fashion), "--device", "cpu", "--batch-size", "16",
                                 "--epochs", "3", "--out", str(out), "--no-progress"])
    assert status == 130 and f"wrote {out}/report.html" in capsys.readouterr().err
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "interrupted, 1 of 3 epochs" in text and Page(text).confusion().sum() == 32
    # rebuilt from the checkpoint (there is no model.npz), the same page
    assert not (out / "model.npz").exists()
    assert gpucnn_main(["report", str(out), "--out", str(out / "again.html")]) == 0
    assert (out / "again.html").read_text(encoding="utf-8") == text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_check_report_renders_the_page(trained):
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "check_report.sh"), str(trained),
                           str(trained / "page.png")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = (trained / "page.png").read_bytes()
    assert data[:8] == SIGNATURE and struct.unpack(">II", data[16:24]) == (1280, 4000)
