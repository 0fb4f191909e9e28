"""Two identical training runs give bitwise identical parameters, on every device.

On the GPU this holds because every gradient kernel is a gather (no atomics) and cuBLAS
GEMMs are deterministic for a fixed shape and device.
"""
import numpy

import gpucnn
from gpucnn.backend import asnumpy, to_device
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.optim.optimizers import Adam


def train_steps(device, steps=3):
    rng = numpy.random.default_rng(7)
    x = to_device(rng.random((16, 1, 28, 28), dtype=numpy.float32), device)
    y = to_device(rng.integers(0, 10, 16), device)
    model = gpucnn.models.fashion_cnn(rng=0).to(device)
    loss_fn = SoftmaxCrossEntropy()
    opt = Adam(model.parameters())
    for _ in range(steps):
        loss_fn.forward(model.forward(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    return [asnumpy(p.data) for p in model.parameters()]


def test_identical_training_steps_give_identical_parameters(device):
    first, second = train_steps(device), train_steps(device)
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()
