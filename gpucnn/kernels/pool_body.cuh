// Per-element bodies of the pooling kernels (pool.cu), shared with the CPU harness.
//
// Layouts (all C-contiguous): x and grad_x (N, C, H, W) seen as NC planes of H x W;
// y, grad_y and argmax (N, C, oh, ow) seen as NC planes of oh x ow. Flat indices have type I
// (int or long long, see GPUCNN_GRID_STRIDE_LOOP_T in common.cuh).
//
// Geometry (/work/pool_spec.md, gpucnn.ops.geometry.Window2D): tap (i, j) of window (oy, ox)
// reads x row oy*sy - pt + i*dy and column ox*sx - pl + j*dx (dilation dy, dx). The padding may
// differ before and after (pt/pb rows, pl/pr columns); oh, ow come from the host
// (Window2D.output_size, ceil mode included), so the last window may reach past the padded
// input: its taps there are neither input nor padding, and every body below ignores them.
#ifndef GPUCNN_POOL_BODY_CUH
#define GPUCNN_POOL_BODY_CUH

#include "common.cuh"

namespace gpucnn {

// The first tap i whose coordinate start + i*d is >= 0: ceil(-start / d) for a start before the
// input, else 0 (it may be past the window's last tap).
__host__ __device__ inline int first_tap_from_zero(int start, int d) {
    return start < 0 ? (-start + d - 1) / d : 0;
}

// floor(a / b) for b > 0 and any a.
__host__ __device__ inline int floor_div(int a, int b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// How many taps i in [0, k) have start + i*d in [lo, hi): the divisor's factor along one axis.
__host__ __device__ inline int taps_inside(int start, int k, int d, int lo, int hi) {
    const int first = lo > start ? floor_div(lo - start + d - 1, d) : 0;  // ceil((lo - start) / d), at least 0
    const int last_limit = floor_div(hi - 1 - start, d);                 // the last i with start + i*d < hi
    const int last = last_limit < k - 1 ? last_limit : k - 1;
    return last >= first ? last - first + 1 : 0;
}

// One axis' factor of an average pool's divisor, PyTorch's rule, for output o along an axis of
// n input elements padded by `before` and `after`: with count_include_pad the taps inside the
// padded input [-before, n + after) (a ceil-mode overhang is not counted), otherwise the taps on
// real elements [0, n). A window's divisor is its row factor times its column factor: the same
// count as gpucnn.ops.geometry.Window2D.divisors. Callers multiply by reciprocal<T>(divisor),
// 1.0 / divisor computed in double and rounded to T, as the NumPy reference does.
__host__ __device__ inline int avg_pool_axis_count(int o, int s, int k, int d, int before, int after, int n,
                                                   int count_include_pad) {
    const int start = o * s - before;
    return count_include_pad ? taps_inside(start, k, d, -before, n + after) : taps_inside(start, k, d, 0, n);
}

template <typename T>
__host__ __device__ inline T reciprocal(int divisor) {
    return (T)(1.0 / (double)divisor);
}

// One output of max pooling: idx in [0, NC*oh*ow). The window's real elements are scanned
// row-major (padding and a ceil-mode overhang never win). Element k (k = i*kw + j) replaces
// the running maximum when it is strictly greater or is NaN (PyTorch's rule: first maximum
// kept, NaN propagates, the last NaN wins); argmax records k of the winner. The running
// maximum starts at -inf on the window's first real element, so a window whose real values
// are all -inf sends its gradient there, as PyTorch does, never to padding; a window without
// a real element (a dilated window whose taps all miss the input) gives -inf and k = 0.
template <typename T, typename I>
__host__ __device__ inline void max_pool_fwd_body(I idx, const T* __restrict__ x, T* __restrict__ y,
                                                  int* __restrict__ argmax, int H, int W, int kh, int kw,
                                                  int sy, int sx, int dy, int dx, int pt, int pb, int pl, int pr,
                                                  int oh, int ow) {
    (void)pb;
    (void)pr;  // the padding after the input holds nothing a maximum could take
    const int ox = (int)(idx % ow);
    const I ncoy = idx / ow;
    const int oy = (int)(ncoy % oh);
    const I nc = ncoy / oh;
    const T* plane = x + nc * H * W;
    const int h0 = oy * sy - pt;
    const int w0 = ox * sx - pl;
    T best = neg_inf<T>();
    // The first real element: the first tap row and column at or past 0 (rows and columns increase with i, j).
    const int i0 = first_tap_from_zero(h0, dy);
    const int j0 = first_tap_from_zero(w0, dx);
    int best_k = (i0 < kh && h0 + i0 * dy < H && j0 < kw && w0 + j0 * dx < W) ? i0 * kw + j0 : 0;
    for (int i = i0; i < kh; ++i) {
        const int ih = h0 + i * dy;
        if (ih >= H) break;
        for (int j = j0; j < kw; ++j) {
            const int iw = w0 + j * dx;
            if (iw >= W) break;
            const T v = plane[(I)ih * W + iw];
            if (v > best || is_nan(v)) {
                best = v;
                best_k = i * kw + j;
            }
        }
    }
    y[idx] = best;
    argmax[idx] = best_k;
}

// One element of grad_x for max pooling, as a gather over every window that covers it
// (overlapping, dilated and ceil-mode windows included): idx in [0, NC*H*W) names (nc, h, w);
// tap i covers it from output row oy = (h + pt - i*dy) / sy where that divides and is in
// [0, oh) (likewise j, ox; StridedQuotient steps them without a division per tap). It adds
// grad_y of each covering window whose argmax is that tap, taps visited in ascending
// k = i*kw + j, the order in which the NumPy reference adds them. No atomics: bitwise repeatable.
template <typename T, typename I>
__host__ __device__ inline void max_pool_bwd_body(I idx, const T* __restrict__ grad_y,
                                                  const int* __restrict__ argmax, T* __restrict__ grad_x,
                                                  int H, int W, int kh, int kw, int sy, int sx, int dy, int dx,
                                                  int pt, int pb, int pl, int pr, int oh, int ow) {
    (void)pb;
    (void)pr;
    const int w = (int)(idx % W);
    const I nch = idx / W;
    const int h = (int)(nch % H);
    const I nc = nch / H;
    const I base = nc * oh * ow;
    const StridedQuotient first_x(w + pl, dx, sx);
    StridedQuotient y(h + pt, dy, sy);
    T acc = T(0);
    for (int i = 0; i < kh && y.q >= 0; ++i, y.next()) {
        if (y.r != 0 || y.q >= oh) continue;
        StridedQuotient x = first_x;
        for (int j = 0; j < kw && x.q >= 0; ++j, x.next()) {
            if (x.r != 0 || x.q >= ow) continue;
            const I o = base + (I)y.q * ow + x.q;
            if (argmax[o] == i * kw + j) acc += grad_y[o];
        }
    }
    grad_x[idx] = acc;
}

// One output of average pooling: idx in [0, NC*oh*ow). Sum of the window's real elements in
// row-major tap order (padding adds nothing), times T(1.0 / divisor) (avg_pool_axis_count).
template <typename T, typename I>
__host__ __device__ inline void avg_pool_fwd_body(I idx, const T* __restrict__ x, T* __restrict__ y,
                                                  int H, int W, int kh, int kw, int sy, int sx, int dy, int dx,
                                                  int pt, int pb, int pl, int pr, int oh, int ow,
                                                  int count_include_pad) {
    const int ox = (int)(idx % ow);
    const I ncoy = idx / ow;
    const int oy = (int)(ncoy % oh);
    const I nc = ncoy / oh;
    const T* plane = x + nc * H * W;
    const int h0 = oy * sy - pt;
    const int w0 = ox * sx - pl;
    const int i0 = first_tap_from_zero(h0, dy);
    const int j0 = first_tap_from_zero(w0, dx);
    T acc = T(0);
    for (int i = i0; i < kh; ++i) {
        const int ih = h0 + i * dy;
        if (ih >= H) break;
        for (int j = j0; j < kw; ++j) {
            const int iw = w0 + j * dx;
            if (iw >= W) break;
            acc += plane[(I)ih * W + iw];
        }
    }
    const int divisor = avg_pool_axis_count(oy, sy, kh, dy, pt, pb, H, count_include_pad)
                        * avg_pool_axis_count(ox, sx, kw, dx, pl, pr, W, count_include_pad);
    y[idx] = acc * reciprocal<T>(divisor);
}

// One element of grad_x for average pooling, gathered over every covering window as in
// max_pool_bwd_body (ascending k): idx in [0, NC*H*W); the sum of grad_y[window] times
// T(1.0 / divisor) of that window. Bitwise repeatable.
template <typename T, typename I>
__host__ __device__ inline void avg_pool_bwd_body(I idx, const T* __restrict__ grad_y,
                                                  T* __restrict__ grad_x, int H, int W, int kh, int kw,
                                                  int sy, int sx, int dy, int dx, int pt, int pb, int pl, int pr,
                                                  int oh, int ow, int count_include_pad) {
    const int w = (int)(idx % W);
    const I nch = idx / W;
    const int h = (int)(nch % H);
    const I nc = nch / H;
    const I base = nc * oh * ow;
    const StridedQuotient first_x(w + pl, dx, sx);
    StridedQuotient y(h + pt, dy, sy);
    T acc = T(0);
    for (int i = 0; i < kh && y.q >= 0; ++i, y.next()) {
        if (y.r != 0 || y.q >= oh) continue;
        const int rows = avg_pool_axis_count(y.q, sy, kh, dy, pt, pb, H, count_include_pad);
        StridedQuotient x = first_x;
        for (int j = 0; j < kw && x.q >= 0; ++j, x.next()) {
            if (x.r != 0 || x.q >= ow) continue;
            const int divisor = rows * avg_pool_axis_count(x.q, sx, kw, dx, pl, pr, W, count_include_pad);
            acc += grad_y[base + (I)y.q * ow + x.q] * reciprocal<T>(divisor);
        }
    }
    grad_x[idx] = acc;
}

}  // namespace gpucnn

#endif  // GPUCNN_POOL_BODY_CUH
