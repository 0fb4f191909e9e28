"""loader.launch's plans (gpucnn/ops/cuda/launch_plan.py): made once per (kernel, float type, index type) and
reused, with every check of every launch kept (argument count, pointer element type and contiguity, integer
ranges, exact scalar types) and the same packed values as converting each argument afresh."""
import numpy
import pytest

from gpucnn.ops.cuda import loader
from gpucnn.ops.cuda.launch_plan import MEMO_LIMIT, LaunchPlan


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, grid, block, args):
        self.calls.append((grid, block, args))


@pytest.fixture
def kernel(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(loader, "get_kernel", lambda file, expression: recorder)
    loader.clear_launch_plans()
    yield recorder
    loader.clear_launch_plans()


def _row_sum_args(dtype=numpy.float32, rows=3, length=5):
    return (numpy.zeros((rows, length), dtype), numpy.zeros(rows, dtype), rows, length, 4096)


def test_a_launch_is_planned_once_and_reused(kernel):
    loader.launch("conv.cu", "row_sum", numpy.float32, _row_sum_args(), grid=(3, 1))
    plan = loader.launch_plan("conv.cu", "row_sum", numpy.float32)
    loader.launch("conv.cu", "row_sum", numpy.float32, _row_sum_args(rows=2), grid=[2, 1])
    assert loader.launch_plan("conv.cu", "row_sum", numpy.float32) is plan
    assert plan.expression == "row_sum<float>"
    assert [call[0] for call in kernel.calls] == [(3, 1), (2, 1)] and kernel.calls[0][1] == (loader.BLOCK,)
    assert loader.launch_plan("conv.cu", "row_sum", numpy.float64) is not plan  # one per float type


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_packed_arguments_have_the_exact_c_types_in_order(kernel, dtype):
    x, w = numpy.zeros(4, dtype), numpy.zeros(2, dtype)
    args = (x, w, x, x) + (0.5,) * 9 + (7, 4)  # adam_update: 4 pointers, 9 T scalars, int, long long
    for _ in range(2):  # the first launch converts, the second reuses the memo: the same values
        loader.launch("update.cu", "adam_update", dtype, args)
    for _, _, packed in kernel.calls:
        assert packed[:4] == (x, w, x, x)
        assert [type(v) for v in packed[4:]] == [numpy.dtype(dtype).type] * 9 + [numpy.int32, numpy.int64]
        assert packed[-2:] == (7, 4)
    assert kernel.calls[0][0] == (loader.grid_for(4),)  # the default grid: the count of work items, last


def test_the_index_type_picks_the_integer_width(kernel):
    x = numpy.zeros(8, numpy.float32)
    args = (x, x, 1, 1, 2, 2, 1, 1, 1, 1, 0, 0, 1, 1, 2, 2, 8)  # im2col: the count last, of the index type
    loader.launch("conv.cu", "im2col", numpy.float32, args, index="long long")
    assert type(kernel.calls[-1][2][-1]) is numpy.int64 and type(kernel.calls[-1][2][-2]) is numpy.int32
    assert loader.launch_plan("conv.cu", "im2col", numpy.float32, "long long").expression == \
        "im2col<float, long long>"
    with pytest.raises(ValueError, match="index type None given"):
        loader.launch("conv.cu", "im2col", numpy.float32, args)
    with pytest.raises(ValueError, match="index type 'int' given, none expected"):
        loader.launch("conv.cu", "row_sum", numpy.float32, _row_sum_args(), index="int")


def test_every_check_runs_on_every_launch(kernel):
    loader.launch("conv.cu", "row_sum", numpy.float32, _row_sum_args())  # planned and memoised
    good = _row_sum_args()
    with pytest.raises(TypeError, match="takes 5 arguments, got 4"):
        loader.launch("conv.cu", "row_sum", numpy.float32, good[:4])
    with pytest.raises(TypeError, match=r"argument 1 \(T\*\) needs a C-contiguous float32 array, got ndarray float64"):
        loader.launch("conv.cu", "row_sum", numpy.float32, (good[0], numpy.zeros(3)) + good[2:])
    with pytest.raises(TypeError, match=r"argument 0 \(const T\*\) needs a C-contiguous"):
        loader.launch("conv.cu", "row_sum", numpy.float32, (numpy.zeros((5, 3), numpy.float32).T,) + good[1:])
    with pytest.raises(TypeError, match="got list None"):
        loader.launch("conv.cu", "row_sum", numpy.float32, ([0.0],) + good[1:])
    with pytest.raises(ValueError, match=r"argument 2 \(int\) = 2147483648 does not fit the C type"):
        loader.launch("conv.cu", "row_sum", numpy.float32, good[:2] + (2 ** 31,) + good[3:])
    with pytest.raises(ValueError, match=r"argument 4 \(long long\) = 1.5 does not fit"):
        loader.launch("conv.cu", "row_sum", numpy.float32, good[:4] + (1.5,))
    with pytest.raises(TypeError, match="float type must be float32 or float64, got int32"):
        loader.launch("conv.cu", "row_sum", numpy.int32, good)
    assert len(kernel.calls) == 1  # nothing launched by a bad call


def test_pack_args_is_the_plans_packing():
    signature = loader.resolved_signature("conv.cu", "transpose01", "int")
    x = numpy.zeros(6, numpy.float64)
    packed = loader.pack_args(signature, numpy.float64, (x, x, x, 2, 3, 1, 0, 6))
    assert [type(v) for v in packed[3:]] == [numpy.int32] * 5
    with pytest.raises(TypeError, match="needs a C-contiguous float64 array"):
        loader.pack_args(signature, numpy.float64, (x.astype(numpy.float32), x, x, 2, 3, 1, 0, 6))


def test_the_memo_starts_over_past_its_limit():
    plan = LaunchPlan(("const T*", "int"), numpy.dtype(numpy.float32), loader.POINTER_DTYPES, "k<float>",
                      loader.grid_for)
    x = numpy.zeros(1, numpy.float32)
    for count in range(MEMO_LIMIT + 3):
        packed, grid = plan.pack((x, count))
        assert packed[1] == count and grid == (loader.grid_for(count),)
