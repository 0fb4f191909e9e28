"""``gpucnn bench --graph``: argument handling and the row code, without a GPU.

The rows time nothing meaningful here; on the emulated CuPy the gpucnn graph row runs its
whole code path (capture, verify, warm epoch, launches per step, alternating timing) with
the real loss and optimizer (and with the capture-safe stand-ins plugged in), and on the
CPU every row says why it is unavailable.
"""
import json
import types

import numpy
import pytest

from support import emulated_cupy
from fused.standins import SGDStandIn, SoftmaxCrossEntropyStandIn
from gpucnn.commands import bench, bench_graph
from support.kernel_harness import FakeKernel


def test_bench_graph_rows_on_cpu_say_why(capsys):
    assert bench.main(["--device", "cpu", "--batch-sizes", "8", "--repeats", "1", "--warmup", "0", "--no-torch",
                       "--graph", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["results"][0]["graph"]
    assert set(rows) == {"gpucnn_graph", "torch_eager", "torch_graph"}
    assert all(row == {"unavailable": "graph rows need a CUDA device"} for row in rows.values())
    assert bench.main(["--device", "cpu", "--batch-sizes", "8", "--repeats", "1", "--warmup", "0", "--no-torch",
                       "--graph"]) == 0
    assert "gpucnn_graph" in capsys.readouterr().out


def test_count_kernel_nodes_reads_cudas_dot():
    dot = ('digraph dot {\nsubgraph cluster_1 {\n"graph_1_node_0"[style="solid" shape="record" label="{KERNEL\n'
           '| {ID | 0 | conv_fwd_fused}}"];\n"graph_1_node_1"[label="{MEMSET\n| ...}"];\n'
           '"graph_1_node_2"[label="{KERNEL\n| {ID | 2 | relu}}"];\n}\n}')
    assert bench_graph.count_kernel_nodes(dot) == 2
    assert bench_graph.count_kernel_nodes("") == 0


def test_torch_rows_need_cuda():
    assert bench_graph.torch_graph_step("cpu", 8) is None
    assert bench_graph.torch_kernels_per_step(lambda: None, "cpu") is None


@pytest.mark.kernels
@pytest.mark.graph
def test_gpucnn_graph_row_on_the_emulated_gpu(harness, capsys):
    with emulated_cupy.installed(harness, FakeKernel):
        # the default step: the real loss kernel and Adam's multi-tensor update, verified against the eager step
        rows = bench_graph.graph_rows("cuda:0", 2, repeats=1, warmup=0, with_torch=False, images=2)
        row = rows["gpucnn_graph"]
        # our 15 fused launches (2 conv fwd, 2 pool fwd, 2 dense fwd, 2 dense wgrad, 2 dense dgrad, 2 pool bwd,
        # 2 conv wgrad, 1 conv dgrad), the loss kernel, Adam's two, plus the gathers, gradient copies and counters
        assert row["launches"] > 18 and row["step_s"] > 0 and row["epoch_s"] > 0 and not row["eager"]
        assert rows["torch_eager"] == {"unavailable": "--no-torch"}
        bench_graph.print_graph_rows({"results": [{"device": "cuda:0", "batch": 2, "graph": rows}]})
        assert "gpucnn_graph" in capsys.readouterr().out


@pytest.mark.kernels
@pytest.mark.graph
def test_gpucnn_graph_row_with_pluggable_pieces(harness):
    with emulated_cupy.installed(harness, FakeKernel) as gpu:
        cp = gpu.cupy
        options = {"loss": SoftmaxCrossEntropyStandIn(cp, 10),
                   "update": SGDStandIn(cp, types.SimpleNamespace(lr=1e-3), numpy.float32), "verify": False}
        rows = bench_graph.graph_rows("cuda:0", 2, repeats=1, warmup=0, with_torch=False, images=2,
                                      graph_options=options)
        assert rows["gpucnn_graph"]["step_s"] > 0 and rows["gpucnn_graph"]["launches"] > 15
