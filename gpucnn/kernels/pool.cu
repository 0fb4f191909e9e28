// Pooling kernels: max forward (value + argmax), max backward and average forward /
// backward as gathers. Templates on the float type T and the index type I (int where every
// index fits in int32, else long long), instantiated through NVRTC name expressions
// ("max_pool_fwd<float, int>", ...) by gpucnn/ops/cuda/pool.py. Per-element
// arithmetic lives in pool_body.cuh so that the CPU harness runs the very same code.
//
// Every kernel takes the window's geometry as H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow:
// dilation, padding before/after per axis, and the output size from the host
// (gpucnn.ops.geometry.Window2D.output_size, ceil mode included; taps past the padded input are
// ignored). The average kernels take count_include_pad (0 or 1) and compute each window's divisor.
#include "pool_body.cuh"

// Thread idx (grid-stride) computes y[idx] and argmax[idx] = output (nc, oy, ox),
// idx in [0, total), total = N*C*oh*ow.
template <typename T, typename I>
__global__ void max_pool_fwd(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax,
                             int H, int W, int kh, int kw, int sy, int sx, int dy, int dx,
                             int pt, int pb, int pl, int pr, int oh, int ow, I total) {
    GPUCNN_GRID_STRIDE_LOOP_T(I, idx, total) {
        gpucnn::max_pool_fwd_body<T, I>(idx, x, y, argmax, H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow);
    }
}

// Thread idx (grid-stride) owns grad_x[idx] = input element (nc, h, w), idx in [0, total),
// total = N*C*H*W, and gathers from the windows that cover it.
template <typename T, typename I>
__global__ void max_pool_bwd(const T* __restrict__ grad_y, const int* __restrict__ argmax, T* __restrict__ grad_x,
                             int H, int W, int kh, int kw, int sy, int sx, int dy, int dx,
                             int pt, int pb, int pl, int pr, int oh, int ow, I total) {
    GPUCNN_GRID_STRIDE_LOOP_T(I, idx, total) {
        gpucnn::max_pool_bwd_body<T, I>(idx, grad_y, argmax, grad_x, H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr,
                                        oh, ow);
    }
}

// Thread idx (grid-stride) computes y[idx] = output (nc, oy, ox), idx in [0, total),
// total = N*C*oh*ow; each window's sum times 1 / its divisor (count_include_pad: 1 or 0).
template <typename T, typename I>
__global__ void avg_pool_fwd(const T* __restrict__ x, T* __restrict__ y, int H, int W, int kh, int kw,
                             int sy, int sx, int dy, int dx, int pt, int pb, int pl, int pr, int oh, int ow,
                             int count_include_pad, I total) {
    GPUCNN_GRID_STRIDE_LOOP_T(I, idx, total) {
        gpucnn::avg_pool_fwd_body<T, I>(idx, x, y, H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow,
                                        count_include_pad);
    }
}

// Thread idx (grid-stride) owns grad_x[idx] = input element (nc, h, w), idx in [0, total),
// total = N*C*H*W; each covering window's gradient times 1 / its divisor.
template <typename T, typename I>
__global__ void avg_pool_bwd(const T* __restrict__ grad_y, T* __restrict__ grad_x, int H, int W, int kh, int kw,
                             int sy, int sx, int dy, int dx, int pt, int pb, int pl, int pr, int oh, int ow,
                             int count_include_pad, I total) {
    GPUCNN_GRID_STRIDE_LOOP_T(I, idx, total) {
        gpucnn::avg_pool_bwd_body<T, I>(idx, grad_y, grad_x, H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow,
                                        count_include_pad);
    }
}
