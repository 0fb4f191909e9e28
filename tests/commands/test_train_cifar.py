"""gpucnn train --dataset cifar10: a ResNet built for 3x32x32 trains on a synthetic archive in CIFAR-10's binary
format and writes its run directory; a model made for 1x28x28 is refused in one line, and so is data that is
neither here nor downloadable (never the network: the fetch is replaced)."""
import io
import json
import tarfile
import urllib.error

import numpy
import pytest

from gpucnn.commands import train as train_command
from gpucnn.commands.train import main
from gpucnn.commands.train_data import build_model
from gpucnn.data import cifar, download
from gpucnn.nn.models import MODELS

RECORDS = 8  # per file: 40 training images, 8 test images


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """HOME in tmp_path, no $GPUCNN_DATA, no network, few records per file."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GPUCNN_DATA", raising=False)
    monkeypatch.setattr(cifar, "RECORDS_PER_FILE", RECORDS)

    def no_network(url, destination):
        raise urllib.error.URLError("network disabled in tests")
    monkeypatch.setattr(download, "fetch_url", no_network)


@pytest.fixture
def tiny_cifar(tmp_path):
    """tmp_path/data/cifar-10-binary.tar.gz: six files of RECORDS records, a bright row per class."""
    rng = numpy.random.default_rng(0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in cifar.TRAIN_FILES + cifar.TEST_FILES:
            labels = rng.integers(0, 10, RECORDS)
            images = rng.integers(0, 40, (RECORDS,) + cifar.SAMPLE_SHAPE)
            images[numpy.arange(RECORDS), :, 3 * labels + 1, 4:28] = 255
            records = numpy.concatenate([labels[:, None], images.reshape(RECORDS, -1)], axis=1).astype(numpy.uint8)
            info = tarfile.TarInfo(f"{cifar.BATCHES_DIR}/{name}")
            info.size = records.nbytes
            archive.addfile(info, io.BytesIO(records.tobytes()))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / cifar.ARCHIVE_NAME).write_bytes(buffer.getvalue())
    return tmp_path / "data"


def test_gpucnn_train_trains_a_resnet_on_cifar10(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--dataset", "cifar10", "--model", "resnet8", "--data-dir", str(tiny_cifar), "--device", "cpu",
                 "--batch-size", "16", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"data: cifar10 from {tiny_cifar / cifar.ARCHIVE_NAME}" in printed
    assert "resnet8 on cifar10: 40 training images, 8 test images" in printed and "test accuracy" in printed
    for name in ("metrics.csv", "metrics.json", "model.npz", "checkpoint.npz", "summary.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "cifar10" and summary["model"] == "resnet8"
    assert json.loads((out / "metrics.json").read_text())["epoch"] == [1]
    with numpy.load(out / "model.npz") as saved:
        assert any(saved[key].shape == (16, 3, 3, 3) for key in saved.files), "the stem takes 3 channels"


def test_resnets_are_built_for_the_data_sets_shape_and_unchanged_on_fashion_mnist():
    model = build_model("resnet20", "cifar10", seed=0)
    assert model.forward(numpy.zeros((2,) + cifar.SAMPLE_SHAPE, numpy.float32)).shape == (2, 10)
    assert model.parameters()[0].data.shape == (16, 3, 3, 3)
    for name in ("resnet8", "fashion_cnn"):
        ours, theirs = build_model(name, "fashion-mnist", seed=3), MODELS[name](rng=3)
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            numpy.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("model", ["fashion_cnn", "lenet5"])
def test_a_model_made_for_28x28_greyscale_is_refused_on_cifar10_in_one_line(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_command, "find_cifar10", lambda *args: pytest.fail("data read before the refusal"))
    out = tmp_path / "run"
    assert main(["--dataset", "cifar10", "--model", model, "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --model {model} takes 1x28x28 images and --dataset cifar10 has 3x32x32 ones; "
                   f"on cifar10 train one of: resnet20, resnet8\n")
    assert not out.exists()


def test_cifar10_neither_here_nor_downloadable_is_one_line_saying_where_to_put_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--dataset", "cifar10", "--model", "resnet20", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    cache = tmp_path / "home" / ".cache" / "gpucnn" / "cifar10"
    assert err.count("\n") == 1 and err.startswith("error: CIFAR-10 was not found (looked in $GPUCNN_DATA (not set)")
    assert "downloading it failed (https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz: URLError" in err
    assert f"put cifar-10-binary.tar.gz (the binary version, from {cifar.URL}) or its unpacked " \
           f"cifar-10-batches-bin/ into {cache}, or give the directory holding it as data_dir " \
           f"(gpucnn train --data-dir) or in $GPUCNN_DATA." in err
    assert not out.exists() and not cache.exists()
    assert main(["--dataset", "cifar10", "--model", "resnet8", "--data-dir", str(tmp_path / "none"),
                 "--device", "cpu", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: CIFAR-10: data directory {tmp_path / 'none'} does not exist")
