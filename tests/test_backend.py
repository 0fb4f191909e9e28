import numpy
import pytest

from gpucnn import backend


def test_cpu_arrays_use_numpy():
    x = numpy.zeros(3)
    assert backend.get_array_module(x) is numpy
    assert backend.get_array_module([1, 2]) is numpy
    assert backend.device_of(x) == "cpu"


def test_gpu_available_never_raises_and_agrees_with_reason():
    available = backend.gpu_available()
    assert isinstance(available, bool)
    assert (backend.gpu_unavailable_reason() is None) == available


def test_auto_resolves_to_a_usable_device():
    device = backend.resolve_device("auto")
    assert device == ("cuda:0" if backend.gpu_available() else "cpu")


@pytest.mark.parametrize("name", ["cpu", "CPU", None])
def test_cpu_names(name):
    assert backend.resolve_device(name) == "cpu"


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", "cuda:-1"])
def test_unknown_device_names_are_value_errors(name):
    with pytest.raises(ValueError):
        backend.resolve_device(name)


def test_non_string_device_is_type_error():
    with pytest.raises(TypeError):
        backend.resolve_device(3)


def test_cuda_without_gpu_raises_one_clear_runtime_error():
    if backend.gpu_available():
        pytest.skip("a GPU is usable here")
    with pytest.raises(RuntimeError, match="requested but"):
        backend.resolve_device("cuda")
    with pytest.raises(RuntimeError, match="requested but"):
        backend.to_device(numpy.zeros(2), "cuda:0")


def test_missing_cupy_means_no_gpu(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    backend._probe_cupy.cache_clear()
    try:
        assert backend.gpu_available() is False
        assert "not installed" in backend.gpu_unavailable_reason()
        assert backend.get_array_module(numpy.zeros(1)) is numpy
        with pytest.raises(RuntimeError, match="CuPy is not installed"):
            backend.resolve_device("cuda")
    finally:
        monkeypatch.undo()
        backend._probe_cupy.cache_clear()


def test_driverless_cupy_means_no_gpu(monkeypatch):
    """The CI state: cupy imports, the first CUDA call fails."""
    import sys
    import types

    class Runtime:
        @staticmethod
        def getDeviceCount():
            raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=Runtime)
    fake.ndarray = type("ndarray", (), {})
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend._probe_cupy.cache_clear()
    try:
        assert backend.gpu_available() is False
        assert "InsufficientDriver" in backend.gpu_unavailable_reason()
        with pytest.raises(RuntimeError, match="no CUDA device is usable"):
            backend.resolve_device("cuda")
        assert backend.resolve_device("auto") == "cpu"
    finally:
        monkeypatch.undo()
        backend._probe_cupy.cache_clear()


def test_to_device_cpu_round_trip():
    x = numpy.arange(6.0).reshape(2, 3)
    assert numpy.array_equal(backend.to_device(x, "cpu"), x)
    assert numpy.array_equal(backend.asnumpy(x), x)


@pytest.mark.gpu
def test_to_device_cuda_round_trip():
    x = numpy.arange(6.0).reshape(2, 3)
    on_gpu = backend.to_device(x, "cuda")
    assert backend.device_of(on_gpu) == "cuda:0"
    assert backend.get_array_module(on_gpu) is not numpy
    assert numpy.array_equal(backend.asnumpy(on_gpu), x)
