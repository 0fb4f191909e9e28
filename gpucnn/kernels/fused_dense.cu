// Fused Dense kernels: a tiled GEMM (fused_common.cuh: the core, its thread-to-element map
// and phases; fused_dense_body.cuh: the problems). One block per GEMM_TM x GEMM_TN output
// tile, GPUCNN_BLOCK threads, grid = gemm_blocks(M, N). Launchers: gpucnn/compile/cuda_graph/launch.py.
//
//   dense_fwd_fused:   y = relu(x @ w.T + b)                           M = N, N = O, K = I
//   dense_dgrad_fused: gx = (gy * (y > 0)) @ w                         M = N, N = I, K = O
//   dense_wgrad_fused: [gw | gb] = (gy * (y > 0)).T @ [x | 1]          M = O, N = I (+1), K = N
#include "fused_dense_body.cuh"

template <typename T>
__global__ void dense_fwd_fused(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                                T* __restrict__ y, int N, int I, int O, int flags) {
    const gpucnn::fused::DenseForward<T> p{x, weight, bias, y, flags, N, O, I};
    gpucnn::fused::tiled_gemm<T, GPUCNN_GEMM_TM, GPUCNN_GEMM_TN, GPUCNN_GEMM_TK>(p);
}

template <typename T>
__global__ void dense_dgrad_fused(const T* __restrict__ grad_y, const T* __restrict__ y,
                                  const T* __restrict__ weight, T* __restrict__ grad_x, int N, int I, int O,
                                  int flags) {
    const gpucnn::fused::DenseDataGrad<T> p{grad_y, y, weight, grad_x, flags, N, I, O};
    gpucnn::fused::tiled_gemm<T, GPUCNN_GEMM_TM, GPUCNN_GEMM_TN, GPUCNN_GEMM_TK>(p);
}

template <typename T>
__global__ void dense_wgrad_fused(const T* __restrict__ grad_y, const T* __restrict__ y, const T* __restrict__ x,
                                  T* __restrict__ grad_w, T* __restrict__ grad_b, int N, int I, int O, int flags) {
    const gpucnn::fused::DenseWeightGrad<T> p{grad_y, y, x, grad_w, grad_b, flags,
                                              O, I + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), N, I};
    gpucnn::fused::tiled_gemm<T, GPUCNN_GEMM_TM, GPUCNN_GEMM_TN, GPUCNN_GEMM_TK>(p);
}
