"""The fused kernels (gpucnn/kernels/fused_*.cu) equal their NumPy twins (gpucnn.compile.cuda_graph.reference).

Two layers, as for the other kernels:
- the kernels themselves in the host harness, the tiled ones replayed block by block and
  phase by phase with every thread of a block (tests/kernels/harness_fused.cuh), against the
  twins composed from the readable ops, float32 and float64, over the conv geometry cases of
  tests/support/cuda_cases.py plus shapes spanning several tiles and k-steps (the max pool's:
  tests/kernels/test_fused_pool_order.py);
- the launchers (gpucnn/compile/cuda_graph/launch.py) over a NumPy stand-in for CuPy, every launch
  checked for its exact argument types and grid (FakeKernel), and their errors.
The fused kernels sum in a different order than NumPy's GEMM: float32 is held to 1e-4 and
float64 to 1e-10 relative to the largest magnitude (tests/support/cuda_parity.py: assert_close).
"""
import os
import pathlib
import subprocess

import numpy
import pytest

from gpucnn.compile.cuda_graph import reference
from gpucnn.ops.geometry import conv_window, pool_window
from support import cuda_cases as cases
from support import cuda_parity as parity
from support.kernel_harness import run_kernel

pytestmark = pytest.mark.kernels

DTYPES = cases.DTYPES
# name, N, C, H, W, O, window, bias: the parity cases, and shapes over several GEMM tiles and k-steps.
# The fused kernels take dilation 1 and groups 1 only (compile_step refuses other convolutions).
CONV_CASES = [case[:8] for case in cases.CONV_CASES
              if cases.conv_case(case)[7] == 1 and (case[6].dy, case[6].dx) == (1, 1)] + [
    ("tiles_m_n_k", 2, 3, 9, 9, 70, conv_window(3, 1, 1), True),
    ("fmnist_conv2", 2, 32, 14, 14, 64, conv_window(3, 1, "same"), True),
]
DENSE_CASES = [(1, 1, 1), (3, 5, 2), (70, 20, 65), (5, 130, 10), (4, 0, 3), (2, 3136, 128)]
# The GEMM kernels take their tile shape last (launch.GEMM_TILES): the cases take the tiles in turn, and
# test_every_tile_matches_the_twins runs every tile on shapes over tile edges.
TILES = range(7)
CONV_TILE = {case[0]: i % len(TILES) for i, case in enumerate(CONV_CASES)}


def _conv_geometry(n, c, h, w, o, window):
    oh, ow = window.output_size(h, w)
    return (n, c, h, w, o, window.kh, window.kw, window.sy, window.sx, window.pt, window.pl, oh, ow), oh, ow


def _conv_data(case, dtype, seed=0):
    _, n, c, h, w, o, window, with_bias = case
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c, window.kh, window.kw)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if with_bias else None
    return rng, x, weight, bias


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=cases.case_ids(CONV_CASES))
def test_fused_conv_kernels_match_twins(harness, case, dtype):
    _check_conv_kernels(harness, case, dtype, CONV_TILE[case[0]])


