// CPU harness for gpucnn's CUDA kernels: runs each kernel's __host__ __device__ body
// (gpucnn/kernels/*_body.cuh, the very code the GPU kernels call) over every index on
// the CPU. Built by nvcc as host code, so it needs no GPU.
//
//   harness KERNEL f32|f64 ARG...               a kernel templated on the float type only
//   harness KERNEL f32/i32|f32/i64|f64/... ARG...  one templated on its index type I too
//
// ARGs follow the kernel's parameters in order (gpucnn/ops/cuda/loader.py: SIGNATURES):
// a pointer parameter is the path of a raw little-endian binary file of T (or int32 for
// int pointers, int64 for long long pointers, float64 for double pointers) that is read in
// and, for a non-const pointer, written back afterwards;
// `int`, `long long` and `I` are decimal (an `I` must fit the index type); `T` and `double`
// are C99 float literals (Python's float.hex() round-trips exactly). The grid-stride kernels
// take their count of work items last; the harness visits every index in [0, count) once, in
// order, with the body instantiated for the index type given (i32: int, i64: long long),
// as the GPU kernel is. row_sum replays the block reduction of conv.cu block by block,
// with the same GPUCNN_BLOCK partial sums and tree; softmax_xent(_soft) the phases of its block
// (harness_loss.cuh).
// The tiled fused kernels are replayed block by block, phase by phase, every thread of
// the block in turn within a phase (harness_fused.cuh; the convention: fused_common.cuh).
//
//   harness --serve     the same commands, one per line on stdin, arguments tab-separated
//   harness --block     prints GPUCNN_BLOCK
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../gpucnn/kernels/conv_body.cuh"
#include "../../gpucnn/kernels/multi_update_body.cuh"
#include "../../gpucnn/kernels/pool_body.cuh"
#include "../../gpucnn/kernels/update_body.cuh"

namespace {

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "harness: %s\n", message.c_str());
    std::exit(2);
}

// A raw binary file held in memory. flush() writes it back only when it is writable and
// its contents changed, so that one file passed for two parameters (a launcher may pass
// param again as an unused momentum buffer) is not overwritten by the untouched copy.
template <typename E>
struct Buffer {
    std::string path;
    bool writable;
    size_t count;
    std::vector<E> data;  // count elements, plus one so that data() is valid when count == 0
    std::vector<E> original;

    Buffer(const std::string& p, bool w) : path(p), writable(w), count(0) {
        FILE* f = std::fopen(path.c_str(), "rb");
        if (!f) die("cannot open " + path + ": " + std::strerror(errno));
        std::fseek(f, 0, SEEK_END);
        long size = std::ftell(f);
        std::fseek(f, 0, SEEK_SET);
        if (size < 0 || size % (long)sizeof(E) != 0) die("size of " + path + " is not a whole number of elements");
        count = (size_t)size / sizeof(E);
        data.assign(count + 1, E(0));
        if (count && std::fread(data.data(), sizeof(E), count, f) != count) die("short read on " + path);
        std::fclose(f);
        original = data;
    }
    E* ptr() { return data.data(); }
    void flush() {
        if (!writable || count == 0 || std::memcmp(data.data(), original.data(), count * sizeof(E)) == 0) return;
        FILE* f = std::fopen(path.c_str(), "wb");
        if (!f) die("cannot write " + path);
        if (std::fwrite(data.data(), sizeof(E), count, f) != count) die("short write on " + path);
        std::fclose(f);
    }
};

// Reads the kernel arguments in order and owns the buffers.
template <typename T>
struct Args {
    int argc;
    char** argv;
    int next;
    std::vector<Buffer<T>*> floats;
    std::vector<Buffer<int>*> ints;
    std::vector<Buffer<unsigned char>*> bytes;
    std::vector<Buffer<long long>*> longs;
    std::vector<Buffer<double>*> doubles;

