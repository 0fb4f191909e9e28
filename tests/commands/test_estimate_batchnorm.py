"""The performance model's records of a BatchNorm2D stage (gpucnn/perf/batchnorm.py): the launcher's kernels, grids
of C*S blocks that fill a wave of 132 SMs at ResNet-20's shapes, FLOPs and compulsory bytes as counted by hand,
and expressions that the ptxas table (gpucnn/perf/resources.py) and the roofline know."""
import numpy
import pytest

from gpucnn.perf import batchnorm, gpus, resources, roofline
from gpucnn.perf.record import Recorder

pytest.importorskip("cupy")  # the launchers' arithmetic is imported (CuPy importable, no GPU)

F32 = 4


def _forward(shape, relu=False, sm_count=None):
    rec = Recorder("graph")
    batchnorm.record_batchnorm_forward(rec, "3 BatchNorm2D", shape, numpy.float32, relu, sm_count)
    return rec.launches


def _backward(shape, relu, need_input_grad, sm_count=None):
    rec = Recorder("graph")
    batchnorm.record_batchnorm_backward(rec, "3 BatchNorm2D", shape, numpy.float32, relu, need_input_grad, sm_count)
    return rec.launches


def test_forward_records_by_hand():
    n, c, h, w = 128, 16, 32, 32
    launches = _forward((n, c, h, w), relu=True)
    size, slices = n * c * h * w, 32  # towards 4 blocks per SM (33), 4096 elements a slice at least: 131072 / 4096
    partial = 2 * c * slices
    assert [launch["name"] for launch in launches] == ["bn_stats_partial_fused", "bn_forward_apply_fused"]
    assert all(launch["grid"] == (c * slices,) and launch["block"] == (256,) for launch in launches)
    assert all(launch["layer"] == "3 BatchNorm2D" and launch["slices"] == slices for launch in launches)
    stats, apply = launches
    assert stats["flops"] == 6 * size and stats["bytes"] == F32 * (size + partial)
    assert apply["flops"] == 4 * size and apply["bytes"] == F32 * (size + partial + 4 * c + size + 4 * c)
    assert stats["expression"] == "bn_stats_partial_fused<float>"


def test_backward_records_by_hand():
    n, c, hw = 64, 64, 8 * 8
    size, slices = n * c * hw, 3  # one wave: ceil(132 / 64); 4096 elements allow no more than the wave
    partial = 2 * c * slices
    sums, grad_x = _backward((n, c, 8, 8), relu=True, need_input_grad=True)
    assert sums["grid"] == grad_x["grid"] == (c * slices,)
    assert sums["flops"] == (5 + 1) * size and sums["bytes"] == F32 * (3 * size + 2 * c + partial)
    assert grad_x["flops"] == (6 + 1) * size and grad_x["bytes"] == F32 * (3 * size + partial + 3 * c + size + 2 * c)
    sums, params = _backward((n, c, 8, 8), relu=False, need_input_grad=False)
    assert sums["flops"] == 5 * size and sums["bytes"] == F32 * (2 * size + 2 * c + partial)
    assert params["flops"] == 0 and params["bytes"] == F32 * (partial + 2 * c + 2 * c)


@pytest.mark.parametrize("batch", [64, 128, 256])
@pytest.mark.parametrize("side", [32, 28])
def test_every_launch_fills_a_wave_at_the_resnet20_shapes(batch, side):
    gpu = gpus.GPUS["h100-sxm"]
    table = {e: {"registers": 32, "smem": 3072, "inner_loop": None, "sass": "none", "compiler": "stand-in"}
             for e in resources.instantiations("fused_batchnorm.cu")}
    for i, c in enumerate((16, 32, 64)):
        shape = (batch, c, side // 2 ** i, side // 2 ** i)
        launches = _forward(shape, True, gpu.sms) + _backward(shape, True, True, gpu.sms)
        for launch in launches:
            assert launch["expression"] in table  # the ptxas table has its registers and shared memory
            roofline.annotate(launch, gpu, table)
            assert launch["blocks"] >= gpu.sms and launch["sms_in_use"] == gpu.sms, (shape, launch["name"])
            assert launch["registers"] == 32 and launch["waves"] >= 1


def test_the_slices_follow_the_sm_count():
    assert batchnorm.batchnorm_slices((256, 16, 32, 32), 132) == 33  # ceil(4 * 132 / 16)
    assert batchnorm.batchnorm_slices((256, 16, 32, 32), 66) == 17
    assert batchnorm.batchnorm_slices((64, 16, 32, 32), 132) == 16  # 65536 elements: 4096 a slice
    assert batchnorm.batchnorm_slices((8, 3), 132) == 8  # never more slices than elements
