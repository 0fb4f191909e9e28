"""The launches of one replay of the captured training step (``gpucnn.compile_step``), from what it captures.

The stages are the graph's own (``gpucnn.compile.cuda_graph.plan.build_stages``: the one planner's matches),
each launching what gpucnn/compile/cuda_graph/launch.py launches, on the grids it computes (``gemm_tile``,
``gemm_blocks``, ``loader.grid_for``):

    batch       positions = lanes + counter * B; idx = order[positions]; x[idx], y[idx]; counter += 1 (CuPy)
    Conv2D+ReLU conv_fwd_fused (M = O, N = N*oh*ow, K = C*kh*kw); backward: [the ReLU mask, when no pool
                folded it], conv_wgrad_fused (M = O, N = C*kh*kw + 1, K = N*oh*ow), conv_dgrad_fused
                (M = C, N = N*H*W, K = O*kh*kw) unless it is the first stage
    MaxPool2D   max_pool_u8_fwd / max_pool_u8_bwd (uint8 argmax; times the ReLU mask of its input)
    Dense+ReLU  dense_fwd_fused (M = N, N = O, K = I; split-K like the weight gradients: dense_fwd_partial_fused
                + dense_fwd_reduce_fused); backward: dense_wgrad_fused (M = O, N = I + 1, K = N),
                dense_dgrad_fused (M = N, N = I, K = O) unless first, the ReLU mask read from y
    ReLU, Tanh, AvgPool2D alone: CuPy elementwise kernels, our pool.cu kernels; Flatten: a view
    loss       softmax_xent                update  one copy per parameter into the flat gradient, then
                                                    step_scalars + multi_adam_update
    statistics stats[0:1] += loss * B; stats[1:2] += correct (CuPy)

Tiles and split-K: every GEMM launch takes the launcher's own tile (``launch.gemm_tile(M, N, K, SMs)``, the
weight gradients ``launch.weight_grad_plan(M, N, K, SMs)``: tile and S, with the modelled GPU's SM count),
recorded as ``tile`` = (TM, TN, TK, RM, RN); S > 1 is two launches, the partial sums (tiles x S blocks) and
their fixed-order reduce.
"""
import math

from .record import F32, I64, Recorder, adam_update, layer_shapes, softmax_xent
from ..nn.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Tanh

__all__ = ["graph_step", "wgrad_split"]


def _fused():
    from ..compile.cuda_graph import launch  # imports CuPy (no GPU needed), so only when a step is listed
    return launch


def _sms(sm_count):
    return _fused().SM_COUNT if sm_count is None else sm_count


def wgrad_split(m, n, k, sm_count=None):
    """S, the k-slices of a weight-gradient GEMM M x N x K on ``sm_count`` SMs (None: the launcher's default
    count): the launcher's own choice (``launch.weight_grad_plan``, which the launcher asks with the device's
    SM count)."""
    return int(_fused().weight_grad_plan(m, n, k, _sms(sm_count))[1])


def _tiled(rec, file, name, tile, blocks, m, n, k, reads, writes, sectors=4):
    """rec.gemm on ``blocks`` of tile ``tile`` (launch.GEMM_TILES), the tile recorded with the launch, and the
    32-byte sectors of one warp's global load: every operand is loaded along its contiguous axis
    (fused_common.cuh: the load map), 32 threads x 4 bytes in 4 sectors when aligned; the im2col reads of x
    at a column stride sx in 4 x sx."""
    rec.gemm(file, name, blocks, m, n, k, reads, writes)
    rec.launches[-1].update(tile=list(_fused().GEMM_TILES[tile]), sectors_per_request=sectors)


def _gemm(rec, file, name, m, n, k, reads, writes, sm_count, sectors=4):
    """launch.py _launch_gemm: the launcher's tile (``gemm_tile`` on the GPU's SMs) and its grid."""
    fused = _fused()
    tile = fused.gemm_tile(m, n, k, _sms(sm_count))
    _tiled(rec, file, name, tile, fused.gemm_blocks(m, n, tile), m, n, k, reads, writes, sectors)


