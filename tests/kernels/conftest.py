"""Fixtures of the kernel tests: ``fused``, the graph's launchers (gpucnn/ops/cuda/fused.py, imported as
gpucnn.compile.cuda_graph.launch) over the NumPy stand-in for CuPy, every launch run in the host harness and
recorded in ``fused.launches``."""
import importlib

import pytest

from support.kernel_harness import launchers_over_numpy


@pytest.fixture
def fused(harness, monkeypatch):
    with launchers_over_numpy(harness, monkeypatch) as (_, launches):
        module = importlib.import_module("gpucnn.compile.cuda_graph.launch")
        module.launches = launches
        yield module
