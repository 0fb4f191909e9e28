"""How a launch is written down (``Recorder``), and what the eager and the graph step share: shapes, loss, update.

A launch is a dict: step, phase, layer, name (our kernel, or the CuPy operation), kind ('ours', 'cublas',
'cupy'), file and expression (ours), shape (M x N x K for GEMMs), gemm [M, N, K] or None, grid and block
(tuples; None where CuPy or cuBLAS choose them), flops (2 x the multiply-adds of GEMMs and convolutions, as
the kernel computes them: the bias column of a weight gradient included; 0 for the other kernels, whose
arithmetic is a few operations per element) and bytes (the compulsory DRAM traffic, a lower bound: each
input read once, each output written once).

Every step modelled is the one ``gpucnn bench`` times: float32 with 32-bit indices, softmax cross-entropy,
Adam through the multi-tensor update (one flat group: one device, one dtype), the first layer's input
gradient skipped (``need_input_grad=False``, as fit does). Grids come from the launchers' own arithmetic,
imported: ``loader.grid_for`` here, the launch modules' in gpucnn/perf/eager.py and graph.py.
"""
import math

import numpy

from ..nn.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Tanh
from ..ops.cuda import loader

__all__ = ["Recorder", "layer_shapes", "softmax_xent", "adam_update", "num_parameters", "F32", "I64",
           "CUPY_BLOCK", "CUBLAS_TILE"]

F32 = 4  # bytes of a float32
I64 = 8  # bytes of an int64 (labels, gather indices)
#: threads per block of CuPy's elementwise kernels (cupy/cuda/function.pyx: Function.linear_launch, block_max_size=128)
CUPY_BLOCK = 128
#: the output tile assumed for cuBLAS SGEMM (an assumption: cuBLAS picks its kernel at run time)
CUBLAS_TILE = 128


def layer_shapes(model, input_shape):
    """[(layer, input shape, output shape)] of a Sequential ``model`` for inputs of ``input_shape`` (N, ...)."""
    out, shape = [], tuple(input_shape)
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            oh, ow = layer.window.output_size(shape[2], shape[3])
            new = (shape[0], layer.out_channels, oh, ow)
        elif isinstance(layer, (MaxPool2D, AvgPool2D)):
            new = shape[:2] + tuple(layer.window.output_size(shape[2], shape[3]))
        elif isinstance(layer, Flatten):
            new = (shape[0], math.prod(shape[1:]))
        elif isinstance(layer, Dense):
            new = (shape[0], layer.out_features)
        elif isinstance(layer, (ReLU, Tanh)):
            new = shape
        else:
            raise NotImplementedError(f"estimate: no launch model for layer {type(layer).__name__}")
        out.append((layer, shape, new))
        shape = new
    return out


def num_parameters(model):
    return sum(int(p.data.size) for p in model.parameters())


class Recorder:
    """Collects the launches of one step kind, in order, under the current ``phase`` and ``layer``."""

    def __init__(self, step):
        self.step, self.phase, self.layer, self.launches = step, "", "", []

    def add(self, name, kind, grid, block, flops=0, reads=0, writes=0, shape="", gemm=None, file=None, count=None,
            grid_from=None):
        expression = None
        if file is not None:
            index = "int" if loader.has_index_type(file, name) else None
            expression = loader.name_expression(name, numpy.float32, index)
        if grid is not None:
            grid = tuple(int(g) for g in grid) if isinstance(grid, (tuple, list)) else (int(grid),)
        self.launches.append({"step": self.step, "phase": self.phase, "layer": self.layer, "name": name, "kind": kind,
                              "file": file, "expression": expression, "shape": shape,
                              "gemm": list(gemm) if gemm else None, "grid": grid,
                              "block": None if block is None else (int(block),),
                              "flops": int(flops), "bytes": int(reads + writes), "count": count,
                              "grid_from": grid_from})

    def ours(self, file, name, grid, reads, writes, flops=0, shape="", gemm=None, count=None, grid_from="launcher"):
        """One of our kernels, launched by loader.launch: blocks of loader.BLOCK threads."""
        self.add(name, "ours", grid, loader.BLOCK, flops, reads, writes, shape, gemm, file, count, grid_from)

    def grid_stride(self, file, name, total, reads, writes, flops=0, shape=""):
        """A grid-stride kernel on loader.launch's default grid: grid_for(its count of work items)."""
        self.ours(file, name, loader.grid_for(total), reads, writes, flops, shape or f"{total} items", count=total,
                  grid_from="grid_for")

    def gemm(self, file, name, grid, m, n, k, reads, writes):
        """One of our tiled GEMM kernels (M x N x K) on the grid its launcher computes."""
        self.ours(file, name, grid, reads, writes, 2 * m * n * k, f"{m} x {n} x {k}", (m, n, k))

    def cublas(self, m, n, k, batch=1):
        """cupy.matmul: one cuBLAS SGEMM (a batched one for ``batch`` > 1), tiles of CUBLAS_TILE squared assumed."""
        grid = batch * -(-m // CUBLAS_TILE) * -(-n // CUBLAS_TILE)
        self.add("cupy.matmul", "cublas", grid, None, 2 * batch * m * n * k, F32 * batch * (m * k + k * n),
                 F32 * batch * m * n, (f"{batch} x " if batch > 1 else "") + f"{m} x {n} x {k}", (m, n, k))

    def cupy(self, op, size, reads, writes, reduction=False):
        """A CuPy kernel over ``size`` output elements on Function.linear_launch's grid (None for a reduction)."""
        grid = None if reduction else -(-int(size) // CUPY_BLOCK)
        block = None if reduction else min(CUPY_BLOCK, int(size))
        self.add(op, "cupy", grid, block, 0, reads, writes, f"{size} elements")


def softmax_xent(rec, logits_shape):
    """gpucnn/ops/cuda/loss.py: the one-block softmax cross-entropy kernel (loss, dL/dlogits, counts)."""
    n, classes = logits_shape
    rec.phase, rec.layer = "loss", "SoftmaxCrossEntropy"
    rec.ours("loss.cu", "softmax_xent", 1, F32 * n * classes + I64 * n, F32 * n * classes + F32 + 8, 0,
             f"{n} x {classes}")


def adam_update(rec, num_params):
    """gpucnn/ops/cuda/multi_update.py multi_adam_update: step_scalars, then the update of the flat group."""
    rec.phase, rec.layer = "update", "Adam (multi-tensor)"
    rec.ours("multi_update.cu", "step_scalars", 1, 48, 48, 0, "hyper (6 doubles)")
    rec.grid_stride("multi_update.cu", "multi_adam_update", num_params, F32 * 4 * num_params + 48,
                    F32 * 3 * num_params, 0, f"{num_params} parameters")