def _check_conv_kernels(harness, case, dtype, tile):
    _, n, c, h, w, o, window, with_bias = case
    rng, x, weight, bias = _conv_data(case, dtype)
    geometry, oh, ow = _conv_geometry(n, c, h, w, o, window)
    for relu in (False, True):
        y = numpy.full((n, o, oh, ow), numpy.nan, dtype=dtype)
        flags = (1 if with_bias else 0) | (2 if relu else 0)
        run_kernel(harness, "fused_conv.cu", "conv_fwd_fused", dtype,
                   (x, weight, weight if bias is None else bias, y) + geometry + (flags, tile))
        parity.assert_close(y, reference.conv2d_forward(x, weight, bias, window, relu), dtype, f"fwd relu={relu}")

    grad_y = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    mask = numpy.maximum(rng.standard_normal(x.shape), 0).astype(dtype)  # a ReLU output below the layer
    for masked in (False, True):
        grad_x = numpy.full(x.shape, numpy.nan, dtype=dtype)
        run_kernel(harness, "fused_conv.cu", "conv_dgrad_fused", dtype,
                   (grad_y, weight, mask, grad_x) + geometry + (4 if masked else 0, tile))
        expected = reference.conv2d_data_grad(grad_y, weight, x.shape, window, mask if masked else None)
        parity.assert_close(grad_x, expected, dtype, f"dgrad mask={masked}")

    for need_bias in (False, True):
        grad_w = numpy.full(weight.shape, numpy.nan, dtype=dtype)
        grad_b = numpy.full(o, numpy.nan, dtype=dtype)
        run_kernel(harness, "fused_conv.cu", "conv_wgrad_fused", dtype,
                   (grad_y, x, grad_w, grad_b) + geometry + (1 if need_bias else 0, tile))
        expected_w, expected_b = reference.conv2d_weight_grad(grad_y, x, weight.shape, window, need_bias)
        parity.assert_close(grad_w, expected_w, dtype, "wgrad")
        if need_bias:
            parity.assert_close(grad_b, expected_b, dtype, "bias grad (the column of ones)")
        else:
            assert numpy.isnan(grad_b).all(), "grad_b written without the bias flag"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,i,o", DENSE_CASES)
def test_fused_dense_kernels_match_twins(harness, n, i, o, dtype):
    _check_dense_kernels(harness, n, i, o, dtype, (n + i + o) % len(TILES))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile", TILES)
def test_every_tile_matches_the_twins(harness, tile, dtype):
    """Every tile shape on sizes that end inside a tile and K over several k-steps (and one step short)."""
    _check_conv_kernels(harness, ("tile_edges", 2, 3, 9, 9, 70, conv_window(3, 1, 1), True), dtype, tile)
    _check_dense_kernels(harness, 130, 37, 65, dtype, tile)


