"""The launches of one eager training step, from what the eager CUDA launchers do (gpucnn/ops/cuda).

``model.forward``, ``loss_fn.forward``, ``model.backward(need_input_grad=False)``, ``optimizer.step`` with
Adam on its flat group (gpucnn.commands.bench_steps.gpucnn_step), per layer:

    Conv2D      dilation 1, one group (conv.runs_fused): the fused kernels of gpucnn/ops/cuda/fused.py, as the
                graph launches them: conv_fwd_fused (+ a copy of x, which backward reads); backward: dW and db
                as one GEMM (conv_wgrad_fused, or split-K: conv_wgrad_partial_fused + conv_wgrad_reduce_fused),
                conv_dgrad_fused unless it is the first layer.
                Otherwise: conv_direct (+ a copy of x) when C/groups*kh*kw <= conv.DIRECT_MAX_K, else
                im2col, cuBLAS (O x N*oh*ow x K), transpose01; backward: [im2col after the direct path],
                transpose01, row_sum (twice when a row needs several chunks), cuBLAS for dW, and, unless it
                is the first layer, cuBLAS for the columns' gradient and col2im
    MaxPool2D   max_pool_fwd / max_pool_bwd (int32 argmax)       AvgPool2D  avg_pool_fwd / avg_pool_bwd
    Dense       dense_fwd_fused (or split-K: dense_fwd_partial_fused + dense_fwd_reduce_fused); backward:
                dW and db as one GEMM (dense_wgrad_fused, or split-K), dense_dgrad_fused unless first
    ReLU        cupy.maximum; backward: x > 0, times grad         Tanh  cupy.tanh; backward: three CuPy kernels
    Flatten     a view: nothing

Tiles and split-K: the launchers' own choice (``fused.gemm_tile``, ``fused.weight_grad_plan``) on the modelled
GPU's SM count, as in gpucnn/perf/graph.py.

then softmax_xent after the forward pass and step_scalars + multi_adam_update after the backward pass.
Grids: ``loader.grid_for`` (loader.launch's default grid) and the row-sum chunking of gpucnn/ops/cuda/conv.py,
with its own constants.
"""
import math

from .gemm import CONV_WGRAD, DENSE_FWD, DENSE_WGRAD, gemm, split_k_gemm
from .record import F32, Recorder, adam_update, layer_shapes, num_parameters, softmax_xent
from ..nn.layers import AvgPool2D, Conv2D, Dense, MaxPool2D, ReLU, Tanh

__all__ = ["eager_step", "GRID_Y_LIMIT"]

#: CUDA's limit on gridDim.y (CUDA C++ Programming Guide, "Technical Specifications"), which the row-sum
#: chunking of gpucnn/ops/cuda/conv.py keeps its grid within (held equal to it by tests/commands/test_estimate.py)
GRID_Y_LIMIT = 65535


def _conv():
    from ..ops.cuda import conv  # imports CuPy (no GPU needed), so only when a step is listed
    return conv


def _fused():
    from ..ops.cuda import fused  # imports CuPy (no GPU needed), so only when a step is listed
    return fused


def _conv_runs_fused(layer, shape, out):
    n, c, o, k, x, y, p, cols = _conv_sizes(layer, shape, out)
    return _conv().runs_fused(layer.window, layer.groups, x, o * k, y)


def _dense_runs_fused(shape, layer):
    n, i, o = shape[0], layer.in_features, layer.out_features
    from ..ops.cuda import loader
    return loader.index_type(n * i, o * i, n * o) == "int"


