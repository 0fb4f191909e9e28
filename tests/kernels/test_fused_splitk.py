"""Split-K of the weight-gradient GEMMs (gpucnn/kernels/fused_splitk.cuh) in the host harness.

Pass 1 (conv_wgrad_partial_fused, dense_wgrad_partial_fused) is replayed block by block with the
kernels' own block map, each block's k-slice phase by phase; pass 2 (*_wgrad_reduce_fused) index by
index. Held to the NumPy twins of gpucnn.compile.cuda_graph.reference: every slice's partial sums to
its twin (float32 1e-4, float64 1e-10 of the largest magnitude: a slice boundary off by one k-step
would miss by far more), the reduce pass bitwise to ``split_k_sum`` of the kernel's own partials (the
same additions in the same order), and dW, db to the twins with and without split-K. S in
{1, 2, 3, 7}, K not divisible by S nor by the k-step, odd sizes and tile edges (M or N of 63, 64,
65); S = 7 over fewer k-steps than slices shows empty slices storing zeros. The launcher's choice of
S is in tests/kernels/test_fused_kernels.py (the ``fused`` fixture); a captured training step runs it in
test_a_captured_step_splits_the_first_convolution.
"""
import os
import pathlib
import re
import subprocess

import numpy
import pytest

import gpucnn
from gpucnn.compile.cuda_graph import reference
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.ops.cuda import loader
from gpucnn.ops.geometry import conv_window
from gpucnn.optim.optimizers import SGD
from support import cuda_parity as parity
from support.kernel_harness import run_kernel

pytestmark = pytest.mark.kernels

DTYPES = [numpy.float32, numpy.float64]
SLICES = [1, 2, 3, 7]
TK = 16  # the k-step of the slices (GPUCNN_GEMM_TK), whole k-steps of every tile
# Pass 1 takes the tile shape last (launch.GEMM_TILES): S = 1, 2, 3, 7 run tiles 0, 1, 4, 3 (TK 8 and 16);
# test_one_slice_is_the_single_pass_bit_for_bit runs every tile.
TILES = range(7)
TILE_OF = dict(zip(SLICES, (0, 1, 4, 3)))
# name, N, C, H, W, O, window: K = N*oh*ow is 36, 162 and 80, none a multiple of 16 or of every S.
CONV_CASES = [
    ("odd", 3, 3, 7, 5, 5, conv_window(3, 2, 1)),               # M 5, N 27 (+1), K 36: 3 k-steps
    ("tile_edges", 2, 7, 9, 9, 65, conv_window(3, 1, 1)),       # M 65 (two tiles), N 63 / 64 with the bias
    ("two_tiles_n", 5, 8, 6, 6, 3, conv_window(3, 1, 0)),       # N 72 (+1): two tiles along N; K 80
]
# N (the GEMM's K), I, O
DENSE_CASES = [(37, 5, 3), (70, 64, 65), (100, 63, 2), (129, 3, 1)]


def _conv_problem(case, dtype, seed=0):
    _, n, c, h, w, o, window = case
    oh, ow = window.output_size(h, w)
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    grad_y = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    geometry = (n, c, h, w, o, window.kh, window.kw, window.sy, window.sx, window.pt, window.pl, oh, ow)
    return x, grad_y, geometry, (o, c, window.kh, window.kw)


def _split_conv(harness, x, grad_y, geometry, weight_shape, need_bias, slices, tile=None):
    """(partial, grad_w, grad_b) from the two passes in the harness, outputs pre-filled with NaN."""
    dtype = x.dtype
    o, kw = weight_shape[0], int(numpy.prod(weight_shape[1:]))
    cols = kw + (1 if need_bias else 0)
    partial = numpy.full((slices, o, cols), numpy.nan, dtype=dtype)
    run_kernel(harness, "fused_conv.cu", "conv_wgrad_partial_fused", dtype,
               (grad_y, x, partial) + geometry + (1 if need_bias else 0, slices,
                                                  TILE_OF.get(slices, 1) if tile is None else tile))
    grad_w = numpy.full(weight_shape, numpy.nan, dtype=dtype)
    grad_b = numpy.full(o, numpy.nan, dtype=dtype)
    run_kernel(harness, "fused_conv.cu", "conv_wgrad_reduce_fused", dtype,
               (partial, grad_w, grad_b, slices, cols, kw, o * cols))
    return partial, grad_w, grad_b


def _assert_reduce_is_the_twins_sum(partial, grad_w, grad_b, need_bias):
    total = reference.split_k_sum(partial)
    kw = grad_w.size // grad_w.shape[0]
    numpy.testing.assert_array_equal(grad_w.reshape(-1, kw), total[:, :kw])  # bitwise: same adds, same order
    if need_bias:
        numpy.testing.assert_array_equal(grad_b, total[:, kw])
    else:
        assert numpy.isnan(grad_b).all(), "grad_b written without the bias column"


