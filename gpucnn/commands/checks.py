"""The checks behind ``gpucnn doctor``: does gpucnn compute the right numbers on this machine?

Each check returns a ``Check`` (name, passed, largest error, tolerance, detail). On a GPU:

- every kernel file compiles (or loads from CuPy's disk cache) for the device, per float type;
- every CUDA op, through the public layers, on random shapes against the same layer on NumPy
  (the reference): convolution forward and both gradients (the direct and the im2col paths),
  max and average pooling forward and backward, and every optimizer's update;
- one training step of the reference network on the GPU against the same step on the CPU.

On any machine, the CPU checks: each layer's analytic gradients against central differences in
float64 (``gradcheck``), and a few training steps of the reference network that lower its loss.

Errors are relative to the reference's largest magnitude, so one tolerance fits every scale.
The shapes are drawn from ``seed``: a failing check is repeated with the same seed.
"""
import copy
import time

import numpy

from .. import backend
from ..nn import gradcheck
from ..nn.layers import AvgPool2D, Conv2D, Dense, MaxPool2D
from ..nn.losses import SoftmaxCrossEntropy
from ..nn.models import fashion_cnn
from ..optim.optimizers import SGD, Adam, AdamW
from ..compile.verify import TOLERANCES, precision_mode, relative_error
from ..compile.verify import tolerance as verify_tolerance

__all__ = ["Check", "gpu_checks", "cpu_checks", "relative_error", "TOLERANCE"]

# Largest relative error accepted between a CUDA result and NumPy's, per float type, in the precision mode
# in use: the one table of gpucnn/compile/verify.py.
TOLERANCE = {numpy.dtype(name): limit for (name, mode), limit in TOLERANCES.items() if mode == "fp32"}


class Check:
    """One line of the doctor's report."""

    def __init__(self, name, passed, error=None, tolerance=None, detail=""):
        self.name, self.passed, self.error, self.tolerance, self.detail = name, passed, error, tolerance, detail

    def line(self):
        status = "PASS" if self.passed else "FAIL"
        error = "" if self.error is None else f"  max error {self.error:.2e} (tolerance {self.tolerance:.0e})"
        detail = f"  {self.detail}" if self.detail else ""
        return f"{status}  {self.name}{error}{detail}"


def _compare(name, pairs, dtype):
    """A Check over [(what, got, want)]: passes when every relative error is within the dtype's tolerance."""
    tolerance = verify_tolerance(dtype, precision_mode())
    worst, worst_what = 0.0, ""
    for what, got, want in pairs:
        error = relative_error(got, want)
        if error >= worst:
            worst, worst_what = error, what
    detail = f"(worst: {worst_what})" if worst > tolerance else ""
    return Check(name, worst <= tolerance, worst, tolerance, detail)


def _guarded(name, fn):
    """Run one check; an exception becomes a failing check that names it."""
    try:
        return fn()
    except Exception as exc:  # the doctor reports every failure instead of stopping at the first
        return Check(name, False, detail=f"raised {type(exc).__name__}: {exc}")


def _layer_pair(layer, device):
    """(the layer on the CPU, a deep copy of it on ``device``)."""
    from ..nn.sequential import Sequential
    twin = copy.deepcopy(layer)
    Sequential([twin]).to(device)
    return layer, twin


def _run_layer_on_both(layer, x, device, rng):
    """Forward and backward of ``layer`` on NumPy and on ``device``; [(what, gpu value, cpu value)]."""
    cpu, gpu = _layer_pair(layer, device)
    y_cpu = cpu.forward(x)
    grad = rng.standard_normal(y_cpu.shape).astype(x.dtype)
    dx_cpu = cpu.backward(grad)
    y_gpu = gpu.forward(backend.to_device(x, device))
    dx_gpu = gpu.backward(backend.to_device(grad, device))
    pairs = [("forward", y_gpu, y_cpu), ("input gradient", dx_gpu, dx_cpu)]
    for index, (p_gpu, p_cpu) in enumerate(zip(gpu.parameters(), cpu.parameters())):
        pairs.append((f"parameter {index} gradient", p_gpu.grad, p_cpu.grad))
    return pairs


def _conv_case(rng, channels_low, channels_high):
    c = int(rng.integers(channels_low, channels_high + 1))
    k = int(rng.choice([1, 2, 3, 5]))
    stride = int(rng.choice([1, 2]))
    padding = rng.choice(["same", 0, 1]) if stride == 1 else int(rng.choice([0, 1]))
    padding = padding if padding == "same" else int(padding)
    h, w = (int(v) for v in rng.integers(k + 1, 13, size=2))
    return dict(n=int(rng.integers(1, 5)), c=c, o=int(rng.integers(1, 7)), k=k, stride=stride, padding=padding,
                h=h, w=w)