def _wgrad(rec, kernels, m, n, k, reads, writes, sm_count, sectors=4):
    """launch.py _launch_weight_grad: (tile, S) = weight_grad_plan; S = 1, the single-pass kernel on
    gemm_blocks(M, N, tile); else the partial pass on gemm_blocks(M, N, tile) * S blocks into an (S, M, N)
    buffer, then the reduce (grid-stride over M x N)."""
    file, single, partial, reduce = kernels
    tile, slices = _fused().weight_grad_plan(m, n, k, _sms(sm_count))
    tiles = _fused().gemm_blocks(m, n, tile)
    if slices == 1:
        _tiled(rec, file, single, tile, tiles, m, n, k, reads, writes, sectors)
        rec.launches[-1]["slices"] = 1
        return
    _tiled(rec, file, partial, tile, tiles * slices, m, n, k, reads, F32 * slices * m * n, sectors)
    rec.launches[-1].update(shape=rec.launches[-1]["shape"] + f" / S={slices}", slices=slices)
    rec.grid_stride(file, reduce, m * n, F32 * slices * m * n, writes, 0, f"{slices} x {m} x {n} partials")
    rec.launches[-1]["slices"] = slices


_CONV_WGRAD = ("fused_conv.cu", "conv_wgrad_fused", "conv_wgrad_partial_fused", "conv_wgrad_reduce_fused")
_DENSE_FWD = ("fused_dense.cu", "dense_fwd_fused", "dense_fwd_partial_fused", "dense_fwd_reduce_fused")
_DENSE_WGRAD = ("fused_dense.cu", "dense_wgrad_fused", "dense_wgrad_partial_fused", "dense_wgrad_reduce_fused")


def _batch(rec, batch, sample):
    rec.phase, rec.layer = "batch", "gather"
    rec.cupy("cupy.multiply", 1, I64, I64)  # counter * B
    rec.cupy("cupy.add", batch, I64 * (batch + 1), I64 * batch)  # lanes + ...
    rec.cupy("advanced indexing (take)", batch, 2 * I64 * batch, I64 * batch)  # order[positions]
    rec.cupy("advanced indexing (take)", batch * sample, I64 * batch + F32 * batch * sample, F32 * batch * sample)
    rec.cupy("advanced indexing (take)", batch, 2 * I64 * batch, I64 * batch)  # y[idx]
    rec.cupy("cupy.add", 1, I64, I64)  # counter += 1


def _forward(rec, stage, shape, out, sm_count):
    layer, size = stage.layer, math.prod(out)
    if isinstance(layer, Conv2D):
        n, c, h, w = shape
        o, kh, kw = out[1], layer.window.kh, layer.window.kw
        m, cols, k = o, n * out[2] * out[3], c * kh * kw
        bias = o if layer.bias is not None else 0
        _gemm(rec, "fused_conv.cu", "conv_fwd_fused", m, cols, k, F32 * (n * c * h * w + o * k + bias), F32 * size,
              sm_count, 4 * layer.window.sx)
    elif isinstance(layer, Dense):
        n, i, o = shape[0], layer.in_features, layer.out_features
        bias = o if layer.bias is not None else 0
        _wgrad(rec, _DENSE_FWD, n, o, i, F32 * (n * i + o * i + bias), F32 * size, sm_count)
    elif isinstance(layer, MaxPool2D):
        rec.grid_stride("fused_pool.cu", "max_pool_u8_fwd", size, F32 * math.prod(shape), (F32 + 1) * size)
    elif isinstance(layer, AvgPool2D):
        rec.grid_stride("pool.cu", "avg_pool_fwd", size, F32 * math.prod(shape), F32 * size)
    elif isinstance(layer, ReLU):
        rec.cupy("cupy.maximum", size, F32 * size, F32 * size)
    elif isinstance(layer, Tanh):
        rec.cupy("cupy.tanh", size, F32 * size, F32 * size)


