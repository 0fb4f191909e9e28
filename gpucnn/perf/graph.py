"""The launches of one replay of the captured training step (``gpucnn.compile_step``), from what it captures.

The stages are the graph's own (``gpucnn.compile.cuda_graph.plan.build_stages``: the one planner's matches),
each launching what gpucnn/compile/cuda_graph/launch.py launches, on the grids it computes (``gemm_tile``,
``gemm_blocks``, ``loader.grid_for``):

    batch       gather_rows_labels (x[order[counter * B + i]] and y, one launch; gpucnn/kernels/step_batch.cu)
    Conv2D+ReLU+MaxPool2D conv_fwd_pool_fused (the pool in the epilogue, windows that do not overlap: M = O, N =
                N*poh*pow*ph*pw, K = C*kh*kw); backward: max_pool_u8_bwd, then the Conv2D's, or for the first
                stage conv_wgrad_pooled_[partial_]fused (dW's GEMM reads the pool's gradient and argmax)
    Conv2D+ReLU conv_fwd_fused (M = O, N = N*oh*ow, K = C*kh*kw); backward: [the ReLU mask, when no pool
                folded it], conv_wgrad_fused (M = O, N = C*kh*kw + 1, K = N*oh*ow), conv_dgrad_fused
                (M = C, N = N*H*W, K = O*kh*kw) unless it is the first stage
    MaxPool2D   max_pool_u8_fwd / max_pool_u8_bwd (uint8 argmax, which holds the ReLU mask of its input)
    Dense+ReLU  dense_fwd_fused (M = N, N = O, K = I; split-K like the weight gradients: dense_fwd_partial_fused
                + dense_fwd_reduce_fused); backward: dense_wgrad_fused (M = O, N = I + 1, K = N),
                dense_dgrad_fused (M = N, N = I, K = O) unless first, the ReLU mask read from y
    ReLU, Tanh, AvgPool2D alone: CuPy elementwise kernels, our pool.cu kernels; Flatten: a view
    BatchNorm2D [+ReLU] bn_stats_partial_fused + the normalising pass; backward: the gradient's partial sums +
                the input-gradient pass (gpucnn/perf/batchnorm.py)
    Add        cupy.add per input after the first; backward: nothing (dL/dy to every input)
    Concatenate cupy.concatenate; backward: a contiguous copy per input
    GlobalAvgPool2D cupy.mean (a reduction); backward: cupy.true_divide, then the broadcast's copy
    a value read by several nodes: cupy.add of the gradients in the backward pass
    loss       softmax_xent                update  a copy into the flat gradient per parameter of the other
                                                    stages (Conv2D and Dense write theirs there), then
                                                    step_scalars + multi_adam_update
    statistics step_end: stats += [loss * B, correct]; counter += 1 (one thread)

Tiles and split-K: every GEMM launch takes the launcher's own tile (``launch.gemm_tile(M, N, K, SMs)``, the
weight gradients ``launch.weight_grad_plan(M, N, K, SMs)``: tile and S, with the modelled GPU's SM count),
recorded as ``tile`` = (TM, TN, TK, RM, RN); S > 1 is two launches, the partial sums (tiles x S blocks) and
their fixed-order reduce.
"""
import math

from ..ops.cuda.gemm_plan import POOL_RUN, pool_covers
from .batchnorm import record_batchnorm_backward, record_batchnorm_forward
from .gemm import CONV_WGRAD, CONV_WGRAD_POOLED, DENSE_FWD, DENSE_WGRAD, gemm, sms, split_k_gemm
from .record import F32, I64, Recorder, adam_update, softmax_xent
from ..nn.layers import (Add, AvgPool2D, BatchNorm2D, Concatenate, Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D,
                         ReLU, Tanh)

__all__ = ["graph_step", "wgrad_split"]


def _fused():
    from ..compile.cuda_graph import launch  # imports CuPy (no GPU needed), so only when a step is listed
    return launch


def wgrad_split(m, n, k, sm_count=None):
    """S, the k-slices of a weight-gradient GEMM M x N x K on ``sm_count`` SMs (None: the launcher's default
    count): the launcher's own choice (``launch.weight_grad_plan``, which the launcher asks with the device's
    SM count)."""
    return int(_fused().weight_grad_plan(m, n, k, sms(sm_count))[1])


def _batch(rec, batch, sample):
    """step_batch.gather_batch: the batch's rows and labels gathered by the device's counter."""
    rec.phase, rec.layer = "batch", "gather"
    rec.grid_stride("step_batch.cu", "gather_rows_labels", batch * sample + batch,
                    I64 * (2 * batch + 1) + F32 * batch * sample, F32 * batch * sample + I64 * batch)