    Args(int c, char** v, int first) : argc(c), argv(v), next(first) {}
    ~Args() {
        for (auto* b : floats) delete b;
        for (auto* b : ints) delete b;
        for (auto* b : bytes) delete b;
        for (auto* b : longs) delete b;
        for (auto* b : doubles) delete b;
    }
    const char* take() {
        if (next >= argc) die("too few arguments");
        return argv[next++];
    }
    T* array(bool writable) {
        floats.push_back(new Buffer<T>(take(), writable));
        return floats.back()->ptr();
    }
    int* int_array(bool writable) {
        ints.push_back(new Buffer<int>(take(), writable));
        return ints.back()->ptr();
    }
    unsigned char* byte_array(bool writable) {
        bytes.push_back(new Buffer<unsigned char>(take(), writable));
        return bytes.back()->ptr();
    }
    long long* long_array(bool writable) {
        longs.push_back(new Buffer<long long>(take(), writable));
        return longs.back()->ptr();
    }
    double* double_array(bool writable) {
        doubles.push_back(new Buffer<double>(take(), writable));
        return doubles.back()->ptr();
    }
    long long integer(long long low, long long high) {
        const char* s = take();
        char* end = nullptr;
        errno = 0;
        long long v = std::strtoll(s, &end, 10);
        if (errno || *end || end == s || v < low || v > high) die(std::string("bad integer ") + s);
        return v;
    }
    int i32() { return (int)integer(-2147483647LL - 1, 2147483647LL); }
    long long i64() { return integer(-9223372036854775807LL - 1, 9223372036854775807LL); }
    // A value of the index type I (int or long long).
    template <typename I>
    I index() { return sizeof(I) == 4 ? (I)i32() : (I)i64(); }
    double f64() {
        const char* s = take();
        char* end = nullptr;
        double v = std::strtod(s, &end);
        if (*end || end == s) die(std::string("bad number ") + s);
        return v;
    }
    T real() { return (T)f64(); }
    void done() {
        if (next != argc) die("too many arguments");
        for (auto* b : floats) b->flush();
        for (auto* b : ints) b->flush();
        for (auto* b : bytes) b->flush();
        for (auto* b : longs) b->flush();
        for (auto* b : doubles) b->flush();
    }
};

}  // namespace

#include "harness_fused.cuh"  // the fused kernels (fused_*.cu), tiled ones replayed phase by phase
#include "harness_loss.cuh"   // softmax_xent and softmax_xent_soft, replayed phase by phase
#include "harness_batchnorm.cuh"  // the fused batch norm (fused_batchnorm.cu), phase by phase
#include "harness_step.cuh"       // the graph step's batch gather and step end (step_batch.cu)

