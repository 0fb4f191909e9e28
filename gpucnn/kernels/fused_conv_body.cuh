// The fused convolution problems for the tiled GEMM core (fused_common.cuh): implicit
// GEMM, reading NCHW tensors directly; no im2col matrix exists in memory.
//
// Layouts (C-contiguous): x (N, C, H, W), weight (O, C, kh, kw) = (O, K) with
// K = C*kh*kw and k = (c, i, j), y and grad_y (N, O, oh, ow), P = oh*ow. The padded input
// is x with pt rows on top and pl columns on the left; outside x it reads 0. All indices
// are int: every tensor has < 2^31 elements (checked by the launcher).
#ifndef GPUCNN_FUSED_CONV_BODY_CUH
#define GPUCNN_FUSED_CONV_BODY_CUH

#include "fused_pool_body.cuh"  // GPUCNN_POOL_NO_GRAD
#include "fused_splitk.cuh"     // (includes fused_common.cuh)

namespace gpucnn {
namespace fused {

struct ConvGeometry {
    int N, C, H, W, O, kh, kw, sy, sx, pt, pl, oh, ow;
};

// An index k = (a, b, c) of a row-major box (b < B, c < Cn; a unbounded) and off = a*sa + b*sb + c*sc:
// digits_at decomposes k once (the divisions); advance moves it by a step dk decomposed once
// (digits_step: db < B, dc < Cn), with one carry per digit, each one addition to off. The k-cursors
// of the convolutions walk (c, i, j) or (n, oy, ox) with it; two digits (a, c) take B = kNoWrap.
constexpr int kNoWrap = 0x7fffffff;  // b never wraps: b = k / Cn < 2^31 - 1
struct Digits {
    int b, c;
    unsigned off;
};
struct DigitsStep {
    int db, dc, B, Cn;
    unsigned doff;     // da*sa + db*sb + dc*sc
    unsigned carry_c;  // sb - Cn*sc: c wraps into b
    unsigned carry_b;  // sa - B*sb: b wraps into a
};
__host__ __device__ inline DigitsStep digits_step(int dk, int B, int Cn, int sa, int sb, int sc) {
    const int dc = dk % Cn, dbc = dk / Cn;
    const int db = dbc % B, da = dbc / B;
    const unsigned ua = (unsigned)sa, ub = (unsigned)sb, uc = (unsigned)sc;
    return {db, dc, B, Cn, (unsigned)da * ua + (unsigned)db * ub + (unsigned)dc * uc, ub - (unsigned)Cn * uc,
            ua - (unsigned)B * ub};
}
__host__ __device__ inline Digits digits_at(int k, int B, int Cn, int sa, int sb, int sc) {
    const int c = k % Cn, bc = k / Cn;
    const int b = bc % B, a = bc / B;
    return {b, c, (unsigned)a * (unsigned)sa + (unsigned)b * (unsigned)sb + (unsigned)c * (unsigned)sc};
}
__host__ __device__ inline void advance(Digits& d, const DigitsStep& s) {
    d.c += s.dc;
    d.b += s.db;
    d.off += s.doff;
    if (d.c >= s.Cn) { d.c -= s.Cn; d.b += 1; d.off += s.carry_c; }
    if (d.b >= s.B) { d.b -= s.B; d.off += s.carry_b; }
}
// (ih, iw) in x, not padding (a negative index wraps to a large unsigned one); & for a predicate, not a branch
__host__ __device__ inline bool inside(int ih, int iw, const ConvGeometry& g) {
    return ((unsigned)ih < (unsigned)g.H) & ((unsigned)iw < (unsigned)g.W);
}

// Forward: y = relu(conv(x, weight) + b)   (bias and ReLU each optional: flags BIAS, RELU).
// GEMM: M = O, N = N*P (column (n, oy, ox)), K = C*kh*kw (k = (c, i, j));
//   lhs(o, k) = weight[o, k];
//   rhs(k, col) = x_pad[n, c, oy*sy + i, ox*sx + j] (the im2col element, computed where it is needed):
//     row cursor = the column's corner (n, oy*sy - pt, ox*sx - pl), k cursor = Digits (c, i, j) with
//     off = c*H*W + i*W + j;
//   store(o, col): y[n, o, oy, ox].
template <typename T>
struct ConvForward {
    static constexpr bool kLhsAlongK = true, kRhsAlongK = false;  // contiguous axes (the load map)
    const T* x;
    const T* weight;
    const T* bias;
    T* y;
    ConvGeometry g;
    int flags;
    int M, N, K;

