"""The CUDA sources compile, and their kernels have the signatures the launchers pass.

- Every gpucnn/kernels/*.cu compiles with nvcc for sm_80 and sm_90
  (``nvcc -std=c++17 -arch=sm_XX -cubin -I gpucnn/kernels``), with every template
  instantiation the launchers use (the name expressions of gpucnn/ops/cuda/loader.py,
  referenced from a test-only wrapper that includes the .cu file), warnings as errors.
  These fail, not skip, when nvcc is on PATH; they skip only without nvcc.
- The demangled kernel symbols in those cubins equal loader.SIGNATURES, the table from
  which the launchers convert every scalar to its exact C type.
- Where CuPy and its NVRTC are installed (a GPU is not needed), each file also compiles
  the way cupy.RawModule compiles it at run time: same source text, same options, same
  name expressions, whose lowered names must demangle to the same signatures.
- The kernels include no system header (NVRTC has none), the constants shared between
  the .cuh files and the Python launchers agree, and gpucnn imports without CuPy.
"""
import ast
import concurrent.futures
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from gpucnn.ops.cuda import loader

pytestmark = pytest.mark.kernels

ROOT = pathlib.Path(__file__).resolve().parents[2]
KERNELS = pathlib.Path(loader.KERNELS_DIR)
CU_FILES = sorted(p.name for p in KERNELS.glob("*.cu"))
ARCHS = ["80", "90"]
NVCC = shutil.which("nvcc")
CXXFILT = shutil.which("c++filt")

_C_TYPES = {"float": {"const T*": "float const*", "T*": "float*", "T": "float"},
            "double": {"const T*": "double const*", "T*": "double*", "T": "double"}}
_C_TYPES_COMMON = {"const int*": "int const*", "int*": "int*", "int": "int", "long long": "long long",
                   "const unsigned char*": "unsigned char const*", "unsigned char*": "unsigned char*",
                   "const long long*": "long long const*", "long long*": "long long*", "double*": "double*",
                   "const double*": "double const*",
                   "double": "double"}
# (the index type "I" is replaced by 'int' or 'long long' first: loader.resolved_signature)


def expected_demangled(file):
    """{'im2col<float, int>': 'void im2col<float, int>(float const*, float*, int, ...)', ...} from
    loader.SIGNATURES: every float type, and both index types for the kernels templated on one."""
    out = {}
    for name in loader.SIGNATURES[file]:
        indices = loader.INDEX_TYPES if loader.has_index_type(file, name) else (None,)
        for ctype in ("float", "double"):
            for index in indices:
                signature = loader.resolved_signature(file, name, index)
                params = ", ".join(_C_TYPES[ctype].get(t) or _C_TYPES_COMMON[t] for t in signature)
                template = ctype if index is None else f"{ctype}, {index}"
                out[f"{name}<{template}>"] = f"void {name}<{template}>({params})"
    return out


def test_name_expressions_cover_the_table_once():
    """Every float type x (index type) instantiation, each once; split by module without overlap."""
    for file in loader.SIGNATURES:
        everything = loader.name_expressions(file)
        assert sorted(everything) == sorted(expected_demangled(file)) and len(set(everything)) == len(everything)
        for ctype in ("float", "double"):
            parts = [loader.name_expressions(file, ctype, index) for index in loader.INDEX_TYPES]
            assert sorted(parts[0] + parts[1]) == sorted(e for e in everything if f"<{ctype}" in e)
            assert all(", long long>" in e for e in parts[1])
    assert loader.name_expressions("conv.cu", "float", "int") == [
        "im2col<float, int>", "col2im<float, int>", "conv_direct<float, int>", "transpose01<float, int>",
        "row_sum<float>"]


def demangle(names):
    result = subprocess.run([CXXFILT], input="\n".join(names) + "\n", capture_output=True, text=True,
                            check=True)
    return result.stdout.splitlines()


def test_every_kernel_file_is_known_to_the_loader():
    assert CU_FILES, "no .cu file found in gpucnn/kernels"
    assert set(CU_FILES) == set(loader.SIGNATURES), "loader.SIGNATURES must list every kernel file"


def _wrapper_source(file):
    refs = ",\n    ".join(f"(const void*)&{expr}" for expr in loader.name_expressions(file))
    return (f'// test-only: instantiate every kernel the launchers use\n#include "{file}"\n'
            f"const void* gpucnn_instantiated_kernels[] = {{\n    {refs}\n}};\n")


