"""The configurations every CUDA op is checked on against its NumPy twin (tests/support/cuda_parity.py).

Fixed and random configurations: non-square kernels, strides > 1, asymmetric 'same' padding,
dilated and grouped (depthwise included) convolutions, overlapping pool windows, sizes that do
not tile; float32 and float64. Shared by tests/ops/test_cuda_parity.py (a real GPU),
tests/kernels (the host harness) and the fused kernels' tests.
"""
import numpy

from gpucnn.ops.geometry import Window2D, conv_window, pool_window

DTYPES = [numpy.float32, numpy.float64]
LAYOUTS = ["contiguous", "transposed", "sliced", "flipped"]


def random_conv_window(rng, dilated=False):
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    sy, sx = (int(v) for v in rng.integers(1, 4, size=2))
    dy, dx = (int(v) for v in rng.integers(1, 4, size=2)) if dilated else (1, 1)
    pt, pb = (int(v) for v in rng.integers(0, dy * (kh - 1) + 1, size=2))
    pl, pr = (int(v) for v in rng.integers(0, dx * (kw - 1) + 1, size=2))
    return Window2D(kh, kw, sy, sx, pt, pb, pl, pr, "Conv2D", dy, dx)


def conv_case(case):
    """(n, c, h, w, o, window, with_bias, groups) of a conv case; groups is 1 when the case leaves it out."""
    _, n, c, h, w, o, window, with_bias, *rest = case
    return n, c, h, w, o, window, with_bias, (rest[0] if rest else 1)


def _conv_cases():
    cases = [
        # name, N, C, H, W, O, window, with_bias[, groups]
        ("fmnist1_same3x3", 2, 1, 28, 28, 4, conv_window(3, 1, "same"), True),        # direct kernel
        ("fmnist2_same3x3", 2, 6, 14, 14, 5, conv_window(3, 1, "same"), True),        # im2col + GEMM
        ("even_same_4x2", 2, 3, 7, 6, 4, conv_window((4, 2), 1, "same"), True),       # asymmetric pad
        ("even_same_4x4_gemm", 1, 3, 6, 7, 3, conv_window(4, 1, "same"), False),
        ("stride2_pad1_gemm", 3, 4, 9, 8, 2, conv_window(3, 2, 1), True),
        ("stride_gt_kernel", 2, 2, 10, 11, 3, conv_window((2, 1), (3, 4), 0), True),
        ("nonsquare_strided", 2, 5, 8, 9, 3, conv_window((3, 2), (2, 1), (1, 0)), False),
        ("nonsquare_strided_gemm", 2, 7, 8, 9, 3, conv_window((3, 2), (1, 2), (2, 1)), True),
        ("asym_custom", 2, 3, 5, 6, 2, Window2D(3, 3, 2, 1, 0, 2, 1, 0, "Conv2D"), True),
        ("asym_custom_gemm", 2, 4, 5, 6, 2, Window2D(3, 3, 2, 1, 2, 0, 0, 1, "Conv2D"), True),
        ("kernel_is_input", 2, 4, 3, 3, 2, conv_window(3, 1, 0), True),
        ("one_by_one_gemm", 2, 40, 4, 5, 3, conv_window(1, 1, 0), True),
        ("wide_pad", 1, 2, 2, 3, 2, conv_window(3, 1, 2), False),
        ("dilated_same", 2, 2, 9, 8, 3, conv_window(3, 1, "same", dilation=2), True),             # direct
        ("dilated_same_even_gemm", 2, 5, 7, 9, 3, conv_window((2, 4), 1, "same", dilation=(3, 1)), True),
        ("dilated_strided_gemm", 2, 6, 11, 10, 4, conv_window(3, (2, 3), (1, 2), dilation=(2, 3)), False),
        ("depthwise_same", 2, 4, 7, 6, 4, conv_window(3, 1, "same"), True, 4),                   # direct
        ("depthwise_multiplier_strided", 2, 3, 9, 8, 6, conv_window(3, 2, 1, dilation=2), True, 3),
        ("grouped_gemm", 2, 12, 6, 7, 8, conv_window(3, 1, 1), True, 2),                        # K/group = 54
        ("grouped_dilated_gemm", 1, 8, 9, 9, 4, conv_window((3, 2), (1, 2), (2, 1), dilation=(2, 2)), False, 2),
        ("grouped_1x1", 2, 36, 4, 5, 6, conv_window(1, 1, 0), True, 3),
    ]
    rng = numpy.random.default_rng(2024)
    fixed = len(cases)
    while len(cases) < fixed + 20:
        dilated = len(cases) >= fixed + 12  # 12 plain random windows, then 8 dilated and grouped ones
        window = random_conv_window(rng, dilated)
        h = int(rng.integers(max(1, window.extent_h - window.pt - window.pb), 10))
        w = int(rng.integers(max(1, window.extent_w - window.pl - window.pr), 10))
        groups = int(rng.integers(1, 4)) if dilated else 1
        c = groups * int(rng.integers(1, 7 if groups == 1 else 4))
        n, o, with_bias = int(rng.integers(1, 4)), groups * int(rng.integers(1, 5)), bool(rng.integers(0, 2))
        cases.append((f"random{len(cases)}", n, c, h, w, o, window, with_bias, groups))
    return cases


