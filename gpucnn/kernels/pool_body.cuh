// Per-element bodies of the pooling kernels (pool.cu), shared with the CPU harness.
//
// Layouts (all C-contiguous): x and grad_x (N, C, H, W) seen as NC planes of H x W;
// y, grad_y and argmax (N, C, oh, ow) seen as NC planes of oh x ow. Window (oy, ox)
// covers padded rows oy*sy .. oy*sy+kh-1 and columns ox*sx .. ox*sx+kw-1; padded row hp
// is x row hp - pt, padded column wp is x column wp - pl. Flat indices have type I (int or
// long long, see GPUCNN_GRID_STRIDE_LOOP_T in common.cuh).
#ifndef GPUCNN_POOL_BODY_CUH
#define GPUCNN_POOL_BODY_CUH

#include "common.cuh"

namespace gpucnn {

// One output of max pooling: idx in [0, NC*oh*ow). The window is scanned row-major;
// padding counts as -inf. Element k (k = i*kw + j) replaces the running maximum when it
// is strictly greater or is NaN (PyTorch's rule: first maximum kept, NaN propagates);
// argmax records k of the winner.
template <typename T, typename I>
__host__ __device__ inline void max_pool_fwd_body(I idx, const T* __restrict__ x, T* __restrict__ y,
                                                  int* __restrict__ argmax, int H, int W, int kh, int kw,
                                                  int sy, int sx, int pt, int pl, int oh, int ow) {
    const int ox = (int)(idx % ow);
    const I ncoy = idx / ow;
    const int oy = (int)(ncoy % oh);
    const I nc = ncoy / oh;
    const T* plane = x + nc * H * W;
    const int h0 = oy * sy - pt;
    const int w0 = ox * sx - pl;
    T best = neg_inf<T>();
    int best_k = 0;
    for (int i = 0; i < kh; ++i) {
        const int ih = h0 + i;
        for (int j = 0; j < kw; ++j) {
            const int iw = w0 + j;
            const T v = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? plane[(I)ih * W + iw] : neg_inf<T>();
            const int k = i * kw + j;
            if (k == 0 || v > best || is_nan(v)) {
                best = v;
                best_k = k;
            }
        }
    }
    y[idx] = best;
    argmax[idx] = best_k;
}

// One element of grad_x for max pooling, as a gather over every window that covers it
// (overlapping windows included): idx in [0, NC*H*W) names (nc, h, w); it adds grad_y of
// each covering window whose argmax points at this element. Windows are visited with
// oy and ox descending, i.e. with the in-window offset k ascending, the order in which
// the NumPy reference adds them. No atomics: bitwise repeatable.
template <typename T, typename I>
__host__ __device__ inline void max_pool_bwd_body(I idx, const T* __restrict__ grad_y,
                                                  const int* __restrict__ argmax, T* __restrict__ grad_x,
                                                  int H, int W, int kh, int kw, int sy, int sx, int pt, int pl,
                                                  int oh, int ow) {
    const int w = (int)(idx % W);
    const I nch = idx / W;
    const int h = (int)(nch % H);
    const I nc = nch / H;
    const int hp = h + pt;
    const int wp = w + pl;
    const CoverRange rows = covering_outputs(hp, kh, sy, oh);
    const CoverRange cols = covering_outputs(wp, kw, sx, ow);
    const I base = nc * oh * ow;
    T acc = T(0);
    for (int oy = rows.hi; oy >= rows.lo; --oy) {
        const int i = hp - oy * sy;
        for (int ox = cols.hi; ox >= cols.lo; --ox) {
            const int j = wp - ox * sx;
            const I o = base + (I)oy * ow + ox;
            if (argmax[o] == i * kw + j) acc += grad_y[o];
        }
    }
    grad_x[idx] = acc;
}

// One output of average pooling: idx in [0, NC*oh*ow). Sum of the window in row-major
// order (padding adds nothing), times scale = 1/(kh*kw) (padded zeros are counted).
template <typename T, typename I>
__host__ __device__ inline void avg_pool_fwd_body(I idx, const T* __restrict__ x, T* __restrict__ y,
                                                  int H, int W, int kh, int kw, int sy, int sx, int pt, int pl,
                                                  int oh, int ow, T scale) {
    const int ox = (int)(idx % ow);
    const I ncoy = idx / ow;
    const int oy = (int)(ncoy % oh);
    const I nc = ncoy / oh;
    const T* plane = x + nc * H * W;
    const int h0 = oy * sy - pt;
    const int w0 = ox * sx - pl;
    T acc = T(0);
    for (int i = 0; i < kh; ++i) {
        const int ih = h0 + i;
        if (ih < 0 || ih >= H) continue;
        for (int j = 0; j < kw; ++j) {
            const int iw = w0 + j;
            if (iw < 0 || iw >= W) continue;
            acc += plane[(I)ih * W + iw];
        }
    }
    y[idx] = acc * scale;
}

// One element of grad_x for average pooling, gathered over every covering window:
// idx in [0, NC*H*W); sum of grad_y[window] * scale, windows in the same order as
// max_pool_bwd_body. Bitwise repeatable.
template <typename T, typename I>
__host__ __device__ inline void avg_pool_bwd_body(I idx, const T* __restrict__ grad_y,
                                                  T* __restrict__ grad_x, int H, int W, int kh, int kw,
                                                  int sy, int sx, int pt, int pl, int oh, int ow, T scale) {
    const int w = (int)(idx % W);
    const I nch = idx / W;
    const int h = (int)(nch % H);
    const I nc = nch / H;
    const int hp = h + pt;
    const int wp = w + pl;
    const CoverRange rows = covering_outputs(hp, kh, sy, oh);
    const CoverRange cols = covering_outputs(wp, kw, sx, ow);
    const I base = nc * oh * ow;
    T acc = T(0);
    for (int oy = rows.hi; oy >= rows.lo; --oy) {
        for (int ox = cols.hi; ox >= cols.lo; --ox) {
            acc += grad_y[base + (I)oy * ow + ox] * scale;
        }
    }
    grad_x[idx] = acc;
}

}  // namespace gpucnn

#endif  // GPUCNN_POOL_BODY_CUH
