"""The steps the benchmark commands time: the reference network (Fashion-MNIST CNN) in gpucnn and in PyTorch.

``gpucnn_step`` and ``torch_step`` build the same network, Adam and random data on a device and
return its training step and forward pass as argument-free functions; ``train_step_flops``
counts a step's floating-point work. Nothing here imports a command module.
"""
import numpy

import gpucnn
from .. import backend
from ..nn.layers import Conv2D, Dense
from ..nn.losses import SoftmaxCrossEntropy, check_label_range
from ..nn.models import fashion_cnn
from ..optim.optimizers import Adam
from .timing import timed

__all__ = ["train_step_flops", "gpucnn_step", "per_layer_times", "torch_network", "torch_step", "on_path"]


def train_step_flops(model, batch):
    """Multiply-adds x2 of conv and dense layers: forward once, backward twice (input and weight gradients)."""
    flops, shape = 0, (batch, 1, 28, 28)
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            oh, ow = layer.window.output_size(*shape[2:])
            flops += 2 * batch * layer.out_channels * oh * ow * layer.weight.data[0].size
            shape = (batch, layer.out_channels, oh, ow)
        elif isinstance(layer, Dense):
            flops += 2 * batch * layer.in_features * layer.out_features
        elif hasattr(layer, "window"):
            shape = shape[:2] + layer.window.output_size(*shape[2:])
    return 3 * flops


def gpucnn_step(device, batch):
    """(train_step, forward, flops, (model, x)) of the reference network on random data."""
    rng = numpy.random.default_rng(batch)
    x = backend.to_device(rng.random((batch, 1, 28, 28), dtype=numpy.float32), device)
    y = backend.to_device(rng.integers(0, 10, batch), device)
    model = fashion_cnn(rng=0).to(device)
    check_label_range(y, 10, "bench labels")  # once, before timing: no read-back inside a timed step
    loss_fn = SoftmaxCrossEntropy(check_labels=False)
    opt = Adam(model.parameters())

    def step():
        loss_fn.forward(model.forward(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward(), need_input_grad=False)  # as fit() does; torch skips it too
        opt.step()

    return step, lambda: model.forward(x), train_step_flops(model, batch), (model, x)


def per_layer_times(model, x, sync, repeats, warmup):
    """[{'layer', 'shape', 'forward_s', 'backward_s'}] of each layer of ``model`` on the input ``x``."""
    layers, h = [], x
    for layer in model.layers:
        out = layer.forward(h)
        grad = out * 0 + 1
        forward_s = timed(lambda: layer.forward(h), sync, repeats, warmup)
        both_s = timed(lambda: (layer.forward(h), layer.backward(grad)), sync, repeats, warmup)
        layers.append({"layer": type(layer).__name__, "shape": list(out.shape), "forward_s": forward_s,
                       "backward_s": both_s - forward_s})
        h = out
    return layers


def torch_network(torch, dev):
    """The reference network in PyTorch on ``dev``."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev)


def torch_step(device, batch, tf32=False):
    """(train_step, forward, info) of the same network in PyTorch, or None without torch (or its GPU)."""
    try:
        import torch
    except ImportError:
        return None
    dev = "cpu" if device == "cpu" else device
    if dev != "cpu" and not torch.cuda.is_available():
        return None
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = tf32  # like for like with gpucnn's precision
    torch.backends.cudnn.allow_tf32 = tf32
    model = torch_network(torch, dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(batch)
    x = torch.rand((batch, 1, 28, 28), generator=gen).to(dev)
    y = torch.randint(0, 10, (batch,), generator=gen).to(dev)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad():
            model(x)

    return step, forward, {"version": torch.__version__, "threads": torch.get_num_threads()}


def on_path(path, fn):
    """fn run with gpucnn.config.path set to ``path`` (then restored)."""
    def run():
        before, gpucnn.config.path = gpucnn.config.path, path
        try:
            return fn()
        finally:
            gpucnn.config.path = before
    return run