    struct RhsRow {
        int iy0, ix0;   // the window's top-left corner in x (may be outside: padding)
        unsigned base;  // n*C*H*W + iy0*W + ix0 (mod 2^32)
    };
    using LhsRow = unsigned;  // m*K
    using LhsK = Strided;     // k
    using RhsK = Digits;      // (c, i, j), off = c*H*W + i*W + j
    using LhsStep = StridedStep;
    using RhsStep = DigitsStep;
    __host__ __device__ inline LhsRow lhs_row(int m) const { return (unsigned)m * (unsigned)K; }
    __host__ __device__ inline LhsK lhs_k(int k) const { return {(unsigned)k}; }
    __host__ __device__ inline LhsStep lhs_step(int dk) const { return {(unsigned)dk}; }
    __host__ __device__ inline T lhs_load(bool in, LhsRow row, const LhsK& c, int) const {
        return in ? weight[row + c.off] : T(0);
    }
    __host__ __device__ inline void lhs_advance(LhsK& c, const LhsStep& s) const { advance(c, s); }
    __host__ __device__ inline RhsRow rhs_row(int n) const {
        const int P = g.oh * g.ow;
        const int img = n / P, p = n - (n / P) * P;
        const int oy = p / g.ow, ox = p - (p / g.ow) * g.ow;
        const int iy0 = oy * g.sy - g.pt, ix0 = ox * g.sx - g.pl;
        return {iy0, ix0, (unsigned)img * (unsigned)(g.C * g.H * g.W) + (unsigned)(iy0 * g.W + ix0)};
    }
    __host__ __device__ inline RhsK rhs_k(int k) const { return digits_at(k, g.kh, g.kw, g.H * g.W, g.W, 1); }
    __host__ __device__ inline RhsStep rhs_step(int dk) const { return digits_step(dk, g.kh, g.kw, g.H * g.W, g.W, 1); }
    __host__ __device__ inline T rhs_load(bool in, const RhsRow& row, const RhsK& c, int) const {
        return (in & inside(row.iy0 + c.b, row.ix0 + c.c, g)) ? x[row.base + c.off] : T(0);
    }
    __host__ __device__ inline void rhs_advance(RhsK& c, const RhsStep& s) const { advance(c, s); }
    __host__ __device__ inline void store(int m, int n, T acc) const {
        if (flags & GPUCNN_FUSED_BIAS) acc += bias[m];
        if ((flags & GPUCNN_FUSED_RELU) && !(acc > T(0)) && !is_nan(acc)) acc = T(0);  // relu = max(acc, 0)
        const int P = g.oh * g.ow;
        const int img = n / P;
        y[(img * g.O + m) * P + (n - img * P)] = acc;
    }
};

// Forward with the max-pool after it (conv_fwd_pool_fused): y = maxpool(relu(conv(x, weight) + b)) for a pool of
// non-overlapping ph x pw windows (stride = window, no padding; the oh % ph bottom rows and ow % pw right columns
// that no window covers are not computed). The GEMM is ConvForward's, its columns in window order:
// col = (((n*poh + py)*pow + px)*ph + dy)*pw + dx is output pixel (oy, ox) = (py*ph + dy, px*pw + dx), so a
// thread's run of Q = ph*pw consecutive columns is one window, which store_run reduces with max_pool_u8_fwd's rule
// (fused_pool_body.cuh: the first maximum wins, a NaN takes over) into pooled[n, o, py, px] and its window index
// argmax (uint8); with MASK, argmax is GPUCNN_POOL_NO_GRAD where the window's max is not > 0 (the ReLU's mask,
// as max_pool_u8_fwd records it). The conv's own output is never written: nothing reads it.
template <typename T>
struct ConvForwardPool : ConvForward<T> {
    unsigned char* argmax;
    int ph, pw, poh, pow_;
    static constexpr int kStoreRun = 4;  // Q = ph*pw divides it: 1, 2 or 4 (the launcher checks)