CONV_CASES = _conv_cases()


def _pool_cases():
    cases = [
        # name, N, C, H, W, window
        ("fmnist_2x2", 2, 3, 28, 28, pool_window(2)),
        ("odd_2x2", 2, 2, 7, 5, pool_window(2)),
        ("overlap_3x3_s2", 2, 2, 9, 8, pool_window(3, 2)),
        ("overlap_3x3_s1_pad1", 1, 3, 6, 7, pool_window(3, 1, 1)),
        ("nonsquare_overlap", 2, 2, 7, 6, pool_window((3, 2), (2, 1), (1, 1))),
        ("asym_pad", 2, 2, 6, 5, Window2D(3, 2, 2, 2, 1, 0, 0, 1, "MaxPool2D")),
        ("stride_gt_kernel", 2, 2, 9, 10, pool_window(2, 3)),
        ("global", 2, 3, 4, 5, pool_window((4, 5))),
    ]
    rng = numpy.random.default_rng(7)
    while len(cases) < 18:
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        sy, sx = (int(v) for v in rng.integers(1, 4, size=2))
        pt, pb = (int(v) for v in rng.integers(0, kh // 2 + 1, size=2))
        pl, pr = (int(v) for v in rng.integers(0, kw // 2 + 1, size=2))
        window = Window2D(kh, kw, sy, sx, pt, pb, pl, pr, "Pool2D")
        h = int(rng.integers(max(1, kh - pt - pb), 9))
        w = int(rng.integers(max(1, kw - pl - pr), 9))
        cases.append((f"random{len(cases)}", int(rng.integers(1, 3)), int(rng.integers(1, 4)), h, w, window))
    return cases


POOL_CASES = _pool_cases()


def case_ids(cases):
    return [case[0] for case in cases]


SGD_CASES = [
    # lr, momentum, dampening, nesterov, weight_decay
    (0.1, 0.0, 0.0, False, 0.0),
    (0.05, 0.0, 0.0, False, 1e-2),
    (0.1, 0.9, 0.0, False, 0.0),
    (0.02, 0.9, 0.1, False, 5e-3),
    (0.1, 0.8, 0.0, True, 1e-3),
]

ADAM_CASES = [
    # lr, beta1, beta2, eps, weight_decay, decoupled
    (1e-3, 0.9, 0.999, 1e-8, 0.0, False),
    (1e-2, 0.8, 0.99, 1e-6, 1e-2, False),
    (1e-2, 0.9, 0.999, 1e-8, 5e-2, True),
]


def pool_geometry(h, w, window):
    """(the pool kernels' geometry arguments, oh, ow) for an (h, w) input under ``window``."""
    oh, ow = window.output_size(h, w)
    return (h, w, window.kh, window.kw, window.sy, window.sx, window.pt, window.pl, oh, ow), oh, ow
