"""The kernel loader compiles only what is used: one float type per module, once per device."""
import numpy
import pytest

from gpucnn.ops.cuda import loader


def test_name_expressions_of_one_float_type():
    for file in loader.SIGNATURES:
        floats = loader.name_expressions(file, "float")
        assert floats and all(e.endswith("<float>") for e in floats)
        assert sorted(floats + loader.name_expressions(file, "double")) == sorted(loader.name_expressions(file))


def test_modules_are_built_per_float_type_and_device(monkeypatch):
    cupy = pytest.importorskip("cupy")
    built = []

    class RecordingModule:
        def __init__(self, code, options, name_expressions):
            built.append(tuple(name_expressions))

        def get_function(self, expression):
            return expression

    monkeypatch.setattr(cupy, "RawModule", RecordingModule)
    monkeypatch.setattr(cupy.cuda.runtime, "getDevice", lambda: 0)
    monkeypatch.setattr(loader, "_modules", {})
    monkeypatch.setattr(loader, "_kernels", {})
    file = next(iter(loader.SIGNATURES))
    expression = loader.name_expressions(file, "float")[0]
    assert loader.get_kernel(file, expression) == expression
    assert loader.get_kernel(file, expression) == expression  # cached: built once
    assert built == [tuple(loader.name_expressions(file, "float"))]


def test_compile_all_builds_every_file_for_one_dtype(monkeypatch):
    pytest.importorskip("cupy")
    asked = []
    monkeypatch.setattr(loader, "get_module", lambda file, ctype: asked.append((file, ctype)))
    seconds = loader.compile_all(numpy.float32)
    assert asked == [(file, "float") for file in loader.SIGNATURES]
    assert set(seconds) == set(loader.SIGNATURES) and all(s >= 0 for s in seconds.values())


def test_kernel_cache_dir_follows_cupy(monkeypatch, tmp_path):
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path))
    assert loader.kernel_cache_dir() == str(tmp_path)
    monkeypatch.delenv("CUPY_CACHE_DIR")
    assert loader.kernel_cache_dir().endswith("kernel_cache")
