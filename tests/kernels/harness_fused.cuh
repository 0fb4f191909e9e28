// The fused kernels (gpucnn/kernels/fused_*.cu) in the CPU harness (harness.cu).
//
// A tiled kernel is replayed as the GPU runs it (the convention in fused_common.cuh): for
// each block of the launch grid, each phase in order, and within a phase every thread
// t = 0 .. GPUCNN_BLOCK-1 in turn; shared memory is one array per block, each thread's
// registers a state struct. The grid-stride kernels visit every index once, in order.
// Every GEMM kernel takes the tile shape last (``tile``, GPUCNN_GEMM_TILE_TABLE): the harness replays
// the same instantiation. Split-K (fused_splitk.cuh): pass 1 is replayed with its own block map, block by block, each
// block's k range phase by phase; pass 2 is a grid-stride kernel.
#include "../../gpucnn/kernels/fused_conv_body.cuh"
#include "../../gpucnn/kernels/fused_dense_body.cuh"
#include "../../gpucnn/kernels/fused_pool_body.cuh"

namespace {

// GPUCNN_HARNESS_THREAD_ORDER=reverse in the environment runs the threads of each phase in
// reverse order: equal results (bit for bit) show that no thread depends on another's
// progress within a phase, the premise of the phase-by-phase replay.
inline bool threads_reversed() {
    static const bool reversed = [] {
        const char* v = std::getenv("GPUCNN_HARNESS_THREAD_ORDER");
        return v != nullptr && std::string(v) == "reverse";
    }();
    return reversed;
}

inline int thread_at(int i) { return threads_reversed() ? GPUCNN_BLOCK - 1 - i : i; }

// One block of the GEMM core (tile shape Tl): output tile ``tile`` summed over k in [k_begin, k_end), phase
// by phase: the prologue, one phase per k-step (double-buffered shared memory), the store.
template <typename T, class Tl, class P>
void replay_gemm_tile(const P& p, int tile, int k_begin, int k_end) {
    using namespace gpucnn::fused;
    std::vector<T> shared(kGemmSharedElements, T(0));
    std::vector<GemmThread<T, Tl, P>> threads(GPUCNN_BLOCK);
    for (int i = 0; i < GPUCNN_BLOCK; ++i)
        gemm_prologue_phase<T, Tl>(p, tile, thread_at(i), k_begin, shared.data(), threads[thread_at(i)]);
    // __syncthreads()
    int step = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += Tl::TK, ++step) {
        for (int i = 0; i < GPUCNN_BLOCK; ++i)
            gemm_step_phase<T, Tl>(p, tile, thread_at(i), k0, k_end, step, shared.data(), threads[thread_at(i)]);
        // __syncthreads()
    }
    for (int i = 0; i < GPUCNN_BLOCK; ++i) gemm_store_phase<T, Tl>(p, tile, thread_at(i), threads[thread_at(i)]);
}

template <typename T, class Tl, class P>
void replay_tiled_gemm(const P& p) {
    const int blocks = gpucnn::fused::gemm_blocks<Tl>(p.M, p.N);
    for (int block = 0; block < blocks; ++block) replay_gemm_tile<T, Tl>(p, block, 0, p.K);
}

// Split-K pass 1 (fused_splitk.cuh: split_k_tile): blocks b = 0 .. tiles*slices-1 with the kernel's block map.
template <typename T, class Tl, class P>
void replay_split_k_tiles(const P& p, T* partial, int slices) {
    using namespace gpucnn::fused;
    const int blocks = gemm_blocks<Tl>(p.M, p.N) * slices;
    for (int block = 0; block < blocks; ++block) {
        const SplitKBlock b = split_k_block<Tl>(block, p.M, p.N, p.K, slices);
        const SplitKPartial<T, P> q(p, partial, b.slice);
        replay_gemm_tile<T, Tl>(q, b.tile, b.k_begin, b.k_end);
    }
}

// The kernels' switch over the tile table (fused_common.cuh: tiled_gemm, fused_splitk.cuh: split_k_gemm).
#define GPUCNN_REPLAY_TILE_CASE(id, TM, TN, TK, RM, RN) \
    case id: replay_tiled_gemm<T, gpucnn::fused::Tile<TM, TN, TK, RM, RN>>(p); return;
template <typename T, class P>
void replay_gemm(const P& p, int tile) {
    switch (tile) { GPUCNN_GEMM_TILE_TABLE(GPUCNN_REPLAY_TILE_CASE) default: break; }
    die("tile must be 0 .. GPUCNN_GEMM_TILE_COUNT - 1, got " + std::to_string(tile));
}
#undef GPUCNN_REPLAY_TILE_CASE

#define GPUCNN_REPLAY_SPLIT_CASE(id, TM, TN, TK, RM, RN) \
    case id: replay_split_k_tiles<T, gpucnn::fused::Tile<TM, TN, TK, RM, RN>>(p, partial, slices); return;
