// The per-step scalars of the multi-tensor optimizer updates (multi_update.cu), shared
// with the CPU harness. They live on the device, in a small double array `hyper`, so that
// a replayed CUDA graph sees the right step count and learning rate:
//   hyper[GPUCNN_HYPER_LR]          learning rate (written by the host when it changes)
//   hyper[GPUCNN_HYPER_STEP]        steps taken so far (advanced here, before each update)
//   hyper[GPUCNN_HYPER_STEP_SIZE]   Adam: lr / (1 - beta1**step); SGD: lr
//   hyper[GPUCNN_HYPER_BIAS2_SQRT]  Adam: sqrt(1 - beta2**step)
//   hyper[GPUCNN_HYPER_DECAY]       1 - lr * weight_decay (AdamW's decoupled decay)
//   hyper[GPUCNN_HYPER_FIRST]       1 on the first step, else 0 (SGD's momentum buffer)
// Each value is computed in double with the operations gpucnn/ops/cuda/update.py uses in
// Python for the per-parameter kernels (products and differences rounded separately: no
// fused multiply-add), then converted to T by the update kernel. The same bits on the host
// harness; on a GPU CUDA's double pow may differ from the host's in the last bits (2 ulp).
#ifndef GPUCNN_MULTI_UPDATE_BODY_CUH
#define GPUCNN_MULTI_UPDATE_BODY_CUH

#include "common.cuh"

#define GPUCNN_HYPER_LR 0
#define GPUCNN_HYPER_STEP 1
#define GPUCNN_HYPER_STEP_SIZE 2
#define GPUCNN_HYPER_BIAS2_SQRT 3
#define GPUCNN_HYPER_DECAY 4
#define GPUCNN_HYPER_FIRST 5
#define GPUCNN_HYPER_SIZE 6

namespace gpucnn {

__host__ __device__ inline double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

// Advance the step count and compute this step's scalars (one thread does it).
__host__ __device__ inline void step_scalars_body(double* hyper, double beta1, double beta2, double weight_decay) {
    const double step = hyper[GPUCNN_HYPER_STEP] + 1.0;
    const double lr = hyper[GPUCNN_HYPER_LR];
    hyper[GPUCNN_HYPER_STEP] = step;
    hyper[GPUCNN_HYPER_STEP_SIZE] = lr / (1.0 - pow(beta1, step));
    hyper[GPUCNN_HYPER_BIAS2_SQRT] = sqrt(1.0 - pow(beta2, step));
    hyper[GPUCNN_HYPER_DECAY] = 1.0 - mul_rn(lr, weight_decay);
    hyper[GPUCNN_HYPER_FIRST] = step == 1.0 ? 1.0 : 0.0;
}

// What the update kernels read from hyper, converted to T as the per-parameter launchers
// convert Python floats.
template <typename T>
struct AdamScalars {
    T step_size, bias2_sqrt, decay_factor;
};
template <typename T>
__host__ __device__ inline AdamScalars<T> adam_scalars(const double* hyper) {
    return {(T)hyper[GPUCNN_HYPER_STEP_SIZE], (T)hyper[GPUCNN_HYPER_BIAS2_SQRT], (T)hyper[GPUCNN_HYPER_DECAY]};
}
template <typename T>
__host__ __device__ inline T sgd_lr(const double* hyper) { return (T)hyper[GPUCNN_HYPER_LR]; }
// The SGD flags with GPUCNN_SGD_FIRST_STEP (update_body.cuh) set on the first step.
__host__ __device__ inline int sgd_step_flags(const double* hyper, int flags, int first_step_bit) {
    return flags | (hyper[GPUCNN_HYPER_FIRST] != 0.0 ? first_step_bit : 0);
}

}  // namespace gpucnn

#endif  // GPUCNN_MULTI_UPDATE_BODY_CUH
