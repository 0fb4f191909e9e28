"""Conv2D with dilation and groups (depthwise included) against the loop oracle, gradcheck, shapes, errors."""
import numpy
import pytest

import gpucnn
from support import oracle
from support.helpers import (F64, assert_bad_input, assert_close, check_repeatable_and_accumulating, on_device, run,
                             set_param)
from gpucnn.io.arrays import save_arrays
from gpucnn.nn.gradcheck import check_layer
from gpucnn.nn.layers import Conv2D, Flatten, ReLU

# (N, C, H, W, O, kernel_size, stride, padding, dilation, groups)
CONFIGS = [
    (2, 2, 9, 9, 3, 3, 1, 0, 2, 1),                     # dilated, valid
    (2, 3, 8, 9, 2, 3, 1, "same", 2, 1),                # 'same' with an even total pad 2*(3-1) = 4
    (1, 2, 7, 8, 2, 2, 1, "same", 3, 1),                # 'same', odd total 3*(2-1) = 3: extra at the bottom/right
    (2, 2, 7, 9, 3, (2, 4), 1, "same", (3, 1), 1),      # odd totals on both axes, mixed dilation
    (2, 3, 11, 10, 2, 3, (2, 3), (1, 2), (2, 3), 1),    # dilation with strides and padding
    (2, 4, 6, 7, 6, 3, 1, 1, 1, 2),                     # two groups
    (2, 4, 7, 6, 4, 3, 1, "same", 1, 4),                # depthwise
    (1, 3, 9, 8, 6, 3, 2, 1, 2, 3),                     # depthwise with channel multiplier 2, strided, dilated
    (2, 6, 9, 9, 4, (3, 2), (1, 2), (2, 1), (2, 2), 2),  # grouped, dilated, strided, non-square
    (1, 6, 5, 5, 6, 1, 1, 0, 3, 3),                     # 1x1 grouped (dilation has no effect)
    (1, 4, 8, 8, 8, 4, 1, "same", 1, 4),                # depthwise, even kernel 'same'
]


def _ids(cfg):
    return "N{}C{}H{}W{}O{}-k{}-s{}-p{}-d{}-g{}".format(*cfg).replace(" ", "")


def _make(cfg, rng, bias=True, dtype=F64):
    n, c, h, w, o, k, s, p, d, g = cfg
    layer = Conv2D(c, o, k, stride=s, padding=p, dilation=d, groups=g, bias=bias, dtype=dtype)
    weight = rng.standard_normal(layer.weight.data.shape)
    set_param(layer.weight, weight)
    b = None
    if bias:
        b = rng.standard_normal(o)
        set_param(layer.bias, b)
    return layer, rng.standard_normal((n, c, h, w)), weight, b


@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_forward_backward_match_oracle(cfg, rng, device):
    n, c, h, w, o, k, s, p, d, g = cfg
    layer, x, weight, b = _make(cfg, rng)
    pad = oracle.resolve_conv_padding(k, p, d)
    want_y = oracle.conv2d_forward(x, weight, b, s, pad, d, g)
    grad_out = rng.standard_normal(want_y.shape)
    on_device(layer, device)
    y, dx = run(layer, x, grad_out, device)
    want_dx, want_dw, want_db = oracle.conv2d_backward(x, weight, grad_out, s, pad, d, g)
    assert_close(y, want_y, what="y")
    assert_close(dx, want_dx, what="dx")
    assert_close(layer.weight.grad, want_dw, what="dW")
    assert_close(layer.bias.grad, want_db, what="db")


@pytest.mark.parametrize("cfg", CONFIGS[1:3] + CONFIGS[6:9], ids=_ids)
def test_check_layer(cfg, rng):
    layer, x, _, _ = _make(cfg, rng)
    check_layer(layer, x)


def test_check_layer_without_bias(rng):
    layer, x, _, _ = _make(CONFIGS[8], rng, bias=False)
    check_layer(layer, x)


def test_model_of_dilated_and_depthwise_layers(rng):
    """A MobileNet-style block (depthwise 3x3, then pointwise 1x1) after a dilated conv, checked whole."""
    model = gpucnn.Sequential([
        Conv2D(2, 4, 3, padding="same", dilation=2, dtype=F64, rng=1), ReLU(),
        Conv2D(4, 4, 3, padding=1, groups=4, dtype=F64, rng=2),
        Conv2D(4, 3, 1, dtype=F64, rng=3), Flatten()])
    check_layer(model, rng.standard_normal((2, 2, 6, 5)))


@pytest.mark.parametrize("cfg", CONFIGS[6:8], ids=_ids)
def test_input_untouched_backward_repeatable_grads_accumulate(cfg, rng, device):
    layer, x, weight, b = _make(cfg, rng)
    n, c, h, w, o, k, s, p, d, g = cfg
    y = oracle.conv2d_forward(x, weight, b, s, oracle.resolve_conv_padding(k, p, d), d, g)
    on_device(layer, device)
    check_repeatable_and_accumulating(layer, x, rng.standard_normal(y.shape), device)


