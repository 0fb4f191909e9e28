// Phases of the fused softmax cross-entropy kernels (loss.cu), shared with the CPU harness.
//
// logits and grad are C-contiguous (N, K); labels are N int64 class indices (softmax_xent) or
// targets an (N, K) array of probabilities (softmax_xent_soft); weight holds K class weights
// when `weighted` (else it is not read and every w_k is 1; W = sum_k w_k). The readable ops of
// gpucnn/ops/loss.py, operation by operation, for row r (eps = smoothing, a = (1 - eps) w[y]):
//   m = max_k z[r,k];  s = sum_k exp(z[r,k] - m);  log_p[k] = (z[r,k] - m) - log(s);  p = exp(log_p)
//   labels:  loss_r = a (-log_p[y]) + eps/K sum_k w_k (-log_p[k])    (the eps term only for eps > 0)
//            dloss_r[k] = a (p[k] - [k == y]) + eps/K (W p[k] - w_k)
//            a row whose label is ignore_index (when `ignoring`): loss 0, gradient 0, counted nowhere
//   targets: t'[k] = (1 - eps) t[r,k] + eps/K;  loss_r = -sum_k w_k t'[k] log_p[k]
//            dloss_r[k] = (sum_j w_j t'[j]) p[k] - w_k t'[k]
//   correct_r = [argmax_k z[r,k] == y]   (first maximum, or first NaN, as numpy.argmax; for targets
//               y = argmax_k t[r,k])
// A label outside [0, K) (and not ignored) makes loss_r and the row of grad NaN and counts as invalid.
// reduction (PyTorch's enum): 0 'none' writes loss[r] = loss_r; 1 'mean' loss[0] = sum_r loss_r / D,
// with D = sum of w[y_r] over the counted rows (labels) or N (targets), and grad = dloss / D on the
// rows not ignored; 2 'sum' loss[0] = sum_r loss_r, grad = dloss.
#ifndef GPUCNN_LOSS_BODY_CUH
#define GPUCNN_LOSS_BODY_CUH

#include "common.cuh"

