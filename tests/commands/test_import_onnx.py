"""gpucnn import MODEL.onnx OUT.npz, and gpucnn train --init-from MODEL.onnx (fine-tuning an imported model)."""
import json

import numpy
import pytest

import gpucnn
from gpucnn.commands import SUBCOMMANDS
from gpucnn.commands import import_onnx, train
from gpucnn.io.arrays import load_arrays
from gpucnn.nn.layers import Dense, Flatten, Softmax

from .test_train_and_bench import tiny_fashion  # noqa: F401 - the fixture

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'gpucnn[onnx]')")


def onnx_file(tmp_path, model=None, shape=(1, 28, 28), name="lenet5.onnx"):
    model = model or gpucnn.models.lenet5(rng=3)
    return str(gpucnn.onnx.export(model, tmp_path / name, shape)), model


def test_gpucnn_import_writes_a_model_file_gpucnn_rebuilds(tmp_path, capsys):
    path, model = onnx_file(tmp_path)
    out = tmp_path / "lenet5.npz"
    assert "import" in SUBCOMMANDS
    assert import_onnx.main([path, str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}:") and "61,706 parameters" in said and "(batch, 1, 28, 28)" in said
    rebuilt = gpucnn.architecture.build(load_arrays(out)[1]["architecture"]).load(out)
    x = numpy.random.default_rng(0).random((4, 1, 28, 28), dtype=numpy.float32)
    numpy.testing.assert_allclose(rebuilt.eval().predict(x), model.predict(x), rtol=1e-5, atol=1e-6)
    assert import_onnx.main([path, str(tmp_path / "f64.npz"), "--dtype", "float64"]) == 0
    assert load_arrays(tmp_path / "f64.npz")[0]["conv_0_Conv2D.weight"].dtype == numpy.float64


def test_gpucnn_import_refuses_in_one_line_and_writes_nothing(tmp_path, capsys):
    proto = gpucnn.onnx.to_onnx(gpucnn.models.lenet5(rng=0), (1, 28, 28))
    proto.graph.node[1].op_type = "Elu"  # an op gpucnn has no layer for
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(proto.SerializeToString())
    assert import_onnx.main([str(bad), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: gpucnn.onnx.load: op Elu (node '1.Tanh', opset 17) is not supported")
    assert "\n" not in err and not (tmp_path / "out.npz").exists()
    assert import_onnx.main([str(tmp_path / "missing.onnx"), str(tmp_path / "out.npz")]) == 2


def run_args(data, out):
    return ["--data-dir", str(data), "--device", "cpu", "--batch-size", "16", "--epochs", "1", "--out", str(out),
            "--no-progress", "--no-report"]


def test_gpucnn_train_init_from_fine_tunes_the_imported_model(tiny_fashion, tmp_path, capsys):  # noqa: F811
    path, model = onnx_file(tmp_path)
    out = tmp_path / "run"
    assert train.main(["--init-from", path, "--lr", "1e-4"] + run_args(tiny_fashion, out)) == 0
    said = capsys.readouterr().out
    assert "lenet5 on fashion-mnist: 64 training images" in said and "61706 parameters" in said
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "lenet5" and 0 <= summary["test_accuracy"] <= 1
    trained = load_arrays(out / "model.npz")[0]
    start = model.state_dict()["0.weight"]
    moved = numpy.abs(trained["conv_0_Conv2D.weight"] - start).max()
    assert 0 < moved < 1e-2  # fine-tuned from the file's weights: a few small Adam steps away from them
    # resumed: the network from the file again, the state from the checkpoint (the later --epochs wins)
    assert train.main(["--init-from", path] + run_args(tiny_fashion, out) + ["--epochs", "2", "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epoch"] == [1, 2]


def test_gpucnn_train_init_from_refuses_what_it_cannot_train(tiny_fashion, tmp_path, capsys):  # noqa: F811
    probabilities = gpucnn.Sequential([Flatten(), Dense(784, 10, rng=0), Softmax()])
    cases = [
        (onnx_file(tmp_path, probabilities, name="probs.onnx")[0], "10 values per image after a Softmax"),
        (onnx_file(tmp_path, gpucnn.Sequential([Flatten(), Dense(3 * 32 * 32, 10, rng=0)]), (3, 32, 32),
                   "cifar.onnx")[0], "the model takes 3x32x32 inputs"),
        (str(tmp_path / "missing.onnx"), "--init-from"),
    ]
    for path, message in cases:
        assert train.main(["--init-from", path] + run_args(tiny_fashion, tmp_path / "run2")) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --init-from") and message in err, err
    assert not (tmp_path / "run2").exists()
    with pytest.raises(SystemExit):
        train.main(["--init-from", cases[0][0], "--model", "lenet5"] + run_args(tiny_fashion, tmp_path / "run3"))
    assert "give --model or --init-from, not both" in capsys.readouterr().err


def test_gpucnn_export_writes_an_imported_model_back_to_onnx(tmp_path, capsys):
    from gpucnn.commands import export
    path, model = onnx_file(tmp_path)
    assert import_onnx.main([path, str(tmp_path / "m.npz")]) == 0
    assert export.main([str(tmp_path / "m.npz"), str(tmp_path / "back.onnx")]) == 0
    assert "the architecture recorded in the file" in capsys.readouterr().out
    x = numpy.random.default_rng(1).random((3, 1, 28, 28), dtype=numpy.float32)
    numpy.testing.assert_allclose(gpucnn.onnx.load(str(tmp_path / "back.onnx")).predict(x), model.predict(x),
                                  rtol=1e-5, atol=1e-6)
