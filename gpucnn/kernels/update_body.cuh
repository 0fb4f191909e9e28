// Per-element bodies of the fused optimizer updates (update.cu), shared with the CPU
// harness. Each follows gpucnn/ops/update.py (PyTorch's torch.optim.SGD / Adam / AdamW)
// operation by operation; scalars arrive already converted to T by the launcher, exactly
// as NumPy converts a Python float when it meets an array of dtype T. On a GPU, NVRTC may
// contract a*b + c into one FMA and CuPy flushes float32 denormals: the results agree with
// NumPy within the verify tolerance, not bit for bit.
#ifndef GPUCNN_UPDATE_BODY_CUH
#define GPUCNN_UPDATE_BODY_CUH

#include "common.cuh"

// Bits of the SGD `flags` argument.
#define GPUCNN_SGD_WEIGHT_DECAY 1
#define GPUCNN_SGD_MOMENTUM 2
#define GPUCNN_SGD_NESTEROV 4
#define GPUCNN_SGD_FIRST_STEP 8

// Values of the Adam `mode` argument.
#define GPUCNN_ADAM_NO_DECAY 0
#define GPUCNN_ADAM_L2 1         // Adam: g = grad + weight_decay * param
#define GPUCNN_ADAM_DECOUPLED 2  // AdamW: param *= 1 - lr * weight_decay (decay_factor)

namespace gpucnn {

// SGD step for element i of one parameter (param, grad, buf share one layout). buf is
// touched only with GPUCNN_SGD_MOMENTUM (the launcher may pass param itself otherwise,
// hence no __restrict__ here).
template <typename T>
__host__ __device__ inline void sgd_body(long long i, T* param, const T* grad, T* buf, T lr, T momentum,
                                         T one_minus_dampening, T weight_decay, int flags) {
    const T p = param[i];
    T g = grad[i];
    if (flags & GPUCNN_SGD_WEIGHT_DECAY) g = g + weight_decay * p;
    if (flags & GPUCNN_SGD_MOMENTUM) {
        T b;
        if (flags & GPUCNN_SGD_FIRST_STEP) {
            b = g;
        } else {
            b = buf[i] * momentum;
            b = b + one_minus_dampening * g;
        }
        buf[i] = b;
        g = (flags & GPUCNN_SGD_NESTEROV) ? g + momentum * b : b;
    }
    param[i] = p - lr * g;
}

// Adam / AdamW step for element i:
//   decoupled: p *= decay_factor;   L2: g = grad + weight_decay * p
//   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g
//   p -= step_size * m / (sqrt(v) / bias2_sqrt + eps)
// with step_size = lr / (1 - beta1**step) and bias2_sqrt = sqrt(1 - beta2**step).
template <typename T>
__host__ __device__ inline void adam_body(long long i, T* param, const T* grad, T* exp_avg, T* exp_avg_sq,
                                          T beta1, T one_minus_beta1, T beta2, T one_minus_beta2,
                                          T step_size, T bias2_sqrt, T eps, T weight_decay, T decay_factor,
                                          int mode) {
    T p = param[i];
    T g = grad[i];
    if (mode == GPUCNN_ADAM_DECOUPLED) p = p * decay_factor;
    else if (mode == GPUCNN_ADAM_L2) g = g + weight_decay * p;
    T m = exp_avg[i] * beta1;
    m = m + one_minus_beta1 * g;
    T v = exp_avg_sq[i] * beta2;
    v = v + (one_minus_beta2 * g) * g;
    const T denom = sqrt_t(v) / bias2_sqrt + eps;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p - (step_size * m) / denom;
}

}  // namespace gpucnn

#endif  // GPUCNN_UPDATE_BODY_CUH
