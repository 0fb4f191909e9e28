// Softmax cross-entropy, forward and backward in one launch (torch.nn.functional.cross_entropy's options):
//   loss = reduce_r( loss_r ),   grad = d loss / d z,
//   counts = (#counted rows with argmax_k z[r,k] == y_r, #rows with a label outside [0, K) not ignored)
// for logits z (N, K) and int64 labels y (N,) (softmax_xent) or probability targets (N, K)
// (softmax_xent_soft), with optional class weights, ignore_index (labels only), label smoothing and
// reduction 'none' (0), 'mean' (1), 'sum' (2); loss_body.cuh gives loss_r and its gradient. Templates on the
// float type, instantiated through NVRTC name expressions ("softmax_xent<float>") by
// gpucnn/ops/cuda/loss.py; the per-row arithmetic lives in loss_body.cuh, which the CPU harness replays
// phase by phase.
//
// One block of GPUCNN_BLOCK threads, launched with grid (1,):
//   phase 1: thread t in [0, GPUCNN_BLOCK) owns rows t, t + GPUCNN_BLOCK, ... < N: it writes their
//            gradient rows (not yet divided by the mean's denominator D), for 'none' their losses, and
//            its partial loss and D sums and counts to shared memory;
//   phase 2: the block adds the partials in a fixed tree (stride GPUCNN_BLOCK/2 .. 1);
//   phase 3: thread 0 writes (or, with accumulate, adds) loss[0] and counts[0..1], and D to shared memory;
//   phase 4 ('mean'): thread t divides its rows of grad (those not ignored) by D.
// No atomics, a fixed order: bitwise repeatable. Labels are read on the device only. One
// block is plenty for classification heads (N*K in the thousands); rows are independent.
#include "loss_body.cuh"

template <typename T>
__device__ void softmax_xent_reduce(const long long* __restrict__ labels, T* __restrict__ grad,
                                    T* __restrict__ loss, int* __restrict__ counts, int N, int K,
                                    long long ignore_index, int ignoring, int reduction, int accumulate,
                                    gpucnn::XentParts<T> parts) {
    __shared__ T divisor;
    const int t = threadIdx.x;
    __syncthreads();
    for (int stride = GPUCNN_BLOCK / 2; stride > 0; stride /= 2) {
        gpucnn::softmax_xent_tree_step<T>(t, stride, parts);
        __syncthreads();
    }
    if (t == 0) divisor = gpucnn::softmax_xent_finish<T>(parts, reduction, loss, counts, accumulate);
    __syncthreads();
    if (reduction == gpucnn::XENT_MEAN)
        gpucnn::softmax_xent_scale_rows<T>(t, labels, grad, N, K, ignore_index, ignoring, divisor);
}

template <typename T>
__global__ void softmax_xent(const T* __restrict__ logits, const long long* __restrict__ labels,
                             const T* __restrict__ weight, T* __restrict__ grad, T* __restrict__ loss,
                             int* __restrict__ counts, int N, int K, int weighted, long long ignore_index,
                             int ignoring, T smoothing, int reduction, int accumulate) {
    __shared__ T part_loss[GPUCNN_BLOCK];
    __shared__ T part_denominator[GPUCNN_BLOCK];
    __shared__ int part_correct[GPUCNN_BLOCK];
    __shared__ int part_invalid[GPUCNN_BLOCK];
    const gpucnn::XentParts<T> parts{part_loss, part_denominator, part_correct, part_invalid};
    gpucnn::softmax_xent_rows<T>(threadIdx.x, logits, labels, weight, grad, loss, N, K, weighted, ignore_index,
                                 ignoring, smoothing, reduction, parts);
    softmax_xent_reduce<T>(labels, grad, loss, counts, N, K, ignore_index, ignoring, reduction, accumulate, parts);
}

template <typename T>
__global__ void softmax_xent_soft(const T* __restrict__ logits, const T* __restrict__ targets,
                                  const T* __restrict__ weight, T* __restrict__ grad, T* __restrict__ loss,
                                  int* __restrict__ counts, int N, int K, int weighted, T smoothing, int reduction,
                                  int accumulate) {
    __shared__ T part_loss[GPUCNN_BLOCK];
    __shared__ T part_denominator[GPUCNN_BLOCK];
    __shared__ int part_correct[GPUCNN_BLOCK];
    __shared__ int part_invalid[GPUCNN_BLOCK];
    const gpucnn::XentParts<T> parts{part_loss, part_denominator, part_correct, part_invalid};
    gpucnn::softmax_xent_soft_rows<T>(threadIdx.x, logits, targets, weight, grad, loss, N, K, weighted, smoothing,
                                      reduction, parts);
    softmax_xent_reduce<T>(nullptr, grad, loss, counts, N, K, 0, 0, reduction, accumulate, parts);
}
