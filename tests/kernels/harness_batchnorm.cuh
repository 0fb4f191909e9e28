// The fused batch-norm kernels (gpucnn/kernels/fused_batchnorm.cu) in the CPU harness (harness.cu): the
// launch's C*S blocks one after another, each block's phases in order as the kernel's __syncthreads divide
// them, every thread of a phase in turn (reversed under GPUCNN_HARNESS_THREAD_ORDER=reverse: thread_at of
// harness_fused.cuh), shared memory one array per block.
#include "../../gpucnn/kernels/fused_batchnorm_body.cuh"

namespace {

// bn_stats_partial_fused: phase 1, the tree (stride BLOCK/2 .. 1), thread 0's store.
template <typename T>
void replay_bn_stats_partial(const T* x, T* partial, int N, int C, int HW, int slices) {
    using namespace gpucnn::fused;
    std::vector<int> count(GPUCNN_BLOCK);
    std::vector<T> mean(GPUCNN_BLOCK), m2(GPUCNN_BLOCK);
    const MomentParts<T> parts{count.data(), mean.data(), m2.data()};
    for (int block = 0; block < C * slices; ++block) {
        for (int i = 0; i < GPUCNN_BLOCK; ++i) bn_stats_phase<T>(block, thread_at(i), x, N, C, HW, slices, parts);
        for (int stride = GPUCNN_BLOCK / 2; stride > 0; stride /= 2)
            for (int i = 0; i < GPUCNN_BLOCK; ++i) bn_stats_tree_step<T>(thread_at(i), stride, parts);
        for (int i = 0; i < GPUCNN_BLOCK; ++i) bn_stats_store<T>(block, thread_at(i), partial, parts);
    }
}

template <typename T>
void replay_bn_grad_partial(const T* grad_y, const T* y, const T* x, const T* mean, const T* inv_std, T* partial,
                            int N, int C, int HW, int slices, int flags) {
    using namespace gpucnn::fused;
    std::vector<T> sums(2 * GPUCNN_BLOCK);
    for (int block = 0; block < C * slices; ++block) {
        for (int i = 0; i < GPUCNN_BLOCK; ++i)
            bn_grad_sums_phase<T>(block, thread_at(i), grad_y, y, x, mean, inv_std, N, C, HW, slices, flags,
                                  sums.data());
        for (int stride = GPUCNN_BLOCK / 2; stride > 0; stride /= 2)
            for (int i = 0; i < GPUCNN_BLOCK; ++i) bn_grad_tree_step<T>(thread_at(i), stride, sums.data());
        for (int i = 0; i < GPUCNN_BLOCK; ++i) bn_grad_store<T>(block, thread_at(i), partial, sums.data());
    }
}

// Runs ``kernel`` when it is one of fused_batchnorm.cu's (arguments as in loader.SIGNATURES); false otherwise.
template <typename T>
bool run_batchnorm(const std::string& kernel, Args<T>& a) {
    using namespace gpucnn::fused;
    if (kernel == "bn_stats_partial_fused") {
        const T* x = a.array(false);
        T* partial = a.array(true);
        int N = a.i32(), C = a.i32(), HW = a.i32(), slices = a.i32();
        replay_bn_stats_partial<T>(x, partial, N, C, HW, slices);
    } else if (kernel == "bn_forward_apply_fused") {
        const T* x = a.array(false);
        const T* partial = a.array(false);
        const T* gamma = a.array(false);
        const T* beta = a.array(false);
        T* y = a.array(true);
        T* mean = a.array(true);
        T* inv_std = a.array(true);
        T* running_mean = a.array(true);
        T* running_var = a.array(true);
        T momentum = a.real(), eps = a.real();
        int N = a.i32(), C = a.i32(), HW = a.i32(), slices = a.i32(), flags = a.i32();
        T stats[2] = {T(0), T(0)};
        for (int block = 0; block < C * slices; ++block) {
            for (int i = 0; i < GPUCNN_BLOCK; ++i)
                bn_forward_stats_phase<T>(block, thread_at(i), partial, mean, inv_std, running_mean, running_var,
                                          momentum, eps, N, HW, slices, stats);
            for (int i = 0; i < GPUCNN_BLOCK; ++i)
                bn_forward_apply_phase<T>(block, thread_at(i), x, gamma, beta, y, N, C, HW, slices, flags, stats);
        }
    } else if (kernel == "bn_grad_partial_fused") {
        const T* grad_y = a.array(false);
        const T* y = a.array(false);
        const T* x = a.array(false);
        const T* mean = a.array(false);
        const T* inv_std = a.array(false);
        T* partial = a.array(true);
        int N = a.i32(), C = a.i32(), HW = a.i32(), slices = a.i32(), flags = a.i32();
        replay_bn_grad_partial<T>(grad_y, y, x, mean, inv_std, partial, N, C, HW, slices, flags);
    } else if (kernel == "bn_backward_apply_fused") {
        const T* grad_y = a.array(false);
        const T* y = a.array(false);
        const T* x = a.array(false);
        const T* mean = a.array(false);
        const T* inv_std = a.array(false);
        const T* gamma = a.array(false);
        const T* partial = a.array(false);
        T* grad_x = a.array(true);
        T* grad_gamma = a.array(true);
        T* grad_beta = a.array(true);
        int N = a.i32(), C = a.i32(), HW = a.i32(), slices = a.i32(), flags = a.i32();
        T stats[3] = {T(0), T(0), T(0)};
        for (int block = 0; block < C * slices; ++block) {
            for (int i = 0; i < GPUCNN_BLOCK; ++i)
                bn_backward_sums_phase<T>(block, thread_at(i), partial, gamma, inv_std, grad_gamma, grad_beta, N, HW,
                                          slices, stats);
            for (int i = 0; i < GPUCNN_BLOCK; ++i)
                bn_backward_apply_phase<T>(block, thread_at(i), grad_y, y, x, mean, inv_std, grad_x, N, C, HW,
                                           slices, flags, stats);
        }
    } else {
        return false;
    }
    return true;
}

}  // namespace
