// Training-mode batch normalisation (gpucnn/ops/batchnorm.py, PyTorch's semantics) for the graph-captured step:
// the phases of the kernels of fused_batchnorm.cu, as __host__ __device__ functions the CPU harness replays
// (tests/kernels/harness_batchnorm.cuh; the phase convention: fused_common.cuh).
//
// Layouts: x, y, grad_y, grad_x (N, C, HW), HW = H*W (1 for an (N, C) input); gamma, beta, mean, inv_std,
// running_mean, running_var (C,). A channel's count = N*HW elements e = n*HW + p in [0, count) lie at
// (n*C + c)*HW + p.
//
// Slices: the per-channel reductions run on C*S blocks, block b = c*S + s owning slice s of channel c, the
// elements [begin(s), end(s)) with count / S each and one more for the first count % S (bn_block; an empty
// slice, S > count, contributes nothing). Thread t of a block visits e = begin + t, begin + t + BLOCK, ...
// in ascending order (ChannelCursor). Partial results go to a (C*S, 2) buffer of T, row b; a later pass
// combines a channel's S rows in ascending s. No atomics: bitwise repeatable.
//
// Statistics: each thread keeps Welford's running (count, mean, M2) over its elements; the block merges the
// threads' triples in a fixed tree (Chan et al.'s pairwise update), and the S slices are merged in ascending s
// with the same update: accurate in fp32 for large means (no sum of squares).
#ifndef GPUCNN_FUSED_BATCHNORM_BODY_CUH
#define GPUCNN_FUSED_BATCHNORM_BODY_CUH

#include "fused_common.cuh"

// Flag of bn_backward_apply_fused (gpucnn/compile/cuda_graph/launch_batchnorm.py: INPUT_GRAD): write grad_x.
// GPUCNN_FUSED_RELU (forward: y = max(y, 0)) and GPUCNN_FUSED_MASK (backward: grad_y * (y > 0)) as elsewhere.
#define GPUCNN_BN_INPUT_GRAD 8

