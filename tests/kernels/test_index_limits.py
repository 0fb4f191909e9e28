"""The 32-bit index limits of the kernels agree between CUDA and Python, and the fused kernels' grid-stride
loop (GPUCNN_GRID_STRIDE_LOOP32, gpucnn/kernels/fused_common.cuh) is safe up to the largest count the fused
launchers admit.

- fused_common.cuh's GPUCNN_INT32_INDEX_MAX (2^31 - 1) is the count check_int32 (the fused launchers,
  gpucnn/compile/cuda_graph/launch.py) admits, and loader.INT32_INDEX_LIMIT, the limit of the eager kernels'
  unguarded 32-bit loop, is that minus the largest grid the launchers make (MAX_BLOCKS * BLOCK threads).
- The loop's index sequence, run on the host by a small C++ program that includes the real header and plays
  gridDim/blockDim/blockIdx/threadIdx: for every sampled thread of the largest grid, at counts up to
  GPUCNN_INT32_INDEX_MAX, it visits start, start + stride, ... < total, each in [0, total), without wrapping
  (built with -fsanitize=undefined where the compiler has it: no signed overflow); for small launches every
  index exactly once over all threads. The same program with the old loop (`idx += gridDim.x * blockDim.x`,
  built with -fwrapv, as the GPU's integer adds wrap) goes wrong above loader.INT32_INDEX_LIMIT + 1 at the
  largest grid: the check would have caught it.
"""
import pathlib
import re
import shutil
import subprocess

import pytest

from gpucnn.compile.cuda_graph import launch
from gpucnn.ops.cuda import loader

pytestmark = pytest.mark.kernels

KERNELS = pathlib.Path(loader.KERNELS_DIR)
CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _header_limit():
    found = re.search(r"^#define GPUCNN_INT32_INDEX_MAX (\d+)\b", (KERNELS / "fused_common.cuh").read_text(), re.M)
    assert found, "fused_common.cuh defines GPUCNN_INT32_INDEX_MAX"
    return int(found.group(1))


def test_the_32_bit_limits_agree_between_cuda_and_python():
    limit = _header_limit()
    assert limit == 2 ** 31 - 1
    launch.check_int32("test", x=limit)  # the fused launchers admit exactly the header's limit ...
    with pytest.raises(ValueError, match="32-bit indices"):
        launch.check_int32("test", x=limit + 1)
    # ... the eager kernels' unguarded loop keeps a grid's room below it, and the largest grid is within the
    # fused loop's premise (fewer than 2^31 threads)
    assert loader.INT32_INDEX_LIMIT == limit - loader.MAX_BLOCKS * loader.BLOCK
    assert loader.grid_for(limit) * loader.BLOCK == loader.MAX_BLOCKS * loader.BLOCK < 2 ** 31
    assert loader.index_type(loader.INT32_INDEX_LIMIT) == "int"
    assert loader.index_type(loader.INT32_INDEX_LIMIT + 1) == "long long"


_PROGRAM = r"""
// Plays the CUDA built-ins on the host and runs GPUCNN_GRID_STRIDE_LOOP32 of fused_common.cuh for sampled
// threads (argv: total grid block all). Exit 0 and "ok ..." when every sequence is right, 1 and "FAIL ..." not.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#define __host__
#define __device__
#define __global__
#define __shared__ static
struct GpucnnTestDim { unsigned x, y, z; };
static GpucnnTestDim threadIdx, blockIdx, blockDim, gridDim;
static inline void __syncthreads() {}
#include "fused_common.cuh"
#ifdef GPUCNN_TEST_OLD_LOOP  // the loop before issue 16
#undef GPUCNN_GRID_STRIDE_LOOP32
#define GPUCNN_GRID_STRIDE_LOOP32(idx, total) \
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < (total); idx += gridDim.x * blockDim.x)
#endif

static long long visits = 0;

// The sequence of global thread t: start, start + stride, ... while < total (the loop's contract).
static bool check_thread(long long t, int total, std::vector<unsigned char>* seen) {
    blockIdx.x = (unsigned)(t / blockDim.x);
    threadIdx.x = (unsigned)(t % blockDim.x);
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long expected = t < total ? (total - 1 - t) / stride + 1 : 0;
    long long k = 0;
    GPUCNN_GRID_STRIDE_LOOP32(idx, total) {
        const long long want = t + k * stride;
        if (k >= expected || (long long)idx != want || idx < 0 || idx >= total) {
            std::printf("FAIL thread %lld visit %lld: idx %d, expected %lld (of %lld visits) in [0, %d)\n",
                        t, k, idx, want, expected, total);
            return false;
        }
        if (seen != nullptr) {
            if ((*seen)[idx]) { std::printf("FAIL index %d visited twice\n", idx); return false; }
            (*seen)[idx] = 1;
        }
        ++k;
        ++visits;
    }
    if (k != expected) {
        std::printf("FAIL thread %lld: %lld visits, expected %lld\n", t, k, expected);
        return false;
    }
    return true;
}

int main(int argc, char** argv) {
    if (argc != 5) return 2;
    const int total = std::atoi(argv[1]);
    gridDim.x = (unsigned)std::atoll(argv[2]);
    blockDim.x = (unsigned)std::atoll(argv[3]);
    const bool all = std::atoi(argv[4]) != 0;
    const long long threads = (long long)gridDim.x * blockDim.x;
    long long checked = 0;
    if (all) {  // every thread; every index of [0, total) exactly once
        std::vector<unsigned char> seen(total > 0 ? total : 1, 0);
        for (long long t = 0; t < threads; ++t, ++checked)
            if (!check_thread(t, total, &seen)) return 1;
        for (int i = 0; i < total; ++i)
            if (!seen[i]) { std::printf("FAIL index %d never visited\n", i); return 1; }
    } else {  // the first and last threads, and those whose sequences end at the last indices
        std::vector<long long> sample;
        for (long long t = 0; t < 256 && t < threads; ++t) sample.push_back(t);
        for (long long t = threads - 256; t < threads; ++t) if (t >= 0) sample.push_back(t);
        const long long last = total > 0 ? (total - 1) % threads : 0;
        for (long long d = -256; d <= 256; ++d) {
            const long long t = last + d;
            if (t >= 0 && t < threads) sample.push_back(t);
        }
        for (long long t : sample) {
            ++checked;
            if (!check_thread(t, total, nullptr)) return 1;
        }
    }
    std::printf("ok %lld threads, %lld visits\n", checked, visits);
    return 0;
}
"""


