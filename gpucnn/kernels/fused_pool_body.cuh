// Max pooling with a compact argmax, and its backward pass with the ReLU below folded in.
// Per-element bodies (one thread, one output element; no shared memory, no phases).
//
// Layouts: x (N, C, H, W) the pooled input (the ReLU output below), y and argmax
// (N, C, oh, ow); argmax holds i*kw + j, the index within the window (uint8: kh*kw <= 255,
// checked at launch, so an index is <= 254). Rule as gpucnn.ops.pool: the first maximum wins ties, a NaN takes
// over (the last NaN of the window wins), a window all -inf goes to its first real element.
//
// The ReLU mask rides in the argmax: with GPUCNN_FUSED_MASK the forward stores GPUCNN_POOL_NO_GRAD (255,
// matching no index) where !(y > 0) (y <= 0 or NaN), so the backward never reads x. Exact: the only x
// elements that get a gradient are those an argmax names, and for those x == y of the window (NaN too), so
// (x > 0) == (y > 0).
#ifndef GPUCNN_FUSED_POOL_BODY_CUH
#define GPUCNN_FUSED_POOL_BODY_CUH

#include "fused_common.cuh"

// The argmax code of a window whose gradient the ReLU mask drops (above every window index).
#define GPUCNN_POOL_NO_GRAD 255

namespace gpucnn {
namespace fused {

// idx in [0, N*C*oh*ow) names (nc, oy, ox): y[idx] = max over the window, argmax[idx] its index, or
// GPUCNN_POOL_NO_GRAD where flags has GPUCNN_FUSED_MASK and !(y[idx] > 0).
template <typename T>
__host__ __device__ inline void max_pool_u8_fwd_body(int idx, const T* __restrict__ x, T* __restrict__ y,
                                                     unsigned char* __restrict__ argmax, int H, int W, int kh,
                                                     int kw, int sy, int sx, int pt, int pl, int oh, int ow,
                                                     int flags) {
    const int ox = idx % ow;
    const int oy = (idx / ow) % oh;
    const int nc = idx / (ow * oh);
    const T* xc = x + nc * H * W;
    T best = neg_inf<T>();
    // The first real element, as pool_body.cuh: a window of nothing but -inf sends its gradient there, not to
    // padding (a window without one, more padding than PyTorch allows, keeps k = 0).
    const int i0 = oy * sy < pt ? pt - oy * sy : 0;
    const int j0 = ox * sx < pl ? pl - ox * sx : 0;
    int best_k = (i0 < kh && oy * sy + i0 - pt < H && j0 < kw && ox * sx + j0 - pl < W) ? i0 * kw + j0 : 0;
    bool nan_seen = false;
    for (int i = 0; i < kh; ++i) {
        const int ih = oy * sy + i - pt;
        for (int j = 0; j < kw; ++j) {
            const int iw = ox * sx + j - pl;
            const T v = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? xc[ih * W + iw] : neg_inf<T>();
            if (is_nan(v)) {
                best = v;
                best_k = i * kw + j;
                nan_seen = true;
            } else if (!nan_seen && v > best) {
                best = v;
                best_k = i * kw + j;
            }
        }
    }
    y[idx] = best;
    const bool dropped = (flags & GPUCNN_FUSED_MASK) && !(best > T(0));  // NaN too: relu_backward's (x > 0)
    argmax[idx] = (unsigned char)(dropped ? GPUCNN_POOL_NO_GRAD : best_k);
}

// Gather: idx in [0, N*C*H*W) names x[n, c, h, w]; grad_x[idx] = sum of grad_y over the windows that cover
// (h, w) and whose argmax names it, in descending (oy, ox) order: max_pool_backward(grad_y), and with a masked
// argmax relu_backward(max_pool_backward(grad_y), x). A window coded GPUCNN_POOL_NO_GRAD matches no k, so it
// adds nothing, not grad_y * 0: an inf gradient there gives 0 (it gave NaN when this multiplied by (x > 0)),
// as PyTorch's threshold_backward, where(x <= 0, 0, grad).
template <typename T>
__host__ __device__ inline void max_pool_u8_bwd_body(int idx, const T* __restrict__ grad_y,
                                                     const unsigned char* __restrict__ argmax,
                                                     T* __restrict__ grad_x, int H, int W, int kh, int kw, int sy,
                                                     int sx, int pt, int pl, int oh, int ow) {
    const int w = idx % W;
    const int h = (idx / W) % H;
    const int nc = idx / (W * H);
    const CoverRange ry = covering_outputs(h + pt, kh, sy, oh);
    const CoverRange rx = covering_outputs(w + pl, kw, sx, ow);
    T acc = T(0);
    // Descending (oy, ox), as pool.cu's gather and the NumPy reference add overlapping windows: one order,
    // so the paths round alike.
    for (int oy = ry.hi; oy >= ry.lo; --oy) {
        for (int ox = rx.hi; ox >= rx.lo; --ox) {
            const int o = (nc * oh + oy) * ow + ox;
            const int k = (h + pt - oy * sy) * kw + (w + pl - ox * sx);
            if ((int)argmax[o] == k) acc += grad_y[o];
        }
    }
    grad_x[idx] = acc;
}

}  // namespace fused
}  // namespace gpucnn

#endif  // GPUCNN_FUSED_POOL_BODY_CUH
