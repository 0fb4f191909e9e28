"""The models, data, optimizers and comparisons of the end-to-end runs on the emulated device
(tests/test_emulated_gpu.py, tests/test_emulated_second_device.py).
"""
import functools

import numpy

import gpucnn
from gpucnn.nn.layers import (AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU, MaxPool2D, ReLU,
    Sigmoid, Tanh)
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import SGD, Adam, AdamW, StepLR
from gpucnn.train import loop as train
from support import emulated_cupy
from support.emulated_cupy import DeviceArray, to_host

F32, F64 = numpy.float32, numpy.float64


def tolerance(dtype):
    return 1e-4 if numpy.dtype(dtype) == numpy.dtype(F32) else 1e-10


def assert_close(actual, expected, dtype, what):
    """``actual`` (device or host) equals ``expected`` (host) to the dtype's tolerance, scaled."""
    actual, expected = to_host(actual), numpy.asarray(expected)
    assert actual.dtype == numpy.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {numpy.dtype(dtype)}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    tol = tolerance(dtype)
    scale = max(1.0, float(numpy.max(numpy.abs(expected)))) if expected.size else 1.0
    numpy.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def assert_on_device(array, dtype, what):
    assert type(array) is DeviceArray, f"{what}: a {type(array).__name__}, not a device array"
    assert array.dtype == numpy.dtype(dtype), f"{what}: dtype {array.dtype}, expected {numpy.dtype(dtype)}"


def _device_like_uniform(layer, xp, shape, dtype):
    seed = int(layer.rng.integers(2 ** 62))  # exactly what Dropout._uniform draws on the device path
    return emulated_cupy.uniform(seed, shape, dtype)


def mirror_device_dropout(model):
    """Make a CPU model's Dropout draw the masks the emulated device draws (CuPy's RNG differs from NumPy's).

    Only the CPU reference is touched: the device model runs Dropout._uniform as it is.
    """
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer._uniform = functools.partial(_device_like_uniform, layer)
    return model


def build_model(dtype, seed=0):
    """Every layer kind; both conv paths (direct kernel for K <= 32, im2col + GEMM above), dilated and
    grouped convolutions on both."""
    rng = numpy.random.default_rng(seed)
    return gpucnn.Sequential([
        # no bias before BatchNorm: its gradient is zero up to rounding, which Adam would blow up to +-lr
        Conv2D(2, 3, 3, padding="same", bias=False, dtype=dtype, rng=rng),          # K=18: direct, (3,3,9,9)
        BatchNorm2D(3, dtype=dtype),
        LeakyReLU(0.1),
        MaxPool2D(3, stride=2, padding=1),                                          # overlapping, (3,3,5,5)
        Conv2D(3, 4, (3, 4), stride=(1, 2), padding=(1, 2), dtype=dtype, rng=rng),  # K=36: GEMM, (3,4,5,3)
        ReLU(),
        Conv2D(4, 4, 2, padding="same", dtype=dtype, rng=rng),                      # even kernel: pads 0/1
        Conv2D(4, 4, 3, padding="same", dilation=2, groups=4, dtype=dtype, rng=rng),  # depthwise, dilated: direct
        Conv2D(4, 4, (4, 5), padding="same", dilation=(1, 2), groups=2, dtype=dtype, rng=rng),  # K/group=40: GEMM
        Tanh(),
        AvgPool2D(2, stride=1, padding=1),                                          # (3,4,6,4)
        Flatten(),
        Dropout(0.25, rng=seed + 1),
        Dense(96, 8, dtype=dtype, rng=rng),
        Sigmoid(),
        Dense(8, 3, dtype=dtype, rng=rng),
    ])


OPTIMIZERS = {
    "sgd_nesterov": lambda params: SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda params: Adam(params, lr=1e-3, weight_decay=1e-3),
    "adamw": lambda params: AdamW(params, lr=1e-3, weight_decay=1e-2),
}


class SyncProbe:
    """Counts the syncs inside a call: ``probe.calls[name]`` lists (count, events) per call."""

    def __init__(self, syncs):
        self.syncs = syncs
        self.calls = {}

    def run(self, name, function, *args, **kwargs):
        start = len(self.syncs.events)
        try:
            return function(*args, **kwargs)
        finally:
            events = self.syncs.since(start)
            self.calls.setdefault(name, []).append((len(events), events))

    def counts(self, name):
        return [count for count, _ in self.calls.get(name, [])]

    def where(self, name):
        return [event for _, events in self.calls.get(name, []) for event in events]


# ----------------------------------------------------------------------------- fit

def fit_data(n=24, seed=0):
    """Images whose class is the quadrant holding the bright square."""
    rng = numpy.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8), dtype=F32) * 0.1
    y = rng.integers(0, 4, n)
    for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == k, 0, r:r + 4, c:c + 4] += 1.0
    return x, y


def fit_model(seed=0):
    return gpucnn.Sequential([Conv2D(1, 3, 3, padding="same", rng=seed), ReLU(), MaxPool2D(2), Flatten(),
                              Dropout(0.2, rng=seed), Dense(48, 4, rng=seed)])


FIT = dict(batch_size=8, seed=3, progress=False, sync_every=2)
STEPS_PER_EPOCH = 3


def fit_adam(model, x, y, epochs, **kwargs):
    """fit with Adam and StepLR, validated on its own data; returns (history, optimizer, scheduler, loss)."""
    optimizer = Adam(model.parameters(), lr=1e-2)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    loss_fn = SoftmaxCrossEntropy()
    history = train.fit(model, loss_fn, optimizer, x, y, epochs, validation=(x, y), scheduler=scheduler,
                        **FIT, **kwargs)
    return history, optimizer, scheduler, loss_fn
