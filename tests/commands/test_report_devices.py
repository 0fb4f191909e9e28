"""report.html of a ResNet on CIFAR-10 (colour filters, its class names, every convolution of a Model's graph)
and of a run on the emulated GPU (the model and the test set on the device)."""
import base64

import pytest

from commands.test_report import Page
from commands.test_train_cifar import offline, tiny_cifar  # noqa: F401 (fixtures: no network, a tiny archive)
from commands.test_train_graph import tiny_fashion  # noqa: F401 (10 training, 4 test images)
from gpucnn.commands import train as train_command
from gpucnn.commands.report import rebuild
from gpucnn.report import SECTIONS
from support import emulated_cupy
from support.kernel_harness import FakeKernel
from support.png import read_png


def test_a_resnet_on_cifar10_reports_every_convolution(tiny_cifar, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    assert train_command.main(["--dataset", "cifar10", "--model", "resnet8", "--data-dir", str(tiny_cifar),
                               "--device", "cpu", "--batch-size", "16", "--epochs", "1", "--out", str(out),
                               "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert page.sections == [anchor for anchor, _ in SECTIONS] and page.confusion().sum() == 8
    assert page.maps == 9  # resnet8: the stem, two per block, two projection shortcuts
    assert "layer2.0.shortcut.0" in text and "airplane" in text and "truck" in text
    colours = {read_png(base64.b64decode(img["src"].split(",", 1)[1]))[2] for img in page.images}
    assert colours == {2}  # CIFAR-10's pictures, colour filters and feature maps: all RGB
    assert rebuild(str(out), out=str(out / "again.html")) and (out / "again.html").read_text(encoding="utf-8") == text


@pytest.mark.kernels
def test_a_run_on_the_emulated_gpu_writes_its_report(harness, tiny_fashion, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    with emulated_cupy.installed(harness, FakeKernel):
        assert train_command.main(["--data-dir", str(tiny_fashion), "--device", "cuda", "--batch-size", "4",
                                   "--epochs", "1", "--out", str(out), "--no-progress", "--no-graph"]) == 0
    assert "warning" not in capsys.readouterr().err
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    assert page.sections == [anchor for anchor, _ in SECTIONS] and page.confusion().sum() == 4 and page.maps == 2
