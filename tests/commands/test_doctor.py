"""gpucnn doctor in both outcomes: no GPU (the CI machine) and the emulated GPU (kernels in the host harness)."""
import pytest

from gpucnn import backend
from gpucnn.commands import doctor


def test_without_a_gpu_it_says_why_runs_the_cpu_checks_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(backend, "gpu_unavailable_reason", lambda: "no CUDA device here (test)")
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    assert doctor.main(["--seed", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("gpucnn", "Python", "NumPy", "CuPy", "NVIDIA driver"):
        assert f"  {name} " in out
    assert "GPU              not usable: no CUDA device here (test)" in out
    lines = [line for line in out.splitlines() if line.startswith("  [")]
    assert len(lines) >= 6 and all(line.startswith("  [cpu] PASS") for line in lines), out
    assert "Conv2D gradients" in out and "MaxPool2D gradients" in out and "lower the loss" in out
    assert "all 6 checks passed (no GPU checked: no CUDA device here (test))" in out


def test_asking_for_an_unusable_device_is_one_error_line(monkeypatch, capsys):
    monkeypatch.setattr(backend, "gpu_unavailable_reason", lambda: "no CUDA device here (test)")
    assert doctor.main(["--device", "cuda:0"]) == 2
    assert capsys.readouterr().err.startswith("error: device 'cuda:0' was requested but no CUDA device here")


@pytest.mark.kernels
def test_on_the_emulated_gpu_every_check_passes(gpu, capsys):
    assert doctor.main(["--quick", "--seed", "3", "--no-cpu"]) == 0
    out = capsys.readouterr().out
    assert "  CUDA runtime     13.0" in out and "  NVRTC            13.0" in out and "  cuBLAS           130000" in out
    assert "  cuda:0           Emulated GPU (host harness), 80.0 GiB, compute capability 9.0" in out
    checks = [line for line in out.splitlines() if line.startswith("  [cuda:0]")]
    assert all(" PASS " in line for line in checks), out
    text = "\n".join(checks)
    for expected in ("compile every kernel file, float32", "compile every kernel file, float64",
                     "direct (small C*kh*kw)", "im2col + GEMM", "MaxPool2D forward + backward",
                     "AvgPool2D forward + backward", "SGD update", "SGD momentum nesterov weight-decay update",
                     "Adam update", "AdamW update", "training step of fashion_cnn, float32",
                     "training step of fashion_cnn as one CUDA graph (compile_step)"):
        assert expected in text, expected
    for dtype in ("float32", "float64"):
        assert f"conv2d forward + both gradients, direct (small C*kh*kw) path, {dtype}" in text
    assert "max error" in text


@pytest.mark.kernels
def test_a_wrong_kernel_result_fails_the_doctor(gpu, capsys, monkeypatch):
    real_launch = gpu.loader.launch

    def corrupting_launch(file, name, dtype, args, *rest, **kwargs):
        real_launch(file, name, dtype, args, *rest, **kwargs)
        if name.startswith("avg_pool_fwd"):
            args[1][...] *= 1.5  # the output of average pooling, now wrong

    monkeypatch.setattr(gpu.loader, "launch", corrupting_launch)
    assert doctor.main(["--quick", "--seed", "3", "--no-cpu"]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if " FAIL " in line]
    assert failing and all("AvgPool2D" in line or "lenet" in line for line in failing), out
    assert "max error" in failing[0] and "(worst: forward)" in failing[0]
    assert out.rstrip().endswith("checks FAILED")


@pytest.mark.kernels
def test_a_wrong_fused_kernel_fails_the_graph_step_check(gpu, capsys, monkeypatch):
    real_launch = gpu.loader.launch

    def corrupting_launch(file, name, dtype, args, *rest, **kwargs):
        real_launch(file, name, dtype, args, *rest, **kwargs)
        if name == "dense_wgrad_fused":
            args[3][...] *= 1.01  # the weight gradient of a Dense layer on the fused path, now 1% off

    monkeypatch.setattr(gpu.loader, "launch", corrupting_launch)
    assert doctor.main(["--quick", "--seed", "3", "--no-cpu"]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if " FAIL " in line]
    # the eager step runs the same fused Dense kernels (gpucnn.ops.cuda.linear), so its check fails too
    assert any("as one CUDA graph" in line for line in failing), out
    assert all("training step of" in line and "(worst: gradient" in line for line in failing), out
