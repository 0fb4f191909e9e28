// The softmax cross-entropy kernels (gpucnn/kernels/loss.cu) in the CPU harness (harness.cu): their one
// block replayed phase by phase, every thread of a phase in turn (in reverse order under
// GPUCNN_HARNESS_THREAD_ORDER=reverse, harness_fused.cuh's thread_at), as loss.cu's __syncthreads divide them.
#include "../../gpucnn/kernels/loss_body.cuh"

namespace {

// Phases 2 to 4 of either kernel, after phase 1 filled parts (labels: null for probability targets).
template <typename T>
void replay_xent_reduce(const long long* labels, T* grad, T* loss, int* counts, int N, int K,
                        long long ignore_index, int ignoring, int reduction, int accumulate,
                        gpucnn::XentParts<T> parts) {
    using namespace gpucnn;
    for (int stride = GPUCNN_BLOCK / 2; stride > 0; stride /= 2)
        for (int i = 0; i < GPUCNN_BLOCK; ++i) softmax_xent_tree_step<T>(thread_at(i), stride, parts);
    const T divisor = softmax_xent_finish<T>(parts, reduction, loss, counts, accumulate);
    if (reduction == XENT_MEAN)
        for (int i = 0; i < GPUCNN_BLOCK; ++i)
            softmax_xent_scale_rows<T>(thread_at(i), labels, grad, N, K, ignore_index, ignoring, divisor);
}

// softmax_xent or softmax_xent_soft with the arguments of loss.cu; false for any other kernel.
template <typename T>
bool run_loss(const std::string& kernel, Args<T>& a) {
    using namespace gpucnn;
    const bool soft = kernel == "softmax_xent_soft";
    if (!soft && kernel != "softmax_xent") return false;
    const T* logits = a.array(false);
    const long long* labels = soft ? nullptr : a.long_array(false);
    const T* targets = soft ? a.array(false) : nullptr;
    const T* weight = a.array(false);
    T* grad = a.array(true);
    T* loss = a.array(true);
    int* counts = a.int_array(true);
    const int N = a.i32(), K = a.i32(), weighted = a.i32();
    const long long ignore_index = soft ? 0 : a.i64();
    const int ignoring = soft ? 0 : a.i32();
    const T smoothing = a.real();
    const int reduction = a.i32(), accumulate = a.i32();
    std::vector<T> part_loss(GPUCNN_BLOCK), part_denominator(GPUCNN_BLOCK);
    std::vector<int> part_correct(GPUCNN_BLOCK), part_invalid(GPUCNN_BLOCK);
    const XentParts<T> parts{part_loss.data(), part_denominator.data(), part_correct.data(), part_invalid.data()};
    for (int i = 0; i < GPUCNN_BLOCK; ++i) {
        if (soft)
            softmax_xent_soft_rows<T>(thread_at(i), logits, targets, weight, grad, loss, N, K, weighted, smoothing,
                                      reduction, parts);
        else
            softmax_xent_rows<T>(thread_at(i), logits, labels, weight, grad, loss, N, K, weighted, ignore_index,
                                 ignoring, smoothing, reduction, parts);
    }
    replay_xent_reduce<T>(labels, grad, loss, counts, N, K, ignore_index, ignoring, reduction, accumulate, parts);
    return true;
}

}  // namespace
