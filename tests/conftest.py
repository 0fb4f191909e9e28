"""Shared fixtures: every layer test runs once per backend; CUDA cases skip where no GPU is usable."""
import numpy
import pytest

from gpucnn import backend

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


@pytest.fixture
def rng():
    return numpy.random.default_rng(12345)
