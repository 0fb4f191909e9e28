// The fused convolution problems for the tiled GEMM core (fused_common.cuh): implicit
// GEMM, reading NCHW tensors directly; no im2col matrix exists in memory.
//
// Layouts (C-contiguous): x (N, C, H, W), weight (O, C, kh, kw) = (O, K) with
// K = C*kh*kw and k = (c, i, j), y and grad_y (N, O, oh, ow), P = oh*ow. The padded input
// is x with pt rows on top and pl columns on the left; outside x it reads 0. All indices
// are int: every tensor has < 2^31 elements (checked by the launcher).
#ifndef GPUCNN_FUSED_CONV_BODY_CUH
#define GPUCNN_FUSED_CONV_BODY_CUH

#include "fused_splitk.cuh"  // (includes fused_common.cuh)

namespace gpucnn {
namespace fused {

struct ConvGeometry {
    int N, C, H, W, O, kh, kw, sy, sx, pt, pl, oh, ow;

    // x_pad[n, c, oy*sy + i, ox*sx + j] for k = (c, i, j) and col = (n, oy, ox): one element of
    // the im2col matrix, computed where it is needed instead of stored.
    template <typename T>
    __host__ __device__ inline T patch(const T* __restrict__ x, int k, int col) const {
        const int j = k % kw;
        const int ci = k / kw;
        const int i = ci % kh;
        const int c = ci / kh;
        const int P = oh * ow;
        const int n = col / P;
        const int p = col - n * P;
        const int oy = p / ow;
        const int ox = p - oy * ow;
        const int ih = oy * sy + i - pt;
        const int iw = ox * sx + j - pl;
        return (ih >= 0 && ih < H && iw >= 0 && iw < W) ? x[((n * C + c) * H + ih) * W + iw] : T(0);
    }
};

// Forward: y = relu(conv(x, weight) + b)   (bias and ReLU each optional: flags BIAS, RELU).
// GEMM: M = O, N = N*P (column (n, oy, ox)), K = C*kh*kw;
//   lhs(o, k) = weight[o, k];  rhs(k, col) = x_pad patch;  store(o, col): y[n, o, oy, ox].
template <typename T>
struct ConvForward {
    static constexpr bool kLhsAlongK = true, kRhsAlongK = false;  // contiguous axes (the load map)
    const T* x;
    const T* weight;
    const T* bias;
    T* y;
    ConvGeometry g;
    int flags;
    int M, N, K;

    __host__ __device__ inline T lhs(int m, int k) const { return weight[m * K + k]; }
    __host__ __device__ inline T rhs(int k, int n) const { return g.patch(x, k, n); }
    __host__ __device__ inline void store(int m, int n, T acc) const {
        if (flags & GPUCNN_FUSED_BIAS) acc += bias[m];
        if ((flags & GPUCNN_FUSED_RELU) && !(acc > T(0)) && !is_nan(acc)) acc = T(0);  // relu = max(acc, 0)
        const int P = g.oh * g.ow;
        const int img = n / P;
        y[(img * g.O + m) * P + (n - img * P)] = acc;
    }
};

// Data gradient as a gather: grad_x = mask(conv_transpose(grad_y, weight)), where
// mask(v) = v * (mask_src > 0) with flag MASK (the ReLU of the layer below folded in).
// GEMM: M = C, N = N*H*W (column (n, h, w)), K = O*kh*kw (k = (o, i, j));
//   lhs(c, k) = weight[o, c, i, j];
//   rhs(k, col) = grad_y[n, o, oy, ox] where oy*sy + i = h + pt and ox*sx + j = w + pl, else 0;
//   store(c, col): grad_x[n, c, h, w].
template <typename T>
struct ConvDataGrad {
    static constexpr bool kLhsAlongK = true, kRhsAlongK = false;  // contiguous axes (the load map)
    const T* grad_y;
    const T* weight;
    const T* mask_src;
    T* grad_x;
    ConvGeometry g;
    int flags;
    int M, N, K;

    __host__ __device__ inline T lhs(int m, int k) const {
        const int ij = k % (g.kh * g.kw);
        const int o = k / (g.kh * g.kw);
        return weight[(o * g.C + m) * g.kh * g.kw + ij];
    }
    __host__ __device__ inline T rhs(int k, int n) const {
        const int j = k % g.kw;
        const int oi = k / g.kw;
        const int i = oi % g.kh;
        const int o = oi / g.kh;
        const int w = n % g.W;
        const int nh = n / g.W;
        const int h = nh % g.H;
        const int img = nh / g.H;
        const int ty = h + g.pt - i;
        const int tx = w + g.pl - j;
        if (ty < 0 || tx < 0 || ty % g.sy != 0 || tx % g.sx != 0) return T(0);
        const int oy = ty / g.sy;
        const int ox = tx / g.sx;
        if (oy >= g.oh || ox >= g.ow) return T(0);
        return grad_y[((img * g.O + o) * g.oh + oy) * g.ow + ox];
    }
    __host__ __device__ inline void store(int m, int n, T acc) const {
        const int HW = g.H * g.W;
        const int img = n / HW;
        const int index = (img * g.C + m) * HW + (n - img * HW);
        if (flags & GPUCNN_FUSED_MASK) acc = acc * T(mask_src[index] > T(0) ? 1 : 0);
        grad_x[index] = acc;
    }
};

// Weight and bias gradients in one GEMM: grad_w[o, k] = sum_col grad_y[o, col] * patch(k, col)
// and grad_b[o] = sum_col grad_y[o, col] (flag BIAS): the bias is column K of the product,
// whose right-hand side is a column of ones, so it is reduced in the same fixed order.
// GEMM: M = O, N = K (+1 with BIAS), K_gemm = N*P (col = (n, oy, ox));
//   lhs(o, col) = grad_y[n, o, oy, ox];  rhs(col, k) = patch(k, col), or 1 for k == K;
//   store(o, k): grad_w[o, k], or grad_b[o] for k == K (store_weight_grad, fused_splitk.cuh).
// Split-K (conv_wgrad_partial_fused + conv_wgrad_reduce_fused) runs this problem in k-slices.
template <typename T>
struct ConvWeightGrad {
    static constexpr bool kLhsAlongK = true, kRhsAlongK = true;  // contiguous axes (the load map)
    const T* grad_y;
    const T* x;
    T* grad_w;
    T* grad_b;
    ConvGeometry g;
    int flags;
    int M, N, K;
    int KW;  // C*kh*kw: the weight's row length

    __host__ __device__ inline T lhs(int m, int k) const {
        const int P = g.oh * g.ow;
        const int img = k / P;
        return grad_y[(img * g.O + m) * P + (k - img * P)];
    }
    __host__ __device__ inline T rhs(int k, int n) const { return n < KW ? g.patch(x, n, k) : T(1); }
    __host__ __device__ inline void store(int m, int n, T acc) const {
        store_weight_grad(grad_w, grad_b, KW, m, n, acc);
    }
};

}  // namespace fused
}  // namespace gpucnn

#endif  // GPUCNN_FUSED_CONV_BODY_CUH
