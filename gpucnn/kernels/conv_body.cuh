// Per-element bodies of the convolution kernels (conv.cu), shared with the CPU harness.
//
// Layouts (all C-contiguous):
//   x       (N, C, H, W)           input
//   weight  (O, C, kh, kw)         filters; weight.reshape(O, K) with K = C*kh*kw
//   cols    (K, N*oh*ow)           im2col matrix: row (c, i, j), column (n, oy, ox), ox fastest
//   y       (N, O, oh, ow)         output
// The padded input is x with pt rows on top and pl columns on the left (the bottom/right
// padding only shows up through oh/ow). Padded input row hp = oy*sy + i holds x row
// hp - pt, column wp = ox*sx + j holds x column wp - pl; outside [0, H) x [0, W) it is 0.
#ifndef GPUCNN_CONV_BODY_CUH
#define GPUCNN_CONV_BODY_CUH

#include "common.cuh"

namespace gpucnn {

// One element of cols: idx in [0, K * N*oh*ow), idx = row * (N*oh*ow) + col.
template <typename T>
__host__ __device__ inline void im2col_body(long long idx, const T* __restrict__ x, T* __restrict__ cols,
                                            int N, int C, int H, int W, int kh, int kw, int sy, int sx,
                                            int pt, int pl, int oh, int ow) {
    const long long P = (long long)oh * ow;
    const long long NP = (long long)N * P;
    const long long row = idx / NP;
    const long long col = idx - row * NP;
    const int j = (int)(row % kw);
    const int i = (int)((row / kw) % kh);
    const int c = (int)(row / ((long long)kw * kh));
    const int n = (int)(col / P);
    const long long p = col - (long long)n * P;
    const int oy = (int)(p / ow);
    const int ox = (int)(p - (long long)oy * ow);
    const int ih = oy * sy + i - pt;
    const int iw = ox * sx + j - pl;
    T v = T(0);
    if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
        v = x[(((long long)n * C + c) * H + ih) * W + iw];
    }
    cols[idx] = v;
}

// One element of grad_x, as a gather (no atomics, fixed order, so bitwise repeatable):
// idx in [0, N*C*H*W) names (n, c, h, w). It sums grad_cols[(c, i, j), (n, oy, ox)] over
// every kernel offset (i, j) whose window (oy, ox) covered it, i.e. oy*sy + i == h + pt
// and ox*sx + j == w + pl, in ascending (i, j) order: the order in which the NumPy
// col2im adds them.
template <typename T>
__host__ __device__ inline void col2im_body(long long idx, const T* __restrict__ cols, T* __restrict__ grad_x,
                                            int N, int C, int H, int W, int kh, int kw, int sy, int sx,
                                            int pt, int pl, int oh, int ow) {
    const int w = (int)(idx % W);
    const int h = (int)((idx / W) % H);
    const long long nc = idx / ((long long)W * H);
    const int c = (int)(nc % C);
    const int n = (int)(nc / C);
    const long long P = (long long)oh * ow;
    const long long NP = (long long)N * P;
    const int hp = h + pt;
    const int wp = w + pl;
    T acc = T(0);
    for (int i = 0; i < kh && i <= hp; ++i) {
        const int ty = hp - i;
        if (ty % sy != 0) continue;
        const int oy = ty / sy;
        if (oy >= oh) continue;
        for (int j = 0; j < kw && j <= wp; ++j) {
            const int tx = wp - j;
            if (tx % sx != 0) continue;
            const int ox = tx / sx;
            if (ox >= ow) continue;
            const long long row = ((long long)c * kh + i) * kw + j;
            const long long col = (long long)n * P + (long long)oy * ow + ox;
            acc += cols[row * NP + col];
        }
    }
    grad_x[idx] = acc;
}