    __host__ __device__ inline typename ConvForward<T>::RhsRow rhs_row(int n) const {
        const ConvGeometry& g = this->g;
        const int Q = ph * pw, q = n % Q, win = n / Q;
        const int px = win % pow_, rows = win / pow_;
        const int py = rows % poh, img = rows / poh;
        const int oy = py * ph + q / pw, ox = px * pw + q % pw;
        const int iy0 = oy * g.sy - g.pt, ix0 = ox * g.sx - g.pl;
        return {iy0, ix0, (unsigned)img * (unsigned)(g.C * g.H * g.W) + (unsigned)(iy0 * g.W + ix0)};
    }
    // The run of kStoreRun columns from n (a multiple of it): kStoreRun / Q whole windows.
    __host__ __device__ inline void store_run(int m, int n, const T* acc) const {
        const int Q = ph * pw;
        for (int w0 = 0; w0 < kStoreRun && n + w0 < this->N; w0 += Q) {
            T best = neg_inf<T>();
            int best_k = 0;
            bool nan_seen = false;
            for (int q = 0; q < Q; ++q) {
                T v = acc[w0 + q];
                if (this->flags & GPUCNN_FUSED_BIAS) v += this->bias[m];
                if ((this->flags & GPUCNN_FUSED_RELU) && !(v > T(0)) && !is_nan(v)) v = T(0);
                if (is_nan(v)) {
                    best = v;
                    best_k = q;
                    nan_seen = true;
                } else if (!nan_seen && v > best) {
                    best = v;
                    best_k = q;
                }
            }
            const int win = (n + w0) / Q, windows = poh * pow_;
            const int img = win / windows;
            const int index = (img * this->g.O + m) * windows + (win - img * windows);
            this->y[index] = best;
            const bool masked = (this->flags & GPUCNN_FUSED_MASK) && !(best > T(0));
            argmax[index] = masked ? (unsigned char)GPUCNN_POOL_NO_GRAD : (unsigned char)best_k;
        }
    }
};

// Data gradient as a gather: grad_x = mask(conv_transpose(grad_y, weight)), where
// mask(v) = v * (mask_src > 0) with flag MASK (the ReLU of the layer below folded in).
// GEMM: M = C, N = N*H*W (column (n, h, w)), K = O*kh*kw (k = (o, i, j));
//   lhs(c, k) = weight[o, c, i, j]: row cursor c*kh*kw, k cursor Digits (o, ij) over (O, kh*kw) with
//     strides (C*kh*kw, 1);
//   rhs(k, col) = grad_y[n, o, oy, ox] where oy*sy + i = h + pt and ox*sx + j = w + pl, else 0:
//     row cursor = the column (n, h + pt, w + pl), k cursor = Digits (o, i, j) with off = o*oh*ow
//     (kUnitStride, the instantiation the kernel runs for sy = sx = 1, divides by nothing; the division
//     by sy, sx is only for strided convolutions);
//   store(c, col): grad_x[n, c, h, w].
template <typename T, bool kUnitStride = false>
struct ConvDataGrad {
    static constexpr bool kLhsAlongK = true, kRhsAlongK = false;  // contiguous axes (the load map)
    const T* grad_y;
    const T* weight;
    const T* mask_src;
    T* grad_x;
    ConvGeometry g;
    int flags;
    int M, N, K;

