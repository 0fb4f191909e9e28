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

// The k-step of split-K's slices (fused_splitk.cuh; gpucnn/compile/cuda_graph/launch.py: GEMM_TK): every
// tile's TK divides it, so a slice is whole k-steps of whichever tile runs it.
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

// The GEMM kernels' launch bounds (after template <typename T>): 256 threads, and for float at least 2
// resident blocks per SM (at most 128 registers a thread), so that one block's barrier never idles its
// SM; double keeps its registers (2 blocks would spill).
#define GPUCNN_GEMM_BOUNDS __launch_bounds__(GPUCNN_BLOCK, sizeof(T) == 4 ? 2 : 1)


namespace gpucnn {
namespace fused {

// C[m, n] = store(m, n, sum_{k ascending} lhs(m, k) * rhs(k, n)) for m < P.M, n < P.N, k < P.K,
// tiled TM x TN per block, TK along k per step (a Tile below). A problem P provides M, N, K, its
// operands' elements through cursors (below), store, and which axis of each operand is contiguous in
// memory (kLhsAlongK, kRhsAlongK): the fused kernels differ only in P (implicit im2col inside rhs,
// bias/ReLU inside store, ReLU mask inside lhs, ...).
//
// Block b owns the tile rows [m0, m0 + TM) and columns [n0, n0 + TN), with
// tiles_n = ceil(N / TN), m0 = (b / tiles_n) * TM, n0 = (b % tiles_n) * TN.
// Threads: GPUCNN_BLOCK = 256 as a 16 x 16 grid, tr = t / 16, tc = t % 16; thread t owns the
// register tile of RM x RN outputs (m0 + tr*RM + i, n0 + tc*RN + j), i < RM, j < RN.
//
// Shared memory: two buffers (double buffering) of A[kk][mm] (row length LDA = TM + 4) and
// B[kk][nn] (LDB = TN + 4); the padding keeps rows 16-byte aligned for the vector reads of the
// multiply and spreads the column-wise stores of a K-contiguous load over the banks.
//
// Load map (coalesced; OperandMap below): thread t stages PER = TK*ROWS/256 elements of an operand's
// ROWS x TK tile per k-step. An operand contiguous along k is read with adjacent threads at adjacent k:
// element r is (row, kk) = (t / TK + r*(256/TK), t % TK). Otherwise adjacent threads read adjacent runs
// of V = min(PER, 4) rows: element r is row (t % G)*V + r % V with G = ROWS / V, at
// kk = t / G + (r / V)*(256/G); the V elements of one kk land side by side in shared memory (one vector
// store). Outside [0, M) x [0, K) (resp. [0, K) x [0, N)) an element is 0.
//
// Cursors (no division in the k-loop): an element is read through a row cursor (the part of its address
// that its row m or n fixes) and a k cursor (the part that moves with k), and a thread's elements share
// them: along k, its PER elements have PER rows and one kk, so one k cursor; otherwise V rows and PER/V
// values of kk, so V row cursors and PER/V k cursors. A k-step moves only the k cursors, by additions
// with at most one carry per index (Strided, Digits).
//
// Phase sequence over the k-steps k0 = k_begin, k_begin + TK, ... < k_end:
//   prologue:  place the cursors at k_begin; load that step into buffer 0.    barrier
//   step s:    [if a next step exists: fetch its elements into the thread's registers]
//              multiply: acc[i][j] += A[kk][tr*RM + i] * B[kk][tc*RN + j], kk = 0..TK-1 ascending,
//              from buffer s % 2;
//              [commit the fetched elements into buffer (s + 1) % 2].        barrier
//   store:     store(m, n, acc[i][j]) for the thread's (m, n) inside [0, M) x [0, N).
// Within step s threads read only buffer s % 2 (written before the last barrier) and write only
// buffer (s + 1) % 2 (last read before it), each element by one thread: one barrier per step, and
// the global loads of step s + 1 are in flight while step s multiplies. Every output is summed by
// one thread in ascending k: no atomics, bitwise repeatable, the same sums whatever the tile.
constexpr int kThreadGrid = 16;
constexpr int kPad = 4;

// The load map of one operand tile of ROWS x TK (the header comment): element r of thread t is at
// (row(t, r), kk(t, r)), read through row cursor ir(r) and k cursor ik(r).
template <int ROWS, int TK, bool ALONG_K>
struct OperandMap {
    static constexpr int PER = TK * ROWS / GPUCNN_BLOCK;
    static constexpr int V = ALONG_K ? 1 : (PER < 4 ? PER : 4);
    static constexpr int G = ROWS / V;  // runs of V rows side by side (not along k)
    static constexpr int ROW_CURSORS = ALONG_K ? PER : V;
    static constexpr int K_CURSORS = ALONG_K ? 1 : PER / V;
    static_assert(PER * GPUCNN_BLOCK == TK * ROWS && PER % V == 0, "whole loads per thread");
    static_assert(GPUCNN_BLOCK % TK == 0 && GPUCNN_BLOCK % G == 0, "the maps split t as below");
    __host__ __device__ static constexpr int ir(int r) { return ALONG_K ? r : r % V; }
    __host__ __device__ static constexpr int ik(int r) { return ALONG_K ? 0 : r / V; }
    __host__ __device__ static int row(int t, int r) {
        return ALONG_K ? t / TK + r * (GPUCNN_BLOCK / TK) : (t % G) * V + r % V;
    }
    __host__ __device__ static int kk(int t, int r) {
        return ALONG_K ? t % TK : t / G + (r / V) * (GPUCNN_BLOCK / G);
    }
};

template <int TM_, int TN_, int TK_, int RM_, int RN_>
struct Tile {
    static constexpr int TM = TM_, TN = TN_, TK = TK_, RM = RM_, RN = RN_;
    static constexpr int LDA = TM + kPad, LDB = TN + kPad;
    static constexpr int BUFFER = TK * (LDA + LDB);  // elements of one buffer (A then B)
    static_assert(TM == RM * kThreadGrid && TN == RN * kThreadGrid, "a 16 x 16 thread grid of RM x RN tiles");
    static_assert(GPUCNN_GEMM_TK % TK == 0, "split-K slices are whole k-steps of every tile");
};

// The tiles the kernels are instantiated for, by id (the launchers' ``tile`` argument;
// gpucnn/compile/cuda_graph/launch.py: GEMM_TILES, the same table):
//   GPUCNN_GEMM_TILE(id, TM, TN, TK, RM, RN)
#define GPUCNN_GEMM_TILE_TABLE(X) \
    X(0, 128, 64, 8, 8, 4)        \
    X(1, 64, 64, 16, 4, 4)        \
    X(2, 32, 64, 16, 2, 4)        \
    X(3, 32, 32, 16, 2, 2)        \
    X(4, 32, 128, 16, 2, 8)       \
    X(5, 64, 128, 8, 4, 8)        \
    X(6, 32, 16, 16, 2, 1)
#define GPUCNN_GEMM_TILE_COUNT 7
#define GPUCNN_GEMM_TILE_TYPE(id, TM, TN, TK, RM, RN) , Tile<TM, TN, TK, RM, RN>

template <class... Tiles> struct MaxBuffer { static constexpr int value = 0; };
template <class First, class... Rest> struct MaxBuffer<First, Rest...> {
    static constexpr int value = First::BUFFER > MaxBuffer<Rest...>::value ? First::BUFFER : MaxBuffer<Rest...>::value;
};
template <class Unused, class... Tiles> struct MaxBufferOfTable { static constexpr int value = MaxBuffer<Tiles...>::value; };
// Shared memory the kernels declare once (both buffers of the largest tile), in elements.
constexpr int kGemmSharedElements = 2 * MaxBufferOfTable<void GPUCNN_GEMM_TILE_TABLE(GPUCNN_GEMM_TILE_TYPE)>::value;

template <class Tl, class P>
struct GemmMaps {  // the operand maps of tile Tl for problem P
    using A = OperandMap<Tl::TM, Tl::TK, P::kLhsAlongK>;
    using B = OperandMap<Tl::TN, Tl::TK, P::kRhsAlongK>;
};

// A thread's registers: its accumulators, the next k-step's elements (fetched before the multiply,
// committed after it), its row and k cursors (the header comment) and the operands' k-step increments.
template <typename T, class Tl, class P>
struct GemmThread {
    using A = typename GemmMaps<Tl, P>::A;
    using B = typename GemmMaps<Tl, P>::B;
    T acc[Tl::RM][Tl::RN];
    alignas(16) T a_next[A::PER];  // (16-byte aligned: copy_run moves runs of them as float4)
    alignas(16) T b_next[B::PER];
    typename P::LhsRow a_row[A::ROW_CURSORS];
    typename P::LhsK a_k[A::K_CURSORS];
    typename P::RhsRow b_row[B::ROW_CURSORS];
    typename P::RhsK b_k[B::K_CURSORS];
    typename P::LhsStep a_step;
    typename P::RhsStep b_step;
};

// How a problem P reads its operands (the cursors of the header comment): lhs_row(m) / rhs_row(n) place a
// row cursor, lhs_k(k) / rhs_k(k) a k cursor, doing the index arithmetic (divisions included) once per
// thread; lhs_load(in, row, kc, m) / rhs_load(in, row, kc, n) read the element there where ``in`` (it is
// inside [0, M) x [0, K), resp. [0, K) x [0, N)), else give 0: one predicated load, no branch; lhs_step(dk) / rhs_step(dk) decompose one k-step once, and lhs_advance /
// rhs_advance(kc, step) move a k cursor by it. Offsets that may run past a tensor (k cursors beyond K,
// row cursors of rows past M or N) are unsigned: they wrap without overflow and are never read there.
struct Strided { unsigned off; };  // a k offset of a fixed stride per k
struct StridedStep { unsigned d; };
__host__ __device__ inline void advance(Strided& c, const StridedStep& s) { c.off += s.d; }

__host__ __device__ inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

template <class Tl>
__host__ __device__ inline int gemm_blocks(int M, int N) { return ceil_div(M, Tl::TM) * ceil_div(N, Tl::TN); }

template <typename T, class Tl, class P>
__host__ __device__ inline void gemm_zero(GemmThread<T, Tl, P>& s) {
    for (int i = 0; i < Tl::RM; ++i) for (int j = 0; j < Tl::RN; ++j) s.acc[i][j] = T(0);
}

template <class Tl>
__host__ __device__ inline void tile_origin(int N, int block, int& m0, int& n0) {
    const int tiles_n = ceil_div(N, Tl::TN);
    m0 = (block / tiles_n) * Tl::TM;
    n0 = (block % tiles_n) * Tl::TN;
}

// The thread's cursors at k-step k_begin, and the k-step increments.
template <typename T, class Tl, class P>
__host__ __device__ inline void gemm_cursors(const P& p, int block, int t, int k_begin, GemmThread<T, Tl, P>& s) {
    using A = typename GemmMaps<Tl, P>::A;
    using B = typename GemmMaps<Tl, P>::B;
    int m0, n0;
    tile_origin<Tl>(p.N, block, m0, n0);
    s.a_step = p.lhs_step(Tl::TK);
    s.b_step = p.rhs_step(Tl::TK);
    // Element r = ir (resp. ik * V) of the map is one whose row (resp. kk) the cursor serves.
GPUCNN_UNROLL
    for (int i = 0; i < A::ROW_CURSORS; ++i) s.a_row[i] = p.lhs_row(m0 + A::row(t, i));
GPUCNN_UNROLL
    for (int i = 0; i < A::K_CURSORS; ++i) s.a_k[i] = p.lhs_k(k_begin + A::kk(t, i * A::V));
GPUCNN_UNROLL
    for (int i = 0; i < B::ROW_CURSORS; ++i) s.b_row[i] = p.rhs_row(n0 + B::row(t, i));
GPUCNN_UNROLL
    for (int i = 0; i < B::K_CURSORS; ++i) s.b_k[i] = p.rhs_k(k_begin + B::kk(t, i * B::V));
}

// The elements of k-step k0 into a_next / b_next (0 outside the operands), then the k cursors one step on.
template <typename T, class Tl, class P>
__host__ __device__ inline void gemm_fetch(const P& p, int block, int t, int k0, GemmThread<T, Tl, P>& s) {
    using A = typename GemmMaps<Tl, P>::A;
    using B = typename GemmMaps<Tl, P>::B;
    int m0, n0;
    tile_origin<Tl>(p.N, block, m0, n0);
GPUCNN_UNROLL
    for (int r = 0; r < A::PER; ++r) {
        const int m = m0 + A::row(t, r), k = k0 + A::kk(t, r);
        s.a_next[r] = p.lhs_load((m < p.M) & (k < p.K), s.a_row[A::ir(r)], s.a_k[A::ik(r)], m);
    }
GPUCNN_UNROLL
    for (int r = 0; r < B::PER; ++r) {
        const int n = n0 + B::row(t, r), k = k0 + B::kk(t, r);
        s.b_next[r] = p.rhs_load((n < p.N) & (k < p.K), s.b_row[B::ir(r)], s.b_k[B::ik(r)], n);
    }
GPUCNN_UNROLL
    for (int i = 0; i < A::K_CURSORS; ++i) p.lhs_advance(s.a_k[i], s.a_step);
GPUCNN_UNROLL
    for (int i = 0; i < B::K_CURSORS; ++i) p.rhs_advance(s.b_k[i], s.b_step);
}

template <class M, int LD, typename T>
__host__ __device__ inline void commit_operand(int t, const T* next, T* tile) {
GPUCNN_UNROLL
    for (int r = 0; r < M::PER; r += M::V) copy_run<T, M::V>(tile + M::kk(t, r) * LD + M::row(t, r), next + r);
}

template <typename T, class Tl, class P>
__host__ __device__ inline void gemm_commit(int t, const T* a, const T* b, T* buffer) {
    commit_operand<typename GemmMaps<Tl, P>::A, Tl::LDA>(t, a, buffer);
    commit_operand<typename GemmMaps<Tl, P>::B, Tl::LDB>(t, b, buffer + Tl::TK * Tl::LDA);
}

template <typename T, class Tl, class P>
__host__ __device__ inline void gemm_multiply(int t, const T* buffer, GemmThread<T, Tl, P>& s) {
    const T* As = buffer + (t / kThreadGrid) * Tl::RM;
    const T* Bs = buffer + Tl::TK * Tl::LDA + (t % kThreadGrid) * Tl::RN;
GPUCNN_UNROLL
    for (int kk = 0; kk < Tl::TK; ++kk) {
        alignas(16) T a[Tl::RM];  // (filled by copy_run's vector loads)
        alignas(16) T b[Tl::RN];
        copy_run<T, Tl::RM>(a, As + kk * Tl::LDA);
        copy_run<T, Tl::RN>(b, Bs + kk * Tl::LDB);
GPUCNN_UNROLL
        for (int i = 0; i < Tl::RM; ++i)
GPUCNN_UNROLL
            for (int j = 0; j < Tl::RN; ++j) s.acc[i][j] += a[i] * b[j];
    }
}

// The phases (the header comment): prologue, step, store. ``shared`` holds the two buffers.
template <typename T, class Tl, class P>
__host__ __device__ inline void gemm_prologue_phase(const P& p, int block, int t, int k_begin, T* shared,
                                                    GemmThread<T, Tl, P>& s) {
    gemm_zero(s);
    gemm_cursors(p, block, t, k_begin, s);
    gemm_fetch(p, block, t, k_begin, s);
    gemm_commit<T, Tl, P>(t, s.a_next, s.b_next, shared);
}

template <typename T, class Tl, class P>
__host__ __device__ inline void gemm_step_phase(const P& p, int block, int t, int k0, int k_end, int step,
                                                T* shared, GemmThread<T, Tl, P>& s) {
    const bool next = k0 + Tl::TK < k_end;
    if (next) gemm_fetch(p, block, t, k0 + Tl::TK, s);
    gemm_multiply(t, shared + (step & 1) * Tl::BUFFER, s);
    if (next) gemm_commit<T, Tl, P>(t, s.a_next, s.b_next, shared + ((step + 1) & 1) * Tl::BUFFER);
}

// A problem that stores runs of R consecutive columns at once (the max-pool of conv_fwd_pool_fused, whose
// columns list each pooling window's elements in a row) sets kStoreRun = R and has store_run(m, n, acc),
// n a multiple of R; the launcher runs it on tiles whose RN is a multiple of R only.
template <class P, class = void> struct StoreRunOf { static constexpr int value = 1; };
template <class P> struct StoreRunOf<P, decltype(void(P::kStoreRun))> { static constexpr int value = P::kStoreRun; };

template <typename T, class Tl, class P>
__host__ __device__ inline void gemm_store_phase(const P& p, int block, int t, const GemmThread<T, Tl, P>& s) {
    const int tiles_n = ceil_div(p.N, Tl::TN);
    const int m0 = (block / tiles_n) * Tl::TM + (t / kThreadGrid) * Tl::RM;
    const int n0 = (block % tiles_n) * Tl::TN + (t % kThreadGrid) * Tl::RN;
    constexpr int R = StoreRunOf<P>::value;
GPUCNN_UNROLL
    for (int i = 0; i < Tl::RM; ++i) {
        const int m = m0 + i;
        if (m >= p.M) continue;
        if constexpr (R > 1) {
            if constexpr (Tl::RN % R == 0) {  // (the other tiles are never launched for such a problem)
GPUCNN_UNROLL
                for (int j = 0; j < Tl::RN; j += R) {
                    T run[R];  // a copy: the accumulators stay in registers
GPUCNN_UNROLL
                    for (int r = 0; r < R; ++r) run[r] = s.acc[i][j + r];
                    if (n0 + j < p.N) p.store_run(m, n0 + j, run);
                }
            }
        } else {
            for (int j = 0; j < Tl::RN; ++j) {
                const int n = n0 + j;
                if (n < p.N) p.store(m, n, s.acc[i][j]);
            }
        }
    }
}

#ifdef __CUDACC__
// The kernel side of the core: the phase sequence above with its barriers (device only), for
// output tile ``tile`` over k in [k_begin, k_end). ``shared``: kGemmSharedElements of T.
template <typename T, class Tl, class P>
__device__ inline void gemm_tile(const P& p, int tile, int k_begin, int k_end, T* shared) {
    GemmThread<T, Tl, P> s;
    const int t = threadIdx.x;
    gemm_prologue_phase<T, Tl>(p, tile, t, k_begin, shared, s);
    __syncthreads();
    int step = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += Tl::TK, ++step) {
        gemm_step_phase<T, Tl>(p, tile, t, k0, k_end, step, shared, s);
        __syncthreads();
    }
    gemm_store_phase<T, Tl>(p, tile, t, s);
}

// One block per output tile of tile shape ``tile_id`` (GPUCNN_GEMM_TILE_TABLE): gridDim.x ==
// gemm_blocks<that tile>(M, N) (the launcher sizes it).
#define GPUCNN_GEMM_TILE_CASE(id, TM, TN, TK, RM, RN) \
    case id: gemm_tile<T, Tile<TM, TN, TK, RM, RN>>(p, blockIdx.x, 0, p.K, shared); break;
// The shared memory of every GEMM of a kernel: one static array, whatever the problems and tiles that
// use it (a __shared__ variable of a device function is one per kernel).
template <typename T>
__device__ inline T* gemm_shared() {
    __shared__ __align__(16) unsigned char raw[kGemmSharedElements * sizeof(T)];
    return reinterpret_cast<T*>(raw);
}

template <typename T, class P>
__device__ inline void tiled_gemm(const P& p, int tile_id) {
    T* shared = gemm_shared<T>();
    switch (tile_id) { GPUCNN_GEMM_TILE_TABLE(GPUCNN_GEMM_TILE_CASE) default: break; }
}
#undef GPUCNN_GEMM_TILE_CASE
#endif

}  // namespace fused
}  // namespace gpucnn

#endif  // GPUCNN_FUSED_COMMON_CUH