@pytest.fixture(scope="module")
def cubins(tmp_path_factory):
    """{(file, arch): (returncode, log, cubin bytes)} for every kernel file and arch, built in parallel."""
    if NVCC is None:
        pytest.skip("nvcc is not on PATH")
    work = tmp_path_factory.mktemp("cubins")

    def build(file, arch):
        wrapper = work / f"instantiate_{pathlib.Path(file).stem}_{arch}.cu"
        wrapper.write_text(_wrapper_source(file))
        out = work / f"{pathlib.Path(file).stem}.sm_{arch}.cubin"
        cmd = [NVCC, "-std=c++17", f"-arch=sm_{arch}", "-cubin", "-Werror", "all-warnings", "-Xptxas", "-v",
               "-I", str(KERNELS), str(wrapper), "-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        data = out.read_bytes() if result.returncode == 0 and out.exists() else b""
        return (file, arch), (result.returncode, " ".join(cmd) + "\n" + result.stdout + result.stderr, data)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(build, file, arch) for file in CU_FILES for arch in ARCHS]
        return dict(f.result() for f in futures)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", CU_FILES)
def test_nvcc_compiles(cubins, file, arch):
    returncode, log, data = cubins[(file, arch)]
    assert returncode == 0, f"nvcc failed for {file} sm_{arch}:\n{log}"
    assert data, f"nvcc wrote no cubin for {file} sm_{arch}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", CU_FILES)
def test_no_kernel_spills_registers_or_outgrows_static_shared_memory(cubins, file, arch):
    """ptxas's report (-v) for every instantiation: no spill to local memory (a silent slowdown on the GPU),
    and static shared memory within the 48 KiB a block gets without opting in."""
    returncode, log, _ = cubins[(file, arch)]
    assert returncode == 0, log
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert spills, f"no ptxas resource report for {file} sm_{arch}:\n{log}"
    assert all(stores == "0" and loads == "0" for stores, loads in spills), log
    assert max(int(n) for n in re.findall(r"(\d+) bytes smem", log) or [0]) <= 48 * 1024, log


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", CU_FILES)
def test_cubin_kernel_signatures_match_loader(cubins, file, arch):
    if CXXFILT is None:
        pytest.skip("c++filt is not on PATH")
    returncode, log, data = cubins[(file, arch)]
    assert returncode == 0, log
    mangled = sorted({m.decode() for m in re.findall(rb"_Z[0-9A-Za-z_]+", data)})
    kernels = {d for d in demangle(mangled) if d.startswith("void ") and "gpucnn::" not in d}
    assert kernels == set(expected_demangled(file).values())


def _cupy_nvrtc():
    """CuPy's NVRTC program class, or a skip when CuPy or its NVRTC library is missing."""
    try:
        from cupy.cuda import compiler
        compiler._get_nvrtc_version()
        return compiler
    except Exception as exc:  # ImportError, missing libnvrtc, changed CuPy internals
        pytest.skip(f"CuPy with a loadable NVRTC is needed: {exc}")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", CU_FILES)
def test_nvrtc_compiles_like_cupy_rawmodule(file, arch):
    compiler = _cupy_nvrtc()
    expressions = loader.name_expressions(file)
    # What cupy.RawModule adds to our options (CuPy 13/14: -arch, default device space, -ftz).
    # CuPy asks NVRTC for a cubin (-arch=sm_XX); PTX (-arch=compute_XX) runs the same front
    # end and name lowering in a third of the time, and the nvcc tests above cover ptxas.
    options = loader.compile_options() + (f"-arch=compute_{arch}", "--device-as-default-execution-space",
                                          "-ftz=true")
    program = compiler._NVRTCProgram(loader.kernel_source(file), file, name_expressions=expressions,
                                     method="ptx")
    try:
        binary, lowered = program.compile(options)
    except compiler.CompileException as exc:
        pytest.fail(f"NVRTC failed for {file} sm_{arch}:\n{exc}")
    assert binary
    assert set(lowered) == set(expressions)
    if CXXFILT is not None:
        names = list(lowered)
        assert dict(zip(names, demangle([lowered[n] for n in names]))) == expected_demangled(file)


def test_kernels_include_no_system_headers():
    for path in sorted(KERNELS.glob("*.cu*")):
        text = path.read_text()
        assert not re.search(r"^\s*#\s*include\s*<", text, flags=re.M), \
            f"{path.name} includes a system header"
        for header in re.findall(r'^\s*#\s*include\s*"([^"]+)"', text, flags=re.M):
            assert (KERNELS / header).is_file(), \
                f"{path.name} includes {header}, which is not in gpucnn/kernels"


def _defines(path):
    found = re.findall(r"^#define (GPUCNN_\w+) (\d+)\b", path.read_text(), flags=re.M)
    return {name: int(value) for name, value in found}


def _module_constants(path):
    """Integer constants assigned at the top level of a Python file (read without importing it)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                names = [t.id for t in getattr(target, "elts", [target]) if isinstance(t, ast.Name)]
                try:
                    values = ast.literal_eval(node.value)
                except ValueError:
                    continue
                values = values if isinstance(values, tuple) else (values,)
                out.update({n: v for n, v in zip(names, values) if isinstance(v, int)})
    return out


def _launcher_tiles():
    """gemm_plan.GEMM_TILES (the launchers' table), read from the source."""
    tree = ast.parse((ROOT / "gpucnn" / "ops" / "cuda" / "gemm_plan.py").read_text())
    return next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "GEMM_TILES" for t in node.targets))


