// Convolution kernels: im2col, col2im (gather), direct convolution, axis swap with bias,
// row sums (bias gradient). Templates on the float type T and, for the per-element kernels,
// on the index type I (int where the launcher found that every index fits in int32, else
// long long); the launchers (gpucnn/ops/cuda/conv.py) instantiate them through NVRTC name
// expressions such as "im2col<float, int>". Per-element arithmetic lives in conv_body.cuh so
// that the CPU harness (tests/kernels/harness.cu) runs the very same code.
#include "conv_body.cuh"

// Thread idx (grid-stride) is work item idx in [0, total), total = C * N*oh*ow: channel
// c = idx / (N*oh*ow), column col = idx % (N*oh*ow) = (n, oy, ox); it writes the kh*kw
// elements cols[(c, i, j), col], i in [0, kh), j in [0, kw).
template <typename T, typename I>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols, int N, int C, int H, int W,
                       int kh, int kw, int sy, int sx, int pt, int pl, int dy, int dx, int oh, int ow, I total) {
    GPUCNN_GRID_STRIDE_LOOP_T(I, idx, total) {
        gpucnn::im2col_body<T, I>(idx, x, cols, N, C, H, W, kh, kw, sy, sx, pt, pl, dy, dx, oh, ow);
    }
}

// Thread idx (grid-stride) owns grad_x[idx] = grad_x[n, c, h, w], idx in [0, total),
// total = N*C*H*W, and gathers the grad_cols entries of every window that covered it.
template <typename T, typename I>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ grad_x, int N, int C, int H, int W,
                       int kh, int kw, int sy, int sx, int pt, int pl, int dy, int dx, int oh, int ow, I total) {
    GPUCNN_GRID_STRIDE_LOOP_T(I, idx, total) {
        gpucnn::col2im_body<T, I>(idx, cols, grad_x, N, C, H, W, kh, kw, sy, sx, pt, pl, dy, dx, oh, ow);
    }
}

// Thread idx (grid-stride) computes y[idx] = y[n, o, oy, ox], idx in [0, total),
// total = N*O*oh*ow, from the group_c input channels of filter o's group (group_o filters
// per group); bias is read only when has_bias != 0 (any valid pointer otherwise).
template <typename T, typename I>
__global__ void conv_direct(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                            T* __restrict__ y, int N, int C, int H, int W, int O, int kh, int kw,
                            int sy, int sx, int pt, int pl, int dy, int dx, int oh, int ow,
                            int group_c, int group_o, int has_bias, I total) {
    GPUCNN_GRID_STRIDE_LOOP_T(I, idx, total) {
        gpucnn::conv_direct_body<T, I>(idx, x, weight, bias, y, N, C, H, W, O, kh, kw, sy, sx, pt, pl, dy, dx,
                                       oh, ow, group_c, group_o, has_bias);
    }
}

// Thread idx (grid-stride) writes dst[idx] = dst[b, a, p] = src[a, b, p] (+ bias[a]),
// idx in [0, total), total = A*B*P; dst is (B, A, P), src is (A, B, P).
template <typename T, typename I>
__global__ void transpose01(const T* __restrict__ src, const T* __restrict__ bias, T* __restrict__ dst,
                            int A, int B, I P, int has_bias, I total) {
    GPUCNN_GRID_STRIDE_LOOP_T(I, idx, total) {
        gpucnn::transpose01_body<T, I>(idx, src, bias, dst, A, B, P, has_bias);
    }
}

// Block (r, s) (grid = (rows, chunks), exactly GPUCNN_BLOCK threads) writes
// out[r * gridDim.y + s], the sum of chunk s ([s*chunk, (s+1)*chunk) clipped to L) of row
// r of mat (rows, L). With one chunk per row this is the row sum itself; the launcher
// runs it a second time over the (rows, chunks) partial sums when a row needed several
// chunks. A fixed shared-memory tree adds the thread sums: no atomics, bitwise repeatable.
template <typename T>
__global__ void row_sum(const T* __restrict__ mat, T* __restrict__ out, int rows, long long L, long long chunk) {
    __shared__ T partial[GPUCNN_BLOCK];
    const int r = blockIdx.x;
    const long long s = blockIdx.y;
    const int t = threadIdx.x;
    if (r >= rows) return;  // whole block leaves together: no thread is left at a barrier
    partial[t] = gpucnn::row_sum_partial<T>(r, s, t, mat, L, chunk);
    __syncthreads();
    for (int stride = GPUCNN_BLOCK / 2; stride > 0; stride /= 2) {
        gpucnn::row_sum_tree_step<T>(t, stride, partial);
        __syncthreads();
    }
    if (t == 0) out[(long long)r * gridDim.y + s] = partial[0];
}