template <typename T, class P>
void replay_split_k_gemm(const P& p, T* partial, int slices, int tile) {
    if (slices < 1) die("slices must be >= 1");
    switch (tile) { GPUCNN_GEMM_TILE_TABLE(GPUCNN_REPLAY_SPLIT_CASE) default: break; }
    die("tile must be 0 .. GPUCNN_GEMM_TILE_COUNT - 1, got " + std::to_string(tile));
}
#undef GPUCNN_REPLAY_SPLIT_CASE

// Split-K pass 2 (split_k_reduce_body), a grid-stride kernel: every output index once, in order.
template <typename T>
void replay_split_k_reduce(Args<T>& a) {
    const T* partial = a.array(false);
    T* gw = a.array(true);
    T* gb = a.array(true);
    int slices = a.i32(), cols = a.i32(), KW = a.i32(), total = a.i32();
    for (int idx = 0; idx < total; ++idx)
        gpucnn::fused::split_k_reduce_body<T>(idx, partial, gw, gb, slices, cols, KW, total);
}

template <typename T>
gpucnn::fused::ConvGeometry conv_geometry(Args<T>& a) {
    gpucnn::fused::ConvGeometry g;
    g.N = a.i32(); g.C = a.i32(); g.H = a.i32(); g.W = a.i32(); g.O = a.i32();
    g.kh = a.i32(); g.kw = a.i32(); g.sy = a.i32(); g.sx = a.i32(); g.pt = a.i32(); g.pl = a.i32();
    g.oh = a.i32(); g.ow = a.i32();
    return g;
}

