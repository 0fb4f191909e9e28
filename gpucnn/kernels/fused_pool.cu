// Max pooling with a uint8 argmax, and its gather backward with the ReLU below folded in
// (fused_pool_body.cuh). Grid-stride, 32-bit indices; thread idx owns one element:
//   max_pool_u8_fwd: y[idx], argmax[idx], idx in [0, N*C*oh*ow)   y = maxpool(x); with GPUCNN_FUSED_MASK
//                    argmax = GPUCNN_POOL_NO_GRAD (255, "no gradient") where !(y > 0)
//   max_pool_u8_bwd: grad_x[idx], idx in [0, N*C*H*W)              gx = maxpool_backward(gy) over the argmax
//                    (reads grad_y and argmax only: the ReLU mask is in the argmax)
#include "fused_pool_body.cuh"

template <typename T>
__global__ void max_pool_u8_fwd(const T* __restrict__ x, T* __restrict__ y, unsigned char* __restrict__ argmax,
                                int H, int W, int kh, int kw, int sy, int sx, int pt, int pl, int oh, int ow,
                                int flags, int total) {
    GPUCNN_GRID_STRIDE_LOOP32(idx, total) {
        gpucnn::fused::max_pool_u8_fwd_body<T>(idx, x, y, argmax, H, W, kh, kw, sy, sx, pt, pl, oh, ow, flags);
    }
}

template <typename T>
__global__ void max_pool_u8_bwd(const T* __restrict__ grad_y, const unsigned char* __restrict__ argmax,
                                T* __restrict__ grad_x, int H, int W, int kh, int kw, int sy, int sx, int pt,
                                int pl, int oh, int ow, int total) {
    GPUCNN_GRID_STRIDE_LOOP32(idx, total) {
        gpucnn::fused::max_pool_u8_bwd_body<T>(idx, grad_y, argmax, grad_x, H, W, kh, kw, sy, sx, pt, pl, oh, ow);
    }
}
