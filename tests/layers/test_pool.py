"""MaxPool2D (argmax mask) and AvgPool2D (padded zeros counted) against the loop oracle."""
import numpy
import pytest

from support import oracle
from support.helpers import F64, assert_bad_input, assert_close, check_repeatable_and_accumulating, run
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import AvgPool2D, MaxPool2D

# (N, C, H, W, kernel_size, stride, padding)
CONFIGS = [
    (2, 3, 6, 6, 2, None, 0),                # textbook 2x2/2
    (2, 2, 7, 7, 3, 2, 1),                   # overlapping windows with padding
    (1, 2, 7, 6, (3, 2), (1, 2), (1, 1)),    # non-square kernel, stride tuple, padding tuple
    (2, 1, 5, 5, 2, 1, 0),                   # stride 1: heavy overlap
    (1, 2, 7, 9, 3, 3, 0),                   # windows don't tile: last rows/cols unused
    (1, 1, 4, 4, 4, None, 2),                # padding = half the kernel
    (1, 2, 9, 9, 2, 3, 0),                   # stride larger than the kernel
    (2, 2, 5, 8, (2, 3), None, (1, 0)),      # default stride with a non-square kernel
    (1, 3, 6, 5, (1, 3), (2, 1), (0, 1)),
    (1, 1, 16, 17, (15, 17), 1, 0),          # 255 elements per window
    (1, 1, 17, 16, 16, 1, 0),                # 256 elements per window (argmax index > 255)
]


