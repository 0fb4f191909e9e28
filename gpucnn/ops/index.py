"""The op index's data: every op's implementations on every path (gpucnn.ops's docstring is its text).

``OP_INDEX`` maps an op to its one-line formula and, per field of ``FIELDS``, where each path implements
it; ``index_text()`` renders it as the text in ``gpucnn/ops/__init__.py``'s docstring, which
tests/ops/test_op_index.py holds equal to it. Add an op here and paste ``index_text()`` there.
"""
import textwrap

__all__ = ["OP_INDEX", "FIELDS", "index_text"]

#: (key in an OP_INDEX entry, its label in the text)
FIELDS = (("reference", "reference"), ("cuda_launcher", "cuda launcher"), ("kernel", "kernel"),
          ("cpu_fast_stage", "cpu fast stage"), ("graph_stage", "graph stage"),
          ("graph_launcher", "graph launcher"), ("graph_kernel", "graph kernel"), ("twin", "fused twin"),
          ("note", "note"))

_K = "gpucnn/kernels/"
_CONV, _POOL, _CPU = "gpucnn.ops.conv.", "gpucnn.ops.pool.", "gpucnn.compile.cpu."
# the fused launchers (gpucnn.compile.cuda_graph.launch is the same module under its old name)
_PLAN, _LAUNCH, _TWIN = "gpucnn.compile.cuda_graph.chain_stages.", "gpucnn.ops.cuda.fused.", \
    "gpucnn.compile.cuda_graph.reference."

_JOIN, _BN = "gpucnn.compile.cuda_graph.join_stages.", "gpucnn.compile.cuda_graph.launch_batchnorm."

