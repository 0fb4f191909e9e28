// The graph step's bookkeeping kernels (gpucnn/kernels/step_batch.cu) in the CPU harness (harness.cu): every
// element of the gathers, then step_end's one thread.
#include "../../gpucnn/kernels/step_batch_body.cuh"

namespace {

template <typename T>
bool run_step_batch(const std::string& kernel, Args<T>& a) {
    using namespace gpucnn;
    if (kernel == "gather_rows") {
        const T* src = a.array(false);
        const long long* order = a.long_array(false);
        const long long* counter = a.long_array(false);
        T* dst = a.array(true);
        const int batch = a.i32(), row = a.i32(), total = a.i32();
        for (int i = 0; i < total; ++i) gather_rows_body<T>(i, src, order, counter, dst, batch, row);
    } else if (kernel == "gather_rows_labels") {
        const T* x = a.array(false);
        const long long* y = a.long_array(false);
        const long long* order = a.long_array(false);
        const long long* counter = a.long_array(false);
        T* xb = a.array(true);
        long long* yb = a.long_array(true);
        const int batch = a.i32(), row = a.i32(), total = a.i32();
        for (int i = 0; i < total; ++i) gather_rows_labels_body<T>(i, x, y, order, counter, xb, yb, batch, row);
    } else if (kernel == "step_end") {
        const T* loss = a.array(false);
        const int* correct = a.int_array(false);
        double* stats = a.double_array(true);
        long long* counter = a.long_array(true);
        const int batch = a.i32();
        step_end_body<T>(loss, correct, stats, counter, batch);
    } else {
        return false;
    }
    return true;
}

}  // namespace
