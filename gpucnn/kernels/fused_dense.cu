// Fused Dense kernels: a tiled GEMM (fused_common.cuh: the core, its thread-to-element map
// and phases; fused_dense_body.cuh: the problems). One block per TM x TN output tile of the tile shape
// ``tile`` (the last argument of every GEMM kernel: GPUCNN_GEMM_TILE_TABLE), GPUCNN_BLOCK threads,
// grid = gemm_blocks<tile>(M, N). Launchers: gpucnn/compile/cuda_graph/launch.py.
//
//   dense_fwd_fused:   y = relu(x @ w.T + b)                           M = N, N = O, K = I
//   dense_dgrad_fused: gx = (gy * (y > 0)) @ w                         M = N, N = I, K = O
//   dense_wgrad_fused: [gw | gb] = (gy * (y > 0)).T @ [x | 1]          M = O, N = I (+1), K = N
//
// Split-K (fused_splitk.cuh), when the launcher picks S > 1 slices (launch.weight_grad_plan):
//   dense_fwd_partial_fused:   partial[s] = x @ w.T over k-slice s (no epilogue)  grid = gemm_blocks(M, N) * S
//   dense_fwd_reduce_fused:    y = relu(sum of partial[s], s ascending, + b)     grid-stride over M*N
//   dense_wgrad_partial_fused: partial[s] = dense_wgrad's GEMM over k-slice s  grid = gemm_blocks(M, N) * S
//   dense_wgrad_reduce_fused:  [gw | gb] = sum of partial[s], s ascending      grid-stride over M*N
#include "fused_dense_body.cuh"

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void dense_fwd_fused(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                                T* __restrict__ y, int N, int I, int O, int flags, int tile) {
    const gpucnn::fused::DenseForward<T> p{x, weight, bias, y, flags, N, O, I};
    gpucnn::fused::tiled_gemm<T>(p, tile);
}

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void dense_dgrad_fused(const T* __restrict__ grad_y, const T* __restrict__ y,
                                  const T* __restrict__ weight, T* __restrict__ grad_x, int N, int I, int O,
                                  int flags, int tile) {
    const gpucnn::fused::DenseDataGrad<T> p{grad_y, y, weight, grad_x, flags, N, I, O};
    gpucnn::fused::tiled_gemm<T>(p, tile);
}

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void dense_wgrad_fused(const T* __restrict__ grad_y, const T* __restrict__ y, const T* __restrict__ x,
                                  T* __restrict__ grad_w, T* __restrict__ grad_b, int N, int I, int O, int flags,
                                  int tile) {
    const gpucnn::fused::DenseWeightGrad<T> p{grad_y, y, x, grad_w, grad_b, flags,
                                              O, I + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), N, I};
    gpucnn::fused::tiled_gemm<T>(p, tile);
}

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void dense_wgrad_partial_fused(const T* __restrict__ grad_y, const T* __restrict__ y,
                                          const T* __restrict__ x, T* __restrict__ partial, int N, int I, int O,
                                          int flags, int slices, int tile) {
    const gpucnn::fused::DenseWeightGrad<T> p{grad_y, y, x, nullptr, nullptr, flags,
                                              O, I + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), N, I};
    gpucnn::fused::split_k_gemm<T>(p, partial, slices, tile);
}

// partial (slices, O, cols), cols = KW = I (+1: the bias column), total = O * cols; grad_b unused without the
// bias column.
template <typename T>
__global__ void dense_wgrad_reduce_fused(const T* __restrict__ partial, T* __restrict__ grad_w,
                                         T* __restrict__ grad_b, int slices, int cols, int KW, int total) {
    GPUCNN_GRID_STRIDE_LOOP32(idx, total)
    gpucnn::fused::split_k_reduce_body(idx, partial, grad_w, grad_b, slices, cols, KW, total);
}

// The forward over k-slices: partial (slices, N, O) of x @ weight.T (no bias, no ReLU: the reduce applies them).
template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void dense_fwd_partial_fused(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ partial,
                                        int N, int I, int O, int slices, int tile) {
    const gpucnn::fused::DenseForward<T> p{x, weight, nullptr, nullptr, 0, N, O, I};
    gpucnn::fused::split_k_gemm<T>(p, partial, slices, tile);
}

// y (N, O) = relu(partial summed in ascending s + bias) (flags BIAS, RELU), total = N * O.
template <typename T>
__global__ void dense_fwd_reduce_fused(const T* __restrict__ partial, const T* __restrict__ bias, T* __restrict__ y,
                                       int slices, int O, int flags, int total) {
    GPUCNN_GRID_STRIDE_LOOP32(idx, total)
    gpucnn::fused::dense_fwd_reduce_body(idx, partial, bias, y, slices, O, flags, total);
}
