// Per-element bodies of the convolution kernels (conv.cu), shared with the CPU harness.
//
// Layouts (all C-contiguous):
//   x       (N, C, H, W)           input
//   weight  (O, C/groups, kh, kw)  filters
//   cols    (K, N*oh*ow)           im2col matrix: row (c, i, j), column (n, oy, ox), ox fastest
//   y       (N, O, oh, ow)         output
// The padded input is x with pt rows on top and pl columns on the left (the bottom/right
// padding only shows up through oh/ow). Tap (i, j) of window (oy, ox), dilated by (dy, dx),
// reads padded row hp = oy*sy + i*dy, which holds x row hp - pt, and padded column
// wp = ox*sx + j*dx, which holds x column wp - pl; outside [0, H) x [0, W) it is 0.
// Groups: weight is (O, C/groups, kh, kw); filter o sees input channels of its group only.
// The im2col matrix does not depend on the groups: group g's rows are its channels' rows.
#ifndef GPUCNN_CONV_BODY_CUH
#define GPUCNN_CONV_BODY_CUH

#include "common.cuh"

namespace gpucnn {

// The index type I is int or long long (see GPUCNN_GRID_STRIDE_LOOP_T in common.cuh): every
// flat index below is formed in I, coordinates within an image in int.

// One work item of im2col: idx in [0, C * N*oh*ow), idx = c * (N*oh*ow) + col, col = (n, oy, ox).
// It writes the kh*kw elements cols[(c, i, j), col] for every kernel offset (i, j): one
// division chain per kh*kw elements, and neighbouring threads write neighbouring columns.
template <typename T, typename I>
__host__ __device__ inline void im2col_body(I idx, const T* __restrict__ x, T* __restrict__ cols,
                                            int N, int C, int H, int W, int kh, int kw, int sy, int sx,
                                            int pt, int pl, int dy, int dx, int oh, int ow) {
    const I NP = (I)N * oh * ow;
    const I col = idx % NP;
    const int c = (int)(idx / NP);
    const int ox = (int)(col % ow);
    const I n_oy = col / ow;
    const int oy = (int)(n_oy % oh);
    const int n = (int)(n_oy / oh);
    const T* xc = x + ((I)n * C + c) * H * W;
    T* out = cols + (I)c * kh * kw * NP + col;  // cols[(c, 0, 0), col]
    const int h0 = oy * sy - pt;
    const int w0 = ox * sx - pl;
    for (int i = 0; i < kh; ++i) {
        const int ih = h0 + i * dy;
        const bool row_inside = ih >= 0 && ih < H;
        for (int j = 0; j < kw; ++j) {
            const int iw = w0 + j * dx;
            *out = (row_inside && iw >= 0 && iw < W) ? xc[(I)ih * W + iw] : T(0);
            out += NP;  // next row (c, i, j + 1) of the same column
        }
    }
}

// One element of grad_x, as a gather (no atomics, fixed order, so bitwise repeatable):
// idx in [0, N*C*H*W) names (n, c, h, w). It sums grad_cols[(c, i, j), (n, oy, ox)] over
// every kernel offset (i, j) whose window (oy, ox) covered it, i.e. oy*sy + i*dy == h + pt
// and ox*sx + j*dx == w + pl, in ascending (i, j) order: the order in which the NumPy
// col2im adds them. StridedQuotient steps oy = (h + pt - i*dy) / sy along i (and ox along
// j) without dividing in the loops.
template <typename T, typename I>
__host__ __device__ inline void col2im_body(I idx, const T* __restrict__ cols, T* __restrict__ grad_x,
                                            int N, int C, int H, int W, int kh, int kw, int sy, int sx,
                                            int pt, int pl, int dy, int dx, int oh, int ow) {
    const int w = (int)(idx % W);
    const I nch = idx / W;
    const int h = (int)(nch % H);
    const I nc = nch / H;
    const int c = (int)(nc % C);
    const int n = (int)(nc / C);
    const I NP = (I)N * oh * ow;
    const T* cols_c = cols + (I)c * kh * kw * NP + (I)n * oh * ow;  // grad_cols[(c, 0, 0), (n, 0, 0)]
    const StridedQuotient first_x(w + pl, dx, sx);
    StridedQuotient y(h + pt, dy, sy);
    T acc = T(0);
    for (int i = 0; i < kh && y.q >= 0; ++i, y.next()) {
        if (y.r != 0 || y.q >= oh) continue;
        StridedQuotient x = first_x;
        for (int j = 0; j < kw && x.q >= 0; ++j, x.next()) {
            if (x.r != 0 || x.q >= ow) continue;
            acc += cols_c[(I)(i * kw + j) * NP + (I)y.q * ow + x.q];
        }
    }
    grad_x[idx] = acc;
}

// One output element of the direct convolution (fast path for small K = C/groups*kh*kw):
// idx in [0, N*O*oh*ow) names y[n, o, oy, ox] = sum_{c,i,j} w[o,c,i,j] * x_pad[n, g*group_c + c, oy*sy+i*dy, ox*sx+j*dx]
// (+ bias[o] when has_bias), g = o / group_o the filter's group, group_c = C/groups input
// channels and group_o = O/groups filters per group; the sum in (c, i, j) order, bias
// added last as in y = W @ cols + b.
template <typename T, typename I>
__host__ __device__ inline void conv_direct_body(I idx, const T* __restrict__ x,
                                                 const T* __restrict__ weight, const T* __restrict__ bias,
                                                 T* __restrict__ y, int N, int C, int H, int W, int O,
                                                 int kh, int kw, int sy, int sx, int pt, int pl, int dy, int dx,
                                                 int oh, int ow, int group_c, int group_o, int has_bias) {
    const int ox = (int)(idx % ow);
    const I noy = idx / ow;
    const int oy = (int)(noy % oh);
    const I no = noy / oh;
    const int o = (int)(no % O);
    const int n = (int)(no / O);
    const int first_c = (o / group_o) * group_c;
    const int h0 = oy * sy - pt;
    const int w0 = ox * sx - pl;
    const T* wo = weight + (I)o * group_c * kh * kw;
    T acc = T(0);
    for (int c = 0; c < group_c; ++c) {
        const T* xc = x + ((I)n * C + first_c + c) * H * W;
        const T* wc = wo + c * kh * kw;
        for (int i = 0; i < kh; ++i) {
            const int ih = h0 + i * dy;
            if (ih < 0 || ih >= H) continue;
            for (int j = 0; j < kw; ++j) {
                const int iw = w0 + j * dx;
                if (iw < 0 || iw >= W) continue;
                acc += wc[i * kw + j] * xc[(I)ih * W + iw];
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
template <typename T, typename I>
__host__ __device__ inline void transpose01_body(I idx, const T* __restrict__ src,
                                                 const T* __restrict__ bias, T* __restrict__ dst,
                                                 int A, int B, I P, int has_bias) {
    const I p = idx % P;
    const I ba = idx / P;
    const int a = (int)(ba % A);
    const int b = (int)(ba / A);
    T v = src[((I)a * B + b) * P + p];
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
