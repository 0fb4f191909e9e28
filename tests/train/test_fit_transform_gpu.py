"""fit(..., transform=...) on the emulated GPU: the captured graph step trains on the eager step's augmented
batches (the same ones, bit for bit, as the transform's seed gives them), and ends where the eager fit does."""
import numpy
import pytest

import gpucnn
from gpucnn.data.transforms import Compose, RandomCrop, RandomErasing, RandomHorizontalFlip
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import Adam
from gpucnn.train.loop import fit
from support.emulated_cupy import to_host

pytestmark = [pytest.mark.kernels, pytest.mark.graph]


class Recorded(Compose):
    """The augmentation, keeping every batch it gave (on the host)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outputs = []

    def __call__(self, x):
        out = super().__call__(x)
        self.outputs.append(to_host(out))
        return out


def _fit(gpu, graph, epochs=2, **kwargs):
    rng = numpy.random.default_rng(0)
    x, y = rng.standard_normal((5, 1, 28, 28)).astype(numpy.float32), rng.integers(0, 10, 5)
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    opt = Adam(model.parameters(), lr=1e-3)
    transform = Recorded([RandomCrop(28, padding=2), RandomHorizontalFlip(), RandomErasing(p=0.5)], seed=0)
    notes = []

    class Notes:
        def write(self, text):
            notes.append(text)

        def flush(self):
            pass
    history = fit(model, SoftmaxCrossEntropy(), opt, gpu.cupy.asarray(x), gpu.cupy.asarray(y), epochs,
                  batch_size=2, progress=False, graph=graph, graph_options={"verify": True}, transform=transform,
                  notes=Notes(), **kwargs)
    return model, history, transform, "".join(notes)


def test_the_graph_step_trains_on_the_eager_steps_augmented_batches(gpu):
    graph_model, graph_history, graph_t, notes = _fit(gpu, True)
    assert "one CUDA graph launch" in notes
    eager_model, eager_history, eager_t, _ = _fit(gpu, False)
    assert len(graph_t.outputs) == len(eager_t.outputs) == 6  # 3 batches an epoch, the last of one sample
    for got, expected in zip(graph_t.outputs, eager_t.outputs):
        numpy.testing.assert_array_equal(got, expected)
    assert graph_t.state() == eager_t.state()
    numpy.testing.assert_allclose(graph_history["loss"], eager_history["loss"], rtol=1e-4)
    assert graph_history["accuracy"] == eager_history["accuracy"]
    for p, q in zip(graph_model.parameters(), eager_model.parameters()):
        expected = to_host(q.data)
        numpy.testing.assert_allclose(to_host(p.data), expected, rtol=0, atol=1e-4 * max(1.0, abs(expected).max()))


def test_a_graph_run_resumed_at_an_epoch_boundary_ends_bitwise_equal_to_a_straight_one(gpu, tmp_path):
    path = str(tmp_path / "c.npz")
    _fit(gpu, True, epochs=1, checkpoint=path)
    resumed_model, resumed_history, resumed_t, _ = _fit(gpu, True, epochs=2, checkpoint=path, resume=True)
    straight_model, straight_history, straight_t, _ = _fit(gpu, True, epochs=2)
    assert len(resumed_t.outputs) == 3  # the second epoch's batches only
    for got, expected in zip(resumed_t.outputs, straight_t.outputs[3:]):
        numpy.testing.assert_array_equal(got, expected)
    assert resumed_t.state() == straight_t.state() and resumed_history["loss"] == straight_history["loss"]
    for p, q in zip(resumed_model.parameters(), straight_model.parameters()):
        numpy.testing.assert_array_equal(to_host(p.data), to_host(q.data))


def test_a_transform_that_changes_the_image_shape_sends_auto_to_the_eager_step(gpu):
    rng = numpy.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 30, 30)).astype(numpy.float32), rng.integers(0, 10, 4)
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    with pytest.raises(ValueError, match=r"fit\(graph=True\): the transform makes \(1, 28, 28\) samples"):
        fit(model, SoftmaxCrossEntropy(), Adam(model.parameters()), gpu.cupy.asarray(x), gpu.cupy.asarray(y), 1,
            batch_size=2, progress=False, graph=True, transform=RandomCrop(28, seed=0))