def _row_sums(rec, rows, length):
    """conv.py's row sums: one row_sum launch over (rows, chunks), then again over the partial sums."""
    chunk = max(_conv().ROW_SUM_CHUNK, -(-length // GRID_Y_LIMIT))
    chunks = -(-length // chunk)
    rec.ours("conv.cu", "row_sum", (rows, chunks), F32 * rows * length, F32 * rows * chunks, 0,
             f"{rows} rows x {length}")
    if chunks > 1:
        _row_sums(rec, rows, chunks)


def _conv_sizes(layer, shape, out):
    n, c, h, w = shape
    o, oh, ow = out[1], out[2], out[3]
    win = layer.window
    k = c // layer.groups * win.kh * win.kw
    return n, c, o, k, n * c * h * w, n * o * oh * ow, oh * ow, c * win.kh * win.kw * n * oh * ow


def _conv_forward(rec, layer, shape, out, sm_count):
    n, c, o, k, x, y, p, cols = _conv_sizes(layer, shape, out)
    g = layer.groups
    bias = o if layer.bias is not None else 0
    if _conv_runs_fused(layer, shape, out):
        gemm(rec, "fused_conv.cu", "conv_fwd_fused", o, n * p, k, F32 * (x + o * k + bias), F32 * y, sm_count,
              4 * layer.window.sx)
        rec.cupy("copy", x, F32 * x, F32 * x)  # x.copy(): the backward pass reads it
        return
    if k <= _conv().DIRECT_MAX_K:
        rec.grid_stride("conv.cu", "conv_direct", y, F32 * (x + o * k + bias), F32 * y, 2 * y * k,
                        f"direct {o} x {n * p}, K={k}")
        rec.cupy("copy", x, F32 * x, F32 * x)  # x.copy(): the backward pass rebuilds the columns from it
        return
    rec.grid_stride("conv.cu", "im2col", c * n * p, F32 * x, F32 * cols)
    rec.cublas(o // g, n * p, k, g)
    rec.grid_stride("conv.cu", "transpose01", y, F32 * (y + bias), F32 * y)


def _conv_backward(rec, layer, shape, out, need_input_grad, sm_count):
    n, c, o, k, x, y, p, cols = _conv_sizes(layer, shape, out)
    g = layer.groups
    if _conv_runs_fused(layer, shape, out):
        bias = 1 if layer.bias is not None else 0
        split_k_gemm(rec, CONV_WGRAD, o, k + bias, n * p, F32 * (y + x), F32 * (o * k + o * bias), sm_count,
                 4 * layer.window.sx)
        if need_input_grad:
            win = layer.window
            gemm(rec, "fused_conv.cu", "conv_dgrad_fused", c, x // c, o * win.kh * win.kw, F32 * (y + o * k),
                  F32 * x, sm_count)
            rec.launches[-1]["variant"] = "unit stride" if win.sy == 1 and win.sx == 1 else "strided"
        return
    if k <= _conv().DIRECT_MAX_K:  # the direct forward kept x, not the columns
        rec.grid_stride("conv.cu", "im2col", c * n * p, F32 * x, F32 * cols)
    rec.grid_stride("conv.cu", "transpose01", y, F32 * y, F32 * y)
    if layer.bias is not None:
        _row_sums(rec, o, n * p)
    rec.cublas(o // g, k, n * p, g)
    if need_input_grad:
        rec.cublas(k, n * p, o // g, g)
        rec.grid_stride("conv.cu", "col2im", x, F32 * cols, F32 * x)


def _forward(rec, layer, shape, out, sm_count):
    size = math.prod(out)
    if isinstance(layer, Conv2D):
        _conv_forward(rec, layer, shape, out, sm_count)
    elif isinstance(layer, MaxPool2D):
        rec.grid_stride("pool.cu", "max_pool_fwd", size, F32 * math.prod(shape), 2 * F32 * size)  # y, int32 argmax
    elif isinstance(layer, AvgPool2D):
        rec.grid_stride("pool.cu", "avg_pool_fwd", size, F32 * math.prod(shape), F32 * size)
    elif isinstance(layer, ReLU):
        rec.cupy("cupy.maximum", size, F32 * size, F32 * size)
    elif isinstance(layer, Tanh):
        rec.cupy("cupy.tanh", size, F32 * size, F32 * size)
    elif isinstance(layer, Dense) and _dense_runs_fused(shape, layer):
        n, i, o = shape[0], layer.in_features, layer.out_features
        bias = o if layer.bias is not None else 0
        split_k_gemm(rec, DENSE_FWD, n, o, i, F32 * (n * i + o * i + bias), F32 * size, sm_count)
    elif isinstance(layer, Dense):
        n, i, o = shape[0], layer.in_features, layer.out_features
        rec.cublas(n, o, i)
        if layer.bias is not None:
            rec.cupy("cupy.add", n * o, F32 * (n * o + o), F32 * n * o)  # y += bias, in place


def _backward(rec, layer, shape, out, need_input_grad, sm_count):
    size, size_in = math.prod(out), math.prod(shape)
    if isinstance(layer, Conv2D):
        _conv_backward(rec, layer, shape, out, need_input_grad, sm_count)
    elif isinstance(layer, MaxPool2D):
        rec.grid_stride("pool.cu", "max_pool_bwd", size_in, 2 * F32 * size, F32 * size_in)
    elif isinstance(layer, AvgPool2D):
        rec.grid_stride("pool.cu", "avg_pool_bwd", size_in, F32 * size, F32 * size_in)
    elif isinstance(layer, ReLU):  # grad_y * (x > 0)
        rec.cupy("cupy.greater", size, F32 * size, size)
        rec.cupy("cupy.multiply", size, F32 * size + size, F32 * size)
    elif isinstance(layer, Tanh):  # grad_y * (1 - y * y)
        rec.cupy("cupy.multiply", size, F32 * size, F32 * size)
        rec.cupy("cupy.subtract", size, F32 * size, F32 * size)
        rec.cupy("cupy.multiply", size, 2 * F32 * size, F32 * size)
    elif isinstance(layer, Dense) and _dense_runs_fused(shape, layer):
        n, i, o = shape[0], layer.in_features, layer.out_features
        bias = 1 if layer.bias is not None else 0
        split_k_gemm(rec, DENSE_WGRAD, o, i + bias, n, F32 * (size + n * i), F32 * (o * i + o * bias), sm_count)
        if need_input_grad:
            gemm(rec, "fused_dense.cu", "dense_dgrad_fused", n, i, o, F32 * (size + o * i), F32 * n * i, sm_count)
    elif isinstance(layer, Dense):
        n, i, o = shape[0], layer.in_features, layer.out_features
        if need_input_grad:
            rec.cublas(n, i, o)
        rec.cublas(o, i, n)
        if layer.bias is not None:
            rec.cupy("cupy.add.reduce", o, F32 * n * o, F32 * o, reduction=True)


def eager_step(model, input_shape, sm_count=None):
    """[launch] of one eager training step of the Sequential ``model`` on a batch of ``input_shape``, on a GPU of
    ``sm_count`` SMs (the fused GEMMs' tiles and split-K depend on it; None: the launchers' default count)."""
    sm_count = _fused().SM_COUNT if sm_count is None else sm_count
    rec = Recorder("eager")
    shapes = layer_shapes(model, input_shape)
    rec.phase = "forward"
    for index, (layer, shape, out) in enumerate(shapes):
        rec.layer = f"{index} {type(layer).__name__}"
        _forward(rec, layer, shape, out, sm_count)
    softmax_xent(rec, shapes[-1][2])
    rec.phase = "backward"
    for index in range(len(shapes) - 1, -1, -1):
        layer, shape, out = shapes[index]
        rec.layer = f"{index} {type(layer).__name__}"
        _backward(rec, layer, shape, out, need_input_grad=index > 0, sm_count=sm_count)
    adam_update(rec, num_parameters(model))
    return rec.launches