@pytest.mark.parametrize("k", [1, 2, 3, 4, (2, 5)])
@pytest.mark.parametrize("d", [1, 2, 3, (1, 2), (3, 2)])
def test_same_padding_keeps_the_size_when_dilated(k, d, rng):
    layer = Conv2D(2, 3, k, padding="same", dilation=d, dtype=F64)
    assert layer.forward(rng.standard_normal((1, 2, 13, 12))).shape == (1, 3, 13, 12)


def test_attributes_and_shapes():
    layer = Conv2D(6, 9, (3, 2), stride=2, padding=1, dilation=(2, 3), groups=3)
    assert layer.dilation == (2, 3) and isinstance(layer.dilation, tuple)
    assert layer.groups == 3 and type(layer.groups) is int
    assert layer.weight.data.shape == (9, 2, 3, 2)
    y = layer.forward(numpy.zeros((1, 6, 11, 10), numpy.float32))
    # extent (2*(3-1)+1, 3*(2-1)+1) = (5, 4): ((11 + 2 - 5)//2 + 1, (10 + 2 - 4)//2 + 1)
    assert y.shape == (1, 9, 5, 5)
    plain = Conv2D(2, 3, 3)
    assert plain.dilation == (1, 1) and plain.groups == 1
    assert Conv2D(4, 4, 3, dilation=numpy.int64(2), groups=numpy.int64(4)).dilation == (2, 2)


def test_repr_names_dilation_and_groups_only_when_used():
    assert repr(Conv2D(2, 3, 3, padding=1)) == \
        "Conv2D(2, 3, kernel_size=(3, 3), stride=(1, 1), padding=1, bias=True)"  # as before they existed
    assert repr(Conv2D(4, 4, 3, dilation=2, groups=4)) == \
        "Conv2D(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=0, dilation=(2, 2), groups=4, bias=True)"


def test_he_initialisation_counts_the_inputs_of_one_group():
    """fan_in = C/groups * kh * kw, as PyTorch's init: a depthwise 3x3 filter has 9 inputs."""
    layer = Conv2D(64, 64, 3, groups=64, rng=0)
    bound = numpy.sqrt(6.0 / 9)
    assert numpy.abs(layer.weight.data).max() <= bound and numpy.abs(layer.weight.data).max() > 0.9 * bound


def test_a_model_saved_before_dilation_and_groups_loads(tmp_path, rng):
    """Saved models carry weights and layer reprs; the format of a plain Conv2D did not change."""
    model = gpucnn.Sequential([Conv2D(2, 3, 3, padding="same", dtype=F64, rng=0), Flatten()])
    weights = {"0.weight": rng.standard_normal((3, 2, 3, 3)), "0.bias": rng.standard_normal(3)}
    save_arrays(tmp_path / "old.npz", weights, {"format": "gpucnn.Sequential/1", "layers": [
        "Conv2D(2, 3, kernel_size=(3, 3), stride=(1, 1), padding='same', bias=True)", "Flatten()"]})
    model.load(tmp_path / "old.npz")
    numpy.testing.assert_array_equal(model.layers[0].weight.data, weights["0.weight"])
    assert model.layers[0].dilation == (1, 1) and model.layers[0].groups == 1


# ----------------------------------------------------------------------------------------
# bad input

@pytest.mark.parametrize("c, o, g", [(4, 6, 3), (6, 4, 3), (3, 3, 2), (4, 4, 8)])
def test_groups_must_divide_both_channel_counts(c, o, g):
    assert_bad_input(lambda: Conv2D(c, o, 3, groups=g), "Conv2D", f"groups={g}", f"in_channels={c}",
                     f"out_channels={o}")


@pytest.mark.parametrize("g", [0, -2, 1.5, True, "2", None])
def test_groups_of_the_wrong_kind(g):
    assert_bad_input(lambda: Conv2D(2, 2, 3, groups=g), "Conv2D", "groups")


@pytest.mark.parametrize("d", [0, -1, (1, 0), (2, -3)])
def test_dilation_below_one(d):
    assert_bad_input(lambda: Conv2D(1, 1, 3, dilation=d), "Conv2D", "dilation")


@pytest.mark.parametrize("d", [1.5, (1, 2, 3), None, "2"])
def test_dilation_of_the_wrong_type(d):
    assert_bad_input(lambda: Conv2D(1, 1, 3, dilation=d), "Conv2D", "dilation")


def test_dilated_window_larger_than_the_padded_input():
    layer = Conv2D(1, 1, 3, dilation=3)  # extent 7
    message = assert_bad_input(lambda: layer.forward(numpy.zeros((1, 1, 6, 9), numpy.float32)), "Conv2D", "7x7")
    assert "dilated" in message


def test_wrong_channel_count_with_groups():
    layer = Conv2D(4, 2, 3, groups=2)
    assert_bad_input(lambda: layer.forward(numpy.zeros((1, 2, 6, 6), numpy.float32)), "Conv2D", "4", "2")
