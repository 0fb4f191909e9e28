"""gpucnn.data.transforms against plain per-sample references written the way torchvision describes each
transform, fed the parameters the vectorised transform drew; seeding, state, bad arguments.

The NumPy-versus-emulated-CuPy equality is in tests/data/test_transforms_device.py.
"""
import json
import math

import numpy
import pytest

from gpucnn.data.erasing import ATTEMPTS
from gpucnn.data.transforms import Compose, Normalize, RandomCrop, RandomErasing, RandomHorizontalFlip

N = 64


def batch(n=N, c=3, h=9, w=7, seed=0, dtype=numpy.float32):
    return numpy.random.default_rng(seed).standard_normal((n, c, h, w)).astype(dtype)


# ----------------------------------------------------------------------------- references, one sample at a time

def reflect_index(k, size):
    """Where padded position k (may be < 0 or >= size) reads from, mirrored without repeating the edge."""
    while k < 0 or k >= size:
        k = -k if k < 0 else 2 * (size - 1) - k
    return k


def pad_one(img, padding, mode):
    left, top, right, bottom = padding
    c, h, w = img.shape
    out = numpy.zeros((c, h + top + bottom, w + left + right), img.dtype)
    for r in range(out.shape[1]):
        for s in range(out.shape[2]):
            y, x = r - top, s - left
            if mode == "reflect":
                out[:, r, s] = img[:, reflect_index(y, h), reflect_index(x, w)]
            elif 0 <= y < h and 0 <= x < w:
                out[:, r, s] = img[:, y, x]
    return out


def erase_params_one(draws, k, img_h, img_w, p):
    """torchvision's RandomErasing.get_params for sample k, each uniform taken from ``draws``."""
    if not draws["erase"][k] < p:
        return 0, 0, 0, 0
    area = img_h * img_w
    for attempt in range(ATTEMPTS):
        erase_area = area * draws["area"][k, attempt]
        aspect_ratio = math.exp(draws["log_ratio"][k, attempt])
        h = int(round(math.sqrt(erase_area * aspect_ratio)))
        w = int(round(math.sqrt(erase_area / aspect_ratio)))
        if not (h < img_h and w < img_w):
            continue
        i = int(draws["corner"][k, 0] * (img_h - h + 1))
        j = int(draws["corner"][k, 1] * (img_w - w + 1))
        return i, j, h, w
    return 0, 0, 0, 0


# ----------------------------------------------------------------------------- each transform

@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("size, padding", [(9, 2), ((9, 7), (1, 3)), ((6, 5), None), ((10, 8), (0, 1, 3, 2))])
def test_random_crop_is_pad_then_crop_at_the_drawn_corner(mode, size, padding):
    x = batch()
    t = RandomCrop(size, padding=padding, padding_mode=mode, seed=1)
    params = t.sample(N, x.shape[1:], numpy.random.default_rng(5))
    out = t.apply(x, params)
    th, tw = t.size
    assert out.shape == (N, 3, th, tw) and out.dtype == x.dtype
    for k in range(N):
        padded = pad_one(x[k], t.padding, mode)
        i, j = params["corners"][k]
        assert 0 <= i <= padded.shape[1] - th and 0 <= j <= padded.shape[2] - tw
        numpy.testing.assert_array_equal(out[k], padded[:, i:i + th, j:j + tw])


def test_random_crop_visits_every_corner_and_matches_torch_reflect_padding():
    t = RandomCrop(9, padding=2, seed=0)
    corners = t.sample(4000, (1, 9, 9), t.rng)["corners"]
    assert set(map(tuple, corners)) == {(i, j) for i in range(5) for j in range(5)}
    torch = pytest.importorskip("torch")
    x = batch(4, 2, 6, 5)
    crop = RandomCrop((10, 9), padding=(2, 2), padding_mode="reflect")
    full = crop.apply(x, {"corners": numpy.zeros((4, 2), numpy.int64)})
    expected = torch.nn.functional.pad(torch.from_numpy(x), (2, 2, 2, 2), mode="reflect").numpy()
    numpy.testing.assert_array_equal(full, expected)


