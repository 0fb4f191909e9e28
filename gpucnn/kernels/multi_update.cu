// Multi-tensor optimizer updates: every parameter of one device and dtype lives in one flat
// buffer (gpucnn/optim/flat.py), so a step is two launches whatever the number of tensors:
//   step_scalars:      one thread advances hyper's step count and computes the step's
//                      scalars (multi_update_body.cuh);
//   multi_*_update:    thread i (grid-stride) updates flat element i, i in [0, n), n = the
//                      total number of parameter elements, with the per-element bodies of
//                      update_body.cuh (the per-parameter kernels' very code):
//     SGD:  param -= lr * (momentum / Nesterov / weight decay as torch.optim.SGD)
//     Adam: param -= step_size * m / (sqrt(v) / bias2_sqrt + eps)   (AdamW: param *= decay first)
// with lr, step_size, bias2_sqrt, decay and the first-step flag read from hyper on the
// device, never passed from the host: a captured CUDA graph replays them correctly.
// Templates on the float type ("multi_adam_update<float>"); step_scalars works in double
// whatever T (T only names the instantiation).
#include "multi_update_body.cuh"
#include "update_body.cuh"

template <typename T>
__global__ void step_scalars(double* hyper, double beta1, double beta2, double weight_decay) {
    if (blockIdx.x == 0 && threadIdx.x == 0) gpucnn::step_scalars_body(hyper, beta1, beta2, weight_decay);
}

template <typename T>
__global__ void multi_sgd_update(T* param, const T* grad, T* buf, const double* __restrict__ hyper, T momentum,
                                 T one_minus_dampening, T weight_decay, int flags, long long n) {
    const T lr = gpucnn::sgd_lr<T>(hyper);
    const int all_flags = gpucnn::sgd_step_flags(hyper, flags, GPUCNN_SGD_FIRST_STEP);
    GPUCNN_GRID_STRIDE_LOOP(i, n) {
        gpucnn::sgd_body<T>(i, param, grad, buf, lr, momentum, one_minus_dampening, weight_decay, all_flags);
    }
}

template <typename T>
__global__ void multi_adam_update(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, const double* __restrict__ hyper,
                                  T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T weight_decay,
                                  int mode, long long n) {
    const gpucnn::AdamScalars<T> s = gpucnn::adam_scalars<T>(hyper);
    GPUCNN_GRID_STRIDE_LOOP(i, n) {
        gpucnn::adam_body<T>(i, param, grad, exp_avg, exp_avg_sq, beta1, one_minus_beta1, beta2, one_minus_beta2,
                             s.step_size, s.bias2_sqrt, eps, weight_decay, s.decay_factor, mode);
    }
}
