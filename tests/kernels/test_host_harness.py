"""The kernels' index arithmetic, run on the CPU, equals the NumPy ops; so do the launchers.

tests/kernels/harness.cu is built once per session by nvcc (host code: no GPU needed).
It runs a kernel's __host__ __device__ body (gpucnn/kernels/*_body.cuh, the code the
GPU kernels call) over every index, with arguments given in the kernel's own parameter
order, arrays as raw binary files.

Two layers of tests:
- kernel bodies against gpucnn.ops.conv's im2col / col2im / forward / bias sum;
- the launchers themselves (gpucnn/ops/cuda/{conv,pool,update}.py and loader.py) imported
  over a NumPy stand-in for CuPy, where every kernel launch goes through the harness.
  They run the very checks of tests/ops/test_cuda_parity.py (NumPy parity forward and
  backward, non-contiguous views, inputs left unmodified, repeatable backward, errors
  before launch), and each launch is checked for the exact scalar types of the kernel's
  signature, C-contiguous pointer arguments and the launch shape.

Skipped only where nvcc is not on PATH.
"""
import importlib
import importlib.util
import pathlib
import shutil
import subprocess
import sys
import types

import numpy
import pytest

from gpucnn import backend
from gpucnn.ops import conv as np_conv
from gpucnn.ops.cuda import loader as real_loader

pytestmark = pytest.mark.kernels

HERE = pathlib.Path(__file__).resolve().parent
NVCC = shutil.which("nvcc")


