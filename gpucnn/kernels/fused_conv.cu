// Fused convolution kernels: implicit GEMM over NCHW, tiled through shared memory
// (fused_common.cuh: the core, its thread-to-element map and phases; fused_conv_body.cuh:
// the problems). One block per TM x TN output tile of the tile shape ``tile`` (the last argument of every
// GEMM kernel: GPUCNN_GEMM_TILE_TABLE, chosen per launch by the launcher), GPUCNN_BLOCK threads,
// grid = gemm_blocks<tile>(M, N). Launchers: gpucnn/compile/cuda_graph/launch.py.
//
//   conv_fwd_fused:   y = relu(conv(x, w) + b)                  M = O, N = N*oh*ow, K = C*kh*kw
//   conv_fwd_pool_fused: (y, argmax) = maxpool(relu(conv(x, w) + b)) over ph x pw windows (stride = window, no
//                     padding)                                   M = O, N = N*poh*pow*ph*pw (window order)
//   conv_dgrad_fused: gx = conv_transpose(gy, w) * (mask > 0)   M = C, N = N*H*W,   K = O*kh*kw
//   conv_wgrad_fused: [gw | gb] = gy_mat @ [cols.T | 1]         M = O, N = K (+1),   K = N*oh*ow
//
// Split-K of the weight gradient (fused_splitk.cuh), when the launcher picks S > 1 slices:
//   conv_wgrad_partial_fused: partial[s] = conv_wgrad's GEMM over k-slice s  grid = gemm_blocks(M, N) * S
//   conv_wgrad_pooled_fused / _partial_fused: the same from the max-pool's gradient and argmax (the pool's
//                     backward inside the GEMM's loads)
//   conv_wgrad_reduce_fused:  [gw | gb] = sum of partial[s], s ascending     grid-stride over M*N
#include "fused_conv_body.cuh"

#define GPUCNN_CONV_GEOMETRY_PARAMS int N, int C, int H, int W, int O, int kh, int kw, int sy, int sx, int pt, \
                                    int pl, int oh, int ow
#define GPUCNN_CONV_GEOMETRY {N, C, H, W, O, kh, kw, sy, sx, pt, pl, oh, ow}

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void conv_fwd_fused(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                               T* __restrict__ y, GPUCNN_CONV_GEOMETRY_PARAMS, int flags, int tile) {
    const gpucnn::fused::ConvForward<T> p{x, weight, bias, y, GPUCNN_CONV_GEOMETRY, flags,
                                          O, N * oh * ow, C * kh * kw};
    gpucnn::fused::tiled_gemm<T>(p, tile);
}