def _forward(rec, stage, shape, out, sm_count):
    layer, size = stage.layer, math.prod(out)
    if isinstance(layer, Conv2D):
        n, c, h, w = shape
        o, kh, kw = out[1], layer.window.kh, layer.window.kw
        m, cols, k = o, n * out[2] * out[3], c * kh * kw
        bias = o if layer.bias is not None else 0
        reads = F32 * (n * c * h * w + o * k + bias)
        if getattr(stage, "pool", None) is not None:  # the pool in the epilogue: pooled y and its uint8 argmax
            q = stage.pool.window.kh * stage.pool.window.kw
            gemm(rec, "fused_conv.cu", "conv_fwd_pool_fused", m, size // o * q, k, reads, (F32 + 1) * size,
                 sm_count, 4 * layer.window.sx, run=POOL_RUN)
            return
        gemm(rec, "fused_conv.cu", "conv_fwd_fused", m, cols, k, reads, F32 * size, sm_count, 4 * layer.window.sx)
    elif isinstance(layer, Dense):
        n, i, o = shape[0], layer.in_features, layer.out_features
        bias = o if layer.bias is not None else 0
        split_k_gemm(rec, DENSE_FWD, n, o, i, F32 * (n * i + o * i + bias), F32 * size, sm_count)
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
    if getattr(stage, "pool", None) is not None:  # Conv2D [+ ReLU] + MaxPool2D: the pool's backward first
        n, c, h, w = shape
        conv_out = (n, layer.out_channels) + tuple(layer.window.output_size(h, w))
        if not need_input_grad and pool_covers(stage.pool.window, *conv_out[2:]):  # inside dW's GEMM
            o, k = layer.out_channels, c * layer.window.kh * layer.window.kw
            bias = 1 if layer.bias is not None else 0
            split_k_gemm(rec, CONV_WGRAD_POOLED, o, k + bias, math.prod(conv_out) // o,
                         (F32 + 1) * size + F32 * size_in, F32 * (o * k + o * bias), sm_count, 4 * layer.window.sx)
            return False
        rec.grid_stride("fused_pool.cu", "max_pool_u8_bwd", math.prod(conv_out), (F32 + 1) * size,
                        F32 * math.prod(conv_out))
        size, out, masked = math.prod(conv_out), conv_out, True
    if isinstance(layer, Conv2D):
        if stage.relu and not masked:  # activation.relu_backward: grad * (y > 0)
            rec.cupy("cupy.greater", size, F32 * size, size)
            rec.cupy("cupy.multiply", size, F32 * size + size, F32 * size)
        n, c, h, w = shape
        o, kh, kw = out[1], layer.window.kh, layer.window.kw
        k, cols = c * kh * kw, n * out[2] * out[3]
        bias = 1 if layer.bias is not None else 0
        split_k_gemm(rec, CONV_WGRAD, o, k + bias, cols, F32 * (size + size_in), F32 * (o * k + o * bias), sm_count,
               4 * layer.window.sx)
        if need_input_grad:
            gemm(rec, "fused_conv.cu", "conv_dgrad_fused", c, n * h * w, o * kh * kw, F32 * (size + o * k),
                  F32 * size_in, sm_count)
            unit = layer.window.sy == 1 and layer.window.sx == 1  # the kernel's instantiation without division
            rec.launches[-1]["variant"] = "unit stride" if unit else "strided"
        return False
    if isinstance(layer, Dense):
        n, i, o = shape[0], layer.in_features, layer.out_features
        mask = size if stage.relu and not masked else 0  # the ReLU mask read from the layer's output
        bias = 1 if layer.bias is not None else 0
        split_k_gemm(rec, DENSE_WGRAD, o, i + bias, n, F32 * (size + mask + n * i), F32 * (o * i + o * bias), sm_count)
        if need_input_grad:
            gemm(rec, "fused_dense.cu", "dense_dgrad_fused", n, i, o, F32 * (size + mask + o * i), F32 * n * i,
                  sm_count)
        return False
    if isinstance(layer, MaxPool2D):
        # grad and argmax only: the ReLU mask, when folded, is in the argmax (255), not read from x
        rec.grid_stride("fused_pool.cu", "max_pool_u8_bwd", size_in, (F32 + 1) * size, F32 * size_in)
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


def _update(rec, model, stages):
    """MultiTensorUpdate: a copy into the flat gradient buffer for every parameter whose stage does not write its
    gradient there itself (the Conv2D and Dense stages do: ``grad_outs``), then the multi-tensor Adam."""
    rec.phase, rec.layer = "update", "MultiTensorUpdate"
    params = model.parameters()
    in_place = {id(p) for stage in stages if getattr(stage, "takes_grad_outs", False) for p in stage.params}
    for p in params:
        if id(p) not in in_place:
            size = int(p.data.size)
            rec.cupy("assignment into a device array", size, F32 * size, F32 * size)
    adam_update(rec, sum(int(p.data.size) for p in params))


def _statistics(rec):
    """step_batch.step_end: stats += [loss * B, correct]; counter += 1, one thread."""
    rec.phase, rec.layer = "statistics", "stats"
    rec.ours("step_batch.cu", "step_end", 1, F32 + 4 + 16 + I64, 16 + I64, 0, "2 doubles, the counter")


