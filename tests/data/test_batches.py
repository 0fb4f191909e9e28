"""iterate_batches and BatchIterator: coverage, order, reproducibility, resume, validation."""
import json

import numpy
import pytest

from gpucnn import backend
from gpucnn.data import BatchIterator, iterate_batches


def dataset(num_samples=10):
    """x row i holds i in every entry, y[i] = i: a batch's pairing and order can be read off y."""
    x = numpy.repeat(numpy.arange(num_samples, dtype=numpy.float32)[:, None, None], 3, axis=1)
    return x, numpy.arange(num_samples)


def labels_of(batches):
    return [backend.asnumpy(yb).tolist() for _, yb in batches]


def test_unshuffled_batches_are_in_order_views():
    x, y = dataset(10)
    batches = list(iterate_batches(x, y, 4, shuffle=False))

    assert labels_of(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(numpy.shares_memory(xb, x) for xb, _ in batches)
    assert labels_of(iterate_batches(x, y, 4, shuffle=False, drop_last=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_shuffled_epoch_covers_every_sample_once_and_keeps_pairs(device):
    x, y = dataset(103)
    x, y = backend.to_device(x, device), backend.to_device(y, device)

    batches = list(iterate_batches(x, y, 10, seed=1))

    assert [len(yb) for _, yb in batches] == [10] * 10 + [3]
    seen = numpy.concatenate([backend.asnumpy(yb) for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(103))
    assert seen.tolist() != list(range(103))
    for xb, yb in batches:
        assert backend.device_of(xb) == backend.device_of(x)
        expected_rows = numpy.repeat(backend.asnumpy(yb)[:, None], 3, axis=1)
        numpy.testing.assert_array_equal(backend.asnumpy(xb)[:, :, 0], expected_rows)


def test_x_and_y_on_different_devices_is_allowed(device):
    x, y = dataset(7)
    x = backend.to_device(x, device)

    batches = list(iterate_batches(x, y, 3, seed=0))

    for xb, yb in batches:
        numpy.testing.assert_array_equal(backend.asnumpy(xb)[:, 0, 0], yb)


def test_drop_last_with_shuffle():
    x, y = dataset(10)
    batches = labels_of(iterate_batches(x, y, 4, seed=3, drop_last=True))

    assert [len(batch) for batch in batches] == [4, 4]
    assert len(set(sum(batches, []))) == 8


def test_same_seed_same_order_other_seed_other_order():
    x, y = dataset(50)

    first = labels_of(iterate_batches(x, y, 8, seed=42))

    assert labels_of(iterate_batches(x, y, 8, seed=42)) == first
    assert labels_of(iterate_batches(x, y, 8, seed=43)) != first


def test_generator_seed_advances_between_epochs():
    x, y = dataset(50)
    rng = numpy.random.default_rng(5)

    epoch_1 = labels_of(iterate_batches(x, y, 8, seed=rng))
    epoch_2 = labels_of(iterate_batches(x, y, 8, seed=rng))

    assert epoch_1 != epoch_2
    replay = numpy.random.default_rng(5)
    assert labels_of(iterate_batches(x, y, 8, seed=replay)) == epoch_1


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "4", None])
def test_bad_batch_size_is_refused_at_call_time(batch_size):
    x, y = dataset(4)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        iterate_batches(x, y, batch_size)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        BatchIterator(x, y, batch_size)


def test_numpy_integer_batch_size_is_accepted():
    x, y = dataset(4)
    assert labels_of(iterate_batches(x, y, numpy.int64(3), shuffle=False)) == [[0, 1, 2], [3]]


def test_length_mismatch_and_empty_are_refused():
    x, y = dataset(4)
    with pytest.raises(ValueError, match=r"len\(x\)=4 and len\(y\)=3"):
        iterate_batches(x, y[:3], 2)
    with pytest.raises(ValueError, match="empty"):
        BatchIterator(x[:0], y[:0], 2)


def test_batch_iterator_length_and_fresh_shuffle_per_epoch():
    x, y = dataset(10)
    batches = BatchIterator(x, y, 4, seed=0)

    assert len(batches) == 3
    assert len(BatchIterator(x, y, 4, drop_last=True)) == 2
    assert len(BatchIterator(x, y, 20, drop_last=True)) == 0
    assert len(list(batches)) == 3
    epoch_1, epoch_2 = labels_of(batches), labels_of(batches)
    assert epoch_1 != epoch_2
    assert sorted(sum(epoch_2, [])) == list(range(10))
    assert batches.epoch == 3
    assert labels_of(BatchIterator(x, y, 4, shuffle=False)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_state_round_trip_through_json_resumes_exactly():
    x, y = dataset(30)
    original = BatchIterator(x, y, 7, seed=123)
    labels_of(original)
    saved = json.loads(json.dumps(original.state()))
    later_epochs = [labels_of(original) for _ in range(3)]

    resumed = BatchIterator(x, y, 7, seed=999)
    resumed.set_state(saved)

    assert [labels_of(resumed) for _ in range(3)] == later_epochs
    assert resumed.epoch == original.epoch == 4
    assert all(isinstance(value, str) for value in saved["state"].values())


def test_set_state_refuses_other_generator():
    x, y = dataset(5)
    batches = BatchIterator(x, y, 2)
    state = batches.state()
    state["bit_generator"] = "MT19937"

    with pytest.raises(ValueError, match="MT19937"):
        batches.set_state(state)