def _build(tmp_path, name, flags):
    source = tmp_path / "grid_stride_loop32.cpp"
    source.write_text(_PROGRAM)
    binary = tmp_path / name
    base = [CXX, "-std=c++17", "-O2", "-Wall", "-Werror", "-I", str(KERNELS), str(source), "-o", str(binary)]
    done = subprocess.run(base + flags, capture_output=True, text=True)
    if done.returncode != 0 and "-fsanitize=undefined" in flags:  # a compiler without UBSan's runtime
        done = subprocess.run(base + [f for f in flags if "sanitize" not in f], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return binary


def _run(binary, total, grid, block, all_threads=False):
    done = subprocess.run([str(binary), str(total), str(grid), str(block), str(int(all_threads))],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def loops(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler (g++, c++ or clang++) on PATH")
    tmp_path = tmp_path_factory.mktemp("grid_stride_loop32")
    return {"new": _build(tmp_path, "new", ["-fsanitize=undefined", "-fno-sanitize-recover=all"]),
            "old": _build(tmp_path, "old", ["-DGPUCNN_TEST_OLD_LOOP", "-fwrapv"])}


LARGEST_GRID = (loader.MAX_BLOCKS, loader.BLOCK)


@pytest.mark.parametrize("total", [0, 1, loader.INT32_INDEX_LIMIT, loader.INT32_INDEX_LIMIT + 1, 2 ** 31 - 2,
                                   _header_limit()])
def test_the_loop_visits_each_index_in_range_up_to_the_limit(loops, total):
    code, out = _run(loops["new"], total, *LARGEST_GRID)
    assert code == 0 and out.startswith("ok"), out
    code, out = _run(loops["new"], total, loader.grid_for(total), loader.BLOCK)  # the grid the launchers make
    assert code == 0 and out.startswith("ok"), out


@pytest.mark.parametrize("total,grid,block", [(1000, 2, 256), (1000, 1, 256), (512, 2, 256), (513, 2, 256),
                                              (100, 4, 256), (0, 3, 256), (77777, 5, 32)])
def test_every_index_exactly_once_in_small_launches(loops, total, grid, block):
    code, out = _run(loops["new"], total, grid, block, all_threads=True)
    assert code == 0 and out.startswith("ok"), out


def test_the_old_loop_wraps_above_the_eager_limit(loops):
    """What the checks above catch: at the largest grid the unguarded step wraps (to a negative index) once
    the last index plus the stride passes INT_MAX, i.e. for counts above INT32_INDEX_LIMIT + 1 (the eager
    limit keeps total + stride <= INT_MAX, one element to spare), up to the fused launchers' 2^31 - 1."""
    for total in (loader.INT32_INDEX_LIMIT, loader.INT32_INDEX_LIMIT + 1):
        code, out = _run(loops["old"], total, *LARGEST_GRID)
        assert code == 0, (total, out)
    for total in (loader.INT32_INDEX_LIMIT + 2, _header_limit()):
        code, out = _run(loops["old"], total, *LARGEST_GRID)
        assert code == 1 and "FAIL" in out and "idx -" in out, (total, out)
