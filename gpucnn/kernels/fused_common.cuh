// Shared pieces of the fused kernels (fused_*.cu): the phase convention of tiled kernels,
// 32-bit index loops, and the tiled GEMM core that every fused convolution and Dense
// kernel is built on.
//
// PHASES BETWEEN BARRIERS (the convention every tiled kernel here follows, so that the CPU
// harness, tests/kernels/harness_fused.cuh, can replay it exactly):
//   * A block runs a fixed sequence of phases; consecutive phases are separated by one
//     __syncthreads(), and the sequence depends only on the kernel's arguments (never on
//     data or on the thread), so every thread reaches every barrier.
//   * A phase is a __host__ __device__ function of (thread index t, block index, the
//     block's shared arrays, the thread's own state struct) written in the *_body / core
//     headers. Within one phase a thread reads only shared memory that the previous
//     phases wrote, writes only the shared elements its phase map gives it (no two threads
//     write one element), its own state, and global outputs it alone owns.
//   * Hence running the phases in order, and within a phase every thread t = 0..BLOCK-1 one
//     after another, performs the GPU's operations on the same values in the same order: the
//     harness does exactly that, block by block, with the per-thread state kept in an array.
//     Its results agree with a GPU's within the verify tolerance (gpucnn/compile/verify.py),
//     not necessarily bit for bit: CuPy compiles with -ftz=true (float denormals flush to
//     zero) and NVRTC contracts a*b + c into one FMA (one rounding instead of two), neither
//     of which the harness's host build (x86-64, no FMA) does. Repeat runs on one GPU are
//     bitwise identical (no atomics, fixed orders).
// The __global__ kernels (fused_*.cu) are only the phase sequence with the barriers.
//
// Index arithmetic is 32-bit (int): every launcher checks at launch that each tensor it
// passes has at most GPUCNN_INT32_INDEX_MAX = 2^31 - 1 elements
// (gpucnn/compile/cuda_graph/launch.py: check_int32).
#ifndef GPUCNN_FUSED_COMMON_CUH
#define GPUCNN_FUSED_COMMON_CUH

#include "common.cuh"

// The GEMM tile every fused GEMM kernel instantiates (tile sizes are template parameters
// of the core below; these are the ones launched, shared with gpucnn/compile/cuda_graph/launch.py).
#define GPUCNN_GEMM_TM 64
#define GPUCNN_GEMM_TN 64
#define GPUCNN_GEMM_TK 16

// Epilogue flags of the fused kernels (gpucnn/compile/cuda_graph/launch.py: BIAS, RELU, MASK):
// add the bias; apply ReLU to the output; multiply a gradient by (activation > 0).
#define GPUCNN_FUSED_BIAS 1
#define GPUCNN_FUSED_RELU 2
#define GPUCNN_FUSED_MASK 4

// The largest element count of a tensor the fused kernels index with int (check_int32 in
// gpucnn/compile/cuda_graph/launch.py admits up to this; tests/kernels/test_index_limits.py).
#define GPUCNN_INT32_INDEX_MAX 2147483647

// Grid-stride loop over [0, total) with 32-bit indices, for every 0 <= total <=
// GPUCNN_INT32_INDEX_MAX and every grid of fewer than 2^31 threads (the launchers' grids have
// at most loader.MAX_BLOCKS * BLOCK = 2^28). It steps only while the step stays below total,
// and else ends at total: `idx += stride` would pass INT_MAX, and wrap, for a total above
// INT_MAX - stride + 1 (about 1.88e9 at the largest grid). Each index is visited once, in order
// per thread; the body sees a plain int idx. The eager kernels' GPUCNN_GRID_STRIDE_LOOP_T
// (common.cuh) steps unguarded, hence their lower 32-bit limit, loader.INT32_INDEX_LIMIT =
// GPUCNN_INT32_INDEX_MAX - MAX_BLOCKS * BLOCK.
#define GPUCNN_GRID_STRIDE_LOOP32(idx, total)                                                  \
    for (int idx = (int)(blockIdx.x * blockDim.x + threadIdx.x); idx < (total);                \
         idx = ((total) - idx > (int)(gridDim.x * blockDim.x)) ? idx + (int)(gridDim.x * blockDim.x) : (total))

