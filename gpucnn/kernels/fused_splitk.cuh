// Split-K for the weight-gradient GEMMs (conv_wgrad_* in fused_conv.cu, dense_wgrad_* in
// fused_dense.cu): their K (N*oh*ow, or the batch) is long and their output small, so one
// block per output tile leaves most of the GPU idle. Two passes, deterministic, no atomics:
//
//   pass 1 (*_wgrad_partial_fused): grid = tiles * S blocks, block b = s * tiles + tile (the
//     S blocks of one k-slice side by side). Block b runs the tiled GEMM core of
//     fused_common.cuh on its output tile over k in [begin(s), end(s)) only, in ascending k,
//     exactly as tiled_gemm does over all of K (the same tile shape: the launcher's ``tile``), and
//     stores its sums into the partial buffer partial[s][m][n] (S x M x N, of T: fp32 for float,
//     fp64 for double).
//   pass 2 (*_wgrad_reduce_fused): one thread per output (m, n), grid-stride:
//     acc = partial[0][m][n]; acc += partial[s][m][n] for s = 1 .. S-1 ascending; then the
//     problem's own store (store_weight_grad: dW, or db for the column of ones).
//
// The slices: K is ceil(K / TK) k-steps of TK = GPUCNN_GEMM_TK (whole steps of every tile); slice s
// gets q = steps / S of them, one more for s < steps % S, in order (so begin(0) = 0, end(S-1) = K,
// every end a multiple of TK or K). The launcher keeps S <= steps, so no slice is empty (an empty one
// would store zeros).
// The NumPy twin (gpucnn/compile/cuda_graph/reference.py: split_k_bounds, split_k_sum) states
// the same slices and order. With S = 1 the launcher runs the single-pass kernels instead.
// The harness (tests/kernels/harness_fused.cuh) replays pass 1 block by block, phase by phase,
// with the same block map (split_k_block) and pass 2 index by index.
#ifndef GPUCNN_FUSED_SPLITK_CUH
#define GPUCNN_FUSED_SPLITK_CUH

#include "fused_common.cuh"

namespace gpucnn {
namespace fused {

// The store of both weight-gradient GEMMs: column n < KW of row m is grad_w[m, n]; column KW
// (against the column of ones) is grad_b[m].
template <typename T>
__host__ __device__ inline void store_weight_grad(T* grad_w, T* grad_b, int KW, int m, int n, T acc) {
    if (n < KW) grad_w[m * KW + n] = acc;
    else grad_b[m] = acc;
}

// What block b of pass 1 does: its output tile, its slice s and that slice's k range.
struct SplitKBlock {
    int tile, slice, k_begin, k_end;
};

// k-steps of GPUCNN_GEMM_TK (whole k-steps of every tile, fused_common.cuh), over the output tiles of Tl.
template <class Tl>
__host__ __device__ inline SplitKBlock split_k_block(int block, int M, int N, int K, int slices) {
    constexpr int TK = GPUCNN_GEMM_TK;
    const int tiles = gemm_blocks<Tl>(M, N);
    const int s = block / tiles;
    const int steps = ceil_div(K, TK);
    const int q = steps / slices;
    const int r = steps - q * slices;
    const int first = s * q + (s < r ? s : r);
    const int count = q + (s < r ? 1 : 0);
    const long long begin = (long long)first * TK;  // (first + count) * TK may pass 2^31 when K is near it
    const long long end = (long long)(first + count) * TK;
    return {block - s * tiles, s, (int)(begin < K ? begin : K), (int)(end < K ? end : K)};
}

// Problem P with its store redirected into the partial slice out = partial + s*M*N:
// out[m * N + n] = acc. The operands (cursors) and the sizes are P's.
template <typename T, class P>
struct SplitKPartial {
    static constexpr bool kLhsAlongK = P::kLhsAlongK, kRhsAlongK = P::kRhsAlongK;
    P p;
    T* out;
    int M, N, K;

    __host__ __device__ SplitKPartial(const P& problem, T* partial, int slice)
        : p(problem), out(partial + slice * problem.M * problem.N), M(problem.M), N(problem.N), K(problem.K) {}
    using LhsRow = typename P::LhsRow;
    using RhsRow = typename P::RhsRow;
    using LhsK = typename P::LhsK;
    using RhsK = typename P::RhsK;
    using LhsStep = typename P::LhsStep;
    using RhsStep = typename P::RhsStep;
    __host__ __device__ inline LhsRow lhs_row(int m) const { return p.lhs_row(m); }
    __host__ __device__ inline RhsRow rhs_row(int n) const { return p.rhs_row(n); }
    __host__ __device__ inline LhsK lhs_k(int k) const { return p.lhs_k(k); }
    __host__ __device__ inline RhsK rhs_k(int k) const { return p.rhs_k(k); }
    __host__ __device__ inline LhsStep lhs_step(int dk) const { return p.lhs_step(dk); }
    __host__ __device__ inline RhsStep rhs_step(int dk) const { return p.rhs_step(dk); }
    __host__ __device__ inline T lhs_load(bool in, const LhsRow& r, const LhsK& c, int m) const {
        return p.lhs_load(in, r, c, m);
    }
    __host__ __device__ inline T rhs_load(bool in, const RhsRow& r, const RhsK& c, int n) const {
        return p.rhs_load(in, r, c, n);
    }
    __host__ __device__ inline void lhs_advance(LhsK& c, const LhsStep& s) const { p.lhs_advance(c, s); }
    __host__ __device__ inline void rhs_advance(RhsK& c, const RhsStep& s) const { p.rhs_advance(c, s); }
    __host__ __device__ inline void store(int m, int n, T acc) const { out[m * N + n] = acc; }
};

// Pass 2 for output idx = m * N + n of an (M, N) product, total = M * N (every index < total
// once): the S partial sums in ascending s, then store_weight_grad.
template <typename T>
__host__ __device__ inline void split_k_reduce_body(int idx, const T* __restrict__ partial, T* grad_w, T* grad_b,
                                                    int slices, int N, int KW, int total) {
    T acc = partial[idx];
    for (int s = 1; s < slices; ++s) acc += partial[s * total + idx];
    const int m = idx / N;
    store_weight_grad(grad_w, grad_b, KW, m, idx - m * N, acc);
}

#ifdef __CUDACC__
// Pass 1 on the device: the phase sequence of gemm_tile (fused_common.cuh) over the block's k range,
// then the store into its partial slice. gridDim.x == gemm_blocks<tile>(M, N) * slices.
template <typename T, class Tl, class P>
__device__ inline void split_k_tile(const P& problem, T* partial, int slices, T* shared) {
    const SplitKBlock b = split_k_block<Tl>(blockIdx.x, problem.M, problem.N, problem.K, slices);
    const SplitKPartial<T, P> p(problem, partial, b.slice);
    gemm_tile<T, Tl>(p, b.tile, b.k_begin, b.k_end, shared);
}

#define GPUCNN_SPLIT_K_TILE_CASE(id, TM, TN, TK, RM, RN) \
    case id: split_k_tile<T, Tile<TM, TN, TK, RM, RN>>(problem, partial, slices, shared); break;
template <typename T, class P>
__device__ inline void split_k_gemm(const P& problem, T* partial, int slices, int tile_id) {
    T* shared = gemm_shared<T>();
    switch (tile_id) { GPUCNN_GEMM_TILE_TABLE(GPUCNN_SPLIT_K_TILE_CASE) default: break; }
}
#undef GPUCNN_SPLIT_K_TILE_CASE
#endif

}  // namespace fused
}  // namespace gpucnn

#endif  // GPUCNN_FUSED_SPLITK_CUH
