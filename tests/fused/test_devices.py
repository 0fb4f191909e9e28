"""The captured training step of a model on the second emulated device ('cuda:1', device 0 current).

The step's stream, memory pool and graph belong to the model's device: CuPy refuses a stream entered
under another device than the one it was made on (cupy/cuda/stream.pyx, check_stream_device_match),
and so does the emulation (tests/test_emulated_stream_devices.py). compile_step + run_epoch,
fit(graph=True), fit(graph='auto') (which must run the graph, not fall back to the eager loop) and the
graph rows of ``gpucnn bench --graph --device cuda:1`` all run there, and give what the same step gives
on cuda:0.
"""
import io

import numpy
import pytest

import gpucnn
from gpucnn import backend
from gpucnn.commands import bench, bench_graph
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import Adam
from gpucnn.train import graph_step
from gpucnn.train.loop import fit
from support.emulated_cupy import to_host

pytestmark = [pytest.mark.kernels, pytest.mark.graph]


def _data(n=5):
    rng = numpy.random.default_rng(0)
    return rng.standard_normal((n, 1, 28, 28)).astype(numpy.float32), rng.integers(0, 10, n)


def _on(device, x, y):
    return backend.to_device(x, device), backend.to_device(y, device)


def _compiled(device, x, y, **kwargs):
    model = gpucnn.models.fashion_cnn(rng=0).to(device)
    opt = Adam(model.parameters(), lr=1e-3)
    step = gpucnn.compile_step(model, SoftmaxCrossEntropy(), opt, 2, **kwargs)
    step.bind(*_on(device, x, y))
    return model, opt, step


def _assert_same(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        numpy.testing.assert_array_equal(to_host(p.data), to_host(q.data))


def test_compile_step_and_run_epoch_on_the_second_device(gpu):
    x, y = _data()
    order = numpy.array([4, 1, 3, 0, 2])
    results = {}
    for device in ("cuda:1", "cuda:0"):
        model, opt, step = _compiled(device, x, y, verify=True, verify_every=2)
        stats = [step.run_epoch(order), step.run_epoch(order[::-1].copy())]
        assert not step.eager and step.mismatch is None and step.graph_launches == 4  # 2 of them verified
        results[device] = model, stats
        assert gpu.cupy.cuda.Device().id == 0  # the step left the current device as it found it
    model, stats = results["cuda:1"]
    assert stats == results["cuda:0"][1]
    _assert_same(model, results["cuda:0"][0])
    assert all(backend.device_of(p.data) == "cuda:1" for p in model.parameters())
    assert gpu.devices.events == []


def test_launch_start_and_synchronize_on_the_second_device(gpu):
    x, y = _data(4)
    _, _, step = _compiled("cuda:1", x, y, verify=False)
    step.start(numpy.arange(4))
    for _ in range(3):  # past the last full batch it starts over
        step.launch()
    step.synchronize()
    assert step.graph_launches == 3 and gpu.devices.events == []


def test_the_step_belongs_to_the_models_device(gpu):
    x, y = _data(4)
    _, _, step = _compiled("cuda:1", x, y, verify=False)
    step.run_epoch(numpy.arange(4))
    assert step.device.id == 1 and step.graph.device_id == 1
    with pytest.raises(RuntimeError, match=r"created on \(1\) does not match with the current device \(0\)"):
        with step.stream:  # what CuPy says to anyone who uses it under another device
            pass


def test_fit_graph_true_on_the_second_device(gpu):
    x, y = _data()
    histories = {}
    for device in ("cuda:1", "cuda:0"):
        model = gpucnn.models.fashion_cnn(rng=0).to(device)
        opt = Adam(model.parameters(), lr=1e-3)
        histories[device] = fit(model, SoftmaxCrossEntropy(), opt, *_on(device, x, y), 2, batch_size=2,
                                progress=False, graph=True), model
    assert histories["cuda:1"][0]["loss"] == histories["cuda:0"][0]["loss"]
    _assert_same(histories["cuda:1"][1], histories["cuda:0"][1])


def _auto_fit_on_the_second_device():
    x, y = _data()
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda:1")
    note = io.StringIO()
    history = fit(model, SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-3), *_on("cuda:1", x, y), 1,
                  batch_size=2, stream=note)
    return history, note.getvalue()


def test_fit_graph_auto_runs_the_graph_on_the_second_device(gpu, monkeypatch):
    # graph='auto' first times both steps (graph_step.measure_steps, checked below); here it takes the graph
    monkeypatch.setattr(graph_step, "measure_steps", lambda *args, **kwargs: (2.0, 1.0))
    history, note = _auto_fit_on_the_second_device()
    assert "training step: one CUDA graph launch" in note, note
    assert "eager, not a CUDA graph" not in note
    assert gpu.streams.GRAPH_LAUNCHES[0] >= 1 and numpy.isfinite(history["loss"]).all()


def test_fit_graph_auto_measures_its_steps_on_the_second_device(gpu):
    _, note = _auto_fit_on_the_second_device()  # the gpu fixture measures for real, then takes the graph
    assert "training step: one CUDA graph launch" in note, note


def test_bench_graph_rows_on_the_second_device(gpu):
    rows = bench_graph.graph_rows("cuda:1", 2, repeats=1, warmup=0, with_torch=False, images=2)
    row = rows["gpucnn_graph"]
    assert "unavailable" not in row and row["step_s"] > 0 and row["launches"] > 18 and not row["eager"]


def test_bench_main_with_graph_on_the_second_device(gpu, monkeypatch, capsys):
    """``gpucnn bench --graph --device cuda:1``: the eager rows (timed elsewhere) stubbed out; the graph rows
    run on cuda:1."""
    monkeypatch.setattr(bench, "cold_compile_seconds", lambda device: None)
    monkeypatch.setattr(bench, "matmul_peak", lambda device, sync: 1.0)
    monkeypatch.setattr(bench, "compare", lambda device, batch, *args: {"gpucnn": {}, "torch": None})
    monkeypatch.setattr(bench_graph, "EPOCH_IMAGES", 2)
    assert bench.main(["--device", "cuda:1", "--batch-sizes", "2", "--repeats", "1", "--warmup", "0", "--no-torch",
                       "--graph", "--json"]) == 0
    import json
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["device"] == "cuda:1"
    assert result["graph"]["gpucnn_graph"]["step_s"] > 0 and not result["graph"]["gpucnn_graph"]["eager"]