// Runs ``kernel`` when it is a fused one (arguments as in loader.SIGNATURES); false otherwise.
template <typename T>
bool run_fused(const std::string& kernel, Args<T>& a) {
    using namespace gpucnn::fused;
    if (kernel == "conv_fwd_fused") {
        const T* x = a.array(false);
        const T* w = a.array(false);
        const T* b = a.array(false);
        T* y = a.array(true);
        ConvGeometry g = conv_geometry(a);
        int flags = a.i32(), tile = a.i32();
        replay_gemm<T>(ConvForward<T>{x, w, b, y, g, flags, g.O, g.N * g.oh * g.ow, g.C * g.kh * g.kw}, tile);
    } else if (kernel == "conv_fwd_pool_fused") {
        const T* x = a.array(false);
        const T* w = a.array(false);
        const T* b = a.array(false);
        T* y = a.array(true);
        unsigned char* am = a.byte_array(true);
        ConvGeometry g = conv_geometry(a);
        int ph = a.i32(), pw = a.i32(), flags = a.i32(), tile = a.i32();
        const int poh = g.oh / ph, pow_ = g.ow / pw;
        replay_gemm<T>(ConvForwardPool<T>{{x, w, b, y, g, flags, g.O, g.N * poh * pow_ * ph * pw, g.C * g.kh * g.kw},
                                          am, ph, pw, poh, pow_}, tile);
    } else if (kernel == "conv_dgrad_fused") {
        const T* gy = a.array(false);
        const T* w = a.array(false);
        const T* mask = a.array(false);
        T* gx = a.array(true);
        ConvGeometry g = conv_geometry(a);
        int flags = a.i32(), tile = a.i32();
        if (g.sy == 1 && g.sx == 1)  // the kernel's two instantiations
            replay_gemm<T>(ConvDataGrad<T, true>{gy, w, mask, gx, g, flags, g.C, g.N * g.H * g.W, g.O * g.kh * g.kw},
                           tile);
        else
            replay_gemm<T>(ConvDataGrad<T, false>{gy, w, mask, gx, g, flags, g.C, g.N * g.H * g.W, g.O * g.kh * g.kw},
                           tile);
    } else if (kernel == "conv_wgrad_fused") {
        const T* gy = a.array(false);
        const T* x = a.array(false);
        T* gw = a.array(true);
        T* gb = a.array(true);
        ConvGeometry g = conv_geometry(a);
        int flags = a.i32(), tile = a.i32();
        const int KW = g.C * g.kh * g.kw;
        replay_gemm<T>(ConvWeightGrad<T>{gy, x, gw, gb, g, flags, g.O, KW + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0),
                                         g.N * g.oh * g.ow, KW}, tile);
    } else if (kernel == "conv_wgrad_partial_fused") {
        const T* gy = a.array(false);
        const T* x = a.array(false);
        T* partial = a.array(true);
        ConvGeometry g = conv_geometry(a);
        int flags = a.i32(), slices = a.i32(), tile = a.i32();
        const int KW = g.C * g.kh * g.kw;
        replay_split_k_gemm<T>(ConvWeightGrad<T>{gy, x, nullptr, nullptr, g, flags, g.O,
                                                 KW + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), g.N * g.oh * g.ow, KW},
                               partial, slices, tile);
    } else if (kernel == "conv_wgrad_pooled_fused" || kernel == "conv_wgrad_pooled_partial_fused") {
        const bool split = kernel == "conv_wgrad_pooled_partial_fused";
        const T* gp = a.array(false);
        const unsigned char* am = a.byte_array(false);
        const T* x = a.array(false);
        T* out = a.array(true);
        T* gb = split ? nullptr : a.array(true);
        ConvGeometry g = conv_geometry(a);
        int ph = a.i32(), pw = a.i32(), flags = a.i32();
        int slices = split ? a.i32() : 1, tile = a.i32();
        const int KW = g.C * g.kh * g.kw;
        const ConvWeightGradPooled<T> p{{gp, x, split ? nullptr : out, gb, g, flags, g.O,
                                         KW + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), g.N * g.oh * g.ow, KW},
                                        am, ph, pw, g.oh / ph, g.ow / pw};
        if (split) replay_split_k_gemm<T>(p, out, slices, tile);
        else replay_gemm<T>(p, tile);
    } else if (kernel == "conv_wgrad_reduce_fused" || kernel == "dense_wgrad_reduce_fused") {
        replay_split_k_reduce<T>(a);
    } else if (kernel == "dense_fwd_fused") {
        const T* x = a.array(false);
        const T* w = a.array(false);
        const T* b = a.array(false);
        T* y = a.array(true);
        int N = a.i32(), I = a.i32(), O = a.i32(), flags = a.i32(), tile = a.i32();
        replay_gemm<T>(DenseForward<T>{x, w, b, y, flags, N, O, I}, tile);
    } else if (kernel == "dense_dgrad_fused") {
        const T* gy = a.array(false);
        const T* y = a.array(false);
        const T* w = a.array(false);
        T* gx = a.array(true);
        int N = a.i32(), I = a.i32(), O = a.i32(), flags = a.i32(), tile = a.i32();
        replay_gemm<T>(DenseDataGrad<T>{gy, y, w, gx, flags, N, I, O}, tile);
    } else if (kernel == "dense_wgrad_fused") {
        const T* gy = a.array(false);
        const T* y = a.array(false);
        const T* x = a.array(false);
        T* gw = a.array(true);
        T* gb = a.array(true);
        int N = a.i32(), I = a.i32(), O = a.i32(), flags = a.i32(), tile = a.i32();
        replay_gemm<T>(DenseWeightGrad<T>{gy, y, x, gw, gb, flags, O, I + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), N, I},
                       tile);
    } else if (kernel == "dense_wgrad_partial_fused") {
        const T* gy = a.array(false);
        const T* y = a.array(false);
        const T* x = a.array(false);
        T* partial = a.array(true);
        int N = a.i32(), I = a.i32(), O = a.i32(), flags = a.i32(), slices = a.i32(), tile = a.i32();
        replay_split_k_gemm<T>(DenseWeightGrad<T>{gy, y, x, nullptr, nullptr, flags, O,
                                                  I + ((flags & GPUCNN_FUSED_BIAS) ? 1 : 0), N, I},
                               partial, slices, tile);
    } else if (kernel == "dense_fwd_partial_fused") {
        const T* x = a.array(false);
        const T* w = a.array(false);
        T* partial = a.array(true);
        int N = a.i32(), I = a.i32(), O = a.i32(), slices = a.i32(), tile = a.i32();
        replay_split_k_gemm<T>(DenseForward<T>{x, w, nullptr, nullptr, 0, N, O, I}, partial, slices, tile);
    } else if (kernel == "dense_fwd_reduce_fused") {
        const T* partial = a.array(false);
        const T* bias = a.array(false);
        T* y = a.array(true);
        int slices = a.i32(), O = a.i32(), flags = a.i32(), total = a.i32();
        for (int idx = 0; idx < total; ++idx) dense_fwd_reduce_body<T>(idx, partial, bias, y, slices, O, flags, total);
    } else if (kernel == "max_pool_u8_fwd") {
        const T* x = a.array(false);
        T* y = a.array(true);
        unsigned char* am = a.byte_array(true);
        int H = a.i32(), W = a.i32(), kh = a.i32(), kw = a.i32(), sy = a.i32(), sx = a.i32();
        int pt = a.i32(), pl = a.i32(), oh = a.i32(), ow = a.i32(), flags = a.i32(), total = a.i32();
        for (int i = 0; i < total; ++i)
            max_pool_u8_fwd_body<T>(i, x, y, am, H, W, kh, kw, sy, sx, pt, pl, oh, ow, flags);
    } else if (kernel == "max_pool_u8_bwd") {  // no x: the ReLU mask is in the argmax (GPUCNN_POOL_NO_GRAD)
        const T* gy = a.array(false);
        const unsigned char* am = a.byte_array(false);
        T* gx = a.array(true);
        int H = a.i32(), W = a.i32(), kh = a.i32(), kw = a.i32(), sy = a.i32(), sx = a.i32();
        int pt = a.i32(), pl = a.i32(), oh = a.i32(), ow = a.i32(), total = a.i32();
        for (int i = 0; i < total; ++i) max_pool_u8_bwd_body<T>(i, gy, am, gx, H, W, kh, kw, sy, sx, pt, pl, oh, ow);
    } else {
        return false;
    }
    return true;
}

}  // namespace