// One output element of the direct convolution (fast path for small K = C*kh*kw):
// idx in [0, N*O*oh*ow) names y[n, o, oy, ox] = sum_{c,i,j} w[o,c,i,j] * x_pad[n,c,oy*sy+i,ox*sx+j]
// (+ bias[o] when has_bias), the sum in (c, i, j) order, bias added last as in y = W @ cols + b.
template <typename T>
__host__ __device__ inline void conv_direct_body(long long idx, const T* __restrict__ x,
                                                 const T* __restrict__ weight, const T* __restrict__ bias,
                                                 T* __restrict__ y, int N, int C, int H, int W, int O,
                                                 int kh, int kw, int sy, int sx, int pt, int pl,
                                                 int oh, int ow, int has_bias) {
    const int ox = (int)(idx % ow);
    const int oy = (int)((idx / ow) % oh);
    const long long no = idx / ((long long)ow * oh);
    const int o = (int)(no % O);
    const int n = (int)(no / O);
    const int h0 = oy * sy - pt;
    const int w0 = ox * sx - pl;
    const T* wo = weight + (long long)o * C * kh * kw;
    T acc = T(0);
    for (int c = 0; c < C; ++c) {
        const T* xc = x + ((long long)n * C + c) * H * W;
        const T* wc = wo + (long long)c * kh * kw;
        for (int i = 0; i < kh; ++i) {
            const int ih = h0 + i;
            if (ih < 0 || ih >= H) continue;
            for (int j = 0; j < kw; ++j) {
                const int iw = w0 + j;
                if (iw < 0 || iw >= W) continue;
                acc += wc[i * kw + j] * xc[(long long)ih * W + iw];
            }
        }
    }
    if (has_bias) acc += bias[o];
    y[idx] = acc;
}

// Swap the two leading axes of a (A, B, P) array, optionally adding a bias along A:
// idx in [0, A*B*P) names dst[b, a, p] (dst is (B, A, P)) = src[a, b, p] (+ bias[a]).
// Forward uses it to turn W @ cols, shaped (O, N, oh*ow), into NCHW y with the bias;
// backward uses it (no bias) to turn grad_y (N, O, oh*ow) into (O, N*oh*ow).
template <typename T>
__host__ __device__ inline void transpose01_body(long long idx, const T* __restrict__ src,
                                                 const T* __restrict__ bias, T* __restrict__ dst,
                                                 int A, int B, long long P, int has_bias) {
    const long long p = idx % P;
    const long long ba = idx / P;
    const int a = (int)(ba % A);
    const int b = (int)(ba / A);
    T v = src[((long long)a * B + b) * P + p];
    if (has_bias) v += bias[a];
    dst[idx] = v;
}

// Row sums (the bias gradient: grad_b[o] = sum of row o of gy_mat, shape (O, L)), as a
// block reduction with a fixed order. Block (r, s) sums the chunk
// [s*chunk, min((s+1)*chunk, L)) of row r: thread t first adds elements t, t + GPUCNN_BLOCK,
// t + 2*GPUCNN_BLOCK, ... of the chunk (row_sum_partial), then the block adds the
// GPUCNN_BLOCK partial sums pairwise in a fixed tree (row_sum_tree_step with stride
// GPUCNN_BLOCK/2, ..., 1). Nothing depends on timing: bitwise repeatable.
template <typename T>
__host__ __device__ inline T row_sum_partial(int r, long long s, int t, const T* __restrict__ mat, long long L,
                                             long long chunk) {
    const T* row = mat + (long long)r * L;
    const long long begin = s * chunk;
    const long long end = (begin + chunk < L) ? begin + chunk : L;
    T acc = T(0);
    for (long long k = begin + t; k < end; k += GPUCNN_BLOCK) acc += row[k];
    return acc;
}

// One step of the tree: partial[t] += partial[t + stride] for t < stride.
template <typename T>
__host__ __device__ inline void row_sum_tree_step(int t, int stride, T* partial) {
    if (t < stride) partial[t] += partial[t + stride];
}

}  // namespace gpucnn

#endif  // GPUCNN_CONV_BODY_CUH
