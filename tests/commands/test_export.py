"""gpucnn export: a saved model or a training checkpoint to ONNX, rebuilt from the file."""
import numpy
import pytest

import gpucnn
from gpucnn.commands import main
from gpucnn.nn.layers import Dense, Flatten
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import Adam
from gpucnn.train.loop import fit

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'gpucnn[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: the exported files cannot be run")


def run_onnx(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def assert_same(got, want):
    numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(numpy.abs(want).max()))


def test_export_a_saved_model(tmp_path, rng, capsys):
    model = gpucnn.models.lenet5(rng=2)
    x = rng.random((4, 1, 28, 28), dtype=numpy.float32)
    model.forward(x)
    model.save(tmp_path / "m.npz")
    assert main(["export", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")]) == 0
    assert "architecture recorded in the file" in capsys.readouterr().out
    assert_same(run_onnx(tmp_path / "m.onnx", x), model.predict(x))


def test_export_a_training_checkpoint(tmp_path, rng):
    model = gpucnn.Sequential([Flatten(), Dense(12, 3, rng=0)])
    x, y = rng.random((8, 3, 2, 2), dtype=numpy.float32), rng.integers(0, 3, 8)
    fit(model, SoftmaxCrossEntropy(), Adam(model.parameters()), x, y, 1, batch_size=4, progress=False,
        checkpoint=str(tmp_path / "c.npz"))
    assert main(["export", str(tmp_path / "c.npz"), str(tmp_path / "c.onnx")]) == 0
    assert_same(run_onnx(tmp_path / "c.onnx", x), model.predict(x))


def test_a_file_without_architecture_is_matched_to_a_named_model(tmp_path, rng, capsys):
    model = gpucnn.models.fashion_cnn(rng=1)
    gpucnn.io.arrays.save_arrays(tmp_path / "old.npz", model.named_state(), {"format": "gpucnn.Sequential/1"})
    assert main(["export", str(tmp_path / "old.npz"), str(tmp_path / "m.onnx")]) == 0
    assert "fashion_cnn (its weight shapes match the file)" in capsys.readouterr().out
    x = rng.random((2, 1, 28, 28), dtype=numpy.float32)
    assert_same(run_onnx(tmp_path / "m.onnx", x), model.predict(x))


def test_errors_are_clear_and_write_nothing(tmp_path, capsys):
    gpucnn.models.lenet5().save(tmp_path / "lenet.npz")  # never ran: no input shape recorded
    out = tmp_path / "m.onnx"
    assert main(["export", str(tmp_path / "lenet.npz"), str(out)]) == 2
    assert "give --input-shape C,H,W" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "lenet.npz"), str(out), "--model", "fashion_cnn"]) == 2
    assert "does not match this model" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.npz"), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    gpucnn.io.arrays.save_arrays(tmp_path / "odd.npz", {"w": numpy.zeros(3)}, {"format": "gpucnn.Sequential/1"})
    assert main(["export", str(tmp_path / "odd.npz"), str(out)]) == 2
    assert "give --model NAME" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", str(tmp_path / "lenet.npz"), str(out), "--input-shape", "1,28,28"]) == 0
    assert out.exists()