def _load_parity():
    """tests/ops/test_cuda_parity.py as a plain module (its checks are reused here)."""
    path = HERE.parent / "ops" / "test_cuda_parity.py"
    spec = importlib.util.spec_from_file_location("gpucnn_tests_cuda_parity_checks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


parity = _load_parity()


@pytest.fixture(scope="session")
def harness(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc is not on PATH")
    out = tmp_path_factory.mktemp("harness") / "harness"
    cmd = [NVCC, "-std=c++17", "-O1", "-I", real_loader.KERNELS_DIR, str(HERE / "harness.cu"), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"building the harness failed:\n{' '.join(cmd)}\n{result.stdout}{result.stderr}"
    return str(out)


def run_kernel(exe, workdir, file, name, dtype, args):
    """Run kernel ``name`` of ``file`` in the harness; non-const array arguments are updated in place."""
    signature = real_loader.SIGNATURES[file][name]
    assert len(args) == len(signature), f"{name}: {len(args)} arguments for {len(signature)} parameters"
    argv = [exe, name, "f32" if numpy.dtype(dtype) == numpy.float32 else "f64"]
    paths, outputs = {}, []
    for ctype, value in zip(signature, args):
        if ctype.endswith("*"):
            assert isinstance(value, numpy.ndarray) and value.flags.c_contiguous
            if id(value) not in paths:
                paths[id(value)] = pathlib.Path(workdir) / f"arg{len(paths)}.bin"
                value.tofile(paths[id(value)])
            argv.append(str(paths[id(value)]))
            if not ctype.startswith("const"):
                outputs.append((value, paths[id(value)]))
        elif ctype == "T":
            argv.append(float(value).hex())
        else:
            argv.append(str(int(value)))
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, f"harness {' '.join(argv[1:])} failed: {result.stderr}"
    for array, path in outputs:
        array[...] = numpy.fromfile(path, dtype=array.dtype).reshape(array.shape)


def test_block_size_is_shared(harness):
    out = subprocess.run([harness, "--block"], capture_output=True, text=True, check=True).stdout
    assert int(out) == real_loader.BLOCK


# ----------------------------------------------------------------------------- kernel bodies

CONV_CASES = parity.CONV_CASES
DTYPES = parity.DTYPES


def _geometry(case):
    _, n, c, h, w, o, window, _ = case
    oh, ow = window.output_size(h, w)
    return n, c, h, w, o, window, oh, ow


def _window_args(window, oh, ow):
    return (window.kh, window.kw, window.sy, window.sx, window.pt, window.pl, oh, ow)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=parity._ids(CONV_CASES))
def test_conv_bodies_match_numpy(harness, tmp_path, case, dtype):
    """im2col (exact), col2im gather, direct convolution, transpose01 and bias_grad against NumPy."""
    n, c, h, w, o, window, oh, ow = _geometry(case)
    rng = numpy.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c, window.kh, window.kw)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    k, p = c * window.kh * window.kw, oh * ow
    geometry = _window_args(window, oh, ow)

    cols = numpy.full((k, n * p), numpy.nan, dtype=dtype)
    run_kernel(harness, tmp_path, "conv.cu", "im2col", dtype, (x, cols, n, c, h, w) + geometry + (cols.size,))
    # gpucnn.ops.conv.im2col orders rows (c, i, j) and columns (n, oy, ox), as ours.
    numpy.testing.assert_array_equal(cols, np_conv.im2col(x, window, oh, ow))

    grad_cols = rng.standard_normal((k, n * p)).astype(dtype)
    grad_x = numpy.full((n, c, h, w), numpy.nan, dtype=dtype)
    run_kernel(harness, tmp_path, "conv.cu", "col2im", dtype, (grad_cols, grad_x, n, c, h, w) + geometry + (grad_x.size,))
    parity.assert_close(grad_x, np_conv.col2im(grad_cols, x.shape, window, oh, ow), dtype, "col2im")

    y_ref, _ = np_conv.conv2d_forward(x, weight, bias, window)
    for has_bias in (0, 1):
        y = numpy.full((n, o, oh, ow), numpy.nan, dtype=dtype)
        run_kernel(harness, tmp_path, "conv.cu", "conv_direct", dtype,
                   (x, weight, bias, y, n, c, h, w, o) + geometry + (has_bias, y.size))
        expected = y_ref if has_bias else y_ref - bias[:, None, None]
        parity.assert_close(y, expected, dtype, f"conv_direct has_bias={has_bias}")

    # forward of the GEMM path: W @ cols (NumPy standing in for cuBLAS), then transpose01 + bias
    y_mat = weight.reshape(o, k) @ cols
    y = numpy.full((n, o, oh, ow), numpy.nan, dtype=dtype)
    run_kernel(harness, tmp_path, "conv.cu", "transpose01", dtype, (y_mat, bias, y, o, n, p, 1, y.size))
    parity.assert_close(y, y_ref, dtype, "W @ cols + transpose01")

    grad_y = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    gy_mat = numpy.full((o, n * p), numpy.nan, dtype=dtype)
    run_kernel(harness, tmp_path, "conv.cu", "transpose01", dtype, (grad_y, grad_y, gy_mat, n, o, p, 0, gy_mat.size))
    numpy.testing.assert_array_equal(gy_mat, grad_y.transpose(1, 0, 2, 3).reshape(o, -1))
    grad_b = numpy.full(o, numpy.nan, dtype=dtype)
    run_kernel(harness, tmp_path, "conv.cu", "bias_grad", dtype, (gy_mat, grad_b, o, n * p))
    parity.assert_close(grad_b, grad_y.astype(numpy.float64).sum(axis=(0, 2, 3)).astype(dtype), dtype, "bias_grad")


@pytest.mark.parametrize("length", [0, 1, 255, 256, 257, 1000, 5000])
def test_bias_grad_block_reduction(harness, tmp_path, length):
    """Row sums for lengths around the block size (the tree of GPUCNN_BLOCK partial sums)."""
    rng = numpy.random.default_rng(length)
    gy = rng.standard_normal((3, length))
    out = numpy.full(3, numpy.nan)
    run_kernel(harness, tmp_path, "conv.cu", "bias_grad", numpy.float64, (gy, out, 3, length))
    parity.assert_close(out, gy.sum(axis=1), numpy.float64, "row sums")


def test_max_pool_rule_nan_ties_and_padding(harness, tmp_path):
    """PyTorch's rule: first maximum wins ties, a NaN wins (the last one), all -inf / padding keeps index 0."""
    from gpucnn.ops import pool as np_pool
    from gpucnn.ops.geometry import Window2D

    x = numpy.array([[[[1.0, 1.0, numpy.nan, 2.0],
                       [-numpy.inf, -numpy.inf, 5.0, numpy.nan]]]])
    window = Window2D(1, 2, 1, 1, 1, 0, 0, 0, "MaxPool2D")  # 1x2 windows, one row of padding on top
    y = numpy.zeros((1, 1, 3, 3))
    argmax = numpy.zeros((1, 1, 3, 3), dtype=numpy.int32)
    run_kernel(harness, tmp_path, "pool.cu", "max_pool_fwd", numpy.float64,
               (x, y, argmax, 2, 4) + _window_args(window, 3, 3) + (y.size,))
    nan, inf = numpy.nan, numpy.inf
    numpy.testing.assert_array_equal(y[0, 0], [[-inf, -inf, -inf], [1.0, nan, nan], [-inf, 5.0, nan]])
    numpy.testing.assert_array_equal(argmax[0, 0], [[0, 0, 0], [0, 1, 0], [0, 1, 1]])
    y_ref, (argmax_ref, _, _) = np_pool.max_pool2d_forward(x, window)
    numpy.testing.assert_array_equal(y, y_ref)
    defined = ~numpy.isnan(y_ref)  # NaN windows: PyTorch's argmax (the last NaN), see test_cuda_parity
    numpy.testing.assert_array_equal(argmax[defined], argmax_ref[defined])


# ----------------------------------------------------------------------------- launchers, emulated

def _fake_empty(shape, dtype=numpy.float64):
    """Like cupy.empty, but filled with garbage that shows up if a kernel leaves an element unwritten."""
    a = numpy.empty(shape, dtype=dtype)
    a.fill(numpy.nan if a.dtype.kind == "f" else -123456)
    return a


def _fake_cupy():
    fake = types.ModuleType("cupy")
    fake.ndarray = numpy.ndarray
    fake.ascontiguousarray = numpy.ascontiguousarray
    fake.empty = _fake_empty
    fake.zeros = numpy.zeros
    fake.matmul = numpy.matmul
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0))
    return fake


