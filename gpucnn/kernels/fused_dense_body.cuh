// The fused Dense problems for the tiled GEMM core (fused_common.cuh).
//
// Layouts (C-contiguous): x (N, I), weight (O, I) as in PyTorch, y and grad_y (N, O).
// MASK folds the ReLU that follows the layer into its backward pass:
// gz = grad_y * (y > 0), with y the layer's (ReLU) output, read where gz is needed.
#ifndef GPUCNN_FUSED_DENSE_BODY_CUH
#define GPUCNN_FUSED_DENSE_BODY_CUH

#include "fused_conv_body.cuh"

namespace gpucnn {
namespace fused {

template <typename T>
__host__ __device__ inline T masked(const T* __restrict__ g, const T* __restrict__ y, int index, int flags) {
    const T v = g[index];
    return (flags & GPUCNN_FUSED_MASK) ? v * T(y[index] > T(0) ? 1 : 0) : v;
}

// Forward: y = relu(x @ weight.T + b)   (flags BIAS, RELU).
// GEMM: M = N (sample), N = O, K = I;  lhs(n, i) = x[n, i];  rhs(i, o) = weight[o, i];  store y[n, o].
template <typename T>
struct DenseForward {
    static constexpr bool kLhsAlongK = true, kRhsAlongK = true;  // contiguous axes (the load map)
    const T* x;
    const T* weight;
    const T* bias;
    T* y;
    int flags;
    int M, N, K;

    __host__ __device__ inline T lhs(int m, int k) const { return x[m * K + k]; }
    __host__ __device__ inline T rhs(int k, int n) const { return weight[n * K + k]; }
    __host__ __device__ inline void store(int m, int n, T acc) const {
        if (flags & GPUCNN_FUSED_BIAS) acc += bias[n];
        if ((flags & GPUCNN_FUSED_RELU) && !(acc > T(0)) && !is_nan(acc)) acc = T(0);
        y[m * N + n] = acc;
    }
};

// Input gradient: grad_x = gz @ weight, gz = mask(grad_y).
// GEMM: M = N, N = I, K = O;  lhs(n, o) = gz[n, o];  rhs(o, i) = weight[o, i];  store grad_x[n, i].
template <typename T>
struct DenseDataGrad {
    static constexpr bool kLhsAlongK = true, kRhsAlongK = false;  // contiguous axes (the load map)
    const T* grad_y;
    const T* y;
    const T* weight;
    T* grad_x;
    int flags;
    int M, N, K;

    __host__ __device__ inline T lhs(int m, int k) const { return masked(grad_y, y, m * K + k, flags); }
    __host__ __device__ inline T rhs(int k, int n) const { return weight[k * N + n]; }
    __host__ __device__ inline void store(int m, int n, T acc) const { grad_x[m * N + n] = acc; }
};

// Weight and bias gradients in one GEMM: grad_w = gz.T @ x, grad_b = gz summed over the batch
// (BIAS: column I of the product, against a column of ones, reduced in the same fixed order).
// GEMM: M = O, N = I (+1 with BIAS), K = N;  lhs(o, n) = gz[n, o];  rhs(n, i) = x[n, i] or 1;
// store(o, i): grad_w[o, i], or grad_b[o] for i == I (store_weight_grad, fused_splitk.cuh).
// Split-K (dense_wgrad_partial_fused + dense_wgrad_reduce_fused) runs this problem in k-slices.
template <typename T>
struct DenseWeightGrad {
    static constexpr bool kLhsAlongK = false, kRhsAlongK = false;  // contiguous axes (the load map)
    const T* grad_y;
    const T* y;
    const T* x;
    T* grad_w;
    T* grad_b;
    int flags;
    int M, N, K;
    int I;

    __host__ __device__ inline T lhs(int m, int k) const { return masked(grad_y, y, k * M + m, flags); }
    __host__ __device__ inline T rhs(int k, int n) const { return n < I ? x[k * I + n] : T(1); }
    __host__ __device__ inline void store(int m, int n, T acc) const {
        store_weight_grad(grad_w, grad_b, I, m, n, acc);
    }
};

}  // namespace fused
}  // namespace gpucnn

#endif  // GPUCNN_FUSED_DENSE_BODY_CUH
