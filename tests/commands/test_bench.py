"""gpucnn bench: like-for-like precision, no host read inside a timed step, compile timed apart."""
import pytest

from gpucnn import backend
from gpucnn.commands import bench


@pytest.mark.kernels
def test_a_timed_gpu_step_reads_nothing_back(gpu):
    step, forward, flops, (model, x) = bench.gpucnn_step("cuda:0", 8)
    step()  # the first step may allocate; none may read back
    before = gpu.syncs.count
    step()
    forward()
    assert gpu.syncs.since(0)[before:] == []
    assert flops > 0 and backend.device_of(x) == "cuda:0"


def test_no_compile_timing_on_the_cpu():
    assert bench.cold_compile_seconds("cpu") is None


def test_torch_runs_strict_fp32_unless_tf32_is_asked():
    torch = pytest.importorskip("torch")
    bench.torch_step("cpu", 4, tf32=False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    bench.torch_step("cpu", 4, tf32=True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    bench.torch_step("cpu", 4, tf32=False)


def test_the_table_names_the_precision(capsys, monkeypatch):
    monkeypatch.setenv("CUPY_TF32", "0")
    assert bench.main(["--device", "cpu", "--batch-sizes", "4", "--repeats", "1", "--warmup", "0", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "# precision: strict FP32 on both sides" in out and " fp32 " in out
    assert bench.main(["--device", "cpu", "--batch-sizes", "4", "--repeats", "1", "--warmup", "0", "--no-torch",
                       "--tf32"]) == 0
    out = capsys.readouterr().out
    assert "# precision: TF32 matrix products on both sides" in out and " tf32 " in out
    bench.main(["--device", "cpu", "--batch-sizes", "4", "--repeats", "1", "--warmup", "0", "--no-torch"])
