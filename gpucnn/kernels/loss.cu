// Softmax cross-entropy, forward and backward in one launch:
//   loss = mean_r( -log_softmax(z)[r, y_r] ),   grad = (softmax(z) - onehot(y)) / N,
//   counts = (#rows with argmax_k z[r,k] == y_r, #rows with a label outside [0, K))
// for logits z (N, K) and int64 labels y (N,). Templates on the float type, instantiated
// through NVRTC name expressions ("softmax_xent<float>") by gpucnn/ops/cuda/loss.py; the
// per-row arithmetic lives in loss_body.cuh, which the CPU harness replays phase by phase.
//
// One block of GPUCNN_BLOCK threads, launched with grid (1,):
//   phase 1: thread t in [0, GPUCNN_BLOCK) owns rows t, t + GPUCNN_BLOCK, ... < N: it writes
//            their grad rows and its partial loss sum and counts to shared memory;
//   phase 2: the block adds the partials in a fixed tree (stride GPUCNN_BLOCK/2 .. 1);
//   phase 3: thread 0 writes (or, with accumulate, adds) loss[0] and counts[0..1].
// No atomics, a fixed order: bitwise repeatable. Labels are read on the device only. One
// block is plenty for classification heads (N*K in the thousands); rows are independent.
#include "loss_body.cuh"

template <typename T>
__global__ void softmax_xent(const T* __restrict__ logits, const long long* __restrict__ labels,
                             T* __restrict__ grad, T* __restrict__ loss, int* __restrict__ counts, int N, int K,
                             int accumulate) {
    __shared__ T part_loss[GPUCNN_BLOCK];
    __shared__ int part_correct[GPUCNN_BLOCK];
    __shared__ int part_invalid[GPUCNN_BLOCK];
    const int t = threadIdx.x;
    gpucnn::softmax_xent_rows<T>(t, logits, labels, grad, N, K, part_loss, part_correct, part_invalid);
    __syncthreads();
    for (int stride = GPUCNN_BLOCK / 2; stride > 0; stride /= 2) {
        gpucnn::softmax_xent_tree_step<T>(t, stride, part_loss, part_correct, part_invalid);
        __syncthreads();
    }
    if (t == 0) gpucnn::softmax_xent_finish<T>(part_loss, part_correct, part_invalid, N, loss, counts, accumulate);
}