def _conv_check(device, dtype, rng, case, path):
    name = (f"conv2d forward + both gradients, {path} path, {numpy.dtype(dtype).name} "
            f"(N={case['n']} C={case['c']} O={case['o']} {case['h']}x{case['w']} k={case['k']} "
            f"stride={case['stride']} padding={case['padding']!r})")

    def run():
        layer = Conv2D(case["c"], case["o"], case["k"], stride=case["stride"], padding=case["padding"], dtype=dtype,
                       rng=rng)
        x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dtype)
        return _compare(name, _run_layer_on_both(layer, x, device, rng), dtype)
    return _guarded(name, run)


def _pool_check(device, dtype, rng, cls):
    k = int(rng.choice([2, 3]))
    stride = int(rng.choice([1, 2, k]))
    padding = int(rng.integers(0, k // 2 + 1))
    n, c = (int(v) for v in rng.integers(1, 5, size=2))
    h, w = (int(v) for v in rng.integers(k + 1, 14, size=2))
    name = (f"{cls.__name__} forward + backward, {numpy.dtype(dtype).name} "
            f"(N={n} C={c} {h}x{w} k={k} stride={stride} padding={padding})")

    def run():
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        return _compare(name, _run_layer_on_both(cls(k, stride=stride, padding=padding), x, device, rng), dtype)
    return _guarded(name, run)


def _optimizer_check(device, dtype, rng, label, make):
    name = f"{label} update, {numpy.dtype(dtype).name} (3 steps, 3 tensors)"

    def run():
        layers = [Dense(int(rng.integers(2, 40)), int(rng.integers(1, 20)), dtype=dtype, rng=rng) for _ in range(2)]
        cpu_params = [p for layer in layers for p in layer.parameters()][:3]
        gpu_layers = [_layer_pair(layer, device)[1] for layer in layers]
        gpu_params = [p for layer in gpu_layers for p in layer.parameters()][:3]
        cpu_opt, gpu_opt = make(cpu_params), make(gpu_params)
        for _ in range(3):
            for p_cpu, p_gpu in zip(cpu_params, gpu_params):
                grad = rng.standard_normal(p_cpu.data.shape).astype(dtype)
                p_cpu.grad[...] = grad
                p_gpu.grad[...] = backend.to_device(grad, device)
            cpu_opt.step()
            gpu_opt.step()
        return _compare(name, [(f"parameter {i}", g.data, c.data)
                               for i, (g, c) in enumerate(zip(gpu_params, cpu_params))], dtype)
    return _guarded(name, run)


OPTIMIZERS = {
    "SGD": lambda params: SGD(params, lr=0.1),
    "SGD momentum nesterov weight-decay": lambda params: SGD(params, lr=0.1, momentum=0.9, nesterov=True,
                                                             weight_decay=1e-2),
    "Adam": lambda params: Adam(params, lr=1e-2, weight_decay=1e-3),
    "AdamW": lambda params: AdamW(params, lr=1e-2),
}


def _sgd_step(model, x, y):
    """One eager SGD-momentum step: (loss, [gradients on the host], [weights after the step])."""
    loss_fn = SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss = loss_fn.forward(model.forward(x), y)
    opt.zero_grad()
    model.backward(loss_fn.backward(), need_input_grad=False)
    grads = [backend.asnumpy(p.grad).copy() for p in model.parameters()]
    opt.step()
    return loss, grads, [p.data for p in model.parameters()]


def _step_pairs(got, want):
    """[(what, got, want)] over the loss, every gradient and every weight of two _sgd_step-like results."""
    pairs = [("loss", got[0], want[0])]
    pairs += [(f"gradient {i}", g, c) for i, (g, c) in enumerate(zip(got[1], want[1]))]
    pairs += [(f"weight {i} after the step", g, c) for i, (g, c) in enumerate(zip(got[2], want[2]))]
    return pairs


def _reference_case(device, rng, batch):
    """fashion_cnn on the CPU and a copy on ``device``, a random float32 batch, the CPU's eager step."""
    model_cpu = fashion_cnn(rng=int(rng.integers(1 << 30)))
    model_gpu = copy.deepcopy(model_cpu).to(device)
    x = rng.random((batch, 1, 28, 28), dtype=numpy.float32)
    y = rng.integers(0, 10, batch)
    return model_gpu, x, y, _sgd_step(model_cpu, x, y)


def _training_step_check(device, rng, batch=32):
    """One SGD step of the reference network on ``device`` against the same step on the CPU. SGD (not Adam),
    because Adam's update g / sqrt(v) turns float32 noise in a near-zero gradient into a full step."""
    name = f"training step of fashion_cnn, float32 (batch {batch}, SGD momentum): loss, every gradient, every weight"

    def run():
        model_gpu, x, y, cpu = _reference_case(device, rng, batch)
        gpu = _sgd_step(model_gpu, backend.to_device(x, device), backend.to_device(y, device))
        return _compare(name, _step_pairs(gpu, cpu), numpy.float32)
    return _guarded(name, run)


def _graph_step_check(device, rng, batch=32):
    """The same step captured as one CUDA graph on the fused kernels (gpucnn.compile_step, what ``fit`` runs
    on CUDA by default) and launched once, against the CPU's eager step."""
    name = (f"training step of fashion_cnn as one CUDA graph (compile_step), float32 (batch {batch}, SGD "
            f"momentum): loss, every gradient, every weight")

    def run():
        from ..compile.cuda_graph.step import compile_step
        model_gpu, x, y, cpu = _reference_case(device, rng, batch)
        opt = SGD(model_gpu.parameters(), lr=0.05, momentum=0.9)
        step = compile_step(model_gpu, SoftmaxCrossEntropy(), opt, batch, verify=False)
        step.bind(backend.to_device(x, device), backend.to_device(y, device))
        stats = step.run_epoch(numpy.arange(batch))
        if step.graph_launches != 1:
            return Check(name, False, detail=f"(the step ran {step.graph_launches} graph launches, not 1)")
        grads = [backend.asnumpy(g).copy() for g in step.grads]
        gpu = (stats["loss"], grads, [p.data for p in model_gpu.parameters()])
        return _compare(name, _step_pairs(gpu, cpu), numpy.float32)
    return _guarded(name, run)


def _compile_check(device, dtype):
    name = f"compile every kernel file, {numpy.dtype(dtype).name}"

    def run():
        from ..ops.cuda import loader
        index = int(device.split(":")[1])
        seconds = loader.compile_all(dtype, index)
        detail = ", ".join(f"{file} {s:.2f} s" for file, s in seconds.items())
        return Check(name, True, detail=f"({detail}; cached in {loader.kernel_cache_dir()})")
    return _guarded(name, run)


def gpu_checks(device, seed=0, rounds=2):
    """Yield the GPU checks on ``device`` ('cuda:N'), one Check at a time (so the report streams)."""
    rng = numpy.random.default_rng(seed)
    dtypes = (numpy.float32, numpy.float64)
    for dtype in dtypes:
        yield _compile_check(device, dtype)
    with backend.device_scope(backend.to_device(numpy.zeros(1), device)):
        for dtype in dtypes:
            for _ in range(rounds):
                yield _conv_check(device, dtype, rng, _conv_case(rng, 1, 2), "direct (small C*kh*kw)")
                yield _conv_check(device, dtype, rng, _conv_case(rng, 8, 16), "im2col + GEMM")
                yield _pool_check(device, dtype, rng, MaxPool2D)
                yield _pool_check(device, dtype, rng, AvgPool2D)
            for label, make in OPTIMIZERS.items():
                yield _optimizer_check(device, dtype, rng, label, make)
        yield _training_step_check(device, rng)
        yield _graph_step_check(device, rng)


def _gradcheck(name, layer, x):
    def run():
        gradcheck.check_layer(layer, x)
        return Check(name, True, detail="(central differences, float64)")
    return _guarded(name, run)


def _cpu_training_check(seed, steps=5, batch=32):
    name = f"fashion_cnn on the CPU: {steps} Adam steps on one batch lower the loss"

    def run():
        rng = numpy.random.default_rng(seed)
        model = fashion_cnn(rng=seed)
        x = rng.random((batch, 1, 28, 28), dtype=numpy.float32)
        y = rng.integers(0, 10, batch)
        loss_fn, opt = SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(steps):
            losses.append(float(loss_fn.forward(model.forward(x), y)))
            opt.zero_grad()
            model.backward(loss_fn.backward(), need_input_grad=False)
            opt.step()
        passed = all(numpy.isfinite(losses)) and losses[-1] < losses[0]
        return Check(name, passed, detail=f"(loss {losses[0]:.4f} -> {losses[-1]:.4f})")
    return _guarded(name, run)


def cpu_checks(seed=0):
    """Yield the CPU checks (NumPy reference path)."""
    rng = numpy.random.default_rng(seed)
    f64 = numpy.float64
    yield _gradcheck("Conv2D gradients (3x3, stride 1, 'same')", Conv2D(2, 3, 3, padding="same", dtype=f64, rng=rng),
                     rng.standard_normal((2, 2, 5, 5)))
    yield _gradcheck("Conv2D gradients (2x2, stride 2, padding 1)", Conv2D(3, 2, 2, stride=2, padding=1, dtype=f64,
                                                                           rng=rng), rng.standard_normal((2, 3, 5, 6)))
    yield _gradcheck("MaxPool2D gradients (3x3, stride 2, padding 1)", MaxPool2D(3, stride=2, padding=1),
                     rng.standard_normal((2, 2, 7, 6)))
    yield _gradcheck("AvgPool2D gradients (2x2)", AvgPool2D(2), rng.standard_normal((2, 2, 6, 4)))
    yield _gradcheck("Dense gradients", Dense(7, 4, dtype=f64, rng=rng), rng.standard_normal((3, 7)))
    yield _cpu_training_check(seed)


def timed(checks):
    """Yield (check, seconds) as each check finishes."""
    start = time.perf_counter()
    for check in checks:
        now = time.perf_counter()
        yield check, now - start
        start = now
