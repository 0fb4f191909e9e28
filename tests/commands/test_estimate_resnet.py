"""The performance model of the graph step on residual networks (gpucnn/perf/graph.py over the step's program).

- the launches listed for one graph step of a ResNet are the ones the emulated capture holds (our kernels:
  same names, same grids, in order), BatchNorm2D's and the joins' included;
- ``gpucnn bench --estimate --model resnet8`` lists the graph step, says the eager step is not modelled, and
  counts the model's arithmetic from the program's shapes.
"""
import numpy
import pytest

import gpucnn
from support.helpers import record_kernel_launches
from gpucnn.commands import estimate
from gpucnn.perf import graph

pytest.importorskip("cupy")  # the launchers whose grid arithmetic the model imports need CuPy importable (no GPU)


def _small_resnet(rng=None):
    return gpucnn.models.resnet8(in_channels=1, num_classes=10, input_size=8, rng=rng)


@pytest.mark.kernels
def test_graph_step_launches_of_a_resnet_are_what_the_emulated_capture_holds(gpu, monkeypatch):
    from gpucnn.compile.cuda_graph.step import WARMUP_RUNS
    from gpucnn.nn.losses import SoftmaxCrossEntropy
    from gpucnn.optim.optimizers import Adam

    calls = record_kernel_launches(gpu, monkeypatch)
    model = _small_resnet(rng=0).to("cuda")
    step = gpucnn.compile_step(model, SoftmaxCrossEntropy(), Adam(model.parameters()), 4, verify=False)
    rng = numpy.random.default_rng(0)
    step.bind(gpu.cupy.asarray(rng.standard_normal((4, 1, 8, 8)).astype(numpy.float32)),
              gpu.cupy.asarray(rng.integers(0, 10, 4)))
    calls.clear()
    step.capture()
    per_run = len(calls) // (WARMUP_RUNS + 1)
    assert len(calls) == per_run * (WARMUP_RUNS + 1)
    sm_count = getattr(gpu.fused, "device_sm_count", lambda: None)()
    launches = graph.graph_step(_small_resnet(), (4, 1, 8, 8), sm_count)
    ours = [(launch["name"], launch["grid"]) for launch in launches if launch["kind"] == "ours"]
    assert ours == calls[-per_run:]
    assert {"bn_stats_partial_fused", "bn_grad_partial_fused"} <= {name for name, _ in ours}
    # the CuPy side: an add per Add, and one per value read twice (each block's input) in the backward pass
    adds = [launch for launch in launches if launch["name"] == "cupy.add" and launch["phase"] == "backward"]
    assert len(adds) == 3


def test_the_estimate_of_a_resnet_lists_its_graph_step(capsys):
    assert estimate.main(["--model", "resnet8", "--batch-sizes", "64", "--no-host-timing"]) == 0
    out = capsys.readouterr().out
    assert "graph step total:" in out and "BatchNorm2D+ReLU" in out and "bn_forward_apply_fused" in out
    assert all(line.startswith(("estimate", "# estimate")) for line in out.splitlines() if line)


def test_model_arithmetic_comes_from_the_program_shapes():
    # resnet8 on 28x28: the forward convolutions' and the Dense's multiply-adds, by hand, times 2, times 3
    b = 64
    convs = [(28 * 28, 16, 1 * 9), (28 * 28, 16, 16 * 9), (28 * 28, 16, 16 * 9),   # stem, layer1
             (14 * 14, 32, 16 * 9), (14 * 14, 32, 32 * 9), (14 * 14, 32, 16),      # layer2 + projection
             (7 * 7, 64, 32 * 9), (7 * 7, 64, 64 * 9), (7 * 7, 64, 32)]            # layer3 + projection
    forward = sum(2 * b * p * o * k for p, o, k in convs) + 2 * b * 64 * 10
    assert estimate.model_flops("resnet8", b) == 3 * forward
    assert estimate.model_flops("fashion_cnn", 256) == pytest.approx(6.514e9, rel=1e-3)
