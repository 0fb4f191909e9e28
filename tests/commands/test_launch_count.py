"""Launches per eager training step (gpucnn bench), counted on the emulated GPU.

Before issue 6's launch work, one eager Adam step of the reference network (fashion_cnn)
put 77 operations on the emulated GPU: 8 zero fills and 8 additions for the gradients, 8
optimizer launches, about 15 small CuPy kernels for the loss. After it: 40 (gradients
written in place, one softmax cross-entropy kernel, one multi-tensor update plus its scalar
kernel). The test holds the count at 40 or fewer.
"""
import numpy
import pytest

from support import emulated_cupy
from gpucnn.commands import bench, launch_count
from support.kernel_harness import FakeKernel

pytestmark = pytest.mark.kernels

BEFORE = 77
AFTER = 40


@pytest.fixture
def gpu(harness, monkeypatch):
    with emulated_cupy.installed(harness, FakeKernel) as emulated:
        def by_emulation(fn, sync):
            emulated.device_ops.reset()
            fn()
            sync()
            return emulated.device_ops.count, "emulated CuPy: every operation it would put on the GPU"

        monkeypatch.setattr(launch_count, "METHODS", [by_emulation] + launch_count.METHODS)
        yield emulated


def test_eager_step_launches_went_down(gpu):
    step, _, _, _ = bench.gpucnn_step("cuda:0", 4)
    step()
    step()  # the first step builds the optimizer's flat buffers; count a steady one
    gpu.syncs.reset()
    count, how = launch_count.count_launches(step)
    assert gpu.syncs.count == 0  # nothing read back inside the step (the loss checks labels on the device)
    assert how.startswith("emulated CuPy")
    names = gpu.device_ops.names
    assert count == len(names) <= AFTER < BEFORE, "\n".join(names)
    assert "fill" not in names and names.count("kernel softmax_xent") == 1
    assert [n for n in names if "update" in n] == ["kernel multi_adam_update"]


def test_without_cupti_only_our_kernels_are_counted_and_labelled_so(gpu, monkeypatch):
    monkeypatch.setattr(launch_count, "METHODS", launch_count.METHODS[2:])  # neither the emulation nor CUPTI
    step, _, _, _ = bench.gpucnn_step("cuda:0", 4)
    step()
    gpu.launches.clear()
    count, how = launch_count.count_launches(step)
    assert count == len(gpu.launches) > 0 and "RawKernel launches only" in how


def test_bench_reports_the_count(gpu):
    result = bench.compare("cuda:0", 2, repeats=1, warmup=0, per_layer=False, with_torch=False)
    ours = result["gpucnn"]
    assert ours["launches_per_step"] <= AFTER and ours["launches_counted_by"].startswith("emulated")
    assert numpy.isfinite(ours["step_s"])