    struct RhsRow {
        int ty0, tx0;   // h + pt, w + pl
        unsigned base;  // n*O*oh*ow
    };
    using LhsRow = unsigned;  // c*kh*kw
    using LhsK = Digits;      // (o, ij) over (O, kh*kw), off = o*C*kh*kw + ij
    using RhsK = Digits;      // (o, i, j), off = o*oh*ow (i and j are read as digits)
    using LhsStep = DigitsStep;
    using RhsStep = DigitsStep;
    __host__ __device__ inline LhsRow lhs_row(int m) const { return (unsigned)(m * g.kh * g.kw); }
    __host__ __device__ inline LhsK lhs_k(int k) const {
        return digits_at(k, kNoWrap, g.kh * g.kw, 0, g.C * g.kh * g.kw, 1);
    }
    __host__ __device__ inline LhsStep lhs_step(int dk) const {
        return digits_step(dk, kNoWrap, g.kh * g.kw, 0, g.C * g.kh * g.kw, 1);
    }
    __host__ __device__ inline T lhs_load(bool in, LhsRow row, const LhsK& c, int) const {
        return in ? weight[row + c.off] : T(0);
    }
    __host__ __device__ inline void lhs_advance(LhsK& c, const LhsStep& s) const { advance(c, s); }
    __host__ __device__ inline RhsRow rhs_row(int n) const {
        const int w = n % g.W, nh = n / g.W;
        const int h = nh % g.H, img = nh / g.H;
        return {h + g.pt, w + g.pl, (unsigned)img * (unsigned)(g.O * g.oh * g.ow)};
    }
    __host__ __device__ inline RhsK rhs_k(int k) const { return digits_at(k, g.kh, g.kw, g.oh * g.ow, 0, 0); }
    __host__ __device__ inline RhsStep rhs_step(int dk) const { return digits_step(dk, g.kh, g.kw, g.oh * g.ow, 0, 0); }
    __host__ __device__ inline T rhs_load(bool in, const RhsRow& row, const RhsK& c, int) const {
        int oy = row.ty0 - c.b, ox = row.tx0 - c.c;  // may be negative: then (unsigned) fails the bound
        if (!kUnitStride) {
            in = in & (oy % g.sy == 0) & (ox % g.sx == 0);
            oy /= g.sy;
            ox /= g.sx;
        }
        in = in & ((unsigned)oy < (unsigned)g.oh) & ((unsigned)ox < (unsigned)g.ow);
        return in ? grad_y[row.base + c.off + (unsigned)(oy * g.ow + ox)] : T(0);
    }
    __host__ __device__ inline void rhs_advance(RhsK& c, const RhsStep& s) const { advance(c, s); }
    __host__ __device__ inline void store(int m, int n, T acc) const {
        const int HW = g.H * g.W;
        const int img = n / HW;
        const int index = (img * g.C + m) * HW + (n - img * HW);
        if (flags & GPUCNN_FUSED_MASK) acc = acc * T(mask_src[index] > T(0) ? 1 : 0);
        grad_x[index] = acc;
    }
};

// Weight and bias gradients in one GEMM: grad_w[o, k] = sum_col grad_y[o, col] * patch(k, col)
// and grad_b[o] = sum_col grad_y[o, col] (flag BIAS): the bias is column K of the product,
// whose right-hand side is a column of ones, so it is reduced in the same fixed order.
// GEMM: M = O, N = K (+1 with BIAS), K_gemm = N*P (col = (n, oy, ox));
//   lhs(o, col) = grad_y[n, o, oy, ox]: row cursor o*P, k cursor Digits (n, p) over (N, P), strides (O*P, 1);
//   rhs(col, k) = x_pad[n, c, oy*sy + i, ox*sx + j], or 1 for k == K: row cursor = the weight column
//     (c, i - pt, j - pl), k cursor = col as Digits (n, oy, ox) with off = n*C*H*W;
//   store(o, k): grad_w[o, k], or grad_b[o] for k == K (store_weight_grad, fused_splitk.cuh).
// Split-K (conv_wgrad_partial_fused + conv_wgrad_reduce_fused) runs this problem in k-slices.
template <typename T>
struct ConvWeightGrad {
    static constexpr bool kLhsAlongK = true, kRhsAlongK = true;  // contiguous axes (the load map)
    const T* grad_y;
    const T* x;
    T* grad_w;
    T* grad_b;
    ConvGeometry g;
    int flags;
    int M, N, K;
    int KW;  // C*kh*kw: the weight's row length

