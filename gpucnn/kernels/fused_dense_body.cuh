// The fused Dense problems for the tiled GEMM core (fused_common.cuh).
//
// Layouts (C-contiguous): x (N, I), weight (O, I) as in PyTorch, y and grad_y (N, O). Every operand is
// read through an unsigned row offset and a Strided k cursor (fused_common.cuh): one addition per k-step.
// MASK folds the ReLU that follows the layer into its backward pass:
// gz = grad_y * (y > 0), with y the layer's (ReLU) output, read where gz is needed.
#ifndef GPUCNN_FUSED_DENSE_BODY_CUH
#define GPUCNN_FUSED_DENSE_BODY_CUH

#include "fused_conv_body.cuh"

namespace gpucnn {
namespace fused {

template <typename T>
__host__ __device__ inline T masked(const T* __restrict__ g, const T* __restrict__ y, unsigned index, int flags) {
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

    using LhsRow = unsigned;
    using RhsRow = unsigned;
    using LhsK = Strided;
    using RhsK = Strided;
    using LhsStep = StridedStep;
    using RhsStep = StridedStep;
    __host__ __device__ inline LhsRow lhs_row(int m) const { return (unsigned)m * (unsigned)K; }
    __host__ __device__ inline RhsRow rhs_row(int n) const { return (unsigned)n * (unsigned)K; }
    __host__ __device__ inline LhsK lhs_k(int k) const { return {(unsigned)k}; }
    __host__ __device__ inline RhsK rhs_k(int k) const { return {(unsigned)k}; }
    __host__ __device__ inline LhsStep lhs_step(int dk) const { return {(unsigned)dk}; }
    __host__ __device__ inline RhsStep rhs_step(int dk) const { return {(unsigned)dk}; }
    __host__ __device__ inline T lhs_load(bool in, LhsRow row, const LhsK& c, int) const {
        return in ? x[row + c.off] : T(0);
    }
    __host__ __device__ inline T rhs_load(bool in, RhsRow row, const RhsK& c, int) const {
        return in ? weight[row + c.off] : T(0);
    }
    __host__ __device__ inline void lhs_advance(LhsK& c, const LhsStep& s) const { advance(c, s); }
    __host__ __device__ inline void rhs_advance(RhsK& c, const RhsStep& s) const { advance(c, s); }
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

    using LhsRow = unsigned;
    using RhsRow = unsigned;
    using LhsK = Strided;
    using RhsK = Strided;
    using LhsStep = StridedStep;
    using RhsStep = StridedStep;
    __host__ __device__ inline LhsRow lhs_row(int m) const { return (unsigned)m * (unsigned)K; }
    __host__ __device__ inline RhsRow rhs_row(int n) const { return (unsigned)n; }
    __host__ __device__ inline LhsK lhs_k(int k) const { return {(unsigned)k}; }
    __host__ __device__ inline RhsK rhs_k(int k) const { return {(unsigned)k * (unsigned)N}; }
    __host__ __device__ inline LhsStep lhs_step(int dk) const { return {(unsigned)dk}; }
    __host__ __device__ inline RhsStep rhs_step(int dk) const { return {(unsigned)dk * (unsigned)N}; }
    __host__ __device__ inline T lhs_load(bool in, LhsRow row, const LhsK& c, int) const {
        return in ? masked(grad_y, y, row + c.off, flags) : T(0);
    }
    __host__ __device__ inline T rhs_load(bool in, RhsRow row, const RhsK& c, int) const {
        return in ? weight[row + c.off] : T(0);
    }
    __host__ __device__ inline void lhs_advance(LhsK& c, const LhsStep& s) const { advance(c, s); }
    __host__ __device__ inline void rhs_advance(RhsK& c, const RhsStep& s) const { advance(c, s); }
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

    using LhsRow = unsigned;
    using RhsRow = unsigned;
    using LhsK = Strided;
    using RhsK = Strided;
    using LhsStep = StridedStep;
    using RhsStep = StridedStep;
    __host__ __device__ inline LhsRow lhs_row(int m) const { return (unsigned)m; }
    __host__ __device__ inline RhsRow rhs_row(int n) const { return (unsigned)n; }
    __host__ __device__ inline LhsK lhs_k(int k) const { return {(unsigned)k * (unsigned)M}; }
    __host__ __device__ inline RhsK rhs_k(int k) const { return {(unsigned)k * (unsigned)I}; }
    __host__ __device__ inline LhsStep lhs_step(int dk) const { return {(unsigned)dk * (unsigned)M}; }
    __host__ __device__ inline RhsStep rhs_step(int dk) const { return {(unsigned)dk * (unsigned)I}; }
    __host__ __device__ inline T lhs_load(bool in, LhsRow row, const LhsK& c, int) const {
        return in ? masked(grad_y, y, row + c.off, flags) : T(0);
    }
    __host__ __device__ inline T rhs_load(bool in, RhsRow row, const RhsK& c, int n) const {
        return !in ? T(0) : n < I ? x[row + c.off] : T(1);
    }
    __host__ __device__ inline void lhs_advance(LhsK& c, const LhsStep& s) const { advance(c, s); }
    __host__ __device__ inline void rhs_advance(RhsK& c, const RhsStep& s) const { advance(c, s); }
    __host__ __device__ inline void store(int m, int n, T acc) const {
        store_weight_grad(grad_w, grad_b, I, m, n, acc);
    }
};

// Split-K pass 2 of the forward (dense_fwd_reduce_fused) for output idx = n * O + o, total = N * O: the
// S partial sums in ascending s (as split_k_reduce_body), then the forward's own store (bias, ReLU).
template <typename T>
__host__ __device__ inline void dense_fwd_reduce_body(int idx, const T* __restrict__ partial, const T* bias, T* y,
                                                      int slices, int O, int flags, int total) {
    T acc = partial[idx];
    for (int s = 1; s < slices; ++s) acc += partial[s * total + idx];
    const DenseForward<T> p{nullptr, nullptr, bias, y, flags, total / O, O, 0};
    const int n = idx / O;
    p.store(n, idx - n * O, acc);
}

}  // namespace fused
}  // namespace gpucnn

#endif  // GPUCNN_FUSED_DENSE_BODY_CUH
