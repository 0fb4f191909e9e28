"""A Model's files record its graph: gpucnn.architecture.build and `gpucnn export` rebuild it from the file alone."""
import numpy
import pytest

import gpucnn
from gpucnn.commands import main
from gpucnn.io.arrays import CheckpointReader
from gpucnn.nn.layers import ReLU
from gpucnn.nn.resnet import resnet8

from .test_model import tiny_resnet


@pytest.mark.parametrize("build, shape", [(lambda: resnet8(in_channels=1, input_size=28, rng=0), (1, 28, 28)),
                                          (tiny_resnet, (3, 8, 8))])
def test_the_recorded_graph_rebuilds_the_model(build, shape, tmp_path):
    model = build()
    model.save(tmp_path / "m.npz")
    with CheckpointReader(tmp_path / "m.npz") as reader:
        spec = reader.meta["architecture"]
    rebuilt = gpucnn.architecture.build(spec).load(tmp_path / "m.npz")
    assert type(rebuilt) is gpucnn.Model and rebuilt.node_names == model.node_names
    x = numpy.random.default_rng(0).standard_normal((2,) + shape).astype(numpy.float32)
    numpy.testing.assert_array_equal(rebuilt.eval().forward(x), model.eval().forward(x))


def test_a_layer_of_the_users_own_leaves_no_record():
    class Mine(ReLU):
        pass

    x = gpucnn.Input((3,))
    assert gpucnn.Model(x, Mine()(x)).architecture() is None


def test_gpucnn_export_rebuilds_a_model_from_its_training_checkpoint(tmp_path):
    pytest.importorskip("onnx")
    model = tiny_resnet()
    x = numpy.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(numpy.float32)
    y = numpy.random.default_rng(1).integers(0, 5, 16)
    gpucnn.train.fit(model, gpucnn.losses.SoftmaxCrossEntropy(), gpucnn.optim.Adam(model.parameters()), x, y, 1,
                     batch_size=8, progress=False, checkpoint=str(tmp_path / "c.npz"))
    assert main(["export", str(tmp_path / "c.npz"), str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_a_dropout_nested_in_a_model_resumes_exactly(tmp_path):
    from gpucnn.nn.layers import Dense, Dropout, Flatten

    def build():
        x = gpucnn.Input((3, 8, 8))
        h = gpucnn.Sequential([Flatten(), Dropout(0.3, rng=7)], name="head")(x)
        return gpucnn.Model(x, Dense(192, 5, rng=1, name="fc")(h))

    x = numpy.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(numpy.float32)
    y = numpy.random.default_rng(1).integers(0, 5, 16)

    def run(model, epochs, **kwargs):
        return gpucnn.train.fit(model, gpucnn.losses.SoftmaxCrossEntropy(), gpucnn.optim.Adam(model.parameters()),
                                x, y, epochs, batch_size=8, progress=False, **kwargs)

    straight = build()
    expected = run(straight, 3)
    run(build(), 2, checkpoint=str(tmp_path / "c.npz"))
    resumed = build()
    resumed.leaf_layers()[1].rng = numpy.random.default_rng(99)  # everything must come from the checkpoint
    assert run(resumed, 3, checkpoint=str(tmp_path / "c.npz"), resume=True)["loss"] == expected["loss"]
    for p, q in zip(resumed.parameters(), straight.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)