    struct RhsRow {
        int ri, rj;    // i - pt, j - pl of the weight column
        unsigned cHW;  // c*H*W
    };
    using LhsRow = unsigned;  // o*P
    using LhsK = Digits;      // (n, p) over (N, P), off = n*O*P + p
    using RhsK = Digits;      // (n, oy, ox), off = n*C*H*W
    using LhsStep = DigitsStep;
    using RhsStep = DigitsStep;
    __host__ __device__ inline LhsRow lhs_row(int m) const { return (unsigned)(m * g.oh * g.ow); }
    __host__ __device__ inline LhsK lhs_k(int k) const {
        const int P = g.oh * g.ow;
        return digits_at(k, kNoWrap, P, 0, g.O * P, 1);
    }
    __host__ __device__ inline LhsStep lhs_step(int dk) const {
        const int P = g.oh * g.ow;
        return digits_step(dk, kNoWrap, P, 0, g.O * P, 1);
    }
    __host__ __device__ inline T lhs_load(bool in, LhsRow row, const LhsK& c, int) const {
        return in ? grad_y[row + c.off] : T(0);
    }
    __host__ __device__ inline void lhs_advance(LhsK& c, const LhsStep& s) const { advance(c, s); }
    __host__ __device__ inline RhsRow rhs_row(int n) const {
        const int w = n < KW ? n : 0;
        const int j = w % g.kw, ci = w / g.kw;
        const int i = ci % g.kh, c = ci / g.kh;
        return {i - g.pt, j - g.pl, (unsigned)(c * g.H * g.W)};
    }
    __host__ __device__ inline RhsK rhs_k(int k) const { return digits_at(k, g.oh, g.ow, g.C * g.H * g.W, 0, 0); }
    __host__ __device__ inline RhsStep rhs_step(int dk) const {
        return digits_step(dk, g.oh, g.ow, g.C * g.H * g.W, 0, 0);
    }
    __host__ __device__ inline T rhs_load(bool in, const RhsRow& row, const RhsK& c, int n) const {
        if (n >= KW) return in ? T(1) : T(0);
        const int ih = c.b * g.sy + row.ri, iw = c.c * g.sx + row.rj;
        return (in & inside(ih, iw, g)) ? x[c.off + row.cHW + (unsigned)(ih * g.W + iw)] : T(0);
    }
    __host__ __device__ inline void rhs_advance(RhsK& c, const RhsStep& s) const { advance(c, s); }
    __host__ __device__ inline void store(int m, int n, T acc) const {
        store_weight_grad(grad_w, grad_b, KW, m, n, acc);
    }
};

// Weight and bias gradients from the gradient of the max-pool after the convolution (conv_wgrad_pooled_*):
// ConvWeightGrad with lhs(o, col) = the pool's backward, read where needed: the convolution's output gradient
// at pixel (oy, ox) = (py*ph + dy, px*pw + dx) is grad_pool[n, o, py, px] where argmax[n, o, py, px] names
// (dy, dx), else 0; no tensor of the convolution's output size exists. For a pool of non-overlapping ph x pw
// windows without padding that cover the output exactly (oh % ph == ow % pw == 0; the launcher checks).
// The k cursor walks col = (n, oy, ox) as the five digits (n, py, dy, px, dx) (mixed radix: the same col), with
// off = n*O*poh*pow + py*pow + px, the pooled element; a code GPUCNN_POOL_NO_GRAD (the ReLU's mask) names no
// (dy, dx).
template <typename T>
struct ConvWeightGradPooled : ConvWeightGrad<T> {
    const unsigned char* argmax;
    int ph, pw, poh, pow_;

    struct LhsK {  // also a k-step's increments (LhsStep): each digit below its base
        int py, dy, px, dx;
        unsigned off;
    };
    using LhsStep = LhsK;
    using LhsRow = unsigned;  // o*poh*pow
    __host__ __device__ inline LhsRow lhs_row(int m) const { return (unsigned)(m * poh * pow_); }
    __host__ __device__ inline LhsK lhs_k(int k) const {  // k as (n, py, dy, px, dx), n folded into the offset
        const int dx = k % pw, a = k / pw;
        const int px = a % pow_, b = a / pow_;
        const int dy = b % ph, c = b / ph;
        const int py = c % poh, n = c / poh;
        return {py, dy, px, dx, (unsigned)n * (unsigned)(this->g.O * poh * pow_) + (unsigned)(py * pow_ + px)};
    }
    __host__ __device__ inline LhsStep lhs_step(int dk) const { return lhs_k(dk); }
    __host__ __device__ inline void lhs_advance(LhsK& c, const LhsStep& s) const {
        c.dx += s.dx;
        c.px += s.px;
        c.dy += s.dy;
        c.py += s.py;
        c.off += s.off;
        if (c.dx >= pw) { c.dx -= pw; c.px += 1; c.off += 1; }
        if (c.px >= pow_) { c.px -= pow_; c.dy += 1; c.off -= (unsigned)pow_; }
        if (c.dy >= ph) { c.dy -= ph; c.py += 1; c.off += (unsigned)pow_; }
        if (c.py >= poh) { c.py -= poh; c.off += (unsigned)((this->g.O - 1) * poh * pow_); }  // into the next n
    }
    __host__ __device__ inline T lhs_load(bool in, LhsRow row, const LhsK& c, int) const {
        const unsigned index = row + c.off;
        const int code = in ? (int)argmax[index] : GPUCNN_POOL_NO_GRAD;
        return (code == c.dy * pw + c.dx) ? this->grad_y[index] : T(0);
    }
};

}  // namespace fused
}  // namespace gpucnn

#endif  // GPUCNN_FUSED_CONV_BODY_CUH