def _random_configs(count, seed=77):
    r = numpy.random.default_rng(seed)
    out = []
    while len(out) < count:
        kh, kw = (int(v) for v in r.integers(1, 5, size=2))
        sy, sx = (int(v) for v in r.integers(1, 4, size=2))
        ph, pw = int(r.integers(0, kh // 2 + 1)), int(r.integers(0, kw // 2 + 1))
        h, w = (int(v) for v in r.integers(3, 9, size=2))
        if kh > h + 2 * ph or kw > w + 2 * pw:
            continue
        out.append((int(r.integers(1, 3)), int(r.integers(1, 3)), h, w, (kh, kw), (sy, sx), (ph, pw)))
    return out


ALL = CONFIGS + _random_configs(6)


def _ids(cfg):
    return "N{}C{}H{}W{}-k{}-s{}-p{}".format(*cfg).replace(" ", "")


def _geometry(cfg):
    k, s, p = cfg[4], cfg[5], cfg[6]
    stride = k if s is None else s
    ph, pw = oracle.pair(p)
    return k, stride, (ph, ph, pw, pw)


@pytest.mark.parametrize("cfg", ALL, ids=_ids)
def test_max_pool_matches_oracle(cfg, rng, device):
    k, stride, pad = _geometry(cfg)
    x = rng.standard_normal(cfg[:4])
    want_y, mask = oracle.max_pool2d_forward(x, k, stride, pad)
    g = rng.standard_normal(want_y.shape)
    y, dx = run(MaxPool2D(k, stride=cfg[5], padding=cfg[6]), x, g, device)
    assert_close(y, want_y, what="y")
    assert_close(dx, oracle.max_pool2d_backward(g, mask, x.shape, pad), what="dx")
    assert y.dtype == F64 and dx.dtype == F64


@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_max_pool_ties_go_to_the_first_maximum(cfg, rng, device):
    """Small integers give many equal values per window; the first (row-major) one wins, as in PyTorch."""
    k, stride, pad = _geometry(cfg)
    x = rng.integers(0, 3, size=cfg[:4]).astype(F64)
    want_y, mask = oracle.max_pool2d_forward(x, k, stride, pad)
    g = rng.standard_normal(want_y.shape)
    y, dx = run(MaxPool2D(k, stride=cfg[5], padding=cfg[6]), x, g, device)
    assert_close(y, want_y, what="y")
    assert_close(dx, oracle.max_pool2d_backward(g, mask, x.shape, pad), what="dx with ties")


@pytest.mark.parametrize("cfg", ALL, ids=_ids)
def test_avg_pool_matches_oracle(cfg, rng, device):
    k, stride, pad = _geometry(cfg)
    x = rng.standard_normal(cfg[:4])
    want_y = oracle.avg_pool2d_forward(x, k, stride, pad)
    g = rng.standard_normal(want_y.shape)
    y, dx = run(AvgPool2D(k, stride=cfg[5], padding=cfg[6]), x, g, device)
    assert_close(y, want_y, what="y")
    assert_close(dx, oracle.avg_pool2d_backward(g, x.shape, k, stride, pad), what="dx")
    assert y.dtype == F64 and dx.dtype == F64


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_float32_stays_float32(cls, rng, device):
    x = rng.standard_normal((2, 2, 6, 6)).astype(numpy.float32)
    y, dx = run(cls(3, stride=2, padding=1), x, numpy.ones((2, 2, 3, 3), numpy.float32), device)
    assert y.dtype == numpy.float32 and dx.dtype == numpy.float32


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_non_contiguous_input(cls, rng, device):
    """A strided view (every other row/column of a channels-last array) gives the same result."""
    big = rng.standard_normal((2, 9, 11, 3)).transpose(0, 3, 1, 2)      # (2, 3, 9, 11), not C-contiguous
    x = big[:, :, ::2, 1::2]                                             # (2, 3, 5, 5)
    assert not x.flags.c_contiguous
    layer = cls(3, stride=2, padding=1)
    g = rng.standard_normal((2, 3, 3, 3))[:, :, ::-1, :]
    y, dx = run(layer, x, g, device)
    y2, dx2 = run(cls(3, stride=2, padding=1), numpy.ascontiguousarray(x), numpy.ascontiguousarray(g), device)
    assert_close(y, y2, rtol=0, atol=0, what="y of a strided view")
    assert_close(dx, dx2, rtol=0, atol=0, what="dx of a strided view")


def test_max_padding_never_wins(device):
    """All inputs negative: padded cells must not produce 0 (they are -inf)."""
    x = -1.0 - numpy.arange(16, dtype=F64).reshape(1, 1, 4, 4)
    y, _ = run(MaxPool2D(3, stride=1, padding=1), x, numpy.ones((1, 1, 4, 4)), device)
    assert y.max() < 0
    assert y[0, 0, 0, 0] == -1.0


def test_avg_counts_padded_zeros(device):
    x = numpy.ones((1, 1, 4, 4), F64)
    y, dx = run(AvgPool2D(3, stride=1, padding=1), x, numpy.ones((1, 1, 4, 4)), device)
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert y[0, 0, 0, 1] == pytest.approx(6 / 9)
    assert y[0, 0, 1, 1] == pytest.approx(1.0)
    # corner input element sits in 4 windows, each passing 1/9
    assert dx[0, 0, 0, 0] == pytest.approx(4 / 9)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_stride_defaults_to_kernel(cls, rng):
    x = rng.standard_normal((1, 2, 7, 9))
    assert cls((2, 3)).forward(x).shape == (1, 2, 3, 3)
    assert cls(2).forward(x).shape == (1, 2, 3, 4)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_no_parameters(cls):
    layer = cls(2)
    assert list(layer.parameters()) == []
    layer.zero_grad()
    layer.eval()
    layer.train()


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("cfg", CONFIGS[:5] + _random_configs(3, seed=5), ids=_ids)
def test_check_layer(cls, cfg, rng):
    check_layer(cls(cfg[4], stride=cfg[5], padding=cfg[6]), rng.standard_normal(cfg[:4]))


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_input_untouched_backward_repeatable(cls, rng, device):
    x = rng.standard_normal((2, 2, 7, 7))
    layer = cls(3, stride=2, padding=1)
    y1, y2 = check_repeatable_and_accumulating(layer, x, rng.standard_normal((2, 2, 4, 4)), device)
    numpy.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_eval_mode_same_as_train(cls, rng):
    x = rng.standard_normal((2, 2, 6, 6))
    layer = cls(2)
    y = layer.forward(x).copy()
    layer.eval()
    numpy.testing.assert_array_equal(layer.forward(x), y)


# ----------------------------------------------------------------------------------------
# bad input

NAMES = {MaxPool2D: "MaxPool2D", AvgPool2D: "AvgPool2D"}


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("k, padding, hw", [(5, 0, (4, 6)), ((2, 7), 1, (6, 4)), (4, 1, (1, 1))])
def test_window_larger_than_padded_input(cls, k, padding, hw):
    layer = cls(k, padding=padding)
    assert_bad_input(lambda: layer.forward(numpy.zeros((1, 1) + hw, F64)), NAMES[cls])


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("k, padding", [(2, 2), (3, 2), ((4, 2), (1, 2)), (1, 1)])
def test_padding_more_than_half_the_kernel(cls, k, padding):
    assert_bad_input(lambda: cls(k, padding=padding), NAMES[cls], "padding")


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("stride", [0, -2, (1, 0)])
def test_stride_below_one(cls, stride):
    assert_bad_input(lambda: cls(2, stride=stride), NAMES[cls], "stride")


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("shape", [(3, 6, 6), (1, 1, 1, 6, 6)])
def test_wrong_rank(cls, shape):
    assert_bad_input(lambda: cls(2).forward(numpy.zeros(shape, F64)), NAMES[cls], "4", str(shape))


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_non_float_input(cls):
    assert_bad_input(lambda: cls(2).forward(numpy.zeros((1, 1, 4, 4), numpy.int64)), NAMES[cls], "int64")


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_empty_batch(cls):
    assert_bad_input(lambda: cls(2).forward(numpy.zeros((0, 1, 4, 4), F64)), NAMES[cls])


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_unknown_padding_word(cls):
    assert_bad_input(lambda: cls(2, padding="same-ish"), NAMES[cls], "padding")
