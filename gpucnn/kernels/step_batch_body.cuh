// The graph step's own bookkeeping (step_batch.cu), per element, shared by the kernels and the CPU harness:
// the batch gathered by the device's step counter, and the step's end (statistics, counter).
#pragma once
#include "common.cuh"

namespace gpucnn {

// dst[i] = src[order[counter * batch + i / row] * row + i % row]: row i / row of the batch is sample
// order[position] of the training set (x, or probability targets: rows of `row` values).
template <typename T>
__host__ __device__ inline void gather_rows_body(int i, const T* src, const long long* order, const long long* counter,
                                                 T* dst, int batch, int row) {
    const int lane = i / row;
    const long long sample = order[counter[0] * batch + lane];
    dst[i] = src[sample * row + (i - lane * row)];
}

// dst[i] = src[order[counter * batch + i]]: the batch's integer labels.
__host__ __device__ inline void gather_labels_body(int i, const long long* src, const long long* order,
                                                   const long long* counter, long long* dst, int batch) {
    dst[i] = src[order[counter[0] * batch + i]];
}

// Element i of the merged gather (gather_rows_labels): the rows' elements first, then the labels.
template <typename T>
__host__ __device__ inline void gather_rows_labels_body(int i, const T* x, const long long* y, const long long* order,
                                                        const long long* counter, T* x_batch, long long* y_batch,
                                                        int batch, int row) {
    if (i < batch * row) gather_rows_body<T>(i, x, order, counter, x_batch, batch, row);
    else gather_labels_body(i - batch * row, y, order, counter, y_batch, batch);
}

// One thread: stats += [loss * batch, correct]; counter += 1 (after the step: the next gather reads it).
template <typename T>
__host__ __device__ inline void step_end_body(const T* loss, const int* correct, double* stats, long long* counter,
                                              int batch) {
    stats[0] += (double)loss[0] * batch;
    stats[1] += (double)correct[0];
    counter[0] += 1;
}

}  // namespace gpucnn