def test_random_horizontal_flip_mirrors_the_drawn_samples_with_probability_p():
    x = batch()
    t = RandomHorizontalFlip(p=0.3)
    params = t.sample(N, x.shape[1:], numpy.random.default_rng(2))
    out = t.apply(x, params)
    for k in range(N):
        expected = x[k].copy()
        if params["flip"][k]:
            for col in range(x.shape[3]):
                expected[:, :, col] = x[k, :, :, x.shape[3] - 1 - col]
        numpy.testing.assert_array_equal(out[k], expected)
    flips = RandomHorizontalFlip(p=0.3, seed=0).sample(20000, (1, 2, 2), numpy.random.default_rng(0))["flip"]
    assert abs(flips.mean() - 0.3) < 0.015  # 4.6 standard deviations
    assert not RandomHorizontalFlip(p=0)(x) is x and (RandomHorizontalFlip(p=0)(x) == x).all()
    numpy.testing.assert_array_equal(RandomHorizontalFlip(p=1)(x), x[..., ::-1])


@pytest.mark.parametrize("value", [0, 0.5, (1.0, -2.0, 3.0), "random"])
def test_random_erasing_follows_torchvisions_get_params_and_erase(value):
    x = batch(h=12, w=10)
    t = RandomErasing(p=0.7, scale=(0.05, 0.5), ratio=(0.3, 3.3), value=value)
    rng = numpy.random.default_rng(3)
    draws = t.draw(N, numpy.random.default_rng(3))
    params = t.sample(N, x.shape[1:], rng)
    out = t.apply(x, params)
    erased = 0
    for k in range(N):
        i, j, h, w = erase_params_one(draws, k, 12, 10, 0.7)
        assert tuple(params["boxes"][k]) == (i, j, h, w)
        expected = x[k].copy()
        if h:
            erased += 1
            fill = params["values"][k, :, i:i + h, j:j + w] if value == "random" else \
                numpy.asarray(value, numpy.float32).reshape(-1, 1, 1)
            expected[:, i:i + h, j:j + w] = fill
        numpy.testing.assert_array_equal(out[k], expected)
    assert 0.4 * N < erased < 0.95 * N


def test_random_erasing_scale_too_large_for_the_image_leaves_it_as_it_is():
    x = batch(h=3, w=3)
    out = RandomErasing(p=1, scale=(0.99, 1.0), ratio=(1, 1), seed=0)(x)  # h = w = 3: never < 3
    numpy.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_normalize_is_x_minus_mean_over_std_per_channel_in_the_batch_dtype(dtype):
    x = batch(dtype=dtype)
    mean, std = (0.2, -0.1, 0.5), (0.3, 2.0, 0.7)
    out = Normalize(mean, std)(x)
    assert out.dtype == dtype
    for c in range(3):
        numpy.testing.assert_array_equal(out[:, c], (x[:, c] - dtype(mean[c])) / dtype(std[c]))
    numpy.testing.assert_array_equal(Normalize(0.5, 2.0)(x), (x - dtype(0.5)) / dtype(2.0))


# ----------------------------------------------------------------------------- Compose, seeds, state

def augment(seed=0):
    return Compose([RandomCrop(9, padding=1, padding_mode="reflect"), RandomHorizontalFlip(),
                    RandomErasing(p=0.5, value=(1, 2, 3)), Normalize((0.1, 0.2, 0.3), (1.5, 2.5, 3.5))], seed=seed)


def test_compose_applies_in_order_with_draws_from_its_own_generator():
    x = batch(h=9, w=9)
    t = augment()
    children = [child.rng.bit_generator.state for child in t.transforms]
    out = t(x)
    rng = numpy.random.default_rng(0)
    expected = x
    for child in t.transforms:
        expected = child.apply(expected, child.sample(N, expected.shape[1:], rng))
    numpy.testing.assert_array_equal(out, expected)
    assert t.rng.bit_generator.state == rng.bit_generator.state
    assert [child.rng.bit_generator.state for child in t.transforms] == children  # theirs left untouched
    assert not numpy.shares_memory(out, x) and (x == batch(h=9, w=9)).all()  # the input is left as it was