class FakeKernel:
    """Stands in for a cupy.RawKernel: checks the launch like the driver would not, then runs the harness."""

    def __init__(self, loader, exe, workdir, file, expression):
        self.loader, self.exe, self.workdir, self.file = loader, exe, workdir, file
        self.name, ctype = expression[:-1].split("<")
        self.dtype = {"float": numpy.float32, "double": numpy.float64}[ctype]

    def __call__(self, grid, block, args, shared_mem=0):
        assert block == (self.loader.BLOCK,), block
        assert isinstance(grid, tuple) and len(grid) == 1 and 1 <= grid[0] <= 2 ** 31 - 1, grid
        assert shared_mem == 0
        signature = self.loader.SIGNATURES[self.file][self.name]
        assert len(args) == len(signature)
        exact = {"int": numpy.int32, "long long": numpy.int64, "T": self.dtype}
        for position, (ctype, value) in enumerate(zip(signature, args)):
            if ctype.endswith("*"):
                want = numpy.int32 if "int" in ctype else self.dtype
                assert isinstance(value, numpy.ndarray) and value.flags.c_contiguous, (self.name, position)
                assert value.dtype == want, (self.name, position, value.dtype)
            else:
                assert type(value) is exact[ctype], (self.name, position, ctype, type(value))
        if self.name == "bias_grad":
            assert grid[0] == int(args[2]), "bias_grad needs one block per output channel"
        run_kernel(self.exe, self.workdir, self.file, self.name, self.dtype, args)


