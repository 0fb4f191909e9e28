"""The fused batch-norm kernels (gpucnn/kernels/fused_batchnorm.cu) in the host harness, against their NumPy twins.

Every block of the C*S grid replayed phase by phase (tests/kernels/harness_batchnorm.cuh), float32 and
float64, odd sizes (C = 3, H*W = 7 x 5, N = 1 and 2), (N, C) inputs, S in {1, 2, 3, 7} (S = 7 over 5
elements per channel: empty slices), ReLU on and off, the running statistics, need_input_grad off.
Held to gpucnn.compile.cuda_graph.reference_batchnorm: the partial buffers to the per-slice twins, the
outputs to the twins composed from the readable op (tests/support/cuda_parity.py: assert_close), the
apply passes' merges bitwise across S blocks of one channel; both thread orders give the same bits; the
fp32 statistics of 262144 elements with mean 1000 stay accurate where a sum of squares would not.
"""
import os
import pathlib
import subprocess

import numpy
import pytest

from gpucnn.compile.cuda_graph import reference_batchnorm as twin
from support import cuda_parity as parity
from support.kernel_harness import run_kernel

pytestmark = pytest.mark.kernels

DTYPES = [numpy.float32, numpy.float64]
SLICES = [1, 2, 3, 7]
SHAPES = [(1, 3, 7, 5), (2, 3, 7, 5), (5, 2), (2, 4, 1, 1), (3, 2, 17, 16)]  # the last: HW = 272 > one block
FILE = "fused_batchnorm.cu"
RELU, MASK, INPUT_GRAD = 2, 4, 8
MOMENTUM, EPS = 0.1, 1e-5


def _geometry(x):
    n, c = x.shape[:2]
    return n, c, int(numpy.prod(x.shape[2:], dtype=numpy.int64)) if x.ndim == 4 else 1


def _problem(shape, dtype, seed=0):
    rng = numpy.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    running = (rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype))
    return rng, x, gamma, beta, running


def forward_kernels(harness, x, gamma, beta, running_mean, running_var, relu, slices):
    """(partial, y, mean, inv_std) from the two forward kernels; the running statistics updated in place."""
    n, c, hw = _geometry(x)
    dtype = x.dtype
    partial = numpy.full((c * slices, 2), numpy.nan, dtype=dtype)
    run_kernel(harness, FILE, "bn_stats_partial_fused", dtype, (x, partial, n, c, hw, slices))
    y = numpy.full(x.shape, numpy.nan, dtype=dtype)
    mean, inv_std = numpy.full(c, numpy.nan, dtype=dtype), numpy.full(c, numpy.nan, dtype=dtype)
    run_kernel(harness, FILE, "bn_forward_apply_fused", dtype,
               (x, partial, gamma, beta, y, mean, inv_std, running_mean, running_var, MOMENTUM, EPS, n, c, hw,
                slices, RELU if relu else 0))
    return partial, y, mean, inv_std


