// Fused optimizer updates: one launch per parameter does the whole step in place.
// Templates on the float type, instantiated through NVRTC name expressions
// ("sgd_update<float>", "adam_update<double>") by gpucnn/ops/cuda/update.py. Per-element
// arithmetic lives in update_body.cuh so that the CPU harness runs the very same code.
#include "update_body.cuh"

// Thread i (grid-stride) updates element i of param (and of buf with momentum),
// i in [0, n), n = param.size. Elements are independent; no thread reads another's.
template <typename T>
__global__ void sgd_update(T* param, const T* grad, T* buf, T lr, T momentum, T one_minus_dampening,
                           T weight_decay, int flags, long long n) {
    GPUCNN_GRID_STRIDE_LOOP(i, n) {
        gpucnn::sgd_body<T>(i, param, grad, buf, lr, momentum, one_minus_dampening, weight_decay, flags);
    }
}

// Thread i (grid-stride) updates element i of param, exp_avg and exp_avg_sq,
// i in [0, n), n = param.size.
template <typename T>
__global__ void adam_update(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T beta1, T one_minus_beta1,
                            T beta2, T one_minus_beta2, T step_size, T bias2_sqrt, T eps, T weight_decay,
                            T decay_factor, int mode, long long n) {
    GPUCNN_GRID_STRIDE_LOOP(i, n) {
        gpucnn::adam_body<T>(i, param, grad, exp_avg, exp_avg_sq, beta1, one_minus_beta1, beta2,
                             one_minus_beta2, step_size, bias2_sqrt, eps, weight_decay, decay_factor, mode);
    }
}