def _check_dense_kernels(harness, n, i, o, dtype, tile):
    rng = numpy.random.default_rng(n * 1000 + i + o)
    x = rng.standard_normal((n, i)).astype(dtype)
    weight = rng.standard_normal((o, i)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    for flags in range(4):
        y = numpy.full((n, o), numpy.nan, dtype=dtype)
        run_kernel(harness, "fused_dense.cu", "dense_fwd_fused", dtype, (x, weight, bias, y, n, i, o, flags, tile))
        expected = reference.linear_forward(x, weight, bias if flags & 1 else None, relu=bool(flags & 2))
        parity.assert_close(y, expected, dtype, f"dense fwd flags={flags}")

    y_relu = reference.linear_forward(x, weight, bias, relu=True)
    grad_y = rng.standard_normal((n, o)).astype(dtype)
    for masked in (False, True):
        grad_x = numpy.full((n, i), numpy.nan, dtype=dtype)
        run_kernel(harness, "fused_dense.cu", "dense_dgrad_fused", dtype,
                   (grad_y, y_relu, weight, grad_x, n, i, o, 4 if masked else 0, tile))
        expected = reference.linear_data_grad(grad_y, weight, y_relu if masked else None)
        parity.assert_close(grad_x, expected, dtype, f"dense dgrad mask={masked}")
        grad_w = numpy.full((o, i), numpy.nan, dtype=dtype)
        grad_b = numpy.full(o, numpy.nan, dtype=dtype)
        run_kernel(harness, "fused_dense.cu", "dense_wgrad_fused", dtype,
                   (grad_y, y_relu, x, grad_w, grad_b, n, i, o, 1 | (4 if masked else 0), tile))
        expected_w, expected_b = reference.linear_weight_grad(grad_y, x, y_relu if masked else None)
        parity.assert_close(grad_w, expected_w, dtype, f"dense wgrad mask={masked}")
        parity.assert_close(grad_b, expected_b, dtype, f"dense bias grad mask={masked}")


def test_fused_gemm_is_bitwise_repeatable(harness):
    """No atomics, a fixed order per output: two runs agree to the bit."""
    case = CONV_CASES[-1]
    _, n, c, h, w, o, window, _ = case
    rng, x, weight, bias = _conv_data(case, numpy.float32)
    geometry, oh, ow = _conv_geometry(n, c, h, w, o, window)
    grad_y = rng.standard_normal((n, o, oh, ow)).astype(numpy.float32)
    results = []
    for tile in [1, 1] + list(TILES):
        grad_w = numpy.zeros(weight.shape, dtype=numpy.float32)
        grad_b = numpy.zeros(o, dtype=numpy.float32)
        run_kernel(harness, "fused_conv.cu", "conv_wgrad_fused", numpy.float32,
                   (grad_y, x, grad_w, grad_b) + geometry + (1, tile))
        results.append((grad_w.tobytes(), grad_b.tobytes()))
    # every output is summed by one thread in ascending k whatever the tile: the same bits from every tile
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("kernel", ["conv_fwd_fused", "conv_dgrad_fused", "conv_wgrad_fused"])
def test_no_thread_depends_on_another_within_a_phase(harness, tmp_path, kernel, tile):
    """The replay's premise: running each phase's threads in reverse order gives the same bits."""
    case = ("tiles", 2, 3, 9, 9, 70, conv_window(3, 2, 1), True)
    _, n, c, h, w, o, window, _ = case
    rng, x, weight, bias = _conv_data(case, numpy.float32)
    geometry, oh, ow = _conv_geometry(n, c, h, w, o, window)
    grad_y = rng.standard_normal((n, o, oh, ow)).astype(numpy.float32)
    arrays = {"conv_fwd_fused": [x, weight, bias, numpy.zeros((n, o, oh, ow), numpy.float32)],
              "conv_dgrad_fused": [grad_y, weight, x, numpy.zeros(x.shape, numpy.float32)],
              "conv_wgrad_fused": [grad_y, x, numpy.zeros(weight.shape, numpy.float32), numpy.zeros(o, numpy.float32)]}
    outputs = {}
    for order in ("forward", "reverse"):
        paths = []
        for i, a in enumerate(arrays[kernel]):
            path = tmp_path / f"{order}{i}.bin"
            a.tofile(path)
            paths.append(str(path))
        argv = [harness.exe, kernel, "f32"] + paths + [str(v) for v in geometry] + ["7", str(tile)]
        env = dict(os.environ, GPUCNN_HARNESS_THREAD_ORDER=order)
        subprocess.run(argv, check=True, capture_output=True, env=env)
        outputs[order] = [pathlib.Path(p).read_bytes() for p in paths[-2:]]
    assert outputs["forward"] == outputs["reverse"]
    assert any(numpy.frombuffer(b, numpy.float32).any() for b in outputs["forward"])


# ----------------------------------------------------------------------------- launchers, over a NumPy CuPy

@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_launchers_match_twins(fused, dtype):
    case = ("launch", 2, 3, 7, 6, 5, conv_window(3, 2, 1), True)
    _, n, c, h, w, o, window, _ = case
    rng, x, weight, bias = _conv_data(case, dtype)
    xt = numpy.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # a non-contiguous view
    y = fused.conv2d_forward(xt, weight, bias, window, relu=True)
    parity.assert_close(y, reference.conv2d_forward(x, weight, bias, window, True), dtype, "conv fwd")
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    mask = numpy.maximum(x, 0)
    parity.assert_close(fused.conv2d_data_grad(grad_y, weight, x.shape, window, mask),
                        reference.conv2d_data_grad(grad_y, weight, x.shape, window, mask), dtype, "conv dgrad")
    for got, want in zip(fused.conv2d_weight_grad(grad_y, x, weight.shape, window),
                         reference.conv2d_weight_grad(grad_y, x, weight.shape, window)):
        parity.assert_close(got, want, dtype, "conv wgrad")
    assert fused.conv2d_weight_grad(grad_y, x, weight.shape, window, need_bias=False)[1] is None

    xd, wd, bd = x.reshape(n, -1), rng.standard_normal((4, c * h * w)).astype(dtype), bias[:4]
    yd = fused.linear_forward(xd, wd, bd, relu=True)
    parity.assert_close(yd, reference.linear_forward(xd, wd, bd, True), dtype, "dense fwd")
    gyd = rng.standard_normal(yd.shape).astype(dtype)
    parity.assert_close(fused.linear_data_grad(gyd, wd, yd), reference.linear_data_grad(gyd, wd, yd), dtype, "dx")
    for got, want in zip(fused.linear_weight_grad(gyd, xd, yd), reference.linear_weight_grad(gyd, xd, yd)):
        parity.assert_close(got, want, dtype, "dense wgrad")

    pool = pool_window(2)
    yp, argmax = fused.max_pool2d_forward(mask, pool, mask=True)
    yp_ref, argmax_ref = reference.max_pool2d_forward(mask, pool, mask=True)
    numpy.testing.assert_array_equal(yp, yp_ref)
    assert argmax.dtype == numpy.uint8
    numpy.testing.assert_array_equal(argmax, argmax_ref)
    gyp = rng.standard_normal(yp.shape).astype(dtype)
    parity.assert_close(fused.max_pool2d_backward(gyp, argmax, mask.shape, pool),
                        reference.max_pool2d_backward(gyp, argmax_ref, mask.shape, pool), dtype, "pool bwd")
    assert {name for _, name in fused.launches} == {
        "conv_fwd_fused", "conv_dgrad_fused", "conv_wgrad_fused", "dense_fwd_fused", "dense_dgrad_fused",
        "dense_wgrad_fused", "max_pool_u8_fwd", "max_pool_u8_bwd"}


def test_fused_launchers_refuse_bad_input(fused):
    window = conv_window(3, 1, 1)
    x = numpy.zeros((1, 2, 4, 4), dtype=numpy.float32)
    with pytest.raises(ValueError, match="weight has shape"):
        fused.conv2d_forward(x, numpy.zeros((3, 5, 3, 3), dtype=numpy.float32), None, window)
    with pytest.raises(TypeError, match="one dtype"):
        fused.conv2d_forward(x, numpy.zeros((3, 2, 3, 3)), None, window)
    with pytest.raises(ValueError, match="4-D"):
        fused.conv2d_forward(x[0], numpy.zeros((3, 2, 3, 3), dtype=numpy.float32), None, window)
    with pytest.raises(ValueError, match="uint8 argmax"):
        fused.max_pool2d_forward(numpy.zeros((1, 1, 16, 16)), pool_window(16))
    with pytest.raises(ValueError, match="32-bit"):
        fused.check_int32("conv2d_forward", x=2 ** 31)
    with pytest.raises(TypeError, match="argmax must be uint8"):
        fused.max_pool2d_backward(numpy.zeros((1, 1, 2, 2)), numpy.zeros((1, 1, 2, 2), dtype=numpy.int32),
                                  (1, 1, 4, 4), pool_window(2))
    assert fused.launches == []


def test_split_k_slices_fill_a_wave_within_their_bounds(fused):
    """S: among the slice counts that make tiles * S at least a full wave (each slice keeping at least
    SPLIT_K_MIN_K of k), the one whose busiest SM runs the fewest k-steps: ceil(tiles * S / SMs) blocks there."""
    assert (fused.SM_COUNT, fused.SPLIT_K_MIN_K, fused.GEMM_TK, fused.SPLIT_K_SEARCH) == (132, 256, 16, 4)
    assert fused.split_k_slices(32, 10, 200704) == 132          # conv1 of fashion_cnn at batch 256: 1 tile
    # conv2: 5 tiles of 64 x 64. S = 27 (135 blocks) would put 2 blocks of 117 k-steps on 3 SMs (234 steps); S = 79
    # (395 blocks): at most 3 blocks of 40 steps an SM (120), the fewest of S = 27 .. 108
    assert fused.split_k_slices(64, 289, 50176) == 79
    assert fused.split_k_slices(64, 289, 50176, tile=2) == 26   # 10 tiles of 32 x 64 -> 260 blocks, 2 an SM
    assert fused.split_k_slices(64, 289, 50176, sm_count=114) == 45
    assert fused.split_k_slices(32, 10, 50176, min_k=4096) == 12  # bounded by k // min_k
    assert fused.split_k_slices(128, 3137, 256) == 1            # dense1: 100 tiles, K too short to split
    assert fused.split_k_slices(64, 64 * 132, 10 ** 6) == 1     # the tiles alone fill the wave
    assert fused.split_k_slices(32, 10, 511) == 1 and fused.split_k_slices(32, 10, 512) == 2
    assert fused.device_sm_count() == 132                       # no device answers under the stand-in


def test_tiles_are_chosen_to_fill_the_gpu(fused):
    """The launcher's tile (gemm_tile) and (tile, S) of the weight gradients (weight_grad_plan) for the
    GEMMs of fashion_cnn: among the plans of at least one full wave on 132 SMs, the least k-steps of the busiest
    SM x padded tile area / FFMA share."""
    assert len(fused.GEMM_TILES) == len(TILES)
    assert all(tm * tn == 256 * rm * rn for tm, tn, _, rm, rn in fused.GEMM_TILES)
    # per k-step: TK x RM x RN FFMA, TK x one 16-byte LDS per 4 of RM and of RN, STAGE_SLOTS per staged element,
    # STEP_SLOTS
    assert (fused.STAGE_SLOTS, fused.STEP_SLOTS) == (10, 40)
    assert fused.tile_share(0) == 256 / (256 + 8 * 3 + 10 * 6 + 40)
    assert fused.tile_share(3) == 64 / (64 + 16 * 2 + 10 * 4 + 40)
    assert fused.gemm_tile(32, 256 * 784, 9) == 4        # conv1 forward, M = 32: no rows of padding
    assert fused.gemm_tile(32, 256 * 196, 576) == 4      # conv2 dgrad: 392 blocks of 32 x 128, 3 an SM, beat 784 (6)
    assert fused.gemm_tile(64, 256 * 196, 288) == 5      # conv2 forward: 392 blocks of 64 x 128 x 8
    assert fused.gemm_tile(256, 10, 128) == 6            # dense2 forward: 10 outputs, 32 x 16 pads them least
    assert fused.gemm_blocks(256, 128, 3) == 32 and fused.gemm_blocks(256, 128, 1) == 8
    assert fused.weight_grad_plan(32, 10, 256 * 784) == (6, 132)
    assert fused.weight_grad_plan(64, 289, 256 * 196) == (1, 79)
    assert fused.weight_grad_plan(64, 289, 64 * 196) == (1, 49)
    for m, n, k in ((32, 10, 64 * 784), (64, 289, 64 * 196), (32, 10, 256 * 784), (64, 289, 256 * 196),
                    (32, 10, 512 * 784), (64, 289, 512 * 196), (128, 3137, 256), (256, 128, 3136)):
        tile, slices = fused.weight_grad_plan(m, n, k)
        assert fused.gemm_blocks(m, n, tile) * slices >= 132, (m, n, k)  # at least one full wave


def test_device_sm_count_is_read_from_the_device(fused, monkeypatch):
    class Device:
        def __init__(self, device):
            self.attributes = {"MultiProcessorCount": 78 + device}

    monkeypatch.setattr(fused.cupy.cuda, "Device", Device, raising=False)
    monkeypatch.setattr(fused, "_SM_COUNTS", {})
    assert fused.device_sm_count() == 78
    assert fused.split_k_slices(32, 10, 200704, fused.device_sm_count()) == 78


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_splits_a_large_k_over_few_tiles(fused, monkeypatch, dtype):
    """40 x 3 outputs over K = 2100: two 32 x 16 tiles, S = 2100 // SPLIT_K_MIN_K = 8; the partial pass and the
    reduce (bias, ReLU) equal the split twin; K = 300 stays one pass."""
    grids = []
    launch = fused.loader.launch
    monkeypatch.setattr(fused.loader, "launch", lambda *a, **k: (grids.append((a[1], k.get("grid"))), launch(*a, **k)))
    rng = numpy.random.default_rng(7)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((40, 2100), (3, 2100), (3,)))
    assert fused.weight_grad_plan(40, 3, 2100) == (6, 8)
    y = fused.linear_forward(x, w, b, relu=True)
    assert grids == [("dense_fwd_partial_fused", 16), ("dense_fwd_reduce_fused", None)]
    parity.assert_close(y, reference.linear_forward(x, w, b, True, slices=8), dtype, "split forward")
    parity.assert_close(y, reference.linear_forward(x, w, b, True), dtype, "against the single pass")
    grids.clear()
    parity.assert_close(fused.linear_forward(x, w, None, slices=3), reference.linear_forward(x, w, None, slices=3),
                        dtype, "S=3, no bias")
    assert grids[0] == ("dense_fwd_partial_fused", 6)
    grids.clear()
    fused.linear_forward(x[:, :300], w[:, :300], b)
    assert [name for name, _ in grids] == ["dense_fwd_fused"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_grad_launchers_split_a_large_k(fused, monkeypatch, dtype):
    """K = 3136 (conv) and 2100 (dense) on one output tile: S = K // SPLIT_K_MIN_K slices, the two passes
    on tiles * S blocks (the 32 x 32 tile: one) and one grid-stride reduce, equal to the split twin and
    repeatable to the bit."""
    grids = []
    launch = fused.loader.launch
    monkeypatch.setattr(fused.loader, "launch", lambda *a, **k: (grids.append((a[1], k.get("grid"))), launch(*a, **k)))
    rng = numpy.random.default_rng(4)
    window = conv_window(3, 1, "same")
    x = rng.standard_normal((4, 1, 28, 28)).astype(dtype)
    grad_y = rng.standard_normal((4, 32, 28, 28)).astype(dtype)
    got = fused.conv2d_weight_grad(grad_y, x, (32, 1, 3, 3), window)
    assert grids == [("conv_wgrad_partial_fused", 12), ("conv_wgrad_reduce_fused", None)]
    for a, b, what in zip(got, reference.conv2d_weight_grad(grad_y, x, (32, 1, 3, 3), window, slices=12), "wb"):
        parity.assert_close(a, b, dtype, f"conv split-K d{what}")
    again = fused.conv2d_weight_grad(grad_y, x, (32, 1, 3, 3), window)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, again))

    xd, gyd = rng.standard_normal((2100, 3)).astype(dtype), rng.standard_normal((2100, 2)).astype(dtype)
    yd = numpy.maximum(gyd[::-1], 0)
    grids.clear()
    for got, want in zip(fused.linear_weight_grad(gyd, xd, yd), reference.linear_weight_grad(gyd, xd, yd, slices=8)):
        parity.assert_close(got, want, dtype, "dense split-K")
    assert grids == [("dense_wgrad_partial_fused", 8), ("dense_wgrad_reduce_fused", None)]
    grids.clear()
    grad_w, grad_b = fused.linear_weight_grad(gyd, xd, yd, need_bias=False, slices=7)
    assert grad_b is None and grids[0] == ("dense_wgrad_partial_fused", 7)
    parity.assert_close(grad_w, reference.linear_weight_grad(gyd, xd, yd, False, slices=7)[0], dtype, "S=7")
    grids.clear()
    fused.linear_weight_grad(gyd[:100], xd[:100])  # K = 100 < 2 * SPLIT_K_MIN_K: the single pass
    assert grids == [("dense_wgrad_fused", 1)]
    with pytest.raises(ValueError, match="slices"):
        fused.linear_weight_grad(gyd, xd, slices=0)
