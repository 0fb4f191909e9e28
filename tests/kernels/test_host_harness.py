"""The kernels' index arithmetic, run on the CPU, equals the NumPy ops.

tests/kernels/harness.cu is built once per session by nvcc (host code: no GPU needed;
tests/support/kernel_harness.py). It runs a kernel's __host__ __device__ body
(gpucnn/kernels/*_body.cuh, the code the GPU kernels call) over every index, with arguments
given in the kernel's own parameter order, arrays as raw binary files.

Here: the kernel bodies against gpucnn.ops.conv's im2col / col2im / forward / bias sum, the
pooling, loss and multi-tensor update ops. The launchers themselves, over a NumPy stand-in for
CuPy, are in tests/kernels/test_emulated_launchers.py.

Skipped only where nvcc is not on PATH.
"""
import subprocess

import numpy
import pytest

from gpucnn.ops import conv as np_conv
from gpucnn.ops.cuda import loader as real_loader
from support import cuda_cases as cases
from support import cuda_parity as parity
from support.kernel_harness import run_kernel

pytestmark = pytest.mark.kernels


def test_block_size_is_shared(harness):
    out = subprocess.run([harness.exe, "--block"], capture_output=True, text=True, check=True).stdout
    assert int(out) == real_loader.BLOCK


def test_command_line_mode(harness, tmp_path):
    """One kernel run per process, arguments on the command line (what --serve does per line)."""
    x = numpy.arange(12, dtype=numpy.float32).reshape(1, 1, 3, 4)
    y = numpy.zeros((1, 1, 1, 2), dtype=numpy.float32)
    x.tofile(tmp_path / "x.bin")
    y.tofile(tmp_path / "y.bin")
    args = ["avg_pool_fwd", "f32/i32", str(tmp_path / "x.bin"), str(tmp_path / "y.bin"),
            "3", "4", "2", "2", "2", "2", "1", "1", "0", "0", "0", "0", "1", "2", "1", "2"]
    subprocess.run([harness.exe] + args, check=True, capture_output=True)
    numpy.testing.assert_array_equal(numpy.fromfile(tmp_path / "y.bin", dtype=numpy.float32), [2.5, 4.5])
    bad = subprocess.run([harness.exe] + args[:-1], capture_output=True, text=True)
    assert bad.returncode == 2 and "too few arguments" in bad.stderr


# ----------------------------------------------------------------------------- kernel bodies

CONV_CASES = cases.CONV_CASES
DTYPES = cases.DTYPES


def _geometry(case):
    n, c, h, w, o, window, _, groups = cases.conv_case(case)
    oh, ow = window.output_size(h, w)
    return n, c, h, w, o, window, oh, ow, groups


def _window_args(window, oh, ow):
    """pool.cu's window arguments after H, W: kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow."""
    return (window.kh, window.kw, window.sy, window.sx, window.dy, window.dx, window.pt, window.pb, window.pl,
            window.pr, oh, ow)


def _conv_window_args(window, oh, ow):
    return (window.kh, window.kw, window.sy, window.sx, window.pt, window.pl, window.dy, window.dx, oh, ow)


INDEX_TYPES = real_loader.INDEX_TYPES