@pytest.fixture
def emulated(harness, tmp_path, monkeypatch):
    """``dev`` for the parity checks: the real launchers over a NumPy stand-in for CuPy."""
    backend.gpu_unavailable_reason()  # settle backend's CuPy probe before cupy is faked
    saved_modules = {name: mod for name, mod in sys.modules.items()
                     if name == "cupy" or name.startswith("gpucnn.ops.cuda")}
    import gpucnn.ops as ops_package
    had_attr, old_attr = hasattr(ops_package, "cuda"), getattr(ops_package, "cuda", None)
    for name in saved_modules:
        del sys.modules[name]
    sys.modules["cupy"] = _fake_cupy()
    try:
        loader = importlib.import_module("gpucnn.ops.cuda.loader")
        conv = importlib.import_module("gpucnn.ops.cuda.conv")
        pool = importlib.import_module("gpucnn.ops.cuda.pool")
        update = importlib.import_module("gpucnn.ops.cuda.update")
        launches = []
        real_launch = loader.launch

        def recording_launch(*args, **kwargs):
            launches.append(args[:2])
            return real_launch(*args, **kwargs)

        monkeypatch.setattr(loader, "launch", recording_launch)
        monkeypatch.setattr(loader, "get_kernel",
                            lambda file, expression: FakeKernel(loader, harness, tmp_path, file, expression))
        copy = lambda a: numpy.array(a, copy=True)  # noqa: E731
        yield types.SimpleNamespace(asarray=copy, asnumpy=copy, conv=conv, pool=pool, update=update, loader=loader,
                                    launches=launches)
    finally:
        for name in [n for n in sys.modules if n == "cupy" or n.startswith("gpucnn.ops.cuda")]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        if had_attr:
            ops_package.cuda = old_attr
        elif hasattr(ops_package, "cuda"):
            del ops_package.cuda


# Every case in both dtypes with contiguous inputs; every layout on a few cases.
def _layout_grid(cases, few):
    grid = [(case, "contiguous") for case in cases]
    grid += [(case, layout) for case in cases[:few] for layout in parity.LAYOUTS[1:]]
    return grid


CONV_GRID = _layout_grid(CONV_CASES, 4)
POOL_GRID = _layout_grid(parity.POOL_CASES, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,layout", CONV_GRID, ids=[f"{c[0]}-{lay}" for c, lay in CONV_GRID])
def test_emulated_conv_launcher(emulated, case, dtype, layout):
    parity.check_conv(emulated, case, dtype, layout)


def test_emulated_conv_uses_both_paths(emulated):
    """The direct kernel for small K, im2col + GEMM above DIRECT_MAX_K."""
    small = [case for case in CONV_CASES if case[2] * case[6].kh * case[6].kw <= emulated.conv.DIRECT_MAX_K]
    large = [case for case in CONV_CASES if case[2] * case[6].kh * case[6].kw > emulated.conv.DIRECT_MAX_K]
    assert small and large
    parity.check_conv(emulated, small[0], numpy.float64, "contiguous")
    assert ("conv.cu", "conv_direct") in emulated.launches
    emulated.launches.clear()
    parity.check_conv(emulated, large[0], numpy.float64, "contiguous")
    assert ("conv.cu", "conv_direct") not in emulated.launches
    assert ("conv.cu", "im2col") in emulated.launches


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,layout", POOL_GRID, ids=[f"{c[0]}-{lay}" for c, lay in POOL_GRID])
def test_emulated_pool_launchers(emulated, case, dtype, layout):
    parity.check_max_pool(emulated, case, dtype, layout)
    parity.check_max_pool(emulated, case, dtype, layout, special=True, seed=1)
    parity.check_avg_pool(emulated, case, dtype, layout)


@pytest.mark.parametrize("layout", parity.LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_update_launchers(emulated, dtype, layout):
    for case in parity.SGD_CASES:
        parity.check_sgd(emulated, case, dtype, layout)
    for case in parity.ADAM_CASES:
        parity.check_adam(emulated, case, dtype, layout)


def test_emulated_errors_raise_before_launch(emulated):
    parity.check_errors(emulated)


def test_emulated_launchers_leave_real_modules_alone(emulated):
    """The fixture's stand-in for CuPy stays inside it (checked again by the next test)."""
    assert sys.modules["cupy"].ndarray is numpy.ndarray


def test_fake_cupy_is_gone():
    cupy = sys.modules.get("cupy")
    assert cupy is None or cupy.ndarray is not numpy.ndarray
    assert backend.get_array_module(numpy.zeros(1)) is numpy