def test_constants_shared_with_python_agree():
    common = _defines(KERNELS / "common.cuh")
    assert common["GPUCNN_BLOCK"] == loader.BLOCK
    body = _defines(KERNELS / "update_body.cuh")
    launcher = _module_constants(ROOT / "gpucnn" / "ops" / "cuda" / "update.py")
    for name in ("SGD_WEIGHT_DECAY", "SGD_MOMENTUM", "SGD_NESTEROV", "SGD_FIRST_STEP",
                 "ADAM_NO_DECAY", "ADAM_L2", "ADAM_DECOUPLED"):
        assert body["GPUCNN_" + name] == launcher[name], name
    fused = _defines(KERNELS / "fused_common.cuh")
    fused_launcher = _module_constants(ROOT / "gpucnn" / "ops" / "cuda" / "fused.py")
    fused_launcher.update(_module_constants(ROOT / "gpucnn" / "ops" / "cuda" / "gemm_plan.py"))
    for name in ("GEMM_TK", "FUSED_BIAS", "FUSED_RELU", "FUSED_MASK"):
        assert fused["GPUCNN_" + name] == fused_launcher[name.replace("FUSED_", "")], name
    store_run = re.search(r"kStoreRun = (\d+);", (KERNELS / "fused_conv_body.cuh").read_text())
    assert int(store_run.group(1)) == fused_launcher["POOL_RUN"], "ConvForwardPool::kStoreRun"
    pool_twin = _module_constants(ROOT / "gpucnn" / "compile" / "cuda_graph" / "reference.py")
    assert _defines(KERNELS / "fused_pool_body.cuh")["GPUCNN_POOL_NO_GRAD"] == pool_twin["POOL_NO_GRAD"] == 255
    table = re.findall(r"X\((\d+), (\d+), (\d+), (\d+), (\d+), (\d+)\)", (KERNELS / "fused_common.cuh").read_text())
    assert [tuple(int(v) for v in row[1:]) for row in table] == list(_launcher_tiles()), "GEMM_TILE_TABLE"
    assert [int(row[0]) for row in table] == list(range(len(table))) == list(range(fused["GPUCNN_GEMM_TILE_COUNT"]))
    hyper = _defines(KERNELS / "multi_update_body.cuh")
    twin = _module_constants(ROOT / "gpucnn" / "ops" / "multi_update.py")
    for name in ("HYPER_LR", "HYPER_STEP", "HYPER_STEP_SIZE", "HYPER_BIAS2_SQRT", "HYPER_DECAY", "HYPER_FIRST",
                 "HYPER_SIZE"):
        assert hyper["GPUCNN_" + name] == twin[name], name
    assert _module_constants(ROOT / "gpucnn" / "ops" / "cuda" / "multi_update.py")["HYPER_SIZE"] == twin["HYPER_SIZE"]


def test_kernel_source_key_changes_with_headers(tmp_path, monkeypatch):
    """CuPy caches by source text: an edited header must change the text RawModule compiles."""
    for file in CU_FILES:
        shutil.copy(KERNELS / file, tmp_path / file)
    for header in KERNELS.glob("*.cuh"):
        shutil.copy(header, tmp_path / header.name)
    monkeypatch.setattr(loader, "KERNELS_DIR", str(tmp_path))
    before = loader.kernel_source("conv.cu")
    with open(tmp_path / "common.cuh", "a") as f:
        f.write("\n// edited\n")
    assert loader.kernel_source("conv.cu") != before


def test_gpucnn_imports_without_cupy():
    """With CuPy unimportable, gpucnn, its NumPy ops and gpucnn.ops.cuda(.loader) import and run."""
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import numpy, gpucnn, gpucnn.backend as b, gpucnn.ops.conv as c\n"
        "import gpucnn.ops.pool, gpucnn.ops.update\n"
        "import gpucnn.ops.cuda, gpucnn.ops.cuda.loader as L\n"
        "from gpucnn.ops.geometry import conv_window\n"
        "assert b.cupy_or_none() is None and not b.gpu_available()\n"
        "x, w = numpy.ones((1, 1, 4, 4)), numpy.ones((2, 1, 3, 3))\n"
        "y, _ = c.conv2d_forward(x, w, None, conv_window(3, 1, 1))\n"
        "assert y.shape == (1, 2, 4, 4) and L.name_expressions('conv.cu')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_launchers_run_on_the_device_of_their_first_argument():
    """``with x.device:`` around a launcher: CuPy allocates and launches on the current device."""
    events = []

    class Device:
        def __enter__(self):
            events.append("enter")

        def __exit__(self, *exc):
            events.append("exit")

    class Array:
        device = Device()

    @loader.on_device_of_first_argument
    def op(x, y, z=None):
        events.append(("run", y, z))
        return "result"

    assert op(Array(), 1, z=2) == "result"
    assert events == ["enter", ("run", 1, 2), "exit"]
    events.clear()
    assert op(object(), 3) == "result"  # not a device array: no context, the op itself decides
    assert events == [("run", 3, None)]