@pytest.mark.parametrize("index", INDEX_TYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=cases.case_ids(CONV_CASES))
def test_conv_bodies_match_numpy(harness, case, dtype, index):
    """im2col (exact), col2im gather, direct convolution, transpose01 and row_sum against NumPy, with
    32-bit and with 64-bit indices."""
    n, c, h, w, o, window, oh, ow, groups = _geometry(case)
    rng = numpy.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c // groups, window.kh, window.kw)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    k, p = c * window.kh * window.kw, oh * ow
    geometry = _conv_window_args(window, oh, ow)

    cols = numpy.full((k, n * p), numpy.nan, dtype=dtype)
    run_kernel(harness, "conv.cu", "im2col", dtype, (x, cols, n, c, h, w) + geometry + (c * n * p,), index)
    # gpucnn.ops.conv.im2col orders rows (c, i, j) and columns (n, oy, ox), as ours.
    numpy.testing.assert_array_equal(cols, np_conv.im2col(x, window, oh, ow))

    grad_cols = rng.standard_normal((k, n * p)).astype(dtype)
    grad_x = numpy.full((n, c, h, w), numpy.nan, dtype=dtype)
    run_kernel(harness, "conv.cu", "col2im", dtype,
               (grad_cols, grad_x, n, c, h, w) + geometry + (grad_x.size,), index)
    parity.assert_close(grad_x, np_conv.col2im(grad_cols, x.shape, window, oh, ow), dtype, "col2im")

    y_ref, _ = np_conv.conv2d_forward(x, weight, bias, window, groups)
    for has_bias in (0, 1):
        y = numpy.full((n, o, oh, ow), numpy.nan, dtype=dtype)
        run_kernel(harness, "conv.cu", "conv_direct", dtype,
                   (x, weight, bias, y, n, c, h, w, o) + geometry + (c // groups, o // groups, has_bias, y.size),
                   index)
        expected = y_ref if has_bias else y_ref - bias[:, None, None]
        parity.assert_close(y, expected, dtype, f"conv_direct has_bias={has_bias}")

    # forward of the GEMM path: W @ cols per group (NumPy standing in for cuBLAS), then transpose01 + bias
    y_mat = np_conv.grouped_matmul(weight.reshape(groups, o // groups, -1), cols.reshape(groups, -1, n * p))
    y = numpy.full((n, o, oh, ow), numpy.nan, dtype=dtype)
    run_kernel(harness, "conv.cu", "transpose01", dtype, (y_mat, bias, y, o, n, p, 1, y.size), index)
    parity.assert_close(y, y_ref, dtype, "W @ cols + transpose01")

    grad_y = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    gy_mat = numpy.full((o, n * p), numpy.nan, dtype=dtype)
    run_kernel(harness, "conv.cu", "transpose01", dtype, (grad_y, grad_y, gy_mat, n, o, p, 0, gy_mat.size), index)
    numpy.testing.assert_array_equal(gy_mat, grad_y.transpose(1, 0, 2, 3).reshape(o, -1))
    grad_b = numpy.full(o, numpy.nan, dtype=dtype)
    run_kernel(harness, "conv.cu", "row_sum", dtype, (gy_mat, grad_b, o, n * p, n * p))
    expected_b = grad_y.astype(numpy.float64).sum(axis=(0, 2, 3)).astype(dtype)
    parity.assert_close(grad_b, expected_b, dtype, "row_sum")


@pytest.mark.parametrize("index", INDEX_TYPES)
@pytest.mark.parametrize("case", cases.POOL_CASES[:8], ids=cases.case_ids(cases.POOL_CASES[:8]))
def test_pool_bodies_match_numpy(harness, case, index):
    """The four pooling kernels against NumPy, with 32-bit and with 64-bit indices."""
    from gpucnn.ops import pool as np_pool

    _, n, c, h, w, window = case
    dtype = numpy.float64
    oh, ow = window.output_size(h, w)
    geometry = (h, w) + _window_args(window, oh, ow)
    rng = numpy.random.default_rng(5)
    x = rng.standard_normal((n, c, h, w))
    grad_y = rng.standard_normal((n, c, oh, ow))
    y_ref, saved_ref = np_pool.max_pool2d_forward(x, window)
    y = numpy.full(y_ref.shape, numpy.nan)
    argmax = numpy.full(y_ref.shape, -1, dtype=numpy.int32)
    run_kernel(harness, "pool.cu", "max_pool_fwd", dtype, (x, y, argmax) + geometry + (y.size,), index)
    numpy.testing.assert_array_equal(y, y_ref)
    numpy.testing.assert_array_equal(argmax, saved_ref[0])
    grad_x = numpy.full(x.shape, numpy.nan)
    run_kernel(harness, "pool.cu", "max_pool_bwd", dtype, (grad_y, argmax, grad_x) + geometry + (grad_x.size,), index)
    parity.assert_close(grad_x, np_pool.max_pool2d_backward(grad_y, saved_ref), dtype, "max_pool_bwd")
    y_ref, saved_ref = np_pool.avg_pool2d_forward(x, window)
    run_kernel(harness, "pool.cu", "avg_pool_fwd", dtype, (x, y) + geometry + (1, y.size), index)
    parity.assert_close(y, y_ref, dtype, "avg_pool_fwd")
    run_kernel(harness, "pool.cu", "avg_pool_bwd", dtype, (grad_y, grad_x) + geometry + (1, grad_x.size), index)
    parity.assert_close(grad_x, np_pool.avg_pool2d_backward(grad_y, saved_ref), dtype, "avg_pool_bwd")


def test_harness_refuses_a_missing_or_stray_index_type(harness, tmp_path):
    x = numpy.zeros((1, 1, 2, 2))
    x.tofile(tmp_path / "x.bin")
    x.tofile(tmp_path / "y.bin")
    common = [str(tmp_path / "x.bin"), str(tmp_path / "y.bin"), "2", "2", "1", "1", "1", "1", "1", "1",
              "0", "0", "0", "0", "2", "2", "1", "4"]
    for type_word, word in (("f64", "needs an index type"), ("f64/i16", "must be i32 or i64")):
        bad = subprocess.run([harness.exe, "avg_pool_fwd", type_word] + common, capture_output=True, text=True)
        assert bad.returncode == 2 and word in bad.stderr
    bad = subprocess.run([harness.exe, "row_sum", "f64/i32", str(tmp_path / "x.bin"), str(tmp_path / "y.bin"),
                          "1", "4", "4"], capture_output=True, text=True)
    assert bad.returncode == 2 and "has no index type" in bad.stderr


@pytest.mark.parametrize("length,chunk", [(0, 1), (1, 1), (255, 4096), (256, 256), (257, 256), (1000, 300),
                                          (5000, 4096), (9000, 1000)])
def test_row_sum_block_reduction(harness, length, chunk):
    """Chunked row sums around the block size: each (row, chunk) block sums its part of the row."""
    rng = numpy.random.default_rng(length)
    mat = rng.standard_normal((3, length))
    chunks = max(1, -(-length // chunk))
    out = numpy.full((3, chunks), numpy.nan)
    run_kernel(harness, "conv.cu", "row_sum", numpy.float64, (mat, out, 3, length, chunk))
    padded = numpy.zeros((3, chunks * chunk))
    padded[:, :length] = mat
    parity.assert_close(out, padded.reshape(3, chunks, chunk).sum(axis=2), numpy.float64, "chunk sums")


def test_max_pool_rule_nan_ties_and_padding(harness):
    """PyTorch's rule: the first maximum wins ties, a NaN wins (the last one), all -inf keeps index 0."""
    from gpucnn.ops import pool as np_pool
    from gpucnn.ops.geometry import Window2D

    x = numpy.array([[[[1.0, 1.0, numpy.nan, 2.0],
                       [-numpy.inf, -numpy.inf, 5.0, numpy.nan]]]])
    window = Window2D(1, 2, 1, 1, 1, 0, 0, 0, "MaxPool2D")  # 1x2 windows, one row of padding on top
    y = numpy.zeros((1, 1, 3, 3))
    argmax = numpy.zeros((1, 1, 3, 3), dtype=numpy.int32)
    run_kernel(harness, "pool.cu", "max_pool_fwd", numpy.float64,
               (x, y, argmax, 2, 4) + _window_args(window, 3, 3) + (y.size,), "int")
    nan, inf = numpy.nan, numpy.inf
    numpy.testing.assert_array_equal(y[0, 0], [[-inf, -inf, -inf], [1.0, nan, nan], [-inf, 5.0, nan]])
    numpy.testing.assert_array_equal(argmax[0, 0], [[0, 0, 0], [0, 1, 0], [0, 1, 1]])
    y_ref, (argmax_ref, _, _) = np_pool.max_pool2d_forward(x, window)
    numpy.testing.assert_array_equal(y, y_ref)
    defined = ~numpy.isnan(y_ref)  # NaN windows: PyTorch's argmax (the last NaN), see test_cuda_parity
    numpy.testing.assert_array_equal(argmax[defined], argmax_ref[defined])


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_all_minus_inf_window_picks_its_first_real_element(harness, dtype):
    """Windows of only -inf and padding: argmax names the first real element (PyTorch), never padding,
    and the gradient lands there; the kernel equals the NumPy op."""
    from gpucnn.ops import pool as np_pool
    from gpucnn.ops.geometry import pool_window

    x = numpy.full((1, 2, 4, 5), -numpy.inf, dtype=dtype)
    x[0, 1, 2:, 3:] = 1.0
    window = pool_window(3, 2, 1)
    oh, ow = window.output_size(4, 5)
    y = numpy.zeros((1, 2, oh, ow), dtype=dtype)
    argmax = numpy.zeros((1, 2, oh, ow), dtype=numpy.int32)
    run_kernel(harness, "pool.cu", "max_pool_fwd", dtype, (x, y, argmax, 4, 5) + _window_args(window, oh, ow)
               + (y.size,), "int")
    # window (0, 0) covers padded rows/columns 0..2: its first real element is tap (1, 1) = 4
    numpy.testing.assert_array_equal(argmax[0, 0], [[4, 3, 3], [1, 0, 0]])
    y_ref, (argmax_ref, _, _) = np_pool.max_pool2d_forward(x, window)
    numpy.testing.assert_array_equal(y, y_ref)
    numpy.testing.assert_array_equal(argmax, argmax_ref)
    grad_y = numpy.arange(1, y.size + 1, dtype=dtype).reshape(y.shape)
    grad_x = numpy.full(x.shape, numpy.nan, dtype=dtype)
    run_kernel(harness, "pool.cu", "max_pool_bwd", dtype, (grad_y, argmax, grad_x, 4, 5)
               + _window_args(window, oh, ow) + (grad_x.size,), "long long")
    numpy.testing.assert_array_equal(grad_x, np_pool.max_pool2d_backward(grad_y, (argmax_ref, x.shape, window)))
    assert grad_x.sum() == grad_y.sum()  # nothing lost to padding


def _softmax_xent_logits(n, k, dtype, seed):
    """Random logits with ties, a NaN row, an all -inf row and huge values, and labels with two bad ones."""
    rng = numpy.random.default_rng(seed)
    logits = (rng.standard_normal((n, k)) * 3).astype(dtype)
    labels = rng.integers(0, k, n).astype(numpy.int64)
    if n >= 6 and k >= 3:
        logits[0, :] = 1.0                  # all tied: argmax 0
        logits[1, 1] = numpy.nan            # NaN row
        logits[2, :] = -numpy.inf           # NaN after the shift
        logits[3, :] = [1e30] * 2 + [0] * (k - 2)     # finite after the shift
        labels[4], labels[5] = -1, k        # out of range
    return logits, labels


# softmax_xent without options: not weighted (the logits as the unread weight), nothing ignored, no smoothing,
# reduction 'mean' (tests/kernels/test_loss_options_harness.py runs the options)
_PLAIN = (0, 0, 0, 0.0, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(1, 1), (1, 10), (6, 3), (37, 10), (256, 7), (257, 10), (600, 37)])
def test_softmax_xent_phases_match_numpy(harness, n, k, dtype):
    """Every thread's rows, the block tree and thread 0's totals equal gpucnn.ops.loss's NumPy code."""
    from gpucnn.ops import loss as np_loss

    logits, labels = _softmax_xent_logits(n, k, dtype, seed=n * k)
    with numpy.errstate(invalid="ignore"):  # the NaN and -inf rows
        want_loss, want_grad, want_counts = np_loss.softmax_cross_entropy(logits, labels)
    grad = numpy.full((n, k), 12345.0, dtype=dtype)
    loss = numpy.full(1, 12345.0, dtype=dtype)
    counts = numpy.full(2, -7, dtype=numpy.int32)
    run_kernel(harness, "loss.cu", "softmax_xent", dtype, (logits, labels, logits, grad, loss, counts, n, k) + _PLAIN + (0,))
    numpy.testing.assert_array_equal(counts, want_counts)
    numpy.testing.assert_array_equal(numpy.isnan(grad), numpy.isnan(want_grad))
    parity.assert_close(grad, want_grad, dtype, "grad")
    parity.assert_close(loss, want_loss, dtype, "loss")
    if n >= 6 and k >= 3:
        assert numpy.isnan(loss[0]) and counts[1] == 2
        good = numpy.ones(n, bool)
        good[[1, 2, 4, 5]] = False
        finite = np_loss.softmax_cross_entropy(logits[good], labels[good])[0]
        run_kernel(harness, "loss.cu", "softmax_xent", dtype,
                   (logits[good].copy(), labels[good].copy(), logits, grad[good].copy(), loss, counts, int(good.sum()), k)
                   + _PLAIN + (0,))
        parity.assert_close(loss, finite, dtype, "loss of the good rows")
        assert numpy.isfinite(loss[0])
    # accumulate: loss and counts add up, the gradient is rewritten
    before_loss, before_counts = loss.copy(), counts.copy()
    run_kernel(harness, "loss.cu", "softmax_xent", dtype, (logits, labels, logits, grad, loss, counts, n, k) + _PLAIN + (1,))
    numpy.testing.assert_array_equal(counts, before_counts + want_counts)
    parity.assert_close(loss, before_loss + want_loss, dtype, "accumulated loss")
    parity.assert_close(grad, want_grad, dtype, "grad, accumulate mode")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", ["sgd", "sgd_nesterov_decay", "adam", "adam_l2", "adamw"])
def test_multi_update_steps_match_numpy(harness, rule, dtype):
    """step_scalars then the flat update, three steps with a learning-rate change, against the NumPy twin
    (gpucnn.ops.multi_update, itself the per-parameter rules of gpucnn.ops.update)."""
    from gpucnn.ops import multi_update as np_multi

    rng = numpy.random.default_rng(len(rule))
    n = 1000
    param, grads = rng.standard_normal(n).astype(dtype), rng.standard_normal((3, n)).astype(dtype)
    states = [numpy.zeros(n, dtype=dtype), numpy.zeros(n, dtype=dtype)]
    ref_param, ref_states = param.copy(), [s.copy() for s in states]
    hyper, ref_hyper = np_multi.make_hyper(0.1, 0), np_multi.make_hyper(0.1, 0)
    sgd = {"sgd": (0.9, 0.0, False, 0.0), "sgd_nesterov_decay": (0.9, 0.0, True, 1e-2)}
    adam = {"adam": (0.0, False), "adam_l2": (1e-2, False), "adamw": (1e-2, True)}
    for step in range(3):
        if step == 2:
            hyper[np_multi.HYPER_LR] = ref_hyper[np_multi.HYPER_LR] = 0.03
        grad = grads[step]
        if rule in sgd:
            momentum, dampening, nesterov, wd = sgd[rule]
            flags = 1 * bool(wd) | 2 | 4 * nesterov
            run_kernel(harness, "multi_update.cu", "step_scalars", dtype, (hyper, 0.0, 0.0, wd))
            run_kernel(harness, "multi_update.cu", "multi_sgd_update", dtype,
                       (param, grad, states[0], hyper, momentum, 1.0 - dampening, wd, flags, n))
            np_multi.multi_sgd_update(ref_param, grad, ref_states[0], ref_hyper, momentum, dampening, nesterov, wd)
        else:
            wd, decoupled = adam[rule]
            mode = 0 if not wd else (2 if decoupled else 1)
            run_kernel(harness, "multi_update.cu", "step_scalars", dtype, (hyper, 0.9, 0.999, wd))
            run_kernel(harness, "multi_update.cu", "multi_adam_update", dtype,
                       (param, grad, states[0], states[1], hyper, 0.9, 0.1, 0.999, 1.0 - 0.999, 1e-8, wd, mode, n))
            np_multi.multi_adam_update(ref_param, grad, ref_states[0], ref_states[1], ref_hyper, 0.9, 0.999, 1e-8,
                                       wd, decoupled)
        numpy.testing.assert_array_equal(hyper, ref_hyper)  # the same double arithmetic, bit for bit
        parity.assert_close(param, ref_param, dtype, f"param after step {step + 1}")
        for got, want in zip(states, ref_states):
            parity.assert_close(got, want, dtype, f"state after step {step + 1}")
    assert hyper[np_multi.HYPER_STEP] == 3
