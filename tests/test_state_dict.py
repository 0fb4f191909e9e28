"""state_dict / load_state_dict: PyTorch's keys, PyTorch's strict rules, nothing changed on bad input."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from support.helpers import assert_close


def gpucnn_net(seed=0):
    return gpucnn.Sequential([Conv2D(1, 4, 3, padding=1, rng=seed), BatchNorm2D(4), ReLU(), MaxPool2D(2),
                              Flatten(), Dense(4 * 3 * 3, 5, rng=seed)])


def test_keys_are_pytorchs():
    assert list(gpucnn_net().state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                               "1.running_var", "5.weight", "5.bias"]


def test_round_trip_between_models(rng):
    source, target = gpucnn_net(0), gpucnn_net(1)
    source.forward(rng.random((4, 1, 6, 6), dtype=numpy.float32))
    assert target.load_state_dict(source.state_dict()) == ([], [])
    for key, value in source.state_dict().items():
        numpy.testing.assert_array_equal(target.state_dict()[key], value)
        assert target.state_dict()[key] is not value  # copied in, not aliased


def test_strict_false_loads_the_common_keys_and_reports_the_rest():
    model = gpucnn_net(1)
    source = gpucnn_net(0).state_dict()
    partial = {"0.weight": source["0.weight"], "9.extra": numpy.zeros(3, numpy.float32)}
    with pytest.raises(ValueError, match=r"missing \['0.bias'.*unexpected \['9.extra'\]"):
        model.load_state_dict(partial)
    missing, unexpected = model.load_state_dict(partial, strict=False)
    assert unexpected == ["9.extra"] and "0.weight" not in missing and "5.bias" in missing
    numpy.testing.assert_array_equal(model.state_dict()["0.weight"], source["0.weight"])


@pytest.mark.parametrize("key, value, error, message", [
    ("5.weight", numpy.zeros((5, 35), numpy.float32), ValueError, r"5.weight has shape \(5, 35\).*\(5, 36\)"),
    ("1.running_var", numpy.ones(4, numpy.int64), TypeError, "1.running_var has dtype int64, expected floats"),
    ("0.bias", object(), TypeError, "0.bias"),
])
def test_a_bad_entry_changes_nothing(key, value, error, message):
    model = gpucnn_net(1)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = dict(gpucnn_net(0).state_dict())
    state[key] = value
    with pytest.raises(error, match=message):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        numpy.testing.assert_array_equal(v, before[k])


def test_float64_values_are_cast_to_the_models_dtype():
    model = gpucnn_net(1)
    state = {k: v.astype(numpy.float64) for k, v in gpucnn_net(0).state_dict().items()}
    model.load_state_dict(state)
    assert all(v.dtype == numpy.float32 for v in model.state_dict().values())


def test_weights_cross_to_and_from_a_pytorch_twin_with_one_loop(rng):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    twin = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 5))
    x = rng.random((3, 1, 6, 6), dtype=numpy.float32)
    twin.train()(torch.from_numpy(x))  # running statistics away from their start
    twin.eval()

    # PyTorch -> gpucnn; its num_batches_tracked is the one key gpucnn's BatchNorm has no use for.
    model = gpucnn_net(7)
    missing, unexpected = model.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()}, strict=False)
    assert (missing, unexpected) == ([], ["1.num_batches_tracked"])
    with torch.no_grad():
        assert_close(model.predict(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)

    # gpucnn -> PyTorch, after gpucnn changed the weights; PyTorch's BatchNorm does without num_batches_tracked.
    model.train().forward(x)
    for p in model.parameters():
        p.data *= 1.5
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    with torch.no_grad():
        assert_close(twin(torch.from_numpy(x)).numpy(), model.predict(x), rtol=1e-5, atol=1e-6)


def test_without_batchnorm_the_crossing_is_strict_both_ways(rng):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    twin = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                         nn.Linear(84, 10))
    model = gpucnn.models.lenet5(rng=3)
    x = rng.random((2, 1, 28, 28), dtype=numpy.float32)
    model.load_state_dict({k: v.detach().numpy() for k, v in twin.state_dict().items()})
    with torch.no_grad():
        assert_close(model.predict(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    other = gpucnn.models.lenet5(rng=4)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in other.state_dict().items()})
    with torch.no_grad():
        assert_close(twin(torch.from_numpy(x)).numpy(), other.predict(x), rtol=1e-5, atol=1e-6)