namespace {

// The kernels templated on an index type I as well as on T (the loader's "I" parameters).
bool has_index_type(const std::string& kernel) {
    static const char* const names[] = {"im2col", "col2im", "conv_direct", "transpose01", "max_pool_fwd",
                                        "max_pool_bwd", "avg_pool_fwd", "avg_pool_bwd"};
    for (const char* name : names)
        if (kernel == name) return true;
    return false;
}

template <typename T, typename I>
void run(const std::string& kernel, Args<T>& a) {
    using namespace gpucnn;
    if (kernel == "im2col" || kernel == "col2im") {
        const T* src = a.array(false);
        T* dst = a.array(true);
        int N = a.i32(), C = a.i32(), H = a.i32(), W = a.i32();
        int kh = a.i32(), kw = a.i32(), sy = a.i32(), sx = a.i32(), pt = a.i32(), pl = a.i32();
        int dy = a.i32(), dx = a.i32(), oh = a.i32(), ow = a.i32();
        I total = a.template index<I>();
        for (I i = 0; i < total; ++i) {
            if (kernel == "im2col") im2col_body<T, I>(i, src, dst, N, C, H, W, kh, kw, sy, sx, pt, pl, dy, dx, oh, ow);
            else col2im_body<T, I>(i, src, dst, N, C, H, W, kh, kw, sy, sx, pt, pl, dy, dx, oh, ow);
        }
    } else if (kernel == "conv_direct") {
        const T* x = a.array(false);
        const T* w = a.array(false);
        const T* b = a.array(false);
        T* y = a.array(true);
        int N = a.i32(), C = a.i32(), H = a.i32(), W = a.i32(), O = a.i32();
        int kh = a.i32(), kw = a.i32(), sy = a.i32(), sx = a.i32(), pt = a.i32(), pl = a.i32();
        int dy = a.i32(), dx = a.i32(), oh = a.i32(), ow = a.i32();
        int group_c = a.i32(), group_o = a.i32(), has_bias = a.i32();
        I total = a.template index<I>();
        for (I i = 0; i < total; ++i)
            conv_direct_body<T, I>(i, x, w, b, y, N, C, H, W, O, kh, kw, sy, sx, pt, pl, dy, dx, oh, ow, group_c,
                                   group_o, has_bias);
    } else if (kernel == "transpose01") {
        const T* src = a.array(false);
        const T* bias = a.array(false);
        T* dst = a.array(true);
        int A = a.i32(), B = a.i32();
        I P = a.template index<I>();
        int has_bias = a.i32();
        I total = a.template index<I>();
        for (I i = 0; i < total; ++i) transpose01_body<T, I>(i, src, bias, dst, A, B, P, has_bias);
    } else if (kernel == "row_sum") {
        // Grid (rows, chunks) as the launcher sizes it: chunks = ceil(L / chunk), at least 1.
        const T* mat = a.array(false);
        T* out = a.array(true);
        int rows = a.i32();
        long long L = a.i64(), chunk = a.i64();
        if (chunk < 1) die("chunk must be >= 1");
        const long long chunks = L > 0 ? (L + chunk - 1) / chunk : 1;
        std::vector<T> partial(GPUCNN_BLOCK);
        for (int r = 0; r < rows; ++r) {
            for (long long s = 0; s < chunks; ++s) {  // block (r, s)
                for (int t = 0; t < GPUCNN_BLOCK; ++t) partial[t] = row_sum_partial<T>(r, s, t, mat, L, chunk);
                for (int stride = GPUCNN_BLOCK / 2; stride > 0; stride /= 2)
                    for (int t = 0; t < GPUCNN_BLOCK; ++t) row_sum_tree_step<T>(t, stride, partial.data());
                out[(long long)r * chunks + s] = partial[0];
            }
        }
    } else if (kernel == "max_pool_fwd" || kernel == "max_pool_bwd" || kernel == "avg_pool_fwd" ||
               kernel == "avg_pool_bwd") {
        // pool.cu: arrays, then H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow, [count_include_pad,] total
        const bool fwd = kernel == "max_pool_fwd" || kernel == "avg_pool_fwd";
        const bool max = kernel == "max_pool_fwd" || kernel == "max_pool_bwd";
        const T* src = a.array(false);
        const int* am_in = (max && !fwd) ? a.int_array(false) : nullptr;
        T* dst = a.array(true);
        int* am_out = (max && fwd) ? a.int_array(true) : nullptr;
        int H = a.i32(), W = a.i32(), kh = a.i32(), kw = a.i32(), sy = a.i32(), sx = a.i32();
        int dy = a.i32(), dx = a.i32(), pt = a.i32(), pb = a.i32(), pl = a.i32(), pr = a.i32();
        int oh = a.i32(), ow = a.i32();
        int include = max ? 0 : a.i32();
        I total = a.template index<I>();
        for (I i = 0; i < total; ++i) {
            if (kernel == "max_pool_fwd")
                max_pool_fwd_body<T, I>(i, src, dst, am_out, H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow);
            else if (kernel == "max_pool_bwd")
                max_pool_bwd_body<T, I>(i, src, am_in, dst, H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow);
            else if (kernel == "avg_pool_fwd")
                avg_pool_fwd_body<T, I>(i, src, dst, H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow, include);
            else
                avg_pool_bwd_body<T, I>(i, src, dst, H, W, kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow, include);
        }
    } else if (kernel == "step_scalars") {
        double* hyper = a.double_array(true);
        double beta1 = a.f64(), beta2 = a.f64(), wd = a.f64();
        step_scalars_body(hyper, beta1, beta2, wd);
    } else if (kernel == "multi_sgd_update") {
        // The kernel's prologue (scalars read from hyper), then every element.
        T* p = a.array(true);
        const T* g = a.array(false);
        T* buf = a.array(true);
        const double* hyper = a.double_array(false);
        T momentum = a.real(), omd = a.real(), wd = a.real();
        int flags = a.i32();
        long long n = a.i64();
        const T lr = sgd_lr<T>(hyper);
        const int all_flags = sgd_step_flags(hyper, flags, GPUCNN_SGD_FIRST_STEP);
        for (long long i = 0; i < n; ++i) sgd_body<T>(i, p, g, buf, lr, momentum, omd, wd, all_flags);
    } else if (kernel == "multi_adam_update") {
        T* p = a.array(true);
        const T* g = a.array(false);
        T* m = a.array(true);
        T* v = a.array(true);
        const double* hyper = a.double_array(false);
        T b1 = a.real(), omb1 = a.real(), b2 = a.real(), omb2 = a.real(), eps = a.real(), wd = a.real();
        int mode = a.i32();
        long long n = a.i64();
        const AdamScalars<T> sc = adam_scalars<T>(hyper);
        for (long long i = 0; i < n; ++i)
            adam_body<T>(i, p, g, m, v, b1, omb1, b2, omb2, sc.step_size, sc.bias2_sqrt, eps, wd, sc.decay_factor,
                         mode);
    } else if (kernel == "sgd_update") {
        T* p = a.array(true);
        const T* g = a.array(false);
        T* buf = a.array(true);
        T lr = a.real(), momentum = a.real(), omd = a.real(), wd = a.real();
        int flags = a.i32();
        long long n = a.i64();
        for (long long i = 0; i < n; ++i) sgd_body<T>(i, p, g, buf, lr, momentum, omd, wd, flags);
    } else if (kernel == "adam_update") {
        T* p = a.array(true);
        const T* g = a.array(false);
        T* m = a.array(true);
        T* v = a.array(true);
        T b1 = a.real(), omb1 = a.real(), b2 = a.real(), omb2 = a.real(), step_size = a.real();
        T bias2_sqrt = a.real(), eps = a.real(), wd = a.real(), decay = a.real();
        int mode = a.i32();
        long long n = a.i64();
        for (long long i = 0; i < n; ++i)
            adam_body<T>(i, p, g, m, v, b1, omb1, b2, omb2, step_size, bias2_sqrt, eps, wd, decay, mode);
    } else if (!run_loss<T>(kernel, a) && !run_fused<T>(kernel, a) && !run_batchnorm<T>(kernel, a) &&
               !run_step_batch<T>(kernel, a)) {
        die("unknown kernel " + kernel);
    }
    a.done();
}

template <typename T>
void run_with_index(const std::string& kernel, const std::string& index, Args<T>& a) {
    if (has_index_type(kernel) != !index.empty())
        die("kernel " + kernel + (index.empty() ? " needs an index type (f32/i32 ...)" : " has no index type"));
    if (index == "i64") run<T, long long>(kernel, a);
    else if (index == "i32" || index.empty()) run<T, int>(kernel, a);  // int: unused by kernels without I
    else die("index type must be i32 or i64, got " + index);
}

int run_command(int argc, char** argv) {
    if (argc < 3) die("usage: harness KERNEL f32|f64[/i32|/i64] ARG...");
    const std::string kernel = argv[1], types = argv[2];
    const size_t slash = types.find('/');
    const std::string type = types.substr(0, slash);
    const std::string index = slash == std::string::npos ? "" : types.substr(slash + 1);
    if (type == "f32") {
        Args<float> a(argc, argv, 3);
        run_with_index<float>(kernel, index, a);
    } else if (type == "f64") {
        Args<double> a(argc, argv, 3);
        run_with_index<double>(kernel, index, a);
    } else {
        die("type must be f32 or f64, got " + type);
    }
    return 0;
}

// --serve: one command per line on stdin (the same arguments, separated by tabs), "ok"
// on stdout after each; saves the tests a process start per kernel run. An error still
// ends the process with a message on stderr.
int serve() {
    std::string line;
    char chunk[4096];
    for (;;) {
        line.clear();
        bool got = false;
        while (std::fgets(chunk, sizeof chunk, stdin)) {
            got = true;
            line += chunk;
            if (!line.empty() && line.back() == '\n') break;
        }
        if (!got) return 0;
        if (!line.empty() && line.back() == '\n') line.pop_back();
        std::vector<std::string> words(1, "harness");
        size_t start = 0;
        for (;;) {
            size_t tab = line.find('\t', start);
            words.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
            if (tab == std::string::npos) break;
            start = tab + 1;
        }
        std::vector<char*> argv;
        for (auto& w : words) argv.push_back(&w[0]);
        argv.push_back(nullptr);
        run_command((int)words.size(), argv.data());
        std::printf("ok\n");
        std::fflush(stdout);
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && std::string(argv[1]) == "--block") {  // lets the tests check GPUCNN_BLOCK
        std::printf("%d\n", GPUCNN_BLOCK);
        return 0;
    }
    if (argc == 2 && std::string(argv[1]) == "--serve") return serve();
    return run_command(argc, argv);
}