def test_a_seed_repeats_its_batches_another_differs_and_state_resumes_exactly():
    x = batch(h=9, w=9)
    first, again, other = augment(0), augment(0), augment(1)
    a1, a2 = first(x), first(x)
    numpy.testing.assert_array_equal(a1, again(x))
    assert not numpy.array_equal(a1, other(x)) and not numpy.array_equal(a1, a2)
    saved = first.state()
    third = first(x)
    fresh = augment(99)
    fresh.set_state(saved)
    numpy.testing.assert_array_equal(fresh(x), third)
    assert json.loads(json.dumps(saved)) == saved and "RandomCrop" in saved["transform"]


@pytest.mark.parametrize("state, match", [
    (None, "without an 'rng'"), ({"rng": {"bit_generator": "MT19937"}}, "bit generator 'MT19937'"),
    ({"rng": {"bit_generator": "PCG64", "state": {"state": "x"}}}, "malformed")])
def test_bad_states_are_refused_and_change_nothing(state, match):
    t = augment(0)
    before = t.state()
    with pytest.raises(ValueError, match=match):
        t.set_state(state)
    assert t.state() == before


@pytest.mark.parametrize("make, match", [
    (lambda: RandomCrop(0), "RandomCrop: size must be integers >= 1"),
    (lambda: RandomCrop("a"), "RandomCrop: size must be an int or"),
    (lambda: RandomCrop(8, padding=-1), "RandomCrop: padding must be"),
    (lambda: RandomCrop(8, padding=(1, 2, 3)), "RandomCrop: padding must be"),
    (lambda: RandomCrop(8, padding_mode="edge"), "RandomCrop: padding_mode must be one of 'zeros', 'reflect'"),
    (lambda: RandomHorizontalFlip(p=1.5), r"RandomHorizontalFlip: p must be a probability in \[0, 1\]"),
    (lambda: RandomErasing(p=-0.1), "RandomErasing: p must be a probability"),
    (lambda: RandomErasing(scale=(0.5, 0.1)), "RandomErasing: scale must be"),
    (lambda: RandomErasing(scale=(0.1, 1.5)), "RandomErasing: scale must be"),
    (lambda: RandomErasing(ratio=(0, 1)), "RandomErasing: ratio must be"),
    (lambda: RandomErasing(value="noise"), "RandomErasing: value must be"),
    (lambda: Normalize((0.5, 0.5), (1, 1, 1)), "Normalize: mean and std must have one number per channel"),
    (lambda: Normalize("a", 1), "Normalize: mean must be"),
    (lambda: Compose(RandomHorizontalFlip()), "Compose: transforms must be a list"),
    (lambda: Compose([RandomHorizontalFlip(), "flip"]), r"Compose: transforms\[1\] is a str"),
])
def test_bad_arguments_are_refused_in_one_line_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("call, match", [
    (lambda: RandomCrop(12, padding=1)(batch()), "RandomCrop: size 12x12 is larger than the padded image 11x9"),
    (lambda: RandomCrop(9, padding=9, padding_mode="reflect")(batch()), "RandomCrop: padding .* must be smaller"),
    (lambda: RandomHorizontalFlip()(batch()[0]), r"RandomHorizontalFlip: expects a batch of images \(N, C, H, W\)"),
    (lambda: Normalize((1, 2), 1)(batch()), "Normalize: mean has 2 values for a batch of 3 channels"),
    (lambda: Normalize(0, 0)(batch()), "Normalize: std evaluated to zero"),
    (lambda: Normalize(0, 1)(batch().astype(numpy.int64)), "Normalize: expects a floating-point batch"),
    (lambda: RandomErasing(value=(1, 2))(batch()), "RandomErasing: value has 2 numbers for a batch of 3"),
])
def test_bad_batches_are_refused_in_one_line(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