namespace gpucnn {
namespace fused {

// Block b of a C*S grid: its channel, slice and element range [begin, end) of the channel's count.
struct BnBlock {
    int channel, slice, begin, end;
};

__host__ __device__ inline int bn_slice_begin(int count, int slices, int s) {
    const int q = count / slices, r = count - (count / slices) * slices;
    return s * q + (s < r ? s : r);
}

__host__ __device__ inline BnBlock bn_block(int block, int count, int slices) {
    const int c = block / slices, s = block - (block / slices) * slices;
    return {c, s, bn_slice_begin(count, slices, s), bn_slice_begin(count, slices, s + 1)};
}

// Thread t's elements of a slice, e = begin + t + k*BLOCK < end, as flat indices into (N, C, HW): one division
// up front, then each step adds BLOCK's quotient and remainder by HW with one carry (no division per element).
// next() is called only while another element follows, so idx never passes the last element.
struct ChannelCursor {
    int idx, p, HW, step_p, step_idx, carry;
    __host__ __device__ ChannelCursor(int first, int channel, int C, int HW_) : HW(HW_) {
        const int n = first / HW;
        p = first - n * HW;
        idx = (n * C + channel) * HW + p;
        step_p = GPUCNN_BLOCK % HW;
        step_idx = (GPUCNN_BLOCK / HW) * C * HW + step_p;
        carry = (C - 1) * HW;  // p passed HW: on to the next sample's plane of the channel
    }
    __host__ __device__ inline void next() {
        p += step_p;
        idx += step_idx;
        if (p >= HW) {
            p -= HW;
            idx += carry;
        }
    }
};

// Welford's running statistics of a set of values: count, mean and M2 = sum (v - mean)^2.
template <typename T>
struct Moments {
    int count;
    T mean, m2;
};

template <typename T>
__host__ __device__ inline void welford_add(Moments<T>& a, T v) {
    a.count += 1;
    const T d = v - a.mean;
    a.mean += d / T(a.count);
    a.m2 += d * (v - a.mean);
}

// a <- a merged with b (Chan, Golub and LeVeque's pairwise update); an empty side leaves the other as it is.
template <typename T>
__host__ __device__ inline void moments_merge(Moments<T>& a, const Moments<T>& b) {
    if (b.count == 0) return;
    if (a.count == 0) {
        a = b;
        return;
    }
    const int n = a.count + b.count;
    const T delta = b.mean - a.mean;
    const T wb = T(b.count) / T(n);
    a.mean += delta * wb;
    a.m2 += b.m2 + delta * delta * T(a.count) * wb;
    a.count = n;
}

// The shared arrays of the statistics pass: one triple per thread, tree-reduced in place.
template <typename T>
struct MomentParts {
    int* count;
    T* mean;
    T* m2;
};

// ---- bn_stats_partial_fused: partial[b] = (mean, M2) of block b's slice, b = c*S + s ----
// phase 1: thread t: Welford over its elements -> parts[t].
template <typename T>
__host__ __device__ inline void bn_stats_phase(int block, int t, const T* __restrict__ x, int N, int C, int HW,
                                               int slices, MomentParts<T> parts) {
    const BnBlock b = bn_block(block, N * HW, slices);
    Moments<T> m{0, T(0), T(0)};
    if (b.begin + t < b.end) {
        ChannelCursor cur(b.begin + t, b.channel, C, HW);
        for (int e = b.begin + t;; e += GPUCNN_BLOCK) {
            welford_add(m, x[cur.idx]);
            if (b.end - e <= GPUCNN_BLOCK) break;
            cur.next();
        }
    }
    parts.count[t] = m.count;
    parts.mean[t] = m.mean;
    parts.m2[t] = m.m2;
}

// phases 2..9: stride = BLOCK/2 .. 1: thread t < stride merges parts[t + stride] into parts[t].
template <typename T>
__host__ __device__ inline void bn_stats_tree_step(int t, int stride, MomentParts<T> parts) {
    if (t < stride) {
        Moments<T> a{parts.count[t], parts.mean[t], parts.m2[t]};
        const Moments<T> b{parts.count[t + stride], parts.mean[t + stride], parts.m2[t + stride]};
        moments_merge(a, b);
        parts.count[t] = a.count;
        parts.mean[t] = a.mean;
        parts.m2[t] = a.m2;
    }
}

// last phase, thread 0 (right after its own stride-1 step): the block's row of the partial buffer.
template <typename T>
__host__ __device__ inline void bn_stats_store(int block, int t, T* __restrict__ partial, MomentParts<T> parts) {
    if (t == 0) {
        partial[2 * block] = parts.mean[0];
        partial[2 * block + 1] = parts.m2[0];
    }
}

// The S slices of channel c merged in ascending s (every block of the apply pass does the same, bit for bit).
template <typename T>
__host__ __device__ inline Moments<T> bn_channel_moments(const T* __restrict__ partial, int c, int count,
                                                         int slices) {
    Moments<T> acc{0, T(0), T(0)};
    for (int s = 0; s < slices; ++s) {
        const int row = c * slices + s;
        const Moments<T> part{bn_slice_begin(count, slices, s + 1) - bn_slice_begin(count, slices, s),
                              partial[2 * row], partial[2 * row + 1]};
        moments_merge(acc, part);
    }
    return acc;
}

// ---- bn_forward_apply_fused: y = gamma * (x - mean) * inv_std + beta [then max(y, 0)], block b = c*S + s ----
// phase 1, thread 0: the channel's mean and inv_std = 1 / sqrt(var + eps) (var = M2 / count, biased) into
// stats[0..1]; block s == 0 also stores mean, inv_std and updates the running statistics in place
// (running_var with the unbiased M2 / (count - 1)), as ops/batchnorm.py:
//   running_mean = running_mean * (1 - momentum) + momentum * mean
//   running_var  = running_var * (1 - momentum) + (momentum * count / (count - 1)) * var
template <typename T>
__host__ __device__ inline void bn_forward_stats_phase(int block, int t, const T* __restrict__ partial,
                                                       T* __restrict__ mean, T* __restrict__ inv_std,
                                                       T* __restrict__ running_mean, T* __restrict__ running_var,
                                                       T momentum, T eps, int N, int HW, int slices, T* stats) {
    if (t != 0) return;
    const int count = N * HW;
    const BnBlock b = bn_block(block, count, slices);
    const Moments<T> m = bn_channel_moments(partial, b.channel, count, slices);
    const T var = m.m2 / T(count);
    const T inv = T(1) / sqrt_t(var + eps);
    stats[0] = m.mean;
    stats[1] = inv;
    if (b.slice == 0) {
        const int c = b.channel;
        mean[c] = m.mean;
        inv_std[c] = inv;
        running_mean[c] = running_mean[c] * (T(1) - momentum) + momentum * m.mean;
        running_var[c] = running_var[c] * (T(1) - momentum) + (momentum * T(count) / T(count - 1)) * var;
    }
}

// phase 2, every thread: its elements of the block's slice (x_hat = (x - mean) * inv_std; y = x_hat*gamma + beta).
template <typename T>
__host__ __device__ inline void bn_forward_apply_phase(int block, int t, const T* __restrict__ x,
                                                       const T* __restrict__ gamma, const T* __restrict__ beta,
                                                       T* __restrict__ y, int N, int C, int HW, int slices,
                                                       int flags, const T* stats) {
    const BnBlock b = bn_block(block, N * HW, slices);
    if (b.begin + t >= b.end) return;
    const T mu = stats[0], inv = stats[1], g = gamma[b.channel], be = beta[b.channel];
    ChannelCursor cur(b.begin + t, b.channel, C, HW);
    for (int e = b.begin + t;; e += GPUCNN_BLOCK) {
        T v = (x[cur.idx] - mu) * inv * g + be;
        if ((flags & GPUCNN_FUSED_RELU) && !(v > T(0)) && !is_nan(v)) v = T(0);  // relu = max(v, 0)
        y[cur.idx] = v;
        if (b.end - e <= GPUCNN_BLOCK) break;
        cur.next();
    }
}

// The gradient reaching the normalisation: grad_y, times (y > 0) under MASK (y: the forward's ReLU output).
template <typename T>
__host__ __device__ inline T bn_grad_in(const T* __restrict__ grad_y, const T* __restrict__ y, int idx, int flags) {
    const T g = grad_y[idx];
    return (flags & GPUCNN_FUSED_MASK) ? g * T(y[idx] > T(0) ? 1 : 0) : g;
}

// ---- bn_grad_partial_fused: partial[b] = (sum gz, sum gz * x_hat) over block b's slice ----
// phase 1: thread t: its sums -> sums[t] (sum gz) and sums[BLOCK + t] (sum gz * x_hat), ascending e.
template <typename T>
__host__ __device__ inline void bn_grad_sums_phase(int block, int t, const T* __restrict__ grad_y,
                                                   const T* __restrict__ y, const T* __restrict__ x,
                                                   const T* __restrict__ mean, const T* __restrict__ inv_std,
                                                   int N, int C, int HW, int slices, int flags, T* sums) {
    const BnBlock b = bn_block(block, N * HW, slices);
    T sum_gz = T(0), sum_gzx = T(0);
    if (b.begin + t < b.end) {
        const T mu = mean[b.channel], inv = inv_std[b.channel];
        ChannelCursor cur(b.begin + t, b.channel, C, HW);
        for (int e = b.begin + t;; e += GPUCNN_BLOCK) {
            const T gz = bn_grad_in(grad_y, y, cur.idx, flags);
            sum_gz += gz;
            sum_gzx += gz * ((x[cur.idx] - mu) * inv);
            if (b.end - e <= GPUCNN_BLOCK) break;
            cur.next();
        }
    }
    sums[t] = sum_gz;
    sums[GPUCNN_BLOCK + t] = sum_gzx;
}

// phases 2..9: stride = BLOCK/2 .. 1.
template <typename T>
__host__ __device__ inline void bn_grad_tree_step(int t, int stride, T* sums) {
    if (t < stride) {
        sums[t] += sums[t + stride];
        sums[GPUCNN_BLOCK + t] += sums[GPUCNN_BLOCK + t + stride];
    }
}

template <typename T>
__host__ __device__ inline void bn_grad_store(int block, int t, T* __restrict__ partial, const T* sums) {
    if (t == 0) {
        partial[2 * block] = sums[0];
        partial[2 * block + 1] = sums[GPUCNN_BLOCK];
    }
}

// ---- bn_backward_apply_fused, block b = c*S + s ----
// phase 1, thread 0: grad_beta = sum gz, grad_gamma = sum gz * x_hat (the S partials in ascending s); block
// s == 0 stores them; stats[0..2] = gamma * inv_std, grad_beta / count, grad_gamma / count.
template <typename T>
__host__ __device__ inline void bn_backward_sums_phase(int block, int t, const T* __restrict__ partial,
                                                       const T* __restrict__ gamma, const T* __restrict__ inv_std,
                                                       T* __restrict__ grad_gamma, T* __restrict__ grad_beta,
                                                       int N, int HW, int slices, T* stats) {
    if (t != 0) return;
    const int count = N * HW;
    const BnBlock b = bn_block(block, count, slices);
    const int c = b.channel;
    T sum_gz = partial[2 * c * slices], sum_gzx = partial[2 * c * slices + 1];
    for (int s = 1; s < slices; ++s) {
        sum_gz += partial[2 * (c * slices + s)];
        sum_gzx += partial[2 * (c * slices + s) + 1];
    }
    if (b.slice == 0) {
        grad_beta[c] = sum_gz;
        grad_gamma[c] = sum_gzx;
    }
    stats[0] = gamma[c] * inv_std[c];
    stats[1] = sum_gz / T(count);
    stats[2] = sum_gzx / T(count);
}

// phase 2, every thread (under GPUCNN_BN_INPUT_GRAD): its elements of the slice, as ops/batchnorm.py:
//   grad_x = gamma * inv_std * (gz - grad_beta / count - x_hat * (grad_gamma / count))
template <typename T>
__host__ __device__ inline void bn_backward_apply_phase(int block, int t, const T* __restrict__ grad_y,
                                                        const T* __restrict__ y, const T* __restrict__ x,
                                                        const T* __restrict__ mean, const T* __restrict__ inv_std,
                                                        T* __restrict__ grad_x, int N, int C, int HW, int slices,
                                                        int flags, const T* stats) {
    const BnBlock b = bn_block(block, N * HW, slices);
    if (!(flags & GPUCNN_BN_INPUT_GRAD) || b.begin + t >= b.end) return;
    const T mu = mean[b.channel], inv = inv_std[b.channel], scale = stats[0], mean_gz = stats[1],
            mean_gzx = stats[2];
    ChannelCursor cur(b.begin + t, b.channel, C, HW);
    for (int e = b.begin + t;; e += GPUCNN_BLOCK) {
        const T x_hat = (x[cur.idx] - mu) * inv;
        grad_x[cur.idx] = scale * (bn_grad_in(grad_y, y, cur.idx, flags) - mean_gz - x_hat * mean_gzx);
        if (b.end - e <= GPUCNN_BLOCK) break;
        cur.next();
    }
}

}  // namespace fused
}  // namespace gpucnn

#endif  // GPUCNN_FUSED_BATCHNORM_BODY_CUH