def _backward(rec, stage, shape, out, need_input_grad, masked, sm_count):
    """The stage's backward launches; returns whether the gradient it hands down is already ReLU-masked."""
    layer, size, size_in = stage.layer, math.prod(out), math.prod(shape)
    if isinstance(layer, Conv2D):
        if stage.relu and not masked:  # activation.relu_backward: grad * (y > 0)
            rec.cupy("cupy.greater", size, F32 * size, size)
            rec.cupy("cupy.multiply", size, F32 * size + size, F32 * size)
        n, c, h, w = shape
        o, kh, kw = out[1], layer.window.kh, layer.window.kw
        k, cols = c * kh * kw, n * out[2] * out[3]
        bias = 1 if layer.bias is not None else 0
        _wgrad(rec, _CONV_WGRAD, o, k + bias, cols, F32 * (size + size_in), F32 * (o * k + o * bias), sm_count,
               4 * layer.window.sx)
        if need_input_grad:
            _gemm(rec, "fused_conv.cu", "conv_dgrad_fused", c, n * h * w, o * kh * kw, F32 * (size + o * k),
                  F32 * size_in, sm_count)
            unit = layer.window.sy == 1 and layer.window.sx == 1  # the kernel's instantiation without division
            rec.launches[-1]["variant"] = "unit stride" if unit else "strided"
        return False
    if isinstance(layer, Dense):
        n, i, o = shape[0], layer.in_features, layer.out_features
        mask = size if stage.relu and not masked else 0  # the ReLU mask read from the layer's output
        bias = 1 if layer.bias is not None else 0
        _wgrad(rec, _DENSE_WGRAD, o, i + bias, n, F32 * (size + mask + n * i), F32 * (o * i + o * bias), sm_count)
        if need_input_grad:
            _gemm(rec, "fused_dense.cu", "dense_dgrad_fused", n, i, o, F32 * (size + mask + o * i), F32 * n * i,
                  sm_count)
        return False
    if isinstance(layer, MaxPool2D):
        reads = (F32 + 1) * size + (F32 * size_in if stage.fold_relu else 0)  # grad, argmax, x for the mask
        rec.grid_stride("fused_pool.cu", "max_pool_u8_bwd", size_in, reads, F32 * size_in)
        return stage.fold_relu
    if isinstance(layer, AvgPool2D):
        rec.grid_stride("pool.cu", "avg_pool_bwd", size_in, F32 * size, F32 * size_in)
    elif isinstance(layer, ReLU):
        rec.cupy("cupy.greater", size, F32 * size, size)
        rec.cupy("cupy.multiply", size, F32 * size + size, F32 * size)
    elif isinstance(layer, Tanh):
        rec.cupy("cupy.multiply", size, F32 * size, F32 * size)
        rec.cupy("cupy.subtract", size, F32 * size, F32 * size)
        rec.cupy("cupy.multiply", size, 2 * F32 * size, F32 * size)
    elif not isinstance(layer, Flatten):
        raise NotImplementedError(f"estimate: no graph launch model for {stage.name}")
    return False


def _update(rec, model):
    rec.phase, rec.layer = "update", "MultiTensorUpdate"
    params = model.parameters()
    for p in params:  # the step's gradient copied into its view of the flat gradient buffer
        size = int(p.data.size)
        rec.cupy("assignment into a device array", size, F32 * size, F32 * size)
    adam_update(rec, sum(int(p.data.size) for p in params))


def _statistics(rec):
    rec.phase, rec.layer = "statistics", "stats"
    rec.cupy("cupy.multiply", 1, F32, F32)  # loss * B
    rec.cupy("cupy.add", 1, 16, 8)  # stats[0:1] += ...
    rec.cupy("assignment into a device array", 1, 8, 8)
    rec.cupy("cupy.add", 1, 12, 8)  # stats[1:2] += correct
    rec.cupy("assignment into a device array", 1, 8, 8)


def graph_step(model, input_shape, sm_count=None):
    """[launch] of one replay of the captured step of the Sequential ``model`` on a batch of ``input_shape``, on a
    GPU of ``sm_count`` SMs (the split-K choice of the weight gradients depends on it; None: the launcher's
    default count)."""
    from ..compile.cuda_graph.plan import build_stages

    rec = Recorder("graph")
    shapes = {id(layer): (shape, out) for layer, shape, out in layer_shapes(model, input_shape)}
    stages = build_stages(model)
    batch = input_shape[0]
    _batch(rec, batch, math.prod(input_shape[1:]))
    rec.phase = "forward"
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    for stage in stages:
        rec.layer = f"{index[id(stage.layer)]} {stage.name}"
        _forward(rec, stage, *shapes[id(stage.layer)], sm_count)
    last = model.layers[-1]
    softmax_xent(rec, shapes[id(last)][1])
    rec.phase, masked = "backward", False
    for i in range(len(stages) - 1, -1, -1):
        stage = stages[i]
        rec.layer = f"{index[id(stage.layer)]} {stage.name}"
        masked = _backward(rec, stage, *shapes[id(stage.layer)], need_input_grad=i > 0, masked=masked,
                           sm_count=sm_count)
    _update(rec, model)
    _statistics(rec)
    return rec.launches
