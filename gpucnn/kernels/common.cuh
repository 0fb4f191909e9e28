// Shared helpers for gpucnn's CUDA kernels.
//
// Every header here is written to compile three ways:
//   * by NVRTC through cupy.RawModule (the kernels that run on the GPU; no host headers
//     are available there, so nothing below includes <cmath>, <cstdio>, ...),
//   * by nvcc for sm_80 / sm_90 (tests/kernels/test_compile.py),
//   * by nvcc as *host* code for the CPU harness (tests/kernels/harness.cu), which calls
//     the __host__ __device__ per-element bodies over every index.
#ifndef GPUCNN_COMMON_CUH
#define GPUCNN_COMMON_CUH

// Threads per block of every launch. The block reductions (bias gradient) depend on it,
// and the harness replays them with the same number, so it is a compile-time constant
// shared by kernels, harness and launchers (gpucnn/ops/cuda/loader.py: BLOCK).
#define GPUCNN_BLOCK 256

// Grid-stride loop over flat indices [0, total): every index is visited exactly once
// whatever the grid size, and flat indices are 64-bit so sizes past 2^31 are safe.
#define GPUCNN_GRID_STRIDE_LOOP(idx, total)                                              \
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < (total); \
         idx += (long long)gridDim.x * blockDim.x)

// The same loop with indices of type I: `int` where the launcher has checked that every
// index the kernel forms, and total + gridDim.x * blockDim.x, fit in int32
// (gpucnn/ops/cuda/loader.py: index_type), `long long` otherwise. 32-bit division by a
// runtime divisor is a short inline sequence on the GPU; 64-bit division is a call to a
// long subroutine, which made the per-element index arithmetic cost more than the memory
// traffic it serves.
#define GPUCNN_GRID_STRIDE_LOOP_T(I, idx, total)                                  \
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < (total); \
         idx += (I)gridDim.x * blockDim.x)

namespace gpucnn {

// -infinity of T without <cmath> (NVRTC has no host headers): bit patterns.
template <typename T> __host__ __device__ inline T neg_inf();
template <> __host__ __device__ inline float neg_inf<float>() {
#ifdef __CUDA_ARCH__
    return __int_as_float(0xff800000);
#else
    union { unsigned int u; float f; } v;
    v.u = 0xff800000u;
    return v.f;
#endif
}
template <> __host__ __device__ inline double neg_inf<double>() {
#ifdef __CUDA_ARCH__
    return __longlong_as_double((long long)0xfff0000000000000ULL);
#else
    union { unsigned long long u; double d; } v;
    v.u = 0xfff0000000000000ULL;
    return v.d;
#endif
}

// NaN test that needs no header: NaN is the only value unequal to itself.
template <typename T> __host__ __device__ inline bool is_nan(T v) { return v != v; }

// Correctly rounded square root for both types (sqrtf / sqrt exist on host and device).
__host__ __device__ inline float sqrt_t(float v) { return sqrtf(v); }
__host__ __device__ inline double sqrt_t(double v) { return sqrt(v); }

// The outputs whose window covers padded coordinate p along one axis (window k, stride s,
// out outputs): 0 <= p - o*s < k, i.e. ceil((p-k+1)/s) <= o <= p/s, clipped to [0, out).
// Empty when lo > hi. Used by the gather-style backward kernels.
struct CoverRange {
    int lo, hi;
};
__host__ __device__ inline CoverRange covering_outputs(int p, int k, int s, int out) {
    CoverRange r;
    r.hi = (p / s < out - 1) ? p / s : out - 1;
    r.lo = (p >= k) ? (p - k + s) / s : 0;
    return r;
}

// Quotient and remainder of t / s for t = t0, t0 - step, t0 - 2*step, ... without a
// division per step: two divisions up front, then each next() subtracts step's quotient and
// remainder with one borrow. Floor division (0 <= r < s), so t < 0 exactly when q < 0.
// The gather kernels walk a window's taps with it: tap i of a window dilated by d covers
// padded row t = hp - i*d, which belongs to output row t / s when t % s == 0.
struct StridedQuotient {
    int q, r, s, step_q, step_r;
    __host__ __device__ StridedQuotient(int t0, int step, int s_) : q(t0 / s_), r(t0 % s_), s(s_),
        step_q(step / s_), step_r(step % s_) {}
    __host__ __device__ void next() {
        q -= step_q;
        r -= step_r;
        if (r < 0) {
            r += s;
            --q;
        }
    }
};

}  // namespace gpucnn

// Full unrolling of the fixed-length register-tile loops, on the device (a host compiler has no such pragma).
#ifdef __CUDACC__
#define GPUCNN_UNROLL _Pragma("unroll")
#else
#define GPUCNN_UNROLL
#endif

namespace gpucnn {

// R consecutive elements from src to dst (registers <-> shared memory): vector moves on the device where they
// make 16 bytes (LDS.128 / STS.128) or 8 (float x 2), element by element on the host. The shared rows are
// 16-byte aligned and the offsets multiples of R.
template <typename T, int R>
__host__ __device__ inline void copy_run(T* dst, const T* src) {
#if defined(__CUDA_ARCH__)
    if constexpr (sizeof(T) * R % 16 == 0) {
GPUCNN_UNROLL
        for (int v = 0; v < (int)(sizeof(T) * R / 16); ++v)
            reinterpret_cast<float4*>(dst)[v] = reinterpret_cast<const float4*>(src)[v];
    } else if constexpr (sizeof(T) * R == 8) {
        *reinterpret_cast<float2*>(dst) = *reinterpret_cast<const float2*>(src);
    } else {
GPUCNN_UNROLL
        for (int i = 0; i < R; ++i) dst[i] = src[i];
    }
#else
    for (int i = 0; i < R; ++i) dst[i] = src[i];
#endif
}

}  // namespace gpucnn

#endif  // GPUCNN_COMMON_CUH
