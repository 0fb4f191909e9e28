"""``gpucnn bench --estimate`` (gpucnn/commands/estimate.py, gpucnn/perf/): the performance model without a GPU.

- the FLOPs of a step are the model's arithmetic, computed here from the layer shapes;
- the JSON has its fields, and blocks per SM and waves agree with the grid, the SMs and the per-SM limits;
- every printed line is labelled 'estimate'; an unknown --gpu is refused in one line;
- the launches listed for one eager and one graph step of fashion_cnn are the ones the emulated CuPy records
  (our kernels: same names, same counts, same grids, in order; the eager step's CuPy and cuBLAS operations too);
- the ptxas / SASS readers, the occupancy rule, the GPUs' figures, the host timing.
"""
import json
import math
import shutil

import numpy
import pytest

import gpucnn
from support.helpers import record_kernel_launches
from gpucnn.commands import bench, estimate
from gpucnn.perf import eager, gpus, graph, host, resources, roofline

pytest.importorskip("cupy")  # the launchers whose grid arithmetic the model imports need CuPy importable (no GPU)

FASHION = (1, 28, 28)


def _forward_flops(batch):
    """fashion_cnn's forward pass, 2 x multiply-adds, from its layer shapes (conv 3x3 'same', pool 2, dense)."""
    conv1 = 2 * batch * 28 * 28 * 32 * (1 * 3 * 3)
    conv2 = 2 * batch * 14 * 14 * 64 * (32 * 3 * 3)
    dense1 = 2 * batch * (64 * 7 * 7) * 128
    dense2 = 2 * batch * 128 * 10
    return conv1 + conv2 + dense1 + dense2, conv1


@pytest.fixture(scope="module")
def kernel_table(tmp_path_factory):
    """The real ptxas/SASS table for sm_90 where nvcc is on PATH (compiled into a temporary cache), else a
    stand-in table with plausible resources, so the consistency checks always have registers to work with."""
    if shutil.which("nvcc"):
        mp = pytest.MonkeyPatch()
        mp.setenv("GPUCNN_ESTIMATE_CACHE", str(tmp_path_factory.mktemp("estimate-cache")))
        try:
            table, note = resources.kernel_resources("sm_90")
        finally:
            mp.undo()
        return table, note
    from gpucnn.ops.cuda import loader
    table = {e: {"registers": 40, "smem": 8192 if "fused" in f and "pool" not in f else 0, "inner_loop": None,
                 "sass": "none", "compiler": "stand-in"}
             for f in loader.SIGNATURES for e in resources.instantiations(f)}
    return table, "stand-in table (no nvcc)"


@pytest.fixture
def with_table(kernel_table, monkeypatch):
    monkeypatch.setattr(resources, "kernel_resources", lambda arch, use_cache=True: kernel_table)
    return kernel_table


def test_step_flops_are_the_models_arithmetic():
    forward, conv1 = _forward_flops(256)
    assert estimate.model_flops("fashion_cnn", 256) == 3 * forward
    assert round(3 * forward / 1e9, 1) == 6.5
    model = gpucnn.models.fashion_cnn()
    # Neither step computes the first layer's input gradient (need_input_grad=False, as fit does).
    # The fused weight gradients (both steps) also multiply the bias column (against ones): a few tenths of a
    # percent more.
    for step in (eager.eager_step(model, (256,) + FASHION), graph.graph_step(model, (256,) + FASHION)):
        flops = sum(launch["flops"] for launch in step)
        assert 3 * forward - conv1 <= flops <= (3 * forward - conv1) * 1.005


