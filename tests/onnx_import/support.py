"""What the ONNX import tests share: models with each option, and their outputs and gradients side by side."""
import numpy

import gpucnn
from gpucnn.nn.layers import (Add, AvgPool2D, BatchNorm1D, BatchNorm2D, Concatenate, Conv2D, Dense, Dropout, Flatten,
                              GlobalAvgPool2D, LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh)


def every_option(dtype=numpy.float32, rng=0):
    """A Model with each layer and option the exporter writes and the importer reads back: strides, dilations,
    groups, padded pools, BatchNorm in both ranks, a skip connection, a concatenation, Dropout, a Softmax."""
    x = gpucnn.Input((4, 11, 10), dtype=dtype)
    h = Conv2D(4, 6, 3, stride=(1, 2), padding=(1, 2), dilation=(2, 1), groups=2, dtype=dtype, rng=rng, name="c1")(x)
    h = LeakyReLU(0.2)(BatchNorm2D(6, dtype=dtype, name="bn")(h))
    a = ReLU()(Conv2D(6, 6, 3, padding=1, bias=False, dtype=dtype, rng=rng, name="c2")(h))
    h = Add()([a, h])
    h = Concatenate(axis=1)([MaxPool2D(3, stride=2, padding=1)(h), AvgPool2D(3, stride=2, padding=1)(h)])
    g = Flatten()(GlobalAvgPool2D()(h))
    h = Dense(12 * 5 * 3, 8, dtype=dtype, rng=rng)(Flatten()(Sigmoid()(h)))
    h = Tanh()(BatchNorm1D(8, dtype=dtype)(Dropout(0.3, rng=rng)(h)))
    y = Dense(8, 5, dtype=dtype, rng=rng)(h)
    y = Softmax(axis=1)(Dense(5 + 12, 3, bias=False, dtype=dtype, rng=rng)(Concatenate(axis=1)([y, g])))
    return gpucnn.Model(x, y, name="every_option")


def warm_up(model, x):
    """One training-mode pass, so that BatchNorm's running statistics are not their initial values; then eval."""
    model.train()
    model.forward(x)
    return model.eval()


def outputs_and_gradients(model, x, grad_seed=3):
    """(outputs, dL/dx, [parameter gradients in the order the layers run]) for one backward of a fixed dL/dy."""
    model.zero_grad()
    y = model.forward(x)
    g = numpy.random.default_rng(grad_seed).standard_normal(y.shape).astype(y.dtype)
    grad_x = model.backward(g)
    return y, grad_x, [p.grad.copy() for p in model.parameters()]


def assert_close(got, want, rtol):
    """Relative ``rtol``, with an absolute floor scaled to the largest value (sums in another order differ by a
    few ulps of their terms, which near a zero output is no bound relative to that output)."""
    numpy.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(numpy.abs(want).max()))
