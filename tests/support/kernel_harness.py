"""tests/kernels/harness.cu, built by nvcc and run on the CPU: our CUDA kernels' bodies, thread by thread.

The harness runs a kernel's __host__ __device__ body (gpucnn/kernels/*_body.cuh, the code the
GPU kernels call) over every index, with arguments given in the kernel's own parameter order,
arrays as raw binary files (no GPU needed; nvcc is: ``started_harness`` skips without it).

- ``Harness``: the built harness kept running in --serve mode; ``started_harness`` builds and starts it
  (the session fixture ``harness`` of tests/conftest.py);
- ``run_kernel``: one kernel run, non-const array arguments updated in place;
- ``FakeKernel``: stands in for a cupy.RawKernel, checks each launch (exact scalar types of the
  kernel's signature, C-contiguous pointer arguments, the launch shape) and runs it in the harness;
- ``numpy_cupy``: a minimal NumPy stand-in for CuPy under which the real launchers run;
- ``launchers_over_numpy``: the fixtures' setting for that: CuPy faked, every launch run by the harness and
  recorded.
"""
import contextlib
import importlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import types

import numpy
import pytest

from gpucnn.ops.cuda import loader as real_loader

KERNEL_TESTS = pathlib.Path(__file__).resolve().parent.parent / "kernels"  # harness.cu and its headers
NVCC = shutil.which("nvcc")


class Harness:
    """The built harness, kept running in --serve mode: one kernel run per line, no process start each."""

    def __init__(self, exe, workdir):
        self.exe = exe
        self.workdir = workdir  # where run_kernel puts the argument files
        self.process = None

    def _server(self):
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([self.exe, "--serve"], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self.process

    def run(self, argv):
        assert not any("\t" in a or "\n" in a for a in argv)
        server = self._server()
        server.stdin.write("\t".join(argv) + "\n")
        server.stdin.flush()
        answer = server.stdout.readline()
        if answer != "ok\n":
            server.wait()
            error = server.stderr.read()
            self.process = None
            raise AssertionError(f"harness {' '.join(argv)} failed: {error}")

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()
            for stream in (self.process.stdout, self.process.stderr):
                stream.close()


@contextlib.contextmanager
def started_harness(directory):
    """harness.cu built by nvcc into ``directory`` and started (the session fixture ``harness`` in
    tests/conftest.py: built once per run); skips where nvcc is missing."""
    if NVCC is None:
        pytest.skip("nvcc is not on PATH")
    out = pathlib.Path(directory) / "harness"
    cmd = [NVCC, "-std=c++17", "-O1", "-I", real_loader.KERNELS_DIR, str(KERNEL_TESTS / "harness.cu"), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, \
        f"building the harness failed:\n{' '.join(cmd)}\n{result.stdout}{result.stderr}"
    # Arrays travel through files: put them in memory (/dev/shm) where there is one, since
    # rewriting small files on a disk file system costs milliseconds each.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="gpucnn-harness-", dir=shm) as exchange:
        runner = Harness(str(out), exchange)
        try:
            yield runner
        finally:
            runner.close()


def run_kernel(harness, file, name, dtype, args, index=None):
    """Run kernel ``name`` of ``file`` in the harness; non-const array arguments are updated in place.

    ``index`` ('int' or 'long long') is the index type of a kernel templated on one; the harness runs
    the body instantiated for it, as the GPU runs the launched instantiation.
    """
    workdir = harness.workdir
    signature = real_loader.resolved_signature(file, name, index)
    assert len(args) == len(signature), f"{name}: {len(args)} arguments for {len(signature)} parameters"
    types = "f32" if numpy.dtype(dtype) == numpy.float32 else "f64"
    if index is not None:
        types += {"int": "/i32", "long long": "/i64"}[index]
    argv = [name, types]
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
        elif ctype in ("T", "double"):
            argv.append(float(value).hex())
        else:
            argv.append(str(int(value)))
    harness.run(argv)
    for array, path in outputs:
        array[...] = numpy.fromfile(path, dtype=array.dtype).reshape(array.shape)


def _fake_empty(shape, dtype=numpy.float64):
    """Like cupy.empty, but filled with garbage that shows up if a kernel leaves an element unwritten."""
    a = numpy.empty(shape, dtype=dtype)
    a.fill(numpy.nan if a.dtype.kind == "f" else (-123456 if a.dtype.itemsize >= 4 else 0xAB))
    return a


def numpy_cupy():
    """A minimal stand-in ``cupy`` module over NumPy: enough for the launchers to import and run."""
    fake = types.ModuleType("cupy")
    fake.ndarray = numpy.ndarray
    fake.ascontiguousarray = numpy.ascontiguousarray
    fake.empty = _fake_empty
    fake.zeros = numpy.zeros
    fake.matmul = numpy.matmul
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0))
    return fake