def backward_kernels(harness, grad_y, x, mean, inv_std, gamma, y, need_input_grad, slices):
    """(partial, grad_x or None, grad_gamma, grad_beta) from the two backward kernels (y: the ReLU mask)."""
    n, c, hw = _geometry(x)
    dtype = x.dtype
    flags = MASK if y is not None else 0
    partial = numpy.full((c * slices, 2), numpy.nan, dtype=dtype)
    y_arg = grad_y if y is None else y
    run_kernel(harness, FILE, "bn_grad_partial_fused", dtype,
               (grad_y, y_arg, x, mean, inv_std, partial, n, c, hw, slices, flags))
    grad_gamma, grad_beta = numpy.full(c, numpy.nan, dtype=dtype), numpy.full(c, numpy.nan, dtype=dtype)
    grad_x = numpy.full(x.shape, numpy.nan, dtype=dtype) if need_input_grad else None
    run_kernel(harness, FILE, "bn_backward_apply_fused", dtype,
               (grad_y, y_arg, x, mean, inv_std, gamma, partial, grad_gamma if grad_x is None else grad_x,
                grad_gamma, grad_beta, n, c, hw, slices, flags | (INPUT_GRAD if need_input_grad else 0)))
    return partial, grad_x, grad_gamma, grad_beta


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("slices", SLICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_kernels_match_the_twin(harness, dtype, shape, slices, relu):
    _, x, gamma, beta, (running_mean, running_var) = _problem(shape, dtype, seed=slices)
    want_mean, want_var = running_mean.copy(), running_var.copy()
    y_ref, mean_ref, inv_ref = twin.batch_norm_train_forward(x, gamma, beta, want_mean, want_var, MOMENTUM, EPS,
                                                             relu=relu, slices=slices)
    partial, y, mean, inv_std = forward_kernels(harness, x, gamma, beta, running_mean, running_var, relu, slices)
    parity.assert_close(partial, twin.batch_norm_stats_partials(x, slices), dtype, "partial (mean, M2)")
    merged_mean, merged_var = twin.merge_stats_partials(partial, x.size // shape[1], slices)
    parity.assert_close(mean, merged_mean.astype(dtype), dtype, "mean = the partials merged in ascending s")
    parity.assert_close(inv_std, (1 / numpy.sqrt(merged_var + EPS)).astype(dtype), dtype, "inv_std of the merge")
    for got, want, what in ((y, y_ref, "y"), (mean, mean_ref, "mean"), (inv_std, inv_ref, "inv_std"),
                            (running_mean, want_mean, "running_mean"), (running_var, want_var, "running_var")):
        parity.assert_close(got, want, dtype, what)
    if relu:
        assert (y >= 0).all()


@pytest.mark.parametrize("need_input_grad", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("slices", SLICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_kernels_match_the_twin(harness, dtype, shape, slices, relu, need_input_grad):
    rng, x, gamma, beta, (running_mean, running_var) = _problem(shape, dtype, seed=10 + slices)
    y, mean, inv_std = twin.batch_norm_train_forward(x, gamma, beta, running_mean, running_var, MOMENTUM, EPS,
                                                     relu=relu)
    grad_y = rng.standard_normal(shape).astype(dtype)
    mask = y if relu else None
    want = twin.batch_norm_train_backward(grad_y, x, mean, inv_std, gamma, y=mask, need_input_grad=need_input_grad,
                                          slices=slices)
    partial, grad_x, grad_gamma, grad_beta = backward_kernels(harness, grad_y, x, mean, inv_std, gamma, mask,
                                                              need_input_grad, slices)
    parity.assert_close(partial, twin.batch_norm_grad_partials(grad_y, x, mean, inv_std, mask, slices), dtype,
                        "partial (sum gz, sum gz x_hat)")
    parity.assert_close(grad_gamma, want[1], dtype, "grad_gamma")
    parity.assert_close(grad_beta, want[2], dtype, "grad_beta")
    if need_input_grad:
        parity.assert_close(grad_x, want[0], dtype, "grad_x")
    else:
        assert grad_x is None and want[0] is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_block_of_a_channel_merges_alike(harness, dtype):
    """The apply pass merges a channel's partials in every one of its S blocks: y is what one merge gives, bit
    for bit, in every slice (the kernel recomputed on one slice's statistics = the whole channel's)."""
    _, x, gamma, beta, (running_mean, running_var) = _problem((3, 2, 17, 16), dtype, seed=3)
    _, y7, mean7, inv7 = forward_kernels(harness, x, gamma, beta, running_mean.copy(), running_var.copy(), False, 7)
    by_hand = (x - mean7[:, None, None]) * inv7[:, None, None] * gamma[:, None, None] + beta[:, None, None]
    parity.assert_close(y7, by_hand.astype(dtype), dtype, "y from the stored mean and inv_std")
    _, y7_again, _, _ = forward_kernels(harness, x, gamma, beta, running_mean.copy(), running_var.copy(), False, 7)
    assert y7.tobytes() == y7_again.tobytes()


def test_fp32_statistics_stay_accurate_with_a_large_mean(harness):
    """262144 elements per channel (batch 256 of 32 x 32) around 1000 with std 0.5: mean and variance within
    1e-6 and 1e-4 of float64's on the same float32 data; a float32 sum of squares misses the variance by far."""
    rng = numpy.random.default_rng(7)
    x = (1000 + 0.5 * rng.standard_normal((256, 2, 32, 32))).astype(numpy.float32)
    gamma, beta = numpy.ones(2, numpy.float32), numpy.zeros(2, numpy.float32)
    running = (numpy.zeros(2, numpy.float32), numpy.ones(2, numpy.float32))
    _, _, mean, inv_std = forward_kernels(harness, x, gamma, beta, *running, False, 33)
    exact = twin.channel_view(x.astype(numpy.float64))
    var = 1 / inv_std.astype(numpy.float64) ** 2 - EPS
    numpy.testing.assert_allclose(mean, exact.mean(axis=1), rtol=1e-6)
    numpy.testing.assert_allclose(var, exact.var(axis=1), rtol=1e-4)
    flat = twin.channel_view(x)
    naive = (flat * flat).sum(axis=1, dtype=numpy.float32) / flat.shape[1] - flat.mean(axis=1) ** 2
    assert (abs(naive - exact.var(axis=1)) > 1e-2 * exact.var(axis=1)).any()


def _run_ordered(harness, tmp_path, order, kernel, dtype, args):
    """One kernel run of the harness executable with GPUCNN_HARNESS_THREAD_ORDER=``order``; the bytes of its
    writable arrays."""
    from gpucnn.ops.cuda import loader

    signature = loader.resolved_signature(FILE, kernel)
    argv, outputs = [harness.exe, kernel, "f32" if dtype == numpy.float32 else "f64"], []
    for i, (ctype, value) in enumerate(zip(signature, args)):
        if ctype.endswith("*"):
            path = tmp_path / f"{order}-{kernel}-{i}.bin"
            value.tofile(path)
            argv.append(str(path))
            if not ctype.startswith("const"):
                outputs.append(path)
        else:
            argv.append(float(value).hex() if ctype == "T" else str(int(value)))
    subprocess.run(argv, check=True, capture_output=True, env=dict(os.environ, GPUCNN_HARNESS_THREAD_ORDER=order))
    return [pathlib.Path(p).read_bytes() for p in outputs]


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_thread_depends_on_another_within_a_phase(harness, tmp_path, dtype):
    """The replay's premise: every kernel's phases with their threads in reverse order give the same bits."""
    rng, x, gamma, beta, (running_mean, running_var) = _problem((3, 2, 17, 16), dtype, seed=4)
    n, c, hw = _geometry(x)
    y, mean, inv_std = twin.batch_norm_train_forward(x, gamma, beta, running_mean.copy(), running_var.copy(),
                                                     MOMENTUM, EPS, relu=True)
    grad_y = rng.standard_normal(x.shape).astype(dtype)
    partial = twin.batch_norm_stats_partials(x, 3)
    grad_partial = twin.batch_norm_grad_partials(grad_y, x, mean, inv_std, y, 3)
    out = lambda *shape: numpy.zeros(shape, dtype)  # noqa: E731
    runs = [("bn_stats_partial_fused", (x, out(c * 3, 2), n, c, hw, 3)),
            ("bn_forward_apply_fused", (x, partial, gamma, beta, out(*x.shape), out(c), out(c), running_mean,
                                        running_var, MOMENTUM, EPS, n, c, hw, 3, RELU)),
            ("bn_grad_partial_fused", (grad_y, y, x, mean, inv_std, out(c * 3, 2), n, c, hw, 3, MASK)),
            ("bn_backward_apply_fused", (grad_y, y, x, mean, inv_std, gamma, grad_partial, out(*x.shape), out(c),
                                         out(c), n, c, hw, 3, MASK | INPUT_GRAD))]
    for kernel, args in runs:
        forward = _run_ordered(harness, tmp_path, "forward", kernel, dtype, args)
        assert forward == _run_ordered(harness, tmp_path, "reverse", kernel, dtype, args), kernel
        assert all(numpy.frombuffer(b, dtype).any() for b in forward), kernel
