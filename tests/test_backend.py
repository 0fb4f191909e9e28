import contextlib

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


def _cupy_whose_first_call_fails(monkeypatch, message):
    """A stand-in cupy module that imports, whose getDeviceCount raises RuntimeError(message)."""
    import sys
    import types

    class Runtime:
        @staticmethod
        def getDeviceCount():
            raise RuntimeError(message)

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=Runtime)
    fake.ndarray = type("ndarray", (), {})
    monkeypatch.setitem(sys.modules, "cupy", fake)


def test_driverless_cupy_means_no_gpu(monkeypatch):
    """The CI state: cupy imports, the first CUDA call fails."""
    _cupy_whose_first_call_fails(monkeypatch, "cudaErrorInsufficientDriver: CUDA driver version is insufficient")
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


@contextlib.contextmanager
def emulated_cupy(**breakage):
    """The emulated CuPy as ``cupy``, with pieces broken as named: nvrtc=exc, cublas=exc, kernel_source=str."""
    from support.emulated_cupy import cupy_replaced_by, make_fake_cupy

    fake = make_fake_cupy()
    if "nvrtc" in breakage:
        def no_nvrtc():
            raise breakage["nvrtc"]
        fake.cuda.nvrtc.getVersion = no_nvrtc
    if "cublas" in breakage:
        def no_cublas():
            raise breakage["cublas"]
        fake.cuda.device.get_cublas_handle = no_cublas
    with cupy_replaced_by(fake):
        backend._probe_cupy.cache_clear()
        try:
            yield fake
        finally:
            backend._probe_cupy.cache_clear()


def test_usable_gpu_means_device_nvrtc_and_cublas():
    with emulated_cupy():
        assert backend.gpu_available() and backend.gpu_unavailable_reason() is None
        assert backend.resolve_device("auto") == "cuda:0"
        assert backend.describe_auto_choice("cuda:0") == "device auto -> cuda:0"


@pytest.mark.parametrize("piece, error, named", [
    ("nvrtc", OSError("libnvrtc.so.13: cannot open shared object file"), "NVRTC"),
    ("cublas", OSError("libcublas.so.13: cannot open shared object file"), "cuBLAS"),
])
def test_missing_cuda_library_names_the_piece_and_the_pip_command(monkeypatch, piece, error, named):
    monkeypatch.setattr(backend, "nvidia_driver_cuda_version", lambda: (13, 0))
    with emulated_cupy(**{piece: error}):
        reason = backend.gpu_unavailable_reason()
        assert not backend.gpu_available()
        assert named in reason and "cannot open shared object file" in reason
        assert "pip install 'gpucnn[cuda13]'" in reason
        assert backend.resolve_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match=named):
            backend.resolve_device("cuda")
        line = backend.describe_auto_choice("cpu")
        assert "NVIDIA driver (CUDA 13.0) is present" in line and named in line


def test_probe_kernel_that_does_not_compile_is_a_reason(monkeypatch):
    monkeypatch.setattr(backend, "_PROBE_KERNEL", "this is not CUDA")
    with emulated_cupy():
        assert "NVRTC" in backend.gpu_unavailable_reason()


def test_missing_runtime_with_a_driver_suggests_the_install(monkeypatch):
    _cupy_whose_first_call_fails(monkeypatch, "CUDA runtime library libcudart.so.12 not found")
    monkeypatch.setattr(backend, "nvidia_driver_cuda_version", lambda: (12, 4))
    backend._probe_cupy.cache_clear()
    try:
        reason = backend.gpu_unavailable_reason()
        assert "libcudart" in reason and "pip install 'gpucnn[cuda12]'" in reason
        assert backend.describe_auto_choice("cpu").startswith("device auto -> cpu, although an NVIDIA driver")
    finally:
        monkeypatch.undo()
        backend._probe_cupy.cache_clear()


def test_no_driver_says_so(monkeypatch):
    monkeypatch.setattr(backend, "nvidia_driver_cuda_version", lambda: None)
    assert backend.describe_auto_choice("cpu").startswith("device auto -> cpu (no NVIDIA driver on this machine")
    assert "gpucnn[cuda13]" in backend.install_command()


def test_driver_version_probe_never_raises():
    version = backend.nvidia_driver_cuda_version()
    assert version is None or (isinstance(version, tuple) and len(version) == 2)
