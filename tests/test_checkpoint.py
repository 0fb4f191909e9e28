import os
import pickle
import zipfile

import numpy
import pytest

from gpucnn.io.arrays import CheckpointError, load_arrays, save_arrays


def test_round_trip(tmp_path):
    path = tmp_path / "a.npz"
    arrays = {"w": numpy.arange(6, dtype=numpy.float32).reshape(2, 3), "b": numpy.zeros(2)}
    save_arrays(path, arrays, {"epoch": 3, "name": "x"})
    loaded, meta = load_arrays(path)
    assert meta == {"epoch": 3, "name": "x"}
    assert set(loaded) == {"w", "b"}
    assert numpy.array_equal(loaded["w"], arrays["w"]) and loaded["w"].dtype == numpy.float32


def test_write_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.npz"
    save_arrays(path, {"w": numpy.ones(3)}, {"v": 1})

    def broken_savez(f, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(numpy, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_arrays(path, {"w": numpy.zeros(3)}, {"v": 2})
    monkeypatch.undo()
    loaded, meta = load_arrays(path)
    assert meta == {"v": 1} and numpy.array_equal(loaded["w"], numpy.ones(3))
    assert os.listdir(tmp_path) == ["a.npz"]


@pytest.mark.parametrize("cut", [10, 100, -20])
def test_truncated_file_names_the_file(tmp_path, cut):
    path = tmp_path / "t.npz"
    save_arrays(path, {"w": numpy.random.default_rng(0).random(1000)}, {})
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="t.npz"):
        load_arrays(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "g.npz"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="g.npz"):
        load_arrays(path)


def test_pickle_is_refused_without_running_it(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "p.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__meta__.npy", _npy_bytes(numpy.frombuffer(b"{}", dtype=numpy.uint8)))
        z.writestr("w.npy", _npy_bytes(numpy.array([Boom()], dtype=object)))
    with pytest.raises(CheckpointError, match="pickle"):
        load_arrays(path)
    assert not (tmp_path / "pwned").exists()

    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        load_arrays(raw)
    assert not (tmp_path / "pwned").exists()


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_arrays(tmp_path / "nope.npz")


def _npy_bytes(array):
    import io
    buf = io.BytesIO()
    numpy.save(buf, array, allow_pickle=True)
    return buf.getvalue()
