"""The readable math of every op, and the index of all its implementations.

Each module here is one op family in NumPy, written as the tutorials write it: ``conv``, ``pool``,
``linear``, ``activation``, ``batchnorm``, ``merge``, ``global_pool``, ``loss``, ``update``, ``multi_update``;
``geometry`` holds all window arithmetic. The ops take NumPy or CuPy arrays; the few with CUDA kernels of their own
hand CuPy arrays to ``gpucnn.ops.cuda`` (same functions, same arguments, same results), whose
launchers compile ``gpucnn/kernels/*.cu`` through ``gpucnn/ops/cuda/loader.py``.

Two fast paths replace these ops and are held against them (``gpucnn.config.path``, verify modes):
the CPU fast path ``gpucnn.compile.cpu`` (threads, a channel-major layout; its stages in
``stages.py``, their array code in ``chwn.py``), and the CUDA graph ``gpucnn.compile.cuda_graph``
(fused kernels captured as one graph per training step; its program in ``plan.py``, stages in
``chain_stages.py``, launchers in ``gpucnn/ops/cuda/fused.py``, which the eager Conv2D and Dense run too,
and the NumPy twins of the fused kernels, composed from these ops, in ``reference.py``).

The index below is ``OP_INDEX`` (gpucnn/ops/index.py; ``index_text()`` prints it); tests/ops/test_op_index.py checks
that every name in it exists, that every kernel is defined in its file, and that this text matches.
Per op: reference (NumPy, here), cuda launcher (eager, ``gpucnn.ops.cuda``), kernel
(``file:function``; the ``*_body.cuh`` function holds the per-element math the CPU harness replays),
cpu fast stage, graph stage (``compile/cuda_graph/chain_stages.py``), graph launcher (``ops/cuda/fused.py``, or the
eager launcher the graph captures), graph kernel, fused twin (``compile/cuda_graph/reference.py``).

conv2d_forward: y = W @ im2col(x) + b
    reference       gpucnn.ops.conv.conv2d_forward, gpucnn.ops.conv.im2col
    cuda launcher   gpucnn.ops.cuda.conv.conv2d_forward, gpucnn.ops.cuda.fused.conv2d_forward
    kernel          gpucnn/kernels/conv.cu:im2col, gpucnn/kernels/conv_body.cuh:im2col_body,
                    gpucnn/kernels/conv.cu:conv_direct, gpucnn/kernels/conv_body.cuh:conv_direct_body,
                    gpucnn/kernels/conv.cu:transpose01, gpucnn/kernels/conv_body.cuh:transpose01_body,
                    gpucnn/kernels/fused_conv.cu:conv_fwd_fused
    cpu fast stage  gpucnn.compile.cpu.stages.ConvStage.forward, gpucnn.compile.cpu.chwn.im2col
    graph stage     gpucnn.compile.cuda_graph.chain_stages._ConvStage.forward
    graph launcher  gpucnn.ops.cuda.fused.conv2d_forward
    graph kernel    gpucnn/kernels/fused_conv.cu:conv_fwd_fused
    fused twin      gpucnn.compile.cuda_graph.reference.conv2d_forward
    note            the eager CUDA path runs the graph's fused kernel for dilation 1 and one group
                    (gpucnn.ops.cuda.conv.runs_fused); otherwise im2col + cuBLAS (cupy.matmul), conv_direct
                    when C/groups*kh*kw <= DIRECT_MAX_K. The fast paths take no dilation and one group.

conv2d_weight_grad: dW = dY @ im2col(x).T, db = dY summed
    reference       gpucnn.ops.conv.conv2d_backward
    cuda launcher   gpucnn.ops.cuda.conv.conv2d_backward, gpucnn.ops.cuda.fused.conv2d_weight_grad
    kernel          gpucnn/kernels/conv.cu:transpose01, gpucnn/kernels/conv.cu:row_sum,
                    gpucnn/kernels/conv_body.cuh:row_sum_partial,
                    gpucnn/kernels/fused_conv.cu:conv_wgrad_fused,
                    gpucnn/kernels/fused_conv.cu:conv_wgrad_partial_fused,
                    gpucnn/kernels/fused_conv.cu:conv_wgrad_reduce_fused
    cpu fast stage  gpucnn.compile.cpu.stages.ConvStage.backward
    graph stage     gpucnn.compile.cuda_graph.chain_stages._ConvStage.backward,
                    gpucnn.compile.cuda_graph.chain_stages._ConvPoolStage.backward
    graph launcher  gpucnn.ops.cuda.fused.conv2d_weight_grad,
                    gpucnn.ops.cuda.fused.conv2d_weight_grad_pooled
    graph kernel    gpucnn/kernels/fused_conv.cu:conv_wgrad_fused,
                    gpucnn/kernels/fused_conv.cu:conv_wgrad_partial_fused,
                    gpucnn/kernels/fused_conv.cu:conv_wgrad_reduce_fused,
                    gpucnn/kernels/fused_conv.cu:conv_wgrad_pooled_fused,
                    gpucnn/kernels/fused_conv.cu:conv_wgrad_pooled_partial_fused
    fused twin      gpucnn.compile.cuda_graph.reference.conv2d_weight_grad,
                    gpucnn.compile.cuda_graph.reference.conv2d_weight_grad_pooled
    note            dW and db are one fused GEMM, split over k (partial sums, then their fixed-order reduce)
                    where its tiles alone leave SMs idle, in the graph and on the eager CUDA path where the
                    forward ran fused; otherwise a cuBLAS GEMM and row_sum.

conv2d_input_grad: dX = col2im(W.T @ dY) = full convolution of dY with the kernel rotated by 180 degrees
    reference       gpucnn.ops.conv.conv2d_backward, gpucnn.ops.conv.col2im,
                    gpucnn.ops.conv.conv2d_input_grad
    cuda launcher   gpucnn.ops.cuda.conv.conv2d_backward, gpucnn.ops.cuda.fused.conv2d_data_grad
    kernel          gpucnn/kernels/conv.cu:col2im, gpucnn/kernels/conv_body.cuh:col2im_body,
                    gpucnn/kernels/fused_conv.cu:conv_dgrad_fused
    cpu fast stage  gpucnn.compile.cpu.stages.ConvStage.backward, gpucnn.compile.cpu.chwn.col2im,
                    gpucnn.compile.cpu.chwn.col2im_same
    graph stage     gpucnn.compile.cuda_graph.chain_stages._ConvStage.backward
    graph launcher  gpucnn.ops.cuda.fused.conv2d_data_grad
    graph kernel    gpucnn/kernels/fused_conv.cu:conv_dgrad_fused
    fused twin      gpucnn.compile.cuda_graph.reference.conv2d_data_grad
    note            conv2d_input_grad is the tutorial's formula, beside col2im; the tests hold them equal.

max_pool2d: y = max over each window, argmax = i*kw + j of the winner (convention: gpucnn/ops/pool.py)
    reference       gpucnn.ops.pool.max_pool2d_forward, gpucnn.ops.pool.max_pool2d_backward
    cuda launcher   gpucnn.ops.cuda.pool.max_pool2d_forward, gpucnn.ops.cuda.pool.max_pool2d_backward
    kernel          gpucnn/kernels/pool.cu:max_pool_fwd, gpucnn/kernels/pool_body.cuh:max_pool_fwd_body,
                    gpucnn/kernels/pool.cu:max_pool_bwd, gpucnn/kernels/pool_body.cuh:max_pool_bwd_body
    cpu fast stage  gpucnn.compile.cpu.stages.PoolStage, gpucnn.compile.cpu.stages.ConvStage,
                    gpucnn.compile.cpu.chwn.max_pool_forward, gpucnn.compile.cpu.chwn.max_pool_backward
    graph stage     gpucnn.compile.cuda_graph.chain_stages._MaxPoolStage,
                    gpucnn.compile.cuda_graph.chain_stages._ConvPoolStage
    graph launcher  gpucnn.ops.cuda.fused.max_pool2d_forward, gpucnn.ops.cuda.fused.max_pool2d_backward,
                    gpucnn.ops.cuda.fused.conv2d_pool_forward
    graph kernel    gpucnn/kernels/fused_pool.cu:max_pool_u8_fwd,
                    gpucnn/kernels/fused_pool_body.cuh:max_pool_u8_fwd_body,
                    gpucnn/kernels/fused_pool.cu:max_pool_u8_bwd,
                    gpucnn/kernels/fused_pool_body.cuh:max_pool_u8_bwd_body,
                    gpucnn/kernels/fused_conv.cu:conv_fwd_pool_fused
    fused twin      gpucnn.compile.cuda_graph.reference.max_pool2d_forward,
                    gpucnn.compile.cuda_graph.reference.max_pool2d_backward,
                    gpucnn.compile.cuda_graph.reference.conv2d_pool_forward
    note            ConvStage folds an unpadded max pool after Conv2D [+ ReLU]; four argmax encodings, one
                    convention (gpucnn/ops/pool.py).

avg_pool2d: y = window sum / divisor (count_include_pad or real elements; PyTorch's rule)
    reference       gpucnn.ops.pool.avg_pool2d_forward, gpucnn.ops.pool.avg_pool2d_backward
    cuda launcher   gpucnn.ops.cuda.pool.avg_pool2d_forward, gpucnn.ops.cuda.pool.avg_pool2d_backward
    kernel          gpucnn/kernels/pool.cu:avg_pool_fwd, gpucnn/kernels/pool_body.cuh:avg_pool_fwd_body,
                    gpucnn/kernels/pool.cu:avg_pool_bwd, gpucnn/kernels/pool_body.cuh:avg_pool_bwd_body
    cpu fast stage  gpucnn.compile.cpu.stages.PoolStage, gpucnn.compile.cpu.chwn.avg_pool_forward,
                    gpucnn.compile.cpu.chwn.avg_pool_backward
    graph stage     gpucnn.compile.cuda_graph.chain_stages._ElementwiseStage
    graph launcher  gpucnn.ops.cuda.pool.avg_pool2d_forward, gpucnn.ops.cuda.pool.avg_pool2d_backward
    graph kernel    gpucnn/kernels/pool.cu:avg_pool_fwd, gpucnn/kernels/pool.cu:avg_pool_bwd
    fused twin      none
    note            the graph captures the eager op (reached through gpucnn.ops.pool): no fused kernel.

linear: y = x @ W.T + b; dx = dY @ W, dW = dY.T @ x, db = dY summed
    reference       gpucnn.ops.linear.linear_forward, gpucnn.ops.linear.linear_backward,
                    gpucnn.ops.linear.grouped_matmul
    cuda launcher   gpucnn.ops.cuda.linear.linear_forward, gpucnn.ops.cuda.linear.linear_backward,
                    gpucnn.ops.cuda.fused.linear_forward, gpucnn.ops.cuda.fused.linear_data_grad,
                    gpucnn.ops.cuda.fused.linear_weight_grad
    kernel          gpucnn/kernels/fused_dense.cu:dense_fwd_fused,
                    gpucnn/kernels/fused_dense.cu:dense_fwd_partial_fused,
                    gpucnn/kernels/fused_dense.cu:dense_fwd_reduce_fused,
                    gpucnn/kernels/fused_dense.cu:dense_dgrad_fused,
                    gpucnn/kernels/fused_dense.cu:dense_wgrad_fused,
                    gpucnn/kernels/fused_dense.cu:dense_wgrad_partial_fused,
                    gpucnn/kernels/fused_dense.cu:dense_wgrad_reduce_fused
    cpu fast stage  gpucnn.compile.cpu.stages.DenseStage
    graph stage     gpucnn.compile.cuda_graph.chain_stages._DenseStage
    graph launcher  gpucnn.ops.cuda.fused.linear_forward, gpucnn.ops.cuda.fused.linear_data_grad,
                    gpucnn.ops.cuda.fused.linear_weight_grad
    graph kernel    gpucnn/kernels/fused_dense.cu:dense_fwd_fused,
                    gpucnn/kernels/fused_dense.cu:dense_fwd_partial_fused,
                    gpucnn/kernels/fused_dense.cu:dense_fwd_reduce_fused,
                    gpucnn/kernels/fused_dense.cu:dense_dgrad_fused,
                    gpucnn/kernels/fused_dense.cu:dense_wgrad_fused,
                    gpucnn/kernels/fused_dense.cu:dense_wgrad_partial_fused,
                    gpucnn/kernels/fused_dense.cu:dense_wgrad_reduce_fused
    fused twin      gpucnn.compile.cuda_graph.reference.linear_forward,
                    gpucnn.compile.cuda_graph.reference.linear_data_grad,
                    gpucnn.compile.cuda_graph.reference.linear_weight_grad
    note            on CuPy arrays the graph's fused GEMMs run (gpucnn.ops.cuda.linear), cupy.matmul
                    (cuBLAS) only for mixed dtypes or tensors past 32-bit indices.

activations: relu, leaky_relu, sigmoid, tanh and their backward
    reference       gpucnn.ops.activation.relu, gpucnn.ops.activation.relu_backward,
                    gpucnn.ops.activation.leaky_relu, gpucnn.ops.activation.leaky_relu_backward,
                    gpucnn.ops.activation.sigmoid, gpucnn.ops.activation.sigmoid_backward,
                    gpucnn.ops.activation.tanh, gpucnn.ops.activation.tanh_backward
    cuda launcher   none
    kernel          none
    cpu fast stage  gpucnn.compile.cpu.stages.ActivationStage, gpucnn.compile.cpu.stages.ConvStage
    graph stage     gpucnn.compile.cuda_graph.chain_stages._ElementwiseStage,
                    gpucnn.compile.cuda_graph.chain_stages._ConvStage,
                    gpucnn.compile.cuda_graph.chain_stages._DenseStage
    graph launcher  none
    graph kernel    none
    fused twin      none
    note            on CuPy arrays the reference itself runs (CuPy's elementwise kernels). A ReLU after
                    Conv2D or Dense is folded into the fused kernels' epilogue and mask (relu=True); the
                    graph takes ReLU and Tanh alone, and refuses LeakyReLU and Sigmoid.

batch_norm: y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel
    reference       gpucnn.ops.batchnorm.batch_norm_forward, gpucnn.ops.batchnorm.batch_norm_backward
    cuda launcher   none
    kernel          none
    cpu fast stage  gpucnn.compile.cpu.batchnorm_stage.BatchNormStage
    graph stage     gpucnn.compile.cuda_graph.join_stages.BatchNormStage
    graph launcher  gpucnn.compile.cuda_graph.launch_batchnorm.batch_norm_train_forward,
                    gpucnn.compile.cuda_graph.launch_batchnorm.batch_norm_train_backward
    graph kernel    gpucnn/kernels/fused_batchnorm.cu:bn_stats_partial_fused,
                    gpucnn/kernels/fused_batchnorm.cu:bn_forward_apply_fused,
                    gpucnn/kernels/fused_batchnorm.cu:bn_grad_partial_fused,
                    gpucnn/kernels/fused_batchnorm.cu:bn_backward_apply_fused
    fused twin      gpucnn.compile.cuda_graph.reference_batchnorm.batch_norm_train_forward,
                    gpucnn.compile.cuda_graph.reference_batchnorm.batch_norm_train_backward
    note            on CuPy arrays the reference itself runs eagerly. The CPU fast path runs BatchNorm2D in
                    its segment, in the (C, H, W, N) layout, the batch statistics combined across chunks in
                    training; the graph runs it in training mode with the ReLU after it fused (per-channel
                    reductions split into C*S blocks, combined in a fixed order). BatchNorm1D runs as itself
                    on both fast paths' fallbacks and is refused by the graph.

merge: add (y = x_1 + x_2 + ...), concatenate (along an axis)
    reference       gpucnn.ops.merge.add, gpucnn.ops.merge.add_backward, gpucnn.ops.merge.concatenate,
                    gpucnn.ops.merge.concatenate_backward
    cuda launcher   none
    kernel          none
    cpu fast stage  none
    graph stage     gpucnn.compile.cuda_graph.join_stages.AddStage,
                    gpucnn.compile.cuda_graph.join_stages.ConcatenateStage
    graph launcher  none
    graph kernel    none
    fused twin      none
    note            the joins of a Model's graph (gpucnn/nn/model.py); on CuPy arrays the reference itself
                    runs (CuPy's elementwise kernels and copies, memory-bound either way), in the graph step
                    too (gpucnn/compile/cuda_graph/plan.py sums the gradients of a value read twice).

global_pool: global average / max pooling (N, C, H, W) -> (N, C); adaptive average pooling (PyTorch's bins)
    reference       gpucnn.ops.global_pool.global_avg_pool2d,
                    gpucnn.ops.global_pool.global_avg_pool2d_backward,
                    gpucnn.ops.global_pool.global_max_pool2d,
                    gpucnn.ops.global_pool.global_max_pool2d_backward,
                    gpucnn.ops.global_pool.adaptive_avg_pool2d,
                    gpucnn.ops.global_pool.adaptive_avg_pool2d_backward,
                    gpucnn.ops.global_pool.adaptive_bins
    cuda launcher   none
    kernel          none
    cpu fast stage  none
    graph stage     gpucnn.compile.cuda_graph.join_stages.GlobalAvgPoolStage
    graph launcher  none
    graph kernel    none
    fused twin      none
    note            on CuPy arrays the reference itself runs (CuPy's reductions, gathers and selects), in
                    the graph step too for the global average; the graph refuses the global max and adaptive
                    pools, naming the layer.

softmax: y = exp(x - max) / sum(exp(x - max)) along an axis, dL/dx = y * (dL/dy - sum(dL/dy * y))
    reference       gpucnn.ops.softmax.softmax_forward, gpucnn.ops.softmax.softmax_backward
    cuda launcher   none
    kernel          none
    cpu fast stage  none
    graph stage     none
    graph launcher  none
    graph kernel    none
    fused twin      none
    note            the Softmax layer, which imported ONNX graphs end with (gpucnn/io/onnx_import.py); on
                    CuPy arrays the reference itself runs. The fast paths run it as itself.

softmax_cross_entropy: loss = mean(-log_softmax(z)[y]), dL/dz = (softmax(z) - onehot(y)) / N, correct count
    reference       gpucnn.ops.loss.softmax_cross_entropy
    cuda launcher   gpucnn.ops.cuda.loss.softmax_cross_entropy
    kernel          gpucnn/kernels/loss.cu:softmax_xent, gpucnn/kernels/loss.cu:softmax_xent_soft,
                    gpucnn/kernels/loss_body.cuh:softmax_xent_rows
    cpu fast stage  none
    graph stage     gpucnn.nn.losses.SoftmaxCrossEntropy.fused
    graph launcher  gpucnn.ops.cuda.loss.softmax_cross_entropy
    graph kernel    gpucnn/kernels/loss.cu:softmax_xent, gpucnn/kernels/loss.cu:softmax_xent_soft
    fused twin      none
    note            not a layer: the CPU fast path runs the reference; the graph captures loss_fn.fused

optimizer_updates: one parameter's SGD (momentum, Nesterov, weight decay) or Adam / AdamW step, in place
    reference       gpucnn.ops.update.sgd_update, gpucnn.ops.update.adam_update
    cuda launcher   gpucnn.ops.cuda.update.sgd_update, gpucnn.ops.cuda.update.adam_update
    kernel          gpucnn/kernels/update.cu:sgd_update, gpucnn/kernels/update_body.cuh:sgd_body,
                    gpucnn/kernels/update.cu:adam_update, gpucnn/kernels/update_body.cuh:adam_body
    cpu fast stage  none
    graph stage     none
    graph launcher  none
    graph kernel    none
    fused twin      none
    note            called per parameter by gpucnn.optim (always on the CPU; on the GPU when
                    gpucnn.config.multi_tensor_optimizer is off). The graph steps with multi_tensor_updates.

multi_tensor_updates: the same steps over one flat buffer of many parameters, scalars on the device
    reference       gpucnn.ops.multi_update.multi_sgd_update, gpucnn.ops.multi_update.multi_adam_update,
                    gpucnn.ops.multi_update.step_scalars
    cuda launcher   gpucnn.ops.cuda.multi_update.multi_sgd_update,
                    gpucnn.ops.cuda.multi_update.multi_adam_update
    kernel          gpucnn/kernels/multi_update.cu:step_scalars,
                    gpucnn/kernels/multi_update_body.cuh:step_scalars_body,
                    gpucnn/kernels/multi_update.cu:multi_sgd_update,
                    gpucnn/kernels/multi_update.cu:multi_adam_update
    cpu fast stage  none
    graph stage     gpucnn.compile.cuda_graph.update.MultiTensorUpdate
    graph launcher  gpucnn.ops.cuda.multi_update.multi_sgd_update,
                    gpucnn.ops.cuda.multi_update.multi_adam_update
    graph kernel    gpucnn/kernels/multi_update.cu:step_scalars,
                    gpucnn/kernels/multi_update.cu:multi_sgd_update,
                    gpucnn/kernels/multi_update.cu:multi_adam_update
    fused twin      none
    note            gpucnn.optim's default on the GPU (flat groups: gpucnn/optim/flat.py); the graph
                    captures the eager launches.
"""
from .index import FIELDS, OP_INDEX, index_text

__all__ = ["OP_INDEX", "FIELDS", "index_text"]
