"""The kernel loader compiles only what is used: one float type per module, once per device."""
import numpy
import pytest

from gpucnn.ops.cuda import loader


def test_name_expressions_of_one_float_type():
    for file in loader.SIGNATURES:
        floats = loader.name_expressions(file, "float")
        assert floats and all(e.endswith(("<float>", "<float, int>", "<float, long long>")) for e in floats)
        assert sorted(floats + loader.name_expressions(file, "double")) == sorted(loader.name_expressions(file))


def test_name_expressions_of_one_index_type():
    """The 32-bit module holds the kernels without an index type too; the 64-bit one only 64-bit kernels."""
    for file in loader.SIGNATURES:
        narrow = loader.name_expressions(file, "float", "int")
        wide = loader.name_expressions(file, "float", "long long")
        assert sorted(narrow + wide) == sorted(loader.name_expressions(file, "float"))
        assert all(e.endswith(", long long>") for e in wide)
        assert not any(e.endswith(", long long>") for e in narrow)


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
    expression = loader.name_expressions(file, "float", "int")[0]
    assert loader.get_kernel(file, expression) == expression
    assert loader.get_kernel(file, expression) == expression  # cached: built once
    assert built == [tuple(loader.name_expressions(file, "float", "int"))]
    wide = loader.name_expressions(file, "float", "long long")[0]  # the 64-bit module: built on first need
    assert loader.get_kernel(file, wide) == wide
    assert built[1:] == [tuple(loader.name_expressions(file, "float", "long long"))]


def test_compile_all_builds_every_file_for_one_dtype(monkeypatch):
    pytest.importorskip("cupy")
    asked = []
    monkeypatch.setattr(loader, "get_module", lambda file, ctype: asked.append((file, ctype)))
    seconds = loader.compile_all(numpy.float32)
    assert asked == [(file, "float") for file in loader.SIGNATURES]  # the 32-bit modules only
    assert set(seconds) == set(loader.SIGNATURES) and all(s >= 0 for s in seconds.values())


def test_compile_all_builds_the_64_bit_modules_on_request(monkeypatch):
    pytest.importorskip("cupy")
    asked = []
    monkeypatch.setattr(loader, "get_module", lambda file, ctype, index="int": asked.append((file, index)))
    loader.compile_all(numpy.float64, index_types=loader.INDEX_TYPES)
    wide = [file for file in loader.SIGNATURES if loader.name_expressions(file, "double", "long long")]
    assert "conv.cu" in wide and "pool.cu" in wide
    assert sorted(asked) == sorted([(file, "int") for file in loader.SIGNATURES] + [(f, "long long") for f in wide])


def test_kernel_cache_dir_follows_cupy(monkeypatch, tmp_path):
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path))
    assert loader.kernel_cache_dir() == str(tmp_path)
    monkeypatch.delenv("CUPY_CACHE_DIR")
    assert loader.kernel_cache_dir().endswith("kernel_cache")