def test_json_fields_and_occupancy_agree_with_grid_and_sms(with_table, tmp_path, capsys):
    path = tmp_path / "estimate.json"
    assert bench.main(["--estimate", "--batch-sizes", "64,256", "--json", str(path), "--no-host-timing"]) == 0
    report = json.loads(path.read_text())
    gpu = gpus.GPUS["h100-sxm"]
    assert report["gpu"]["sms"] == gpu.sms == 132
    assert [run["batch"] for run in report["runs"]] == [64, 256]
    for run in report["runs"]:
        assert set(run["steps"]) == {"eager", "graph"}
        for step in run["steps"].values():
            launches = step["launches"]
            assert step["est_step_ms"] == pytest.approx(sum(launch["est_us"] for launch in launches) / 1000)
            for launch in launches:
                for field in ("name", "grid", "block", "blocks_per_sm", "waves", "flops", "bytes", "est_us", "bound"):
                    assert field in launch, (field, launch["name"])
                assert launch["bound"] in ("compute", "memory", "launch") and launch["est_us"] > 0
                if launch["kind"] == "ours":
                    blocks, resident = math.prod(launch["grid"]), launch["blocks_per_sm"]
                    assert launch["block"] == [256] and 1 <= resident <= 32
                    assert resident * 256 <= 2048
                    registers = launch["registers"]
                    assert resident * 8 * (-(-registers * 32 // 256) * 256) <= 65536
                    assert resident * (launch["smem"] + 1024) <= gpu.smem_per_sm
                    assert launch["waves"] == -(-blocks // (resident * gpu.sms))
                    assert launch["sms_in_use"] == min(blocks, gpu.sms)
    graph_256 = report["runs"][1]["steps"]["graph"]["launches"]
    wgrad = [launch for launch in graph_256 if launch["name"].startswith("conv_wgrad") and launch["gemm"]]
    assert [launch["gemm"] for launch in wgrad] == [[64, 289, 256 * 14 * 14], [32, 10, 256 * 28 * 28]]
    from gpucnn.compile.cuda_graph import launch as fused
    # the launcher's own split-K choice for this GPU's SMs (one slice without split-K); conv1's, the first stage's,
    # reads the max-pool's gradient and argmax itself (conv_wgrad_pooled_*)
    for launch, kernel in zip(wgrad, ("conv_wgrad", "conv_wgrad_pooled")):
        m, n, k = launch["gemm"]
        tile, slices = fused.weight_grad_plan(m, n, k, gpu.sms)
        assert launch["slices"] == slices and launch["tile"] == list(fused.GEMM_TILES[tile])
        assert launch["grid"] == [fused.gemm_blocks(m, n, tile) * slices]  # (JSON: a list)
        assert launch["name"] == kernel + ("_fused" if slices == 1 else "_partial_fused")


def test_every_printed_line_says_estimate(with_table, capsys):
    assert estimate.main(["--batch-sizes", "32", "--model", "lenet5"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) > 40
    missing = [line for line in lines if "estimate" not in line]
    assert not missing, missing
    assert any("eager step host" in line for line in lines)  # host timing on by default


def test_unknown_gpu_is_refused_in_one_line(capsys):
    assert bench.main(["--estimate", "--gpu", "v100"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "v100" in err and "h100-sxm" in err


def test_a_model_with_layers_outside_the_launch_lists_is_refused_in_one_line(with_table, capsys, monkeypatch):
    from gpucnn.layers import Dense, Flatten, LeakyReLU
    from gpucnn.nn import models
    monkeypatch.setitem(models.MODELS, "leaky", lambda: gpucnn.Sequential([Flatten(), Dense(784, 10), LeakyReLU(0.1)]))
    monkeypatch.setitem(models.INPUT_SHAPES, "leaky", FASHION)
    assert estimate.main(["--model", "leaky", "--no-host-timing"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "LeakyReLU" in err


def _dilated_fashion_cnn():
    """fashion_cnn with dilation-2 convolutions (padding 2 keeps the sizes): the eager im2col + cuBLAS path."""
    from gpucnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    return gpucnn.Sequential([Conv2D(1, 32, 3, padding=2, dilation=2), ReLU(), MaxPool2D(2),
                              Conv2D(32, 64, 3, padding=2, dilation=2), ReLU(), MaxPool2D(2), Flatten(),
                              Dense(64 * 7 * 7, 128), ReLU(), Dense(128, 10)])


def test_row_sums_of_long_rows_take_two_launches():
    from gpucnn.ops.cuda import conv
    assert eager.GRID_Y_LIMIT == conv._MAX_GRID_Y  # the chunking's limit, as the launcher has it
    launches = eager.eager_step(_dilated_fashion_cnn(), (256,) + FASHION)
    sums = [launch["grid"] for launch in launches if launch["name"] == "row_sum"]
    chunks2, chunks1 = -(-256 * 14 * 14 // conv.ROW_SUM_CHUNK), -(-256 * 28 * 28 // conv.ROW_SUM_CHUNK)
    assert sums == [(64, chunks2), (64, 1), (32, chunks1), (32, 1)] and (chunks2, chunks1) == (13, 49)


def test_the_eager_conv_and_dense_run_on_the_fused_kernels_where_they_can():
    launches = eager.eager_step(gpucnn.models.fashion_cnn(), (256,) + FASHION)
    ours = {launch["file"] for launch in launches if launch["kind"] == "ours"}
    assert ours == {"fused_conv.cu", "fused_dense.cu", "pool.cu", "loss.cu", "multi_update.cu"}
    assert not [launch for launch in launches if launch["kind"] == "cublas"]
    fallback = {launch["name"] for launch in eager.eager_step(_dilated_fashion_cnn(), (256,) + FASHION)}
    assert {"im2col", "col2im", "transpose01", "cupy.matmul", "dense_fwd_partial_fused"} <= fallback


def test_occupancy_rule_and_published_figures():
    h100 = gpus.GPUS["h100-sxm"]
    assert gpus.blocks_per_sm(h100, 256, 48, 8192) == (5, "registers")  # 1536 registers per warp, 8 warps a block
    assert gpus.blocks_per_sm(h100, 256, 16, 0) == (8, "threads")
    assert gpus.blocks_per_sm(h100, 32, 16, 48 * 1024) == (4, "shared memory")  # 49 KiB per block with the reserve
    assert gpus.blocks_per_sm(h100, 256, None, 0) == (None, "unknown")
    assert gpus.waves(h100, 133, 1) == 2 and gpus.waves(h100, 132, 1) == 1 and gpus.waves(h100, 5, None) is None
    for gpu in gpus.GPUS.values():  # peak = SMs x FP32 lanes x 2 x boost clock, to the datasheet's rounding
        assert gpu.sms * gpu.fp32_lanes_per_sm * 2 * gpu.boost_ghz * 1e9 == pytest.approx(gpu.peak_fp32_flops, rel=0.01)
    assert (gpus.GPUS["h200"].hbm_bytes_per_s, gpus.GPUS["a100"].sms, gpus.GPUS["a100"].smem_per_sm) == \
        (4.8e12, 108, 164 * 1024)


def test_roofline_picks_the_larger_bound():
    gpu = gpus.GPUS["h100-sxm"]
    launch = {"kind": "cublas", "grid": (1,), "flops": int(67e9), "bytes": 0}
    roofline.annotate(launch, gpu, {})
    # one tile on one of 132 SMs at the cuBLAS efficiency: 1 GFLOP/s-ms scale, compute-bound
    assert launch["bound"] == "compute"
    assert launch["compute_us"] == pytest.approx(1e6 * 132 / roofline.CUBLAS_EFFICIENCY / 1000)
    small = roofline.annotate({"kind": "cupy", "grid": (1,), "flops": 0, "bytes": 8}, gpu, {})
    assert small["bound"] == "launch" and small["est_us"] == pytest.approx(roofline.LAUNCH_GAP_S * 1e6, rel=1e-3)


SASS = """
        Function : _Z14conv_fwd_fusedIfEvPKT_S2_S2_PS0_iiiiiiiiiiiiii
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   IMAD R2, R3, R4, R5 ;
        /*0020*/                   FFMA R6, R7, R8, R6 ;
        /*0030*/                   LDS R9, [R10] ;
        /*0040*/                   FFMA R6, R9, R8, R6 ;
        /*0050*/               @P0 BRA 0x20 ;
        /*0060*/              @!P1 BRA 0x10 ;
        /*0070*/                   EXIT ;
        /*0080*/                   BRA 0x80;
"""
PTXAS = """ptxas info    : Compiling entry function '_Z6im2colIfiEvPKT_PS0_iiiiiiiiiiiiiiT0_' for 'sm_90'
ptxas info    : Used 32 registers, used 0 barriers
ptxas info    : Compiling entry function '_Z14conv_fwd_fusedIfEvPKT_S2_S2_PS0_iiiiiiiiiiiiii' for 'sm_90'
ptxas info    : Used 48 registers, used 1 barriers, 8192 bytes smem
"""


def test_ptxas_and_sass_readers():
    assert resources.parse_ptxas(PTXAS) == {"_Z6im2colIfiEvPKT_PS0_iiiiiiiiiiiiiiT0_": {"registers": 32, "smem": 0},
                                            "_Z14conv_fwd_fusedIfEvPKT_S2_S2_PS0_iiiiiiiiiiiiii":
                                            {"registers": 48, "smem": 8192}}
    assert resources.expression_of("_Z6im2colIfiEvPKT_PS0_iiiiiiiiiiiiiiT0_") == "im2col<float, int>"
    assert resources.expression_of("_Z14conv_fwd_fusedIfEvPKT_S2_S2_PS0_iiiiiiiiiiiiii") == "conv_fwd_fused<float>"
    loop = resources.parse_sass(SASS)["_Z14conv_fwd_fusedIfEvPKT_S2_S2_PS0_iiiiiiiiiiiiii"]
    # loops [0x20, 0x50] inside [0x10, 0x60]; the self-branch after EXIT is no loop; the inner one has 2 FFMA of 4
    assert loop == {"ffma": 2, "lds": 1, "ldg": 0, "instructions": 4, "share": 0.5, "range": ["0x20", "0x50"]}
    assert resources.parse_sass(SASS, every_loop=True)["_Z14conv_fwd_fusedIfEvPKT_S2_S2_PS0_iiiiiiiiiiiiii"] == [loop]


def test_a_tiled_gemm_takes_its_tiles_k_loop_and_pays_its_padding():
    """roofline.tile_loop: the loop with the tile's TK x RM x RN FFMA and TK x (RM/4 + RN/4) LDS (the shorter of
    two for a unit-stride dgrad); issued_flops: the padded tile grid and k-steps."""
    loops = [{"ffma": 256, "lds": 32, "instructions": 512, "share": 0.5},    # 64x64x16, 4x4: the strided copy
             {"ffma": 256, "lds": 24, "instructions": 400, "share": 0.64},   # 128x64x8, 8x4
             {"ffma": 256, "lds": 32, "instructions": 320, "share": 0.8}]    # 64x64x16, 4x4: unit stride
    launch = {"tile": [64, 64, 16, 4, 4], "gemm": [32, 100, 20], "flops": 2 * 32 * 100 * 20}
    assert roofline.tile_loop(launch, {"loops": loops}) is loops[0]
    assert roofline.tile_loop(dict(launch, variant="unit stride"), {"loops": loops}) is loops[2]
    assert roofline.tile_loop(dict(launch, tile=[128, 64, 8, 8, 4]), {"loops": loops}) is loops[1]
    assert roofline.tile_loop(dict(launch, tile=[32, 32, 16, 2, 2]), {"loops": loops}) is None
    assert roofline.issued_flops(launch) == 2 * 64 * 128 * 32      # M 32 -> 64, N 100 -> 128, K 20 -> 32
    assert roofline.issued_flops(dict(launch, slices=3)) == 2 * 64 * 128 * 16 * 3  # slices of ceil(20/3) -> 16
    assert roofline.issued_flops({"flops": 7}) == 7


@pytest.mark.kernels
def test_real_resources_cover_every_kernel_of_both_steps(kernel_table):
    table, note = kernel_table
    if "stand-in" in note:
        pytest.skip("nvcc is not on PATH")
    model = gpucnn.models.fashion_cnn()
    for launch in eager.eager_step(model, (8,) + FASHION) + graph.graph_step(model, (8,) + FASHION):
        if launch["kind"] == "ours":
            res = table[launch["expression"]]
            assert 0 < res["registers"] <= 255 and res["smem"] <= 48 * 1024
    # both buffers of A and B of the largest tile: 32 x 128 x 16, rows padded by 4 (fused_common.cuh)
    assert table["conv_fwd_fused<float>"]["smem"] == 2 * 16 * (36 + 132) * 4
    loop = table["conv_wgrad_fused<float>"]["inner_loop"]
    if loop is not None:  # with cuobjdump: the multiply loop of the tiled GEMM core
        assert 0 < loop["share"] <= 1 and loop["ffma"] >= 16


def test_host_time_of_our_launches_is_measured_without_a_gpu():
    from gpucnn.ops.cuda import loader
    before = loader.get_kernel
    launches = eager.eager_step(gpucnn.models.fashion_cnn(), (16,) + FASHION)
    seconds = host.host_launch_seconds(launches, number=20, repeats=2)
    assert loader.get_kernel is before
    ours = {(launch["file"], launch["name"]) for launch in launches if launch["kind"] == "ours"}
    assert set(seconds) == ours and all(0 < s < 1e-3 for s in seconds.values())


# ----------------------------------------------------------------------------- against the emulated CuPy


def _ours(launches):
    return [(launch["name"], launch["grid"]) for launch in launches if launch["kind"] == "ours"]


@pytest.mark.kernels
def test_eager_step_launches_are_what_the_emulated_gpu_records(gpu, monkeypatch):
    calls = record_kernel_launches(gpu, monkeypatch)
    step, _, _, _ = bench.gpucnn_step("cuda:0", 4)
    step()
    step()  # the first step builds the optimizer's flat buffers; model a steady one
    calls.clear()
    gpu.device_ops.reset()
    step()
    sm_count = getattr(gpu.fused, "device_sm_count", lambda: None)()  # what the fused launchers ask the device
    launches = eager.eager_step(gpucnn.models.fashion_cnn(), (4,) + FASHION, sm_count)
    assert _ours(launches) == calls
    names = [("kernel " if launch["kind"] == "ours" else "") + launch["name"] for launch in launches]
    assert names == gpu.device_ops.names  # CuPy's and cuBLAS's operations too, in order


@pytest.mark.kernels
def test_graph_step_launches_are_what_the_emulated_capture_holds(gpu, monkeypatch):
    """Batch 4: the first convolution's weight gradient has K = 4*28*28 = 3136, long enough for the launcher's
    split-K (where it has one) to choose S > 1: the model follows it there too."""
    from gpucnn.compile.cuda_graph.step import WARMUP_RUNS
    from gpucnn.nn.losses import SoftmaxCrossEntropy
    from gpucnn.optim.optimizers import Adam

    calls = record_kernel_launches(gpu, monkeypatch)
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    step = gpucnn.compile_step(model, SoftmaxCrossEntropy(), Adam(model.parameters()), 4, verify=False)
    rng = numpy.random.default_rng(0)
    step.bind(gpu.cupy.asarray(rng.standard_normal((4,) + FASHION).astype(numpy.float32)),
              gpu.cupy.asarray(rng.integers(0, 10, 4)))
    calls.clear()
    step.capture()  # WARMUP_RUNS uncaptured runs of the step, then the captured one
    per_run = len(calls) // (WARMUP_RUNS + 1)
    assert len(calls) == per_run * (WARMUP_RUNS + 1)
    sm_count = getattr(gpu.fused, "device_sm_count", lambda: None)()  # what the launcher asks the device
    launches = graph.graph_step(gpucnn.models.fashion_cnn(), (4,) + FASHION, sm_count)
    assert _ours(launches) == calls[-per_run:]
    assert [c for c in step.captured if c.startswith("kernel ")] == \
        ["kernel " + launch["name"] for launch in launches if launch["kind"] == "ours"]
