// The graph-captured step's bookkeeping in three launches (gpucnn/compile/cuda_graph/step.py), where CuPy
// took eleven small ones (index arithmetic, three gathers, the statistics' updates, the counter):
//   gather_rows:   x_batch[i] (and probability targets), i in [0, batch * row), grid-stride, 32-bit
//   gather_rows_labels: both for integer labels in one launch: x_batch[i] for i < batch * row, then
//                  y_batch[i - batch * row] (one grid-stride loop over batch * row + batch)
//   step_end:      one thread adds the step's loss * batch and correct count to stats (float64) and
//                  advances the step counter, after everything that read it
// Bodies in step_batch_body.cuh (the harness replays them).
#include "fused_common.cuh"
#include "step_batch_body.cuh"

template <typename T>
__global__ void gather_rows(const T* __restrict__ src, const long long* __restrict__ order,
                            const long long* __restrict__ counter, T* __restrict__ dst, int batch, int row,
                            int total) {
    GPUCNN_GRID_STRIDE_LOOP32(i, total) { gpucnn::gather_rows_body<T>(i, src, order, counter, dst, batch, row); }
}

// total = batch * row + batch
template <typename T>
__global__ void gather_rows_labels(const T* __restrict__ x, const long long* __restrict__ y,
                                   const long long* __restrict__ order, const long long* __restrict__ counter,
                                   T* __restrict__ x_batch, long long* __restrict__ y_batch, int batch, int row,
                                   int total) {
    GPUCNN_GRID_STRIDE_LOOP32(i, total) {
        gpucnn::gather_rows_labels_body<T>(i, x, y, order, counter, x_batch, y_batch, batch, row);
    }
}

template <typename T>
__global__ void step_end(const T* __restrict__ loss, const int* __restrict__ correct, double* stats,
                         long long* counter, int batch) {
    if (blockIdx.x == 0 && threadIdx.x == 0) gpucnn::step_end_body<T>(loss, correct, stats, counter, batch);
}
