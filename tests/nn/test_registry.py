"""The registry of layer types (gpucnn/nn/registry.py): every layer type in it, and which paths each one has.

The "how to add a layer" checklist of docs/architecture.md is what this file checks, step by step:
1. the op: a NumPy reference in gpucnn/ops (the layer's forward and backward call it);
2. the layer class, exported by gpucnn.nn.layers;
3. its registry entry: architecture arguments that rebuild it, its ONNX operator, its places in
   the planner's patterns, its eager CUDA kernels;
4. optionally a CPU fast stage and a graph stage: PATHS below says which layer has which, so a
   change of either is a change of this table.
"""
import inspect
import re
from pathlib import Path

import numpy
import pytest

from gpucnn.compile import plan as planner
from gpucnn.compile.cpu import runner as cpu
from gpucnn.compile.cuda_graph import plan as graph
from gpucnn.io import onnx as gpucnn_onnx
from gpucnn.nn import architecture, layers as L, registry
from gpucnn.nn.sequential import Sequential
from gpucnn.ops.cuda import loader

KERNELS = Path(__file__).resolve().parents[2] / "gpucnn" / "kernels"

#: one instance of every layer type, and the rank of the data it takes
SAMPLES = {
    "Conv2D": (lambda: L.Conv2D(2, 3, 3, padding="same", rng=0), 4),
    "Dense": (lambda: L.Dense(4, 3, rng=0), 2),
    "MaxPool2D": (lambda: L.MaxPool2D(2), 4),
    "AvgPool2D": (lambda: L.AvgPool2D(2), 4),
    "Flatten": (lambda: L.Flatten(), 4),
    "ReLU": (lambda: L.ReLU(), 4),
    "LeakyReLU": (lambda: L.LeakyReLU(0.1), 4),
    "Sigmoid": (lambda: L.Sigmoid(), 2),
    "Tanh": (lambda: L.Tanh(), 2),
    "Dropout": (lambda: L.Dropout(0.5, rng=0), 2),
    "BatchNorm1D": (lambda: L.BatchNorm1D(4), 2),
    "BatchNorm2D": (lambda: L.BatchNorm2D(2), 4),
    "Add": (lambda: L.Add(), 4),
    "Concatenate": (lambda: L.Concatenate(axis=1), 4),
    "GlobalAvgPool2D": (lambda: L.GlobalAvgPool2D(), 4),
    "GlobalMaxPool2D": (lambda: L.GlobalMaxPool2D(), 4),
    "AdaptiveAvgPool2D": (lambda: L.AdaptiveAvgPool2D((2, None)), 4),
    "Softmax": (lambda: L.Softmax(axis=1), 2),
    "Reshape": (lambda: L.Reshape((2, 3)), 2),
}

#: layer type -> (CPU fast stage, graph stage, ONNX operator): which paths it has; every type has the
#: readable reference path and runs eagerly on CUDA
PATHS = {
    "Conv2D": (True, True, "Conv"),
    "Dense": (True, True, "Gemm"),
    "MaxPool2D": (True, True, "MaxPool"),
    "AvgPool2D": (True, True, "AveragePool"),
    "Flatten": (True, True, "Flatten"),
    "ReLU": (True, True, "Relu"),
    "LeakyReLU": (True, False, "LeakyRelu"),
    "Sigmoid": (True, False, "Sigmoid"),
    "Tanh": (True, True, "Tanh"),
    "Dropout": (False, False, None),
    "BatchNorm1D": (False, False, "BatchNormalization"),
    "BatchNorm2D": (True, True, "BatchNormalization"),
    "Add": (False, True, "Add"),
    "Concatenate": (False, True, "Concat"),
    "GlobalAvgPool2D": (False, True, "GlobalAveragePool"),
    "GlobalMaxPool2D": (False, False, "GlobalMaxPool"),
    "AdaptiveAvgPool2D": (False, False, "AveragePool (adaptive)"),
    "Softmax": (False, False, "Softmax"),
    "Reshape": (False, False, "Reshape"),
}


def _takes(take, layer, rank):
    steps = planner.plan([layer], take, rank)
    return steps[0].match is not None


def test_every_layer_class_is_registered_once():
    exported = {name for name, obj in vars(L).items() if inspect.isclass(obj) and issubclass(obj, L.Layer)
                and obj is not L.Layer}
    assert exported == set(registry.LAYER_TYPES) == set(SAMPLES) == set(PATHS)
    assert all(entry.cls is getattr(L, name) for name, entry in registry.LAYER_TYPES.items())


@pytest.mark.parametrize("name", sorted(registry.LAYER_TYPES))
def test_the_paths_of_each_layer_type(name):
    entry = registry.LAYER_TYPES[name]
    build, rank = SAMPLES[name]
    layer = build()
    cpu_fast, graph_stage, onnx_op = PATHS[name]
    assert _takes(cpu.take, layer, rank) == cpu_fast
    if entry.patterns:  # the joins and the global pool are nodes of their own, not planner matches
        assert _takes(graph.take, layer, rank) == graph_stage
    assert (name in graph.SUPPORTED_LAYERS) == graph_stage  # the graph's refusal names what it supports
    assert entry.onnx == onnx_op and (onnx_op is None or onnx_op in gpucnn_onnx.EMITTERS)


@pytest.mark.parametrize("name", sorted(registry.LAYER_TYPES))
def test_each_entry_rebuilds_its_layer_and_names_real_patterns_and_kernels(name):
    entry = registry.LAYER_TYPES[name]
    layer = SAMPLES[name][0]()
    assert registry.layer_type(layer) is entry
    rebuilt = architecture.build(architecture.describe(Sequential([layer]))).layers[0]
    assert type(rebuilt) is type(layer) and repr(rebuilt) == repr(layer)
    for kind, position in entry.patterns:
        assert entry.cls in planner.PATTERNS[kind][position]
    for kernel in entry.cuda_kernels:
        file, function = kernel.split(":")
        source = (KERNELS / file).read_text() + "".join(p.read_text() for p in KERNELS.glob("*.cuh"))
        assert re.search(rf"\b{function}\b", source), kernel
        assert function in loader.SIGNATURES[file], kernel  # launchable: the loader knows its signature
    assert entry.rank in ("same", 2, None)  # None: known only from the layer (Reshape)


def test_a_subclass_is_not_the_registered_type():
    class MyReLU(L.ReLU):
        pass

    assert registry.layer_type(MyReLU()) is None
    assert registry.describe(Sequential([MyReLU()])) is None
    assert planner.plan([MyReLU()], cpu.take, 4)[0].match is None
    pytest.importorskip("onnx")
    with pytest.raises(gpucnn_onnx.ExportError, match="has no ONNX form"):
        gpucnn_onnx.to_onnx(Sequential([MyReLU()]), (3,))


def test_the_planner_patterns_come_from_the_registry():
    assert planner.PATTERNS["conv"] == ((L.Conv2D,), (L.ReLU,), (L.MaxPool2D,))
    assert planner.PATTERNS["dense"] == ((L.Dense,), (L.ReLU,))
    assert set(planner.PATTERNS["elementwise"][0]) == {L.ReLU, L.LeakyReLU, L.Sigmoid, L.Tanh}
    assert planner.rank_after(L.Flatten(), 4) == 2 and planner.rank_after(L.BatchNorm2D(2), 4) == 4
    assert numpy.dtype(architecture.build({"layers": [{"type": "Dense", "args": {"in_features": 2,
                       "out_features": 1}}], "dtype": "float64"}).layers[0].weight.data.dtype) == numpy.float64