namespace gpucnn {

__host__ __device__ inline float exp_t(float v) { return expf(v); }
__host__ __device__ inline double exp_t(double v) { return exp(v); }
__host__ __device__ inline float log_t(float v) { return logf(v); }
__host__ __device__ inline double log_t(double v) { return log(v); }

// The reductions, numbered as PyTorch's at::Reduction (and gpucnn.ops.loss.REDUCTIONS).
enum : int { XENT_NONE = 0, XENT_MEAN = 1, XENT_SUM = 2 };

// The block's partial sums, one entry per thread (shared memory on the GPU): loss, the mean's
// denominator D, correct rows, invalid labels.
template <typename T>
struct XentParts {
    T* loss;
    T* denominator;
    int* correct;
    int* invalid;
};

// Row max (propagating NaN) and its argmax (the first maximum, or the first NaN, as numpy.argmax).
template <typename T>
__host__ __device__ inline int row_max(const T* z, int K, T* m_out) {
    T m = z[0];
    int best = 0;
    for (int k = 1; k < K; ++k) {
        const T v = z[k];
        if (!is_nan(m) && (v > m || is_nan(v))) {
            m = v;
            best = k;
        }
    }
    *m_out = m;
    return best;
}

template <typename T>
__host__ __device__ inline T class_weight(const T* weight, int weighted, long long k) {
    return weighted ? weight[k] : T(1);
}

template <typename T>
__host__ __device__ inline T weight_total(const T* weight, int weighted, int K) {
    if (!weighted) return T(K);
    T total = T(0);
    for (int k = 0; k < K; ++k) total += weight[k];
    return total;
}

// Phase 1 (integer labels), thread t of the block: rows t, t + GPUCNN_BLOCK, ... (< N). Writes their
// rows of dloss (not yet divided by D) and, for 'none', their losses loss[r]; the thread's partial
// sums (its rows' losses and weights added in row order, its counts) go to parts[t].
template <typename T>
__host__ __device__ inline void softmax_xent_rows(int t, const T* __restrict__ logits,
                                                  const long long* __restrict__ labels, const T* __restrict__ weight,
                                                  T* __restrict__ grad, T* __restrict__ loss, int N, int K,
                                                  int weighted, long long ignore_index, int ignoring, T smoothing,
                                                  int reduction, XentParts<T> parts) {
    T loss_sum = T(0), denominator = T(0);
    int correct = 0, invalid = 0;
    const T b = smoothing / T(K);
    const T W = weight_total(weight, weighted, K);
    for (int r = t; r < N; r += GPUCNN_BLOCK) {
        const T* z = logits + (long long)r * K;
        T* g = grad + (long long)r * K;
        const long long y = labels[r];
        T row = T(0);
        if (ignoring && y == ignore_index) {
            for (int k = 0; k < K; ++k) g[k] = T(0);
        } else if (y < 0 || y >= K) {
            const T nan = neg_inf<T>() * T(0);
            for (int k = 0; k < K; ++k) g[k] = nan;
            row = nan;
            ++invalid;
        } else {
            T m;
            const int best = row_max(z, K, &m);
            T s = T(0);
            for (int k = 0; k < K; ++k) s += exp_t(z[k] - m);
            const T log_s = log_t(s);
            const T w_y = class_weight(weight, weighted, y);
            const T a = (T(1) - smoothing) * w_y;
            T smooth = T(0);
            for (int k = 0; k < K; ++k) {
                const T log_p = (z[k] - m) - log_s;
                const T p = exp_t(log_p);
                T d = a * (k == y ? p - T(1) : p);
                if (smoothing > T(0)) {
                    const T w_k = class_weight(weight, weighted, k);
                    d += b * (W * p - w_k);
                    smooth += w_k * -log_p;
                }
                g[k] = d;
            }
            row = a * -((z[y] - m) - log_s);
            if (smoothing > T(0)) row += b * smooth;
            denominator += w_y;
            correct += (best == y);
        }
        if (reduction == XENT_NONE) loss[r] = row;
        loss_sum += row;
    }
    parts.loss[t] = loss_sum;
    parts.denominator[t] = denominator;
    parts.correct[t] = correct;
    parts.invalid[t] = invalid;
}

// Phase 1 (probability targets), thread t: as softmax_xent_rows, for targets (N, K).
template <typename T>
__host__ __device__ inline void softmax_xent_soft_rows(int t, const T* __restrict__ logits,
                                                       const T* __restrict__ targets, const T* __restrict__ weight,
                                                       T* __restrict__ grad, T* __restrict__ loss, int N, int K,
                                                       int weighted, T smoothing, int reduction,
                                                       XentParts<T> parts) {
    T loss_sum = T(0), denominator = T(0);
    int correct = 0;
    const T keep = T(1) - smoothing, b = smoothing / T(K);
    for (int r = t; r < N; r += GPUCNN_BLOCK) {
        const T* z = logits + (long long)r * K;
        const T* target = targets + (long long)r * K;
        T* g = grad + (long long)r * K;
        T m, unused;
        const int best = row_max(z, K, &m);
        const int wanted = row_max(target, K, &unused);
        T s = T(0);
        for (int k = 0; k < K; ++k) s += exp_t(z[k] - m);
        const T log_s = log_t(s);
        T row = T(0), wt_sum = T(0);
        for (int k = 0; k < K; ++k) {
            const T wt = class_weight(weight, weighted, k) * (keep * target[k] + b);
            row += -(wt * ((z[k] - m) - log_s));
            wt_sum += wt;
        }
        for (int k = 0; k < K; ++k) {
            const T wt = class_weight(weight, weighted, k) * (keep * target[k] + b);
            g[k] = wt_sum * exp_t((z[k] - m) - log_s) - wt;
        }
        if (reduction == XENT_NONE) loss[r] = row;
        loss_sum += row;
        denominator += T(1);
        correct += (best == wanted);
    }
    parts.loss[t] = loss_sum;
    parts.denominator[t] = denominator;
    parts.correct[t] = correct;
    parts.invalid[t] = 0;
}

// Phase 2, one step of the fixed tree (stride GPUCNN_BLOCK/2, ..., 1): for t < stride,
// parts[t] += parts[t + stride].
template <typename T>
__host__ __device__ inline void softmax_xent_tree_step(int t, int stride, XentParts<T> parts) {
    if (t < stride) {
        parts.loss[t] += parts.loss[t + stride];
        parts.denominator[t] += parts.denominator[t + stride];
        parts.correct[t] += parts.correct[t + stride];
        parts.invalid[t] += parts.invalid[t + stride];
    }
}

// Phase 3, thread 0: loss[0] = the reduced loss ('mean': sum / D, 'sum': sum; 'none' leaves the row
// losses), counts[0] = correct rows, counts[1] = invalid labels; written, or added to what is there when
// accumulate != 0. Returns the divisor of the gradient rows (D for 'mean', else 1) for phase 4.
template <typename T>
__host__ __device__ inline T softmax_xent_finish(XentParts<T> parts, int reduction, T* __restrict__ loss,
                                                 int* __restrict__ counts, int accumulate) {
    const T divisor = reduction == XENT_MEAN ? parts.denominator[0] : T(1);
    if (reduction != XENT_NONE) {
        const T reduced = parts.loss[0] / divisor;
        loss[0] = accumulate ? loss[0] + reduced : reduced;
    }
    counts[0] = accumulate ? counts[0] + parts.correct[0] : parts.correct[0];
    counts[1] = accumulate ? counts[1] + parts.invalid[0] : parts.invalid[0];
    return divisor;
}

// Phase 4 ('mean' only), thread t: its rows of grad divided by D, except the ignored rows (labels may be
// null: probability targets ignore nothing). D = 0 leaves no row unignored but zero-weight ones: 0 / 0 is
// NaN there, as in PyTorch.
template <typename T>
__host__ __device__ inline void softmax_xent_scale_rows(int t, const long long* __restrict__ labels,
                                                        T* __restrict__ grad, int N, int K,
                                                        long long ignore_index, int ignoring, T divisor) {
    for (int r = t; r < N; r += GPUCNN_BLOCK) {
        if (labels != nullptr && ignoring && labels[r] == ignore_index) continue;
        T* g = grad + (long long)r * K;
        for (int k = 0; k < K; ++k) g[k] = g[k] / divisor;
    }
}

}  // namespace gpucnn

#endif  // GPUCNN_LOSS_BODY_CUH