@contextlib.contextmanager
def launchers_over_numpy(harness, monkeypatch):
    """Under it the CUDA launchers run over ``numpy_cupy``, each launch checked and run in the host harness
    (FakeKernel) and recorded; yields (loader, launches: [(file, kernel)]). Import the launcher modules inside."""
    from gpucnn import backend
    from support.emulated_cupy import cupy_replaced_by, record_launches

    backend.gpu_unavailable_reason()  # settle backend's CuPy probe before cupy is faked
    with cupy_replaced_by(numpy_cupy()):
        loader = importlib.import_module("gpucnn.ops.cuda.loader")
        launches = record_launches(loader, monkeypatch.setattr)
        monkeypatch.setattr(loader, "get_kernel", lambda file, expression: FakeKernel(loader, harness, file, expression))
        yield loader, launches


class FakeKernel:
    """Stands in for a cupy.RawKernel: checks the launch like the driver would not, then runs the harness."""

    def __init__(self, loader, harness, file, expression):
        self.loader, self.harness, self.file = loader, harness, file
        self.name, arguments = expression[:-1].split("<")
        ctype, _, index = (part.strip() for part in arguments.partition(","))
        self.index = index or None
        self.dtype = {"float": numpy.float32, "double": numpy.float64}[ctype]

    def __call__(self, grid, block, args, shared_mem=0):
        assert block == (self.loader.BLOCK,), block
        assert isinstance(grid, tuple) and all(isinstance(g, int) and g >= 1 for g in grid), grid
        assert grid[0] <= 2 ** 31 - 1 and (len(grid) == 1 or self.name == "row_sum"), grid
        assert shared_mem == 0
        signature = self.loader.resolved_signature(self.file, self.name, self.index)
        assert len(args) == len(signature)
        exact = {"int": numpy.int32, "long long": numpy.int64, "T": self.dtype, "double": numpy.float64}
        for position, (ctype, value) in enumerate(zip(signature, args)):
            if ctype.endswith("*"):
                want = self.loader.POINTER_DTYPES.get(ctype.rstrip("*").replace("const ", "").strip(), self.dtype)
                assert isinstance(value, numpy.ndarray) and value.flags.c_contiguous, (self.name, position)
                assert value.dtype == want, (self.name, position, value.dtype)
            else:
                assert type(value) is exact[ctype], (self.name, position, ctype, type(value))
        if self.name in ("softmax_xent", "softmax_xent_soft", "step_scalars"):  # one block: the harness replays its phases
            assert grid == (1,), grid
        if self.name == "row_sum":  # grid (rows, chunks); the harness replays exactly that grid
            length, chunk = int(args[3]), int(args[4])
            assert grid == (int(args[2]), max(1, -(-length // chunk))) and grid[1] <= 65535, grid
        if self.index == "int":  # 32-bit indices only where the launcher checked that they fit
            sizes = [a.size for a in args if isinstance(a, numpy.ndarray)] + [int(args[-1])]
            assert max(sizes) <= self.loader.INT32_INDEX_LIMIT, (self.name, sizes)
        run_kernel(self.harness, self.file, self.name, self.dtype, args, self.index)