// y and argmax (N, O, oh / ph, ow / pw); flags BIAS, RELU, MASK (argmax GPUCNN_POOL_NO_GRAD where the max is
// not > 0). The launcher runs tiles whose RN is a multiple of 4 and checks that ph * pw divides 4.
template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void conv_fwd_pool_fused(const T* __restrict__ x, const T* __restrict__ weight,
                                    const T* __restrict__ bias, T* __restrict__ y, unsigned char* __restrict__ argmax,
                                    GPUCNN_CONV_GEOMETRY_PARAMS, int ph, int pw, int flags, int tile) {
    const int poh = oh / ph, pow_ = ow / pw;
    const gpucnn::fused::ConvForwardPool<T> p{{x, weight, bias, y, GPUCNN_CONV_GEOMETRY, flags, O,
                                               N * poh * pow_ * ph * pw, C * kh * kw},
                                              argmax, ph, pw, poh, pow_};
    gpucnn::fused::tiled_gemm<T>(p, tile);
}

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void conv_dgrad_fused(const T* __restrict__ grad_y, const T* __restrict__ weight,
                                 const T* __restrict__ mask_src, T* __restrict__ grad_x,
                                 GPUCNN_CONV_GEOMETRY_PARAMS, int flags, int tile) {
    if (sy == 1 && sx == 1) {  // no division by the stride in the k-loop
        const gpucnn::fused::ConvDataGrad<T, true> p{grad_y, weight, mask_src, grad_x, GPUCNN_CONV_GEOMETRY, flags,
                                                     C, N * H * W, O * kh * kw};
        gpucnn::fused::tiled_gemm<T>(p, tile);
    } else {
        const gpucnn::fused::ConvDataGrad<T, false> p{grad_y, weight, mask_src, grad_x, GPUCNN_CONV_GEOMETRY, flags,
                                                      C, N * H * W, O * kh * kw};
        gpucnn::fused::tiled_gemm<T>(p, tile);
    }
}

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void conv_wgrad_fused(const T* __restrict__ grad_y, const T* __restrict__ x, T* __restrict__ grad_w,
                                 T* __restrict__ grad_b, GPUCNN_CONV_GEOMETRY_PARAMS, int flags, int tile) {
    const int KW = C * kh * kw;
    const gpucnn::fused::ConvWeightGrad<T> p{grad_y, x, grad_w, grad_b, GPUCNN_CONV_GEOMETRY, flags,
                                             O, KW + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), N * oh * ow, KW};
    gpucnn::fused::tiled_gemm<T>(p, tile);
}

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void conv_wgrad_partial_fused(const T* __restrict__ grad_y, const T* __restrict__ x,
                                         T* __restrict__ partial, GPUCNN_CONV_GEOMETRY_PARAMS, int flags, int slices,
                                         int tile) {
    const int KW = C * kh * kw;
    const gpucnn::fused::ConvWeightGrad<T> p{grad_y, x, nullptr, nullptr, GPUCNN_CONV_GEOMETRY, flags,
                                             O, KW + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), N * oh * ow, KW};
    gpucnn::fused::split_k_gemm<T>(p, partial, slices, tile);
}

// The weight gradients from the gradient of the max-pool after the convolution (ConvWeightGradPooled): grad_pool and
// argmax (N, O, oh / ph, ow / pw) in place of grad_y; the same GEMM, its lhs unpooled where it is read.
#define GPUCNN_CONV_WGRAD_POOLED(p, G, OUT_W, OUT_B)                                                            \
    const int KW = C * kh * kw;                                                                                 \
    const gpucnn::fused::ConvWeightGradPooled<T> p{{G, x, OUT_W, OUT_B, GPUCNN_CONV_GEOMETRY, flags, O,         \
                                                   KW + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), N * oh * ow, KW}, \
                                                  argmax, ph, pw, oh / ph, ow / pw}

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void conv_wgrad_pooled_fused(const T* __restrict__ grad_pool, const unsigned char* __restrict__ argmax,
                                        const T* __restrict__ x, T* __restrict__ grad_w, T* __restrict__ grad_b,
                                        GPUCNN_CONV_GEOMETRY_PARAMS, int ph, int pw, int flags, int tile) {
    GPUCNN_CONV_WGRAD_POOLED(p, grad_pool, grad_w, grad_b);
    gpucnn::fused::tiled_gemm<T>(p, tile);
}

template <typename T>
GPUCNN_GEMM_BOUNDS
__global__ void conv_wgrad_pooled_partial_fused(const T* __restrict__ grad_pool,
                                                const unsigned char* __restrict__ argmax, const T* __restrict__ x,
                                                T* __restrict__ partial, GPUCNN_CONV_GEOMETRY_PARAMS, int ph, int pw,
                                                int flags, int slices, int tile) {
    GPUCNN_CONV_WGRAD_POOLED(p, grad_pool, nullptr, nullptr);
    gpucnn::fused::split_k_gemm<T>(p, partial, slices, tile);
}

// partial (slices, O, cols), cols = KW = C*kh*kw (+1: the bias column), total = O * cols; grad_b unused without
// the bias column.
template <typename T>
__global__ void conv_wgrad_reduce_fused(const T* __restrict__ partial, T* __restrict__ grad_w, T* __restrict__ grad_b,
                                        int slices, int cols, int KW, int total) {
    GPUCNN_GRID_STRIDE_LOOP32(idx, total)
    gpucnn::fused::split_k_reduce_body(idx, partial, grad_w, grad_b, slices, cols, KW, total);
}
