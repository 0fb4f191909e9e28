"""The one planner (gpucnn/compile/plan.py) and the one verifier (gpucnn/compile/verify.py)."""
import numpy
import pytest

import gpucnn
from gpucnn.commands import checks
from gpucnn.compile import plan as planner
from gpucnn.compile import verify
from gpucnn.compile.cpu import runner as cpu
from gpucnn.compile.cuda_graph import plan as graph
from gpucnn.compile.cuda_graph import step as graph_step
from gpucnn.nn.layers import AvgPool2D, BatchNorm2D, Conv2D, Dense, Flatten, LeakyReLU, MaxPool2D, ReLU, Sigmoid


def _kinds(steps):
    return [(s.match.kind, len(s.layers)) if s.match is not None else type(s.layer).__name__ for s in steps]


def test_both_executors_plan_the_reference_network_from_the_same_matches():
    layers = gpucnn.models.fashion_cnn(rng=0).layers
    assert _kinds(planner.plan(layers, cpu.take, rank=4)) == [("conv", 3), ("conv", 3), ("flatten", 1),
                                                             ("dense", 1), ("elementwise", 1), ("dense", 1)]
    assert _kinds(planner.plan(layers, graph.take)) == [("conv", 3), ("conv", 3), ("flatten", 1), ("dense", 2),
                                                       ("dense", 1)]
    names = [type(s).__name__ for s in graph.build_stages(gpucnn.models.fashion_cnn(rng=0))]
    # conv + ReLU + 2x2 max-pool: one stage, the pool in the convolution's epilogue (fused.pool_fuses)
    assert names == ["_ConvPoolStage", "_ConvPoolStage", "_ElementwiseStage", "_DenseStage", "_DenseStage"]


def test_optional_layers_of_a_pattern_may_be_skipped_and_a_partial_take_is_planned_again():
    layers = [Conv2D(1, 2, 3), MaxPool2D(2), Conv2D(2, 2, 3), ReLU(), MaxPool2D(2, padding=1)]
    # conv + max-pool folds without a ReLU; a padded pool does not fold on the CPU: planned again as a pool
    assert _kinds(planner.plan(layers, cpu.take, rank=4)) == [("conv", 2), ("conv", 2), ("pool", 1)]
    assert _kinds(planner.plan(layers, graph.take)) == [("conv", 2), ("conv", 3)]


def test_the_rank_decides_what_the_cpu_takes_and_unknown_layers_stay_themselves():
    layers = [Conv2D(1, 2, 3, dilation=2), LeakyReLU(), BatchNorm2D(2), AvgPool2D(2), Flatten(), Dense(2, 2),
              Sigmoid()]
    assert _kinds(planner.plan(layers, cpu.take, rank=4)) == ["Conv2D", ("elementwise", 1), ("batchnorm", 1),
                                                             ("pool", 1), ("flatten", 1), ("dense", 1),
                                                             ("elementwise", 1)]
    assert _kinds(planner.plan(layers, cpu.take, rank=None)) == ["Conv2D", "LeakyReLU", "BatchNorm2D",
                                                                "AvgPool2D", "Flatten", ("dense", 1),
                                                                ("elementwise", 1)]  # rank 2 after Flatten
    with pytest.raises(NotImplementedError, match="layer 0 .* dilated or grouped"):
        planner.plan(layers, graph.take)


def test_the_graph_names_the_layer_it_has_no_stage_for():
    model = gpucnn.Sequential([Conv2D(1, 2, 3), BatchNorm2D(2), LeakyReLU(0.1), Flatten()])
    with pytest.raises(NotImplementedError, match=r"layer 2 \(LeakyReLU\) has no fused stage"):
        graph.build_stages(model)


def test_one_relative_error_rule():
    want = numpy.array([1.0, -4.0, numpy.nan, numpy.inf])
    assert verify.relative_error(want, want) == 0.0
    assert verify.relative_error(want + numpy.array([0, 1e-3, 0, 0]), want) == pytest.approx(1e-3 / 4)
    assert verify.relative_error(numpy.array([1.0, -4.0, 0.0, numpy.inf]), want) == float("inf")  # NaN moved
    assert verify.relative_error(numpy.array([1.0, -4.0, numpy.nan, -numpy.inf]), want) == float("inf")
    assert verify.relative_error(numpy.zeros(3), numpy.zeros(2)) == float("inf")
    assert verify.relative_error(numpy.array([1e-7]), numpy.array([0.0]), scale_floor=1.0) == pytest.approx(1e-7)


def test_one_tolerance_table_per_dtype_and_precision_serves_every_caller(monkeypatch):
    assert verify.tolerance(numpy.float32) == 1e-4 and verify.tolerance("float64") == 1e-10
    assert verify.tolerance(numpy.float32, "tf32") == 1e-2  # 1e-4 would report TF32's rounding as a mismatch
    with pytest.raises(ValueError, match="no tolerance for dtype float16"):
        verify.tolerance(numpy.float16)
    fp32 = {numpy.dtype(name): limit for (name, mode), limit in verify.TOLERANCES.items() if mode == "fp32"}
    assert graph_step.TOLERANCES == checks.TOLERANCE == fp32
    monkeypatch.setenv("CUPY_TF32", "1")
    assert verify.precision_mode() == "tf32"
    monkeypatch.setenv("CUPY_TF32", "0")
    assert verify.precision_mode() == "fp32"


def test_the_cpu_verify_mode_reports_by_the_one_rule(monkeypatch):
    with pytest.raises(cpu.FastPathMismatch, match="relative error 0.5 > 0.0001"):
        cpu._compare("forward output", numpy.array([1.0, 1.0], numpy.float32), numpy.array([1.0, 2.0], numpy.float32),
                     "raise")
    cpu._compare("forward output", numpy.array([1.0, 2.00001], numpy.float32), numpy.array([1.0, 2.0], numpy.float32),
                 "raise")