def test_slices_are_whole_k_steps_in_order():
    defines = dict(re.findall(r"^#define (GPUCNN_GEMM_T\w) (\d+)", (pathlib.Path(loader.KERNELS_DIR)
                                                                     / "fused_common.cuh").read_text(), re.M))
    assert int(defines["GPUCNN_GEMM_TK"]) == reference.SPLIT_K_STEP == TK
    for k in (1, 15, 16, 17, 36, 162, 1000, 200704):
        for slices in SLICES + [132]:
            bounds = reference.split_k_bounds(k, slices)
            assert len(bounds) == slices and bounds[0][0] == 0 and bounds[-1][1] == k
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert all(end % TK == 0 or end == k for _, end in bounds)
            steps = [-(-(end - begin) // TK) for begin, end in bounds]
            assert max(steps) - min(steps) <= 1 and steps == sorted(steps, reverse=True)
    assert reference.split_k_bounds(36, 7) == [(0, 16), (16, 32), (32, 36)] + [(36, 36)] * 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_split_k_matches_twins(harness, case, dtype):
    x, grad_y, geometry, weight_shape = _conv_problem(case, dtype)
    window = case[6]
    for need_bias in (False, True):
        expected_w, expected_b = reference.conv2d_weight_grad(grad_y, x, weight_shape, window, need_bias)
        for slices in SLICES:
            what = f"S={slices} bias={need_bias}"
            partial, grad_w, grad_b = _split_conv(harness, x, grad_y, geometry, weight_shape, need_bias, slices)
            twin = reference.conv2d_weight_grad_partials(grad_y, x, weight_shape, window, need_bias, slices)
            for s in range(slices):
                parity.assert_close(partial[s], twin[s], dtype, f"{what}: partial sums of slice {s}")
            _assert_reduce_is_the_twins_sum(partial, grad_w, grad_b, need_bias)
            split_w, split_b = reference.conv2d_weight_grad(grad_y, x, weight_shape, window, need_bias, slices)
            parity.assert_close(grad_w, split_w, dtype, f"{what}: dW")
            parity.assert_close(grad_w, expected_w, dtype, f"{what}: dW against the single-pass twin")
            if need_bias:
                parity.assert_close(grad_b, split_b, dtype, f"{what}: db")
                parity.assert_close(grad_b, expected_b, dtype, f"{what}: db against the single-pass twin")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,i,o", DENSE_CASES)
def test_dense_split_k_matches_twins(harness, n, i, o, dtype):
    rng = numpy.random.default_rng(n + i + o)
    x = rng.standard_normal((n, i)).astype(dtype)
    grad_y = rng.standard_normal((n, o)).astype(dtype)
    y = numpy.maximum(rng.standard_normal((n, o)), 0).astype(dtype)  # the ReLU output after the layer
    for need_bias, masked in ((True, True), (False, True), (True, False)):
        mask = y if masked else None
        flags = (1 if need_bias else 0) | (4 if masked else 0)
        cols = i + (1 if need_bias else 0)
        expected_w, expected_b = reference.linear_weight_grad(grad_y, x, mask, need_bias)
        for slices in SLICES:
            what = f"S={slices} bias={need_bias} mask={masked}"
            partial = numpy.full((slices, o, cols), numpy.nan, dtype=dtype)
            run_kernel(harness, "fused_dense.cu", "dense_wgrad_partial_fused", dtype,
                       (grad_y, y, x, partial, n, i, o, flags, slices, TILE_OF[slices]))
            twin = reference.linear_weight_grad_partials(grad_y, x, mask, need_bias, slices)
            for s in range(slices):
                parity.assert_close(partial[s], twin[s], dtype, f"{what}: partial sums of slice {s}")
            grad_w = numpy.full((o, i), numpy.nan, dtype=dtype)
            grad_b = numpy.full(o, numpy.nan, dtype=dtype)
            run_kernel(harness, "fused_dense.cu", "dense_wgrad_reduce_fused", dtype,
                       (partial, grad_w, grad_b, slices, cols, i, o * cols))
            _assert_reduce_is_the_twins_sum(partial, grad_w, grad_b, need_bias)
            split_w, split_b = reference.linear_weight_grad(grad_y, x, mask, need_bias, slices)
            parity.assert_close(grad_w, split_w, dtype, f"{what}: dW")
            parity.assert_close(grad_w, expected_w, dtype, f"{what}: dW against the single-pass twin")
            if need_bias:
                parity.assert_close(grad_b, split_b, dtype, f"{what}: db")
                parity.assert_close(grad_b, expected_b, dtype, f"{what}: db against the single-pass twin")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,i,o", [(5, 37, 3), (70, 300, 65), (3, 129, 130)])
def test_dense_forward_split_k_matches_twins(harness, n, i, o, dtype):
    """dense_fwd_partial_fused's slices equal linear_forward_partials; dense_fwd_reduce_fused adds them in
    ascending s, then the bias and the ReLU, bit for bit as the twin does with the kernel's own partials."""
    rng = numpy.random.default_rng(n + i + o)
    x = rng.standard_normal((n, i)).astype(dtype)
    weight = rng.standard_normal((o, i)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    for slices in SLICES:
        partial = numpy.full((slices, n, o), numpy.nan, dtype=dtype)
        run_kernel(harness, "fused_dense.cu", "dense_fwd_partial_fused", dtype,
                   (x, weight, partial, n, i, o, slices, TILE_OF[slices]))
        for s, twin in enumerate(reference.linear_forward_partials(x, weight, slices)):
            parity.assert_close(partial[s], twin, dtype, f"S={slices}: partial products of slice {s}")
        for flags in range(4):
            y = numpy.full((n, o), numpy.nan, dtype=dtype)
            run_kernel(harness, "fused_dense.cu", "dense_fwd_reduce_fused", dtype,
                       (partial, bias, y, slices, o, flags, n * o))
            total = reference.split_k_sum(partial) + (bias if flags & 1 else 0)
            numpy.testing.assert_array_equal(y, numpy.maximum(total, 0) if flags & 2 else total)
            want = reference.linear_forward(x, weight, bias if flags & 1 else None, bool(flags & 2), slices)
            parity.assert_close(y, want, dtype, f"S={slices} flags={flags}")
            parity.assert_close(y, reference.linear_forward(x, weight, bias if flags & 1 else None, bool(flags & 2)),
                                dtype, f"S={slices} flags={flags} against the single-pass twin")


def test_one_slice_is_the_single_pass_bit_for_bit(harness):
    """S = 1 sums each output over all of K from k = 0, as conv_wgrad_fused does: the same bits."""
    x, grad_y, geometry, weight_shape = _conv_problem(CONV_CASES[1], numpy.float32)
    for tile in TILES:
        _, grad_w, grad_b = _split_conv(harness, x, grad_y, geometry, weight_shape, True, 1, tile)
        single_w = numpy.full(weight_shape, numpy.nan, dtype=numpy.float32)
        single_b = numpy.full(weight_shape[0], numpy.nan, dtype=numpy.float32)
        run_kernel(harness, "fused_conv.cu", "conv_wgrad_fused", numpy.float32,
                   (grad_y, x, single_w, single_b) + geometry + (1, tile))
        assert grad_w.tobytes() == single_w.tobytes() and grad_b.tobytes() == single_b.tobytes(), tile


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_k_is_bitwise_repeatable(harness, dtype):
    x, grad_y, geometry, weight_shape = _conv_problem(CONV_CASES[1], dtype, seed=5)
    runs = [_split_conv(harness, x, grad_y, geometry, weight_shape, True, 3) for _ in range(2)]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(*runs))


def test_no_thread_of_the_partial_pass_depends_on_another_within_a_phase(harness, tmp_path):
    """The replay's premise for pass 1: each phase's threads run in reverse order give the same bits."""
    x, grad_y, geometry, weight_shape = _conv_problem(CONV_CASES[1], numpy.float32, seed=2)
    outputs = {}
    for order in ("forward", "reverse"):
        paths = []
        for i, a in enumerate([grad_y, x, numpy.zeros((3, 65, 64), numpy.float32)]):
            path = tmp_path / f"{order}{i}.bin"
            a.tofile(path)
            paths.append(str(path))
        argv = [harness.exe, "conv_wgrad_partial_fused", "f32"] + paths + [str(v) for v in geometry] + ["1", "3", "0"]
        env = dict(os.environ, GPUCNN_HARNESS_THREAD_ORDER=order)
        subprocess.run(argv, check=True, capture_output=True, env=env)
        outputs[order] = pathlib.Path(paths[-1]).read_bytes()
    assert outputs["forward"] == outputs["reverse"]
    assert numpy.frombuffer(outputs["forward"], numpy.float32).reshape(3, 65, 64).any(axis=(1, 2)).all()


@pytest.mark.graph
def test_a_captured_step_splits_the_first_convolution(gpu):
    """fashion_cnn at batch 4 on the emulated CuPy: conv1's K = 3136 and conv2's 784 split (12 and 3 slices of
    at least SPLIT_K_MIN_K = 256); the graph captures both passes, and its first step, verified against the
    eager step, agrees."""
    cp = gpu.cupy
    model = gpucnn.models.fashion_cnn(rng=0).to("cuda")
    rng = numpy.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 28, 28)).astype(numpy.float32), rng.integers(0, 10, 4)
    step = gpucnn.compile_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.05), 4, verify=True)
    step.bind(cp.asarray(x), cp.asarray(y))
    step.run_epoch(numpy.arange(4))
    assert not step.eager and step.mismatch is None and step.graph_launches == 1
    kernels = {c for c in step.captured if c.startswith("kernel ")}
    assert {"kernel conv_wgrad_partial_fused", "kernel conv_wgrad_reduce_fused", "kernel dense_wgrad_fused"} <= kernels