namespace gpucnn {
namespace fused {

// C[m, n] = store(m, n, sum_{k ascending} P.lhs(m, k) * P.rhs(k, n)) for m < P.M, n < P.N,
// k < P.K, tiled TM x TN per block, TK along k per step. A problem P provides M, N, K and
// the element functions lhs, rhs, store: the fused kernels differ only in P (implicit
// im2col inside rhs, bias/ReLU inside store, ReLU mask inside lhs, ...).
//
// Block b owns the tile rows [m0, m0 + TM) and columns [n0, n0 + TN), with
// tiles_n = ceil(N / TN), m0 = (b / tiles_n) * TM, n0 = (b % tiles_n) * TN.
// Threads: 256 as a 16 x 16 grid, tr = t / 16, tc = t % 16; thread t owns the outputs
// (m0 + tr + 16 i, n0 + tc + 16 j) for i < TM/16, j < TN/16 (RM x RN accumulators).
//
// Phase sequence: for k0 = 0, TK, 2 TK, ... < K: [load] barrier [multiply] barrier; then [store].
//   load (k0):  shared A[kk][mm] = lhs(m0 + mm, k0 + kk), element e = kk*TM + mm for
//               e = t, t + 256, ... < TK*TM; B[kk][nn] = rhs(k0 + kk, n0 + nn) likewise;
//               0 outside [0, M) x [0, K) resp. [0, K) x [0, N).
//   multiply:   acc[i][j] += A[kk][tr + 16 i] * B[kk][tc + 16 j] for kk = 0..TK-1 ascending.
//   store:      store(m, n, acc[i][j]) for the thread's (m, n) inside [0, M) x [0, N).
// Every output is summed by one thread in ascending k: no atomics, bitwise repeatable.
constexpr int kThreadGrid = 16;

template <typename T, int TM, int TN>
struct GemmThread {
    static_assert(TM % kThreadGrid == 0 && TN % kThreadGrid == 0, "tile sides are multiples of 16");
    T acc[TM / kThreadGrid][TN / kThreadGrid];
};

__host__ __device__ inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

template <int TM, int TN>
__host__ __device__ inline int gemm_blocks(int M, int N) { return ceil_div(M, TM) * ceil_div(N, TN); }

template <typename T, int TM, int TN>
__host__ __device__ inline void gemm_zero(GemmThread<T, TM, TN>& s) {
    for (int i = 0; i < TM / kThreadGrid; ++i)
        for (int j = 0; j < TN / kThreadGrid; ++j) s.acc[i][j] = T(0);
}

template <typename T, int TM, int TN, int TK, class P>
__host__ __device__ inline void gemm_load_phase(const P& p, int block, int t, int k0, T* As, T* Bs) {
    const int tiles_n = ceil_div(p.N, TN);
    const int m0 = (block / tiles_n) * TM;
    const int n0 = (block % tiles_n) * TN;
    for (int e = t; e < TK * TM; e += GPUCNN_BLOCK) {
        const int kk = e / TM;
        const int m = m0 + (e - kk * TM);
        const int k = k0 + kk;
        As[e] = (m < p.M && k < p.K) ? p.lhs(m, k) : T(0);
    }
    for (int e = t; e < TK * TN; e += GPUCNN_BLOCK) {
        const int kk = e / TN;
        const int n = n0 + (e - kk * TN);
        const int k = k0 + kk;
        Bs[e] = (n < p.N && k < p.K) ? p.rhs(k, n) : T(0);
    }
}

template <typename T, int TM, int TN, int TK>
__host__ __device__ inline void gemm_multiply_phase(int t, const T* As, const T* Bs, GemmThread<T, TM, TN>& s) {
    const int tr = t / kThreadGrid;
    const int tc = t % kThreadGrid;
    for (int kk = 0; kk < TK; ++kk) {
        for (int i = 0; i < TM / kThreadGrid; ++i) {
            const T a = As[kk * TM + tr + kThreadGrid * i];
            for (int j = 0; j < TN / kThreadGrid; ++j) s.acc[i][j] += a * Bs[kk * TN + tc + kThreadGrid * j];
        }
    }
}

template <typename T, int TM, int TN, class P>
__host__ __device__ inline void gemm_store_phase(const P& p, int block, int t, const GemmThread<T, TM, TN>& s) {
    const int tiles_n = ceil_div(p.N, TN);
    const int m0 = (block / tiles_n) * TM + t / kThreadGrid;
    const int n0 = (block % tiles_n) * TN + t % kThreadGrid;
    for (int i = 0; i < TM / kThreadGrid; ++i) {
        const int m = m0 + kThreadGrid * i;
        if (m >= p.M) continue;
        for (int j = 0; j < TN / kThreadGrid; ++j) {
            const int n = n0 + kThreadGrid * j;
            if (n < p.N) p.store(m, n, s.acc[i][j]);
        }
    }
}

#ifdef __CUDACC__
// The kernel side of the core: the phase sequence above with its barriers (device only).
// One block per tile: gridDim.x == gemm_blocks<TM, TN>(M, N) (the launcher sizes it).
template <typename T, int TM, int TN, int TK, class P>
__device__ inline void tiled_gemm(const P& p) {
    static_assert(TM * TN == kThreadGrid * kThreadGrid * (TM / kThreadGrid) * (TN / kThreadGrid), "tile");
    __shared__ T As[TK * TM];
    __shared__ T Bs[TK * TN];
    GemmThread<T, TM, TN> s;
    gemm_zero(s);
    const int block = blockIdx.x;
    const int t = threadIdx.x;
    for (int k0 = 0; k0 < p.K; k0 += TK) {
        gemm_load_phase<T, TM, TN, TK>(p, block, t, k0, As, Bs);
        __syncthreads();
        gemm_multiply_phase<T, TM, TN, TK>(t, As, Bs, s);
        __syncthreads();
    }
    gemm_store_phase(p, block, t, s);
}
#endif

}  // namespace fused
}  // namespace gpucnn

#endif  // GPUCNN_FUSED_COMMON_CUH