def shape_after(layer, shapes):
    """The output shape of a graph stage's ``layer`` from its inputs' ``shapes`` (batch first)."""
    shape = tuple(shapes[0])
    if isinstance(layer, Conv2D):
        return (shape[0], layer.out_channels) + tuple(layer.window.output_size(shape[2], shape[3]))
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        return shape[:2] + tuple(layer.window.output_size(shape[2], shape[3]))
    if isinstance(layer, Flatten):
        return (shape[0], math.prod(shape[1:]))
    if isinstance(layer, Dense):
        return (shape[0], layer.out_features)
    if isinstance(layer, GlobalAvgPool2D):
        return shape[:2]
    if isinstance(layer, Concatenate):
        axis = layer.axis % len(shape)
        return shape[:axis] + (sum(s[axis] for s in shapes),) + shape[axis + 1:]
    return shape  # ReLU, Tanh, BatchNorm2D, Add


def stage_shape(stage, shapes):
    """The output shape of a graph stage: its layer's, pooled when the stage holds a MaxPool2D too (``pool``)."""
    out = shape_after(stage.layer, shapes)
    pool = getattr(stage, "pool", None)
    return out if pool is None else shape_after(pool, [out])


def _join_forward(rec, stage, shapes, out, sm_count):
    """The forward launches of the stages of join_stages.py; False for any other stage."""
    layer, size = stage.layer, math.prod(out)
    if isinstance(layer, BatchNorm2D):
        record_batchnorm_forward(rec, None, shapes[0], relu=stage.relu, sm_count=sm_count)
    elif isinstance(layer, Add):
        for _ in shapes[1:]:
            rec.cupy("cupy.add", size, 2 * F32 * size, F32 * size)
    elif isinstance(layer, Concatenate):
        rec.cupy("cupy.concatenate", size, F32 * size, F32 * size)
    elif isinstance(layer, GlobalAvgPool2D):
        rec.cupy("cupy.mean", size, F32 * math.prod(shapes[0]), F32 * size, reduction=True)
    else:
        return False
    return True


def _join_backward(rec, stage, shapes, out, need_input_grad, sm_count):
    """The backward launches of the stages of join_stages.py; False for any other stage."""
    layer, size = stage.layer, math.prod(out)
    if isinstance(layer, BatchNorm2D):
        record_batchnorm_backward(rec, None, shapes[0], relu=stage.relu, need_input_grad=need_input_grad,
                                  sm_count=sm_count)
    elif isinstance(layer, Concatenate):
        for shape in shapes:
            rec.cupy("copy", math.prod(shape), F32 * math.prod(shape), F32 * math.prod(shape))
    elif isinstance(layer, GlobalAvgPool2D):
        rec.cupy("cupy.true_divide", size, F32 * size, F32 * size)
        rec.cupy("astype (copy)", math.prod(shapes[0]), F32 * size, F32 * math.prod(shapes[0]))
    elif not isinstance(layer, Add):
        return False
    return True


def _label(node):
    return node.label[len("layer "):].strip("'") + " " + node.stage.name


def graph_step(model, input_shape, sm_count=None):
    """[launch] of one replay of the captured step of ``model`` (a Sequential or a Model: its program,
    gpucnn/compile/cuda_graph/plan.py) on a batch of ``input_shape``, on a GPU of ``sm_count`` SMs (the split-K
    choice of the weight gradients depends on it; None: the launcher's default count)."""
    from ..compile.cuda_graph.plan import build_program

    rec = Recorder("graph")
    program = build_program(model)
    shapes = {program.INPUT: tuple(input_shape)}
    for node in program.nodes:
        shapes[node.output] = stage_shape(node.stage, [shapes[k] for k in node.inputs])
    _batch(rec, input_shape[0], math.prod(input_shape[1:]))
    rec.phase = "forward"
    for node in program.nodes:
        rec.layer = _label(node)
        ins, out = [shapes[k] for k in node.inputs], shapes[node.output]
        if not _join_forward(rec, node.stage, ins, out, sm_count):
            _forward(rec, node.stage, ins[0], out, sm_count)
    softmax_xent(rec, shapes[program.output])
    rec.phase = "backward"
    masked, reached = {program.output: False}, {program.output}
    for node in reversed(program.nodes):
        rec.layer = _label(node)
        ins, out = [shapes[k] for k in node.inputs], shapes[node.output]
        need = any(k != program.INPUT for k in node.inputs)
        handed = False
        if not _join_backward(rec, node.stage, ins, out, need, sm_count):
            handed = _backward(rec, node.stage, ins[0], out, need_input_grad=need, masked=masked.get(node.output),
                               sm_count=sm_count)
        if not need:
            continue
        for key, shape in zip(node.inputs, ins):
            if key == program.INPUT:
                continue
            if key in reached:  # Program.backward sums the gradients of a value read twice
                size = math.prod(shape)
                rec.cupy("cupy.add", size, 2 * F32 * size, F32 * size)
            reached.add(key)
            masked[key] = handed
    _update(rec, model, program.stages)
    _statistics(rec)
    return rec.launches