#: Every op: a one-line formula ("what") and, per field of FIELDS, a list of names (Python objects as
#: dotted paths, kernels as "file:function"), an empty list where the path lacks the op ("none"), or text.
OP_INDEX = {
    "conv2d_forward": {
        "what": "y = W @ im2col(x) + b",
        "reference": [_CONV + "conv2d_forward", _CONV + "im2col"],
        "cuda_launcher": ["gpucnn.ops.cuda.conv.conv2d_forward", _LAUNCH + "conv2d_forward"],
        "kernel": [_K + "conv.cu:im2col", _K + "conv_body.cuh:im2col_body", _K + "conv.cu:conv_direct",
                   _K + "conv_body.cuh:conv_direct_body", _K + "conv.cu:transpose01",
                   _K + "conv_body.cuh:transpose01_body", _K + "fused_conv.cu:conv_fwd_fused"],
        "cpu_fast_stage": [_CPU + "stages.ConvStage.forward", _CPU + "chwn.im2col"],
        "graph_stage": [_PLAN + "_ConvStage.forward"],
        "graph_launcher": [_LAUNCH + "conv2d_forward"],
        "graph_kernel": [_K + "fused_conv.cu:conv_fwd_fused"],
        "twin": [_TWIN + "conv2d_forward"],
        "note": "the eager CUDA path runs the graph's fused kernel for dilation 1 and one group "
                "(gpucnn.ops.cuda.conv.runs_fused); otherwise im2col + cuBLAS (cupy.matmul), conv_direct when "
                "C/groups*kh*kw <= DIRECT_MAX_K. The fast paths take no dilation and one group.",
    },
    "conv2d_weight_grad": {
        "what": "dW = dY @ im2col(x).T, db = dY summed",
        "reference": [_CONV + "conv2d_backward"],
        "cuda_launcher": ["gpucnn.ops.cuda.conv.conv2d_backward", _LAUNCH + "conv2d_weight_grad"],
        "kernel": [_K + "conv.cu:transpose01", _K + "conv.cu:row_sum", _K + "conv_body.cuh:row_sum_partial",
                   _K + "fused_conv.cu:conv_wgrad_fused", _K + "fused_conv.cu:conv_wgrad_partial_fused",
                   _K + "fused_conv.cu:conv_wgrad_reduce_fused"],
        "cpu_fast_stage": [_CPU + "stages.ConvStage.backward"],
        "graph_stage": [_PLAN + "_ConvStage.backward", _PLAN + "_ConvPoolStage.backward"],
        "graph_launcher": [_LAUNCH + "conv2d_weight_grad", _LAUNCH + "conv2d_weight_grad_pooled"],
        "graph_kernel": [_K + "fused_conv.cu:conv_wgrad_fused", _K + "fused_conv.cu:conv_wgrad_partial_fused",
                         _K + "fused_conv.cu:conv_wgrad_reduce_fused", _K + "fused_conv.cu:conv_wgrad_pooled_fused",
                         _K + "fused_conv.cu:conv_wgrad_pooled_partial_fused"],
        "twin": [_TWIN + "conv2d_weight_grad", _TWIN + "conv2d_weight_grad_pooled"],
        "note": "dW and db are one fused GEMM, split over k (partial sums, then their fixed-order reduce) where "
                "its tiles alone leave SMs idle, in the graph and on the eager CUDA path where the forward ran "
                "fused; otherwise a cuBLAS GEMM and row_sum.",
    },
    "conv2d_input_grad": {
        "what": "dX = col2im(W.T @ dY) = full convolution of dY with the kernel rotated by 180 degrees",
        "reference": [_CONV + "conv2d_backward", _CONV + "col2im", _CONV + "conv2d_input_grad"],
        "cuda_launcher": ["gpucnn.ops.cuda.conv.conv2d_backward", _LAUNCH + "conv2d_data_grad"],
        "kernel": [_K + "conv.cu:col2im", _K + "conv_body.cuh:col2im_body", _K + "fused_conv.cu:conv_dgrad_fused"],
        "cpu_fast_stage": [_CPU + "stages.ConvStage.backward", _CPU + "chwn.col2im", _CPU + "chwn.col2im_same"],
        "graph_stage": [_PLAN + "_ConvStage.backward"],
        "graph_launcher": [_LAUNCH + "conv2d_data_grad"],
        "graph_kernel": [_K + "fused_conv.cu:conv_dgrad_fused"],
        "twin": [_TWIN + "conv2d_data_grad"],
        "note": "conv2d_input_grad is the tutorial's formula, beside col2im; the tests hold them equal.",
    },
    "max_pool2d": {
        "what": "y = max over each window, argmax = i*kw + j of the winner (convention: gpucnn/ops/pool.py)",
        "reference": [_POOL + "max_pool2d_forward", _POOL + "max_pool2d_backward"],
        "cuda_launcher": ["gpucnn.ops.cuda.pool.max_pool2d_forward", "gpucnn.ops.cuda.pool.max_pool2d_backward"],
        "kernel": [_K + "pool.cu:max_pool_fwd", _K + "pool_body.cuh:max_pool_fwd_body", _K + "pool.cu:max_pool_bwd",
                   _K + "pool_body.cuh:max_pool_bwd_body"],
        "cpu_fast_stage": [_CPU + "stages.PoolStage", _CPU + "stages.ConvStage", _CPU + "chwn.max_pool_forward",
                           _CPU + "chwn.max_pool_backward"],
        "graph_stage": [_PLAN + "_MaxPoolStage", _PLAN + "_ConvPoolStage"],
        "graph_launcher": [_LAUNCH + "max_pool2d_forward", _LAUNCH + "max_pool2d_backward",
                           _LAUNCH + "conv2d_pool_forward"],
        "graph_kernel": [_K + "fused_pool.cu:max_pool_u8_fwd", _K + "fused_pool_body.cuh:max_pool_u8_fwd_body",
                         _K + "fused_pool.cu:max_pool_u8_bwd", _K + "fused_pool_body.cuh:max_pool_u8_bwd_body",
                         _K + "fused_conv.cu:conv_fwd_pool_fused"],
        "twin": [_TWIN + "max_pool2d_forward", _TWIN + "max_pool2d_backward", _TWIN + "conv2d_pool_forward"],
        "note": "ConvStage folds an unpadded max pool after Conv2D [+ ReLU]; four argmax encodings, one "
                "convention (gpucnn/ops/pool.py).",
    },
    "avg_pool2d": {
        "what": "y = window sum / divisor (count_include_pad or real elements; PyTorch's rule)",
        "reference": [_POOL + "avg_pool2d_forward", _POOL + "avg_pool2d_backward"],
        "cuda_launcher": ["gpucnn.ops.cuda.pool.avg_pool2d_forward", "gpucnn.ops.cuda.pool.avg_pool2d_backward"],
        "kernel": [_K + "pool.cu:avg_pool_fwd", _K + "pool_body.cuh:avg_pool_fwd_body", _K + "pool.cu:avg_pool_bwd",
                   _K + "pool_body.cuh:avg_pool_bwd_body"],
        "cpu_fast_stage": [_CPU + "stages.PoolStage", _CPU + "chwn.avg_pool_forward", _CPU + "chwn.avg_pool_backward"],
        "graph_stage": [_PLAN + "_ElementwiseStage"],
        "graph_launcher": ["gpucnn.ops.cuda.pool.avg_pool2d_forward", "gpucnn.ops.cuda.pool.avg_pool2d_backward"],
        "graph_kernel": [_K + "pool.cu:avg_pool_fwd", _K + "pool.cu:avg_pool_bwd"],
        "twin": [],
        "note": "the graph captures the eager op (reached through gpucnn.ops.pool): no fused kernel.",
    },
    "linear": {
        "what": "y = x @ W.T + b; dx = dY @ W, dW = dY.T @ x, db = dY summed",
        "reference": ["gpucnn.ops.linear.linear_forward", "gpucnn.ops.linear.linear_backward",
                      "gpucnn.ops.linear.grouped_matmul"],
        "cuda_launcher": ["gpucnn.ops.cuda.linear.linear_forward", "gpucnn.ops.cuda.linear.linear_backward",
                          _LAUNCH + "linear_forward", _LAUNCH + "linear_data_grad", _LAUNCH + "linear_weight_grad"],
        "kernel": [_K + "fused_dense.cu:dense_fwd_fused", _K + "fused_dense.cu:dense_fwd_partial_fused",
                   _K + "fused_dense.cu:dense_fwd_reduce_fused", _K + "fused_dense.cu:dense_dgrad_fused",
                   _K + "fused_dense.cu:dense_wgrad_fused", _K + "fused_dense.cu:dense_wgrad_partial_fused",
                   _K + "fused_dense.cu:dense_wgrad_reduce_fused"],
        "cpu_fast_stage": [_CPU + "stages.DenseStage"],
        "graph_stage": [_PLAN + "_DenseStage"],
        "graph_launcher": [_LAUNCH + "linear_forward", _LAUNCH + "linear_data_grad", _LAUNCH + "linear_weight_grad"],
        "graph_kernel": [_K + "fused_dense.cu:dense_fwd_fused", _K + "fused_dense.cu:dense_fwd_partial_fused",
                         _K + "fused_dense.cu:dense_fwd_reduce_fused", _K + "fused_dense.cu:dense_dgrad_fused",
                         _K + "fused_dense.cu:dense_wgrad_fused", _K + "fused_dense.cu:dense_wgrad_partial_fused",
                         _K + "fused_dense.cu:dense_wgrad_reduce_fused"],
        "twin": [_TWIN + "linear_forward", _TWIN + "linear_data_grad", _TWIN + "linear_weight_grad"],
        "note": "on CuPy arrays the graph's fused GEMMs run (gpucnn.ops.cuda.linear), cupy.matmul (cuBLAS) "
                "only for mixed dtypes or tensors past 32-bit indices.",
    },
    "activations": {
        "what": "relu, leaky_relu, sigmoid, tanh and their backward",
        "reference": ["gpucnn.ops.activation." + name + suffix for name in ("relu", "leaky_relu", "sigmoid", "tanh")
                      for suffix in ("", "_backward")],
        "cuda_launcher": [],
        "kernel": [],
        "cpu_fast_stage": [_CPU + "stages.ActivationStage", _CPU + "stages.ConvStage"],
        "graph_stage": [_PLAN + "_ElementwiseStage", _PLAN + "_ConvStage", _PLAN + "_DenseStage"],
        "graph_launcher": [],
        "graph_kernel": [],
        "twin": [],
        "note": "on CuPy arrays the reference itself runs (CuPy's elementwise kernels). A ReLU after Conv2D or "
                "Dense is folded into the fused kernels' epilogue and mask (relu=True); the graph takes ReLU "
                "and Tanh alone, and refuses LeakyReLU and Sigmoid.",
    },
    "batch_norm": {
        "what": "y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel",
        "reference": ["gpucnn.ops.batchnorm.batch_norm_forward", "gpucnn.ops.batchnorm.batch_norm_backward"],
        "cuda_launcher": [], "kernel": [], "cpu_fast_stage": [_CPU + "batchnorm_stage.BatchNormStage"],
        "graph_stage": [_JOIN + "BatchNormStage"],
        "graph_launcher": [_BN + "batch_norm_train_forward", _BN + "batch_norm_train_backward"],
        "graph_kernel": [_K + "fused_batchnorm.cu:" + name for name in (
            "bn_stats_partial_fused", "bn_forward_apply_fused", "bn_grad_partial_fused", "bn_backward_apply_fused")],
        "twin": ["gpucnn.compile.cuda_graph.reference_batchnorm.batch_norm_train_forward",
                 "gpucnn.compile.cuda_graph.reference_batchnorm.batch_norm_train_backward"],
        "note": "on CuPy arrays the reference itself runs eagerly. The CPU fast path runs BatchNorm2D in its "
                "segment, in the (C, H, W, N) layout, the batch statistics combined across chunks in training; "
                "the graph runs it in training mode with the ReLU after it fused (per-channel reductions split "
                "into C*S blocks, combined in a fixed order). BatchNorm1D runs as itself on both fast paths' "
                "fallbacks and is refused by the graph.",
    },
    "merge": {
        "what": "add (y = x_1 + x_2 + ...), concatenate (along an axis)",
        "reference": ["gpucnn.ops.merge." + name + suffix for name in ("add", "concatenate")
                      for suffix in ("", "_backward")],
        "cuda_launcher": [], "kernel": [], "cpu_fast_stage": [], "graph_stage": [_JOIN + "AddStage",
                                                                                 _JOIN + "ConcatenateStage"],
        "graph_launcher": [], "graph_kernel": [], "twin": [],
        "note": "the joins of a Model's graph (gpucnn/nn/model.py); on CuPy arrays the reference itself runs "
                "(CuPy's elementwise kernels and copies, memory-bound either way), in the graph step too "
                "(gpucnn/compile/cuda_graph/plan.py sums the gradients of a value read twice).",
    },
    "global_pool": {
        "what": "global average / max pooling (N, C, H, W) -> (N, C); adaptive average pooling (PyTorch's bins)",
        "reference": ["gpucnn.ops.global_pool." + name + suffix for name in ("global_avg_pool2d",
                      "global_max_pool2d", "adaptive_avg_pool2d") for suffix in ("", "_backward")]
                     + ["gpucnn.ops.global_pool.adaptive_bins"],
        "cuda_launcher": [], "kernel": [], "cpu_fast_stage": [], "graph_stage": [_JOIN + "GlobalAvgPoolStage"],
        "graph_launcher": [], "graph_kernel": [], "twin": [],
        "note": "on CuPy arrays the reference itself runs (CuPy's reductions, gathers and selects), in the graph "
                "step too for the global average; the graph refuses the global max and adaptive pools, naming "
                "the layer.",
    },
    "softmax": {
        "what": "y = exp(x - max) / sum(exp(x - max)) along an axis, dL/dx = y * (dL/dy - sum(dL/dy * y))",
        "reference": ["gpucnn.ops.softmax.softmax_forward", "gpucnn.ops.softmax.softmax_backward"],
        "cuda_launcher": [], "kernel": [], "cpu_fast_stage": [], "graph_stage": [], "graph_launcher": [],
        "graph_kernel": [], "twin": [],
        "note": "the Softmax layer, which imported ONNX graphs end with (gpucnn/io/onnx_import.py); on CuPy arrays "
                "the reference itself runs. The fast paths run it as itself.",
    },
    "softmax_cross_entropy": {
        "what": "loss = mean(-log_softmax(z)[y]), dL/dz = (softmax(z) - onehot(y)) / N, correct count",
        "reference": ["gpucnn.ops.loss.softmax_cross_entropy"],
        "cuda_launcher": ["gpucnn.ops.cuda.loss.softmax_cross_entropy"],
        "kernel": [_K + "loss.cu:softmax_xent", _K + "loss.cu:softmax_xent_soft",
                   _K + "loss_body.cuh:softmax_xent_rows"],
        "cpu_fast_stage": [],
        "graph_stage": ["gpucnn.nn.losses.SoftmaxCrossEntropy.fused"],
        "graph_launcher": ["gpucnn.ops.cuda.loss.softmax_cross_entropy"],
        "graph_kernel": [_K + "loss.cu:softmax_xent", _K + "loss.cu:softmax_xent_soft"],
        "twin": [],
        "note": "not a layer: the CPU fast path runs the reference; the graph captures loss_fn.fused",
    },
    "optimizer_updates": {
        "what": "one parameter's SGD (momentum, Nesterov, weight decay) or Adam / AdamW step, in place",
        "reference": ["gpucnn.ops.update.sgd_update", "gpucnn.ops.update.adam_update"],
        "cuda_launcher": ["gpucnn.ops.cuda.update.sgd_update", "gpucnn.ops.cuda.update.adam_update"],
        "kernel": [_K + "update.cu:sgd_update", _K + "update_body.cuh:sgd_body", _K + "update.cu:adam_update",
                   _K + "update_body.cuh:adam_body"],
        "cpu_fast_stage": [], "graph_stage": [], "graph_launcher": [], "graph_kernel": [], "twin": [],
        "note": "called per parameter by gpucnn.optim (always on the CPU; on the GPU when "
                "gpucnn.config.multi_tensor_optimizer is off). The graph steps with multi_tensor_updates.",
    },
    "multi_tensor_updates": {
        "what": "the same steps over one flat buffer of many parameters, scalars on the device",
        "reference": ["gpucnn.ops.multi_update.multi_sgd_update", "gpucnn.ops.multi_update.multi_adam_update",
                      "gpucnn.ops.multi_update.step_scalars"],
        "cuda_launcher": ["gpucnn.ops.cuda.multi_update.multi_sgd_update",
                          "gpucnn.ops.cuda.multi_update.multi_adam_update"],
        "kernel": [_K + "multi_update.cu:step_scalars", _K + "multi_update_body.cuh:step_scalars_body",
                   _K + "multi_update.cu:multi_sgd_update", _K + "multi_update.cu:multi_adam_update"],
        "cpu_fast_stage": [],
        "graph_stage": ["gpucnn.compile.cuda_graph.update.MultiTensorUpdate"],
        "graph_launcher": ["gpucnn.ops.cuda.multi_update.multi_sgd_update",
                           "gpucnn.ops.cuda.multi_update.multi_adam_update"],
        "graph_kernel": [_K + "multi_update.cu:step_scalars", _K + "multi_update.cu:multi_sgd_update",
                         _K + "multi_update.cu:multi_adam_update"],
        "twin": [],
        "note": "gpucnn.optim's default on the GPU (flat groups: gpucnn/optim/flat.py); the graph captures the "
                "eager launches.",
    },
}


def index_text(width=108):
    """OP_INDEX as the text of this module's docstring: one block per op, one line per field."""
    blocks = []
    for op, entry in OP_INDEX.items():
        lines = [f"{op}: {entry['what']}"]
        for key, label in FIELDS:
            value = entry[key]
            text = value if isinstance(value, str) else (", ".join(value) or "none")
            lines += textwrap.wrap(text, width, initial_indent=f"    {label:<16}", subsequent_indent=" " * 20,
                                   break_on_hyphens=False, break_long_words=False)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
