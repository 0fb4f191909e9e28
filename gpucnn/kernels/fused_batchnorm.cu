// Training-mode BatchNorm2D (and BatchNorm over (N, C)) in four kernels, two per direction; the phases are
// in fused_batchnorm_body.cuh (layouts, slices and the statistics scheme there). Every launch has
// C * S blocks of GPUCNN_BLOCK threads, block b = c*S + s owning slice s of channel c
// (gpucnn/compile/cuda_graph/launch_batchnorm.py: batch_norm_slices picks S):
//
//   forward   y = relu?(gamma * (x - mean) * inv_std + beta), mean and biased var over (N, H, W),
//             running statistics updated in place (momentum, unbiased var):
//     bn_stats_partial_fused   phase 1 thread t: Welford over e = begin + t + k*BLOCK; phases 2..9 the tree
//                              merge of the 256 triples; thread 0: partial[b] = (mean, M2)
//     bn_forward_apply_fused   phase 1 thread 0: the channel's S partials merged in ascending s -> mean,
//                              inv_std (block s == 0 stores them and the running statistics);
//                              phase 2 thread t: y[e] for e = begin + t + k*BLOCK
//   backward  gz = grad_y [* (y > 0)], x_hat = (x - mean) * inv_std recomputed:
//     bn_grad_partial_fused    phase 1 thread t: sum gz and sum gz * x_hat over its elements; tree; thread 0:
//                              partial[b]
//     bn_backward_apply_fused  phase 1 thread 0: grad_beta, grad_gamma (ascending s; block s == 0 stores);
//                              phase 2 thread t: grad_x[e] = gamma*inv_std*(gz - grad_beta/count
//                              - x_hat*grad_gamma/count) (only under GPUCNN_BN_INPUT_GRAD)
// 32-bit indices (the launchers' check_int32); no atomics: bitwise repeatable.
#include "fused_batchnorm_body.cuh"

template <typename T>
__global__ void bn_stats_partial_fused(const T* __restrict__ x,
                                                                       T* __restrict__ partial, int N, int C,
                                                                       int HW, int slices) {
    __shared__ int part_count[GPUCNN_BLOCK];
    __shared__ T part_mean[GPUCNN_BLOCK];
    __shared__ T part_m2[GPUCNN_BLOCK];
    const gpucnn::fused::MomentParts<T> parts{part_count, part_mean, part_m2};
    const int t = threadIdx.x, block = blockIdx.x;
    gpucnn::fused::bn_stats_phase<T>(block, t, x, N, C, HW, slices, parts);
    __syncthreads();
    for (int stride = GPUCNN_BLOCK / 2; stride > 0; stride /= 2) {
        gpucnn::fused::bn_stats_tree_step<T>(t, stride, parts);
        __syncthreads();
    }
    gpucnn::fused::bn_stats_store<T>(block, t, partial, parts);
}

template <typename T>
__global__ void bn_forward_apply_fused(
    const T* __restrict__ x, const T* __restrict__ partial, const T* __restrict__ gamma,
    const T* __restrict__ beta, T* __restrict__ y, T* __restrict__ mean, T* __restrict__ inv_std,
    T* __restrict__ running_mean, T* __restrict__ running_var, T momentum, T eps, int N, int C, int HW, int slices,
    int flags) {
    __shared__ T stats[2];
    const int t = threadIdx.x, block = blockIdx.x;
    gpucnn::fused::bn_forward_stats_phase<T>(block, t, partial, mean, inv_std, running_mean, running_var, momentum,
                                             eps, N, HW, slices, stats);
    __syncthreads();
    gpucnn::fused::bn_forward_apply_phase<T>(block, t, x, gamma, beta, y, N, C, HW, slices, flags, stats);
}

template <typename T>
__global__ void bn_grad_partial_fused(
    const T* __restrict__ grad_y, const T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ mean,
    const T* __restrict__ inv_std, T* __restrict__ partial, int N, int C, int HW, int slices, int flags) {
    __shared__ T sums[2 * GPUCNN_BLOCK];
    const int t = threadIdx.x, block = blockIdx.x;
    gpucnn::fused::bn_grad_sums_phase<T>(block, t, grad_y, y, x, mean, inv_std, N, C, HW, slices, flags, sums);
    __syncthreads();
    for (int stride = GPUCNN_BLOCK / 2; stride > 0; stride /= 2) {
        gpucnn::fused::bn_grad_tree_step<T>(t, stride, sums);
        __syncthreads();
    }
    gpucnn::fused::bn_grad_store<T>(block, t, partial, sums);
}

template <typename T>
__global__ void bn_backward_apply_fused(
    const T* __restrict__ grad_y, const T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ mean,
    const T* __restrict__ inv_std, const T* __restrict__ gamma, const T* __restrict__ partial,
    T* __restrict__ grad_x, T* __restrict__ grad_gamma, T* __restrict__ grad_beta, int N, int C, int HW,
    int slices, int flags) {
    __shared__ T stats[3];
    const int t = threadIdx.x, block = blockIdx.x;
    gpucnn::fused::bn_backward_sums_phase<T>(block, t, partial, gamma, inv_std, grad_gamma, grad_beta, N, HW,
                                             slices, stats);
    __syncthreads();
    gpucnn::fused::bn_backward_apply_phase<T>(block, t, grad_y, y, x, mean, inv_std, grad_x, N, C, HW, slices,
                                              flags, stats);
}
