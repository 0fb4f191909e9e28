"""Data-parallel training (gpucnn.distributed) under ``mpirun -np 2``, against single-process training.

The MPI runs start tests/distributed/worker.py through mpirun (as root with --allow-run-as-root,
oversubscribed on a small machine) and skip with the reason where mpirun or mpi4py is missing:
- SGD and Adam, two epochs: weights equal on both ranks bitwise (rank 1 starts from other weights,
  which rank 0's broadcast replaces) and equal to single-process training on the same global
  batches to float64 rounding; the history (loss over all ranks, validation reduced) too; the
  checkpoint comes from rank 0 only;
- resume: one epoch, then fresh objects resuming to three, equal bitwise to three straight
  (with BatchNorm, whose running statistics are averaged over ranks each epoch);
- a rank that is killed, hangs or raises ends the job with an error within a bounded time;
- ``gpucnn train --distributed``: one log, files from rank 0, resume;
- ``gpucnn bench --distributed`` reports images/s and scaling efficiency from rank 0;
- the NCCL path on the emulated GPUs (tests/support/emulated_cupy), NCCL faked at its calls;
  on two real GPUs it runs for real (skipped elsewhere, with the reason).
In-process: the error outside mpirun, and the choice of each rank's GPU.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import numpy
import pytest

import gpucnn.distributed as distributed
from gpucnn import backend
from gpucnn.commands import train as train_command
from gpucnn.distributed import Communicator, DataParallel, DistributedError, local_device
from gpucnn.nn.losses import SoftmaxCrossEntropy

from . import worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "worker.py")  # what mpirun runs; imported here for its models and data


def _mpi_missing():
    if shutil.which("mpirun") is None:
        return "mpirun is not on PATH (apt-get install openmpi-bin libopenmpi-dev)"
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install mpi4py)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def mpirun(*args, timeout=90, env=None, program=(WORKER,)):
    """Run the worker (or ``program``) on 2 ranks; returns (CompletedProcess, seconds)."""
    cmd = ["mpirun", "--oversubscribe", "-np", "2"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    full_env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                    OMPI_MCA_btl_vader_single_copy_mechanism="none", **(env or {}))
    started = time.monotonic()
    result = subprocess.run(cmd + [sys.executable, *program, *args], cwd=ROOT, env=full_env, capture_output=True,
                            text=True, timeout=timeout)
    return result, time.monotonic() - started


def check_ok(result):
    assert result.returncode == 0, f"mpirun failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    result, _ = mpirun("train", str(out))
    check_ok(result)
    ranks = [dict(numpy.load(out / f"rank{r}.npz")) for r in range(2)]
    histories = [json.loads((out / f"rank{r}.json").read_text())["histories"] for r in range(2)]
    return out, ranks, histories


@needs_mpi
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_ranks_agree_bitwise_and_match_one_process(train_run, name):
    out, ranks, histories = train_run
    keys = [k for k in ranks[0] if k.startswith(name + ".")]
    assert keys
    for key in keys:
        numpy.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=f"{key} differs between ranks")
    single, history = worker.train(name, 2, distributed=False)
    for key, value in single.items():
        numpy.testing.assert_allclose(ranks[0][f"{name}.{key}"], value, rtol=1e-12, atol=1e-13,
                                      err_msg=f"{name}: {key} differs from single-process training")
    for what in ("loss", "val_loss", "accuracy", "val_accuracy"):
        numpy.testing.assert_allclose(histories[0][name][what], history[what], rtol=1e-12, err_msg=what)
    for what in ("loss", "val_loss", "accuracy", "val_accuracy", "epoch", "lr"):
        assert histories[0][name][what] == histories[1][name][what], what
    assert (out / f"{name}-rank0.npz").exists() and not (out / f"{name}-rank1.npz").exists(), \
        "the checkpoint must come from rank 0 only"


@needs_mpi
def test_a_model_with_nested_batchnorm_ends_alike_on_every_rank(tmp_path):
    result, _ = mpirun("model", str(tmp_path))
    check_ok(result)
    ranks = [dict(numpy.load(tmp_path / f"model-rank{r}.npz")) for r in range(2)]
    assert "block.0.running_mean" in ranks[0]  # the nested BatchNorm's statistics, averaged over the ranks
    for key in ranks[0]:
        numpy.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=f"{key} differs between ranks")


@needs_mpi
def test_resume_is_exact(train_run):
    _, ranks, _ = train_run
    keys = [k for k in ranks[0] if k.startswith("resumed.")]
    assert any("running_mean" in k for k in keys)
    for key in keys:
        for rank in ranks:
            numpy.testing.assert_array_equal(rank[key], rank["straight." + key[len("resumed."):]], err_msg=key)
        numpy.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=f"{key} differs between ranks")


@needs_mpi
@pytest.mark.parametrize("mode", ["kill", "hang", "raise"])
def test_a_rank_that_dies_ends_the_job(mode):
    """Rank 1 fails in its second step; rank 0, waiting in the all-reduce, must not hang."""
    result, seconds = mpirun("fault", mode, env={"GPUCNN_DIST_TIMEOUT": "2"}, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "finished" not in result.stdout, output
    assert seconds < 30, f"the job took {seconds:.0f} s to end"
    if mode == "hang":
        assert "did not complete within 2 s" in output, output
    if mode == "raise":
        assert "injected fault" in output and "ending every rank" in output, output


@needs_mpi
def test_nccl_path_on_emulated_gpus(tmp_path, harness):
    # the loss is a CUDA kernel: each rank runs it in the host harness built here
    result, _ = mpirun("nccl", str(tmp_path), env={"GPUCNN_TEST_HARNESS": harness.exe})
    check_ok(result)
    ranks = [dict(numpy.load(tmp_path / f"nccl{r}.npz")) for r in range(2)]
    infos = [json.loads((tmp_path / f"nccl{r}.json").read_text()) for r in range(2)]
    reference = worker.dense_model()
    (x, y), _ = worker.data()
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(reference.forward(x[:worker.BATCH]), y[:worker.BATCH])
    reference.backward(loss_fn.backward())
    count = sum(p.data.size for p in reference.parameters())
    for rank, (arrays, info) in enumerate(zip(ranks, infos)):
        assert info["device"] == f"cuda:{rank}" and info["devices"] == [f"DeviceArray:{rank}"]
        # one broadcast of the weights, one all-reduce of all the gradients: one flat buffer each
        assert info["calls"] == [["broadcast", "float64", count], ["all_reduce_sum", "float64", count]]
        for i, p in enumerate(reference.parameters()):
            numpy.testing.assert_array_equal(arrays[str(i)], p.data, err_msg=f"rank {rank}: weights {i}")
            numpy.testing.assert_allclose(arrays[f"grad{i}"], p.grad, rtol=1e-12, atol=1e-14,
                                          err_msg=f"rank {rank}: averaged gradient {i}")
            numpy.testing.assert_array_equal(arrays[f"grad{i}"], ranks[0][f"grad{i}"])


@needs_mpi
def test_train_command_distributed_writes_from_rank0_and_resumes(tmp_path):
    from commands.test_train_and_bench import write_idx
    rng = numpy.random.default_rng(0)
    for prefix, count in (("train", 64), ("t10k", 32)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (count, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))
    out = tmp_path / "run"
    result, _ = mpirun("cli", str(tmp_path), "--out", str(out), "--epochs", "1")
    check_ok(result)
    assert result.stdout.count("test accuracy") == 1, result.stdout  # rank 0 alone logs
    assert json.loads((out / "metrics.json").read_text())["epoch"] == [1]
    result, _ = mpirun("cli", str(tmp_path), "--out", str(out), "--epochs", "2", "--resume")
    check_ok(result)
    history = json.loads((out / "metrics.json").read_text())
    assert history["epoch"] == [1, 2] and len(history["val_accuracy"]) == 2


@needs_mpi
def test_bench_distributed_reports_scaling():
    result, _ = mpirun("bench", "--distributed", "--device", "cpu", "--batch-sizes", "8", "--repeats", "2",
                       "--warmup", "1", "--json", program=("-m", "gpucnn"))
    check_ok(result)
    report = json.loads(result.stdout)  # rank 1's stdout is silenced: one report
    assert report["ranks"] == 2 and [r["batch"] for r in report["results"]] == [8]
    row = report["results"][0]
    assert row["one_process_img_s"] > 0 and row["distributed_img_s"] > 0
    assert row["efficiency"] == pytest.approx(row["distributed_img_s"] / row["one_process_img_s"] / 2)


def _gpu_count():
    if backend.gpu_unavailable_reason() is not None:
        return 0
    return backend.cupy_or_none().cuda.runtime.getDeviceCount()


@pytest.mark.gpu
@needs_mpi
def test_nccl_on_two_real_gpus(tmp_path):
    if _gpu_count() < 2:
        pytest.skip(f"needs two CUDA GPUs for NCCL, this machine has {_gpu_count()}")
    result, _ = mpirun("nccl-real", str(tmp_path))
    check_ok(result)
    ranks = [dict(numpy.load(tmp_path / f"real{r}.npz")) for r in range(2)]
    (x, y), _ = worker.data()
    single = worker.model()
    opt = worker.optimizer("adam", single.parameters())
    from gpucnn.train.loop import fit
    fit(single, SoftmaxCrossEntropy(), opt, x, y, 2, batch_size=worker.BATCH, seed=3, progress=False)
    for key, value in single.named_state().items():
        numpy.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
        numpy.testing.assert_allclose(ranks[0][key], value, rtol=1e-10, atol=1e-12, err_msg=key)


# ----------------------------------------------------------------------------- in-process

@pytest.fixture
def outside_mpi(monkeypatch):
    for name in distributed.launch._LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed.communicator, "_world", [])


def test_fit_outside_mpi_says_how_to_launch(outside_mpi):
    (x, y), _ = worker.data()
    net = worker.model()
    with pytest.raises(DistributedError, match="mpirun -np 2 python scripts/train.py --distributed"):
        from gpucnn.train.loop import fit
        fit(net, SoftmaxCrossEntropy(), worker.optimizer("sgd", net.parameters()), x, y, 1, distributed=True)


def test_train_command_outside_mpi_says_how_to_launch(outside_mpi, capsys):
    assert train_command.main(["--distributed", "--epochs", "1"]) == 2
    assert "mpirun -np 2" in capsys.readouterr().err


def test_each_rank_gets_its_own_gpu():
    assert local_device("cuda", 1, 2, gpu_count=2) == "cuda:1"
    assert local_device("auto", 0, 4, gpu_count=8) == "cuda:0"
    assert local_device("cpu", 3, 4, gpu_count=0) == "cpu"
    with pytest.raises(DistributedError, match=r"3 ranks run on node .* only 2 CUDA GPU\(s\)"):
        local_device("cuda", 2, 3, gpu_count=2)
    with pytest.raises(DistributedError, match="GPU of its local rank"):
        local_device("cuda:1", 0, 2, gpu_count=2)


class _Job:
    """Rank and size of a job that is never talked to (DataParallel's arithmetic only)."""

    def __init__(self, rank, size):
        self.rank, self.size, self.timeout = rank, size, 1.0


def test_shards_cover_the_global_batch():
    x, y = numpy.arange(10).reshape(10, 1).astype(float), numpy.arange(10)
    parts = []
    for rank in range(3):
        dp = DataParallel(Communicator(_Job(rank, 3), rank, 3), worker.dense_model(), 10, 40)
        xb, yb = dp.shard(x, y)
        parts.append(yb)
        assert dp._weight == len(yb) / 10
    numpy.testing.assert_array_equal(numpy.concatenate(parts), y)
    with pytest.raises(ValueError, match="last batch of 1"):
        DataParallel(Communicator(_Job(0, 2), 0, 2), worker.dense_model(), 16, 33)
    with pytest.raises(ValueError, match="too small"):
        DataParallel(Communicator(_Job(0, 4), 0, 4), worker.dense_model(), 2, 40)
