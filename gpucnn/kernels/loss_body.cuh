// Phases of the fused softmax cross-entropy kernel (loss.cu), shared with the CPU harness.
//
// logits and grad are C-contiguous (N, K); labels are N int64 class indices. For row r
// with label y (the readable ops of gpucnn/ops/loss.py, operation by operation):
//   m = max_k z[r,k];  s = sum_k exp(z[r,k] - m);  log_p[k] = (z[r,k] - m) - log(s)
//   loss_r = -log_p[y];  grad[r,k] = (exp(log_p[k]) - [k == y]) / N
//   correct_r = [argmax_k z[r,k] == y]   (first maximum, or first NaN, as numpy.argmax)
// A label outside [0, K) makes loss_r and the row of grad NaN and counts as invalid.
#ifndef GPUCNN_LOSS_BODY_CUH
#define GPUCNN_LOSS_BODY_CUH

#include "common.cuh"

namespace gpucnn {

__host__ __device__ inline float exp_t(float v) { return expf(v); }
__host__ __device__ inline double exp_t(double v) { return exp(v); }
__host__ __device__ inline float log_t(float v) { return logf(v); }
__host__ __device__ inline double log_t(double v) { return log(v); }

// Phase 1, thread t of the block: rows t, t + GPUCNN_BLOCK, t + 2*GPUCNN_BLOCK, ... (< N).
// Writes their gradient rows, and the thread's partial sums (its rows' losses added in
// row order, correct and invalid counts) to part_*[t].
template <typename T>
__host__ __device__ inline void softmax_xent_rows(int t, const T* __restrict__ logits,
                                                  const long long* __restrict__ labels, T* __restrict__ grad,
                                                  int N, int K, T* part_loss, int* part_correct, int* part_invalid) {
    T loss = T(0);
    int correct = 0, invalid = 0;
    const T n = T(N);
    for (int r = t; r < N; r += GPUCNN_BLOCK) {
        const T* z = logits + (long long)r * K;
        T* g = grad + (long long)r * K;
        const long long y = labels[r];
        T m = z[0];
        int best = 0;
        for (int k = 1; k < K; ++k) {
            const T v = z[k];
            if (!is_nan(m) && (v > m || is_nan(v))) {  // max that propagates NaN; argmax: first max / first NaN
                m = v;
                best = k;
            }
        }
        if (y < 0 || y >= K) {
            const T nan = neg_inf<T>() * T(0);
            for (int k = 0; k < K; ++k) g[k] = nan;
            loss += nan;
            ++invalid;
            continue;
        }
        T s = T(0);
        for (int k = 0; k < K; ++k) s += exp_t(z[k] - m);
        const T log_s = log_t(s);
        for (int k = 0; k < K; ++k) {
            const T p = exp_t((z[k] - m) - log_s);
            g[k] = (k == y ? p - T(1) : p) / n;
        }
        loss += -((z[y] - m) - log_s);
        correct += (best == y);
    }
    part_loss[t] = loss;
    part_correct[t] = correct;
    part_invalid[t] = invalid;
}

// Phase 2, one step of the fixed tree (stride GPUCNN_BLOCK/2, ..., 1): for t < stride,
// part[t] += part[t + stride].
template <typename T>
__host__ __device__ inline void softmax_xent_tree_step(int t, int stride, T* part_loss, int* part_correct,
                                                       int* part_invalid) {
    if (t < stride) {
        part_loss[t] += part_loss[t + stride];
        part_correct[t] += part_correct[t + stride];
        part_invalid[t] += part_invalid[t + stride];
    }
}

// Phase 3, thread 0: loss[0] = (sum of the row losses) / N, counts[0] = correct rows,
// counts[1] = invalid labels; written, or added to what is there when accumulate != 0.
template <typename T>
__host__ __device__ inline void softmax_xent_finish(const T* part_loss, const int* part_correct,
                                                    const int* part_invalid, int N, T* __restrict__ loss,
                                                    int* __restrict__ counts, int accumulate) {
    const T mean = part_loss[0] / T(N);
    if (accumulate) {
        loss[0] += mean;
        counts[0] += part_correct[0];
        counts[1] += part_invalid[0];
    } else {
        loss[0] = mean;
        counts[0] = part_correct[0];
        counts[1] = part_invalid[0];
    }
}

}  // namespace gpucnn

#endif  // GPUCNN_LOSS_BODY_CUH
