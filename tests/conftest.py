"""Shared fixtures: every layer test runs once per backend; CUDA cases skip where no GPU is usable.

``pytest --gpucnn-path=reference`` runs the whole suite with ``gpucnn.config.path = 'reference'``
(the default is the package's own default, the fast CPU path): CI runs both.

pytest puts tests/ on sys.path (this file sits in a folder without __init__.py), so the shared test
support imports as ``support.*`` (tests/support/); scripts/ goes on it here (last, so that its
train.py and bench.py shadow nothing), so that tests import a script's functions by name
(``import checkpoint_attack``); the repository root goes last, so that the wrappers whose names are
taken (train, bench) import as ``scripts.train`` and ``scripts.bench``.
"""
import os
import sys

import numpy
import pytest

import gpucnn
from gpucnn import backend
from gpucnn.config import PATHS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
for _folder in (SCRIPTS, ROOT):  # ROOT: scripts/ imports as the namespace package ``scripts`` too
    if _folder not in sys.path:
        sys.path.append(_folder)


def pytest_addoption(parser):
    parser.addoption("--gpucnn-path", choices=PATHS, default=None,
                     help="gpucnn.config.path for the whole run (default: the package default)")


@pytest.fixture(autouse=True)
def _gpucnn_path(request):
    """Every test starts from the run's path and verify setting, whatever the previous test changed."""
    path = request.config.getoption("--gpucnn-path") or "fast"
    gpucnn.config.path, gpucnn.config.verify, gpucnn.config.num_threads = path, False, None
    yield path


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config, items):
    reason = backend.gpu_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"no usable GPU: {reason}")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request):
    """'cpu' or 'cuda'; tests move inputs with gpucnn.backend.to_device(x, device)."""
    return request.param


@pytest.fixture(scope="session")
def harness(tmp_path_factory):
    """tests/kernels/harness.cu, built once per run by nvcc (host code, no GPU needed): it runs our CUDA
    kernels' bodies on the CPU, thread by thread (tests/support/kernel_harness.py)."""
    from support.kernel_harness import started_harness
    with started_harness(tmp_path_factory.mktemp("harness")) as runner:
        yield runner


@pytest.fixture
def gpu(harness):
    """An emulated CUDA device: tests/support/emulated_cupy installed as CuPy, its kernels run by the harness.
    (Tests of a real GPU use the ``device`` fixture and the ``gpu`` marker.)"""
    from support import emulated_cupy
    from support.kernel_harness import FakeKernel
    with emulated_cupy.installed(harness, FakeKernel) as emulated:
        yield emulated


@pytest.fixture(autouse=True)
def _graph_wins_on_the_emulated_device(monkeypatch):
    """The emulated device has no meaningful clock (the harness runs its kernels on the CPU), so there
    fit(graph='auto')'s measured choice (gpucnn/train/graph_step.py) still measures, then takes the graph,
    as a GPU should; on a real GPU the measurement decides. Tests of the choice itself patch it again."""
    from gpucnn.train import graph_step
    real = graph_step.measure_steps

    def measure(step, *args, **kwargs):
        measured = real(step, *args, **kwargs)
        return (2.0, 1.0) if getattr(step.cupy, "__version__", None) == "emulated" else measured
    measure.real = real
    monkeypatch.setattr(graph_step, "measure_steps", measure)


@pytest.fixture
def rng():
    return numpy.random.default_rng(12345)
