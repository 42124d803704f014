/* Helpers shared by the kernel files; not part of the public kernel list. */
#ifndef MICROTENSOR_INTERNAL_H
#define MICROTENSOR_INTERNAL_H

#include <stdint.h>
#include <string.h>

/* Run fn(ctx, t) for t in [0, ntasks) on up to mt_num_threads() threads; returns when all are done.
 * Runs inline (no thread wake-up) when ntasks <= 1 or only one thread is allowed. */
typedef void (*mt_task_fn)(void *ctx, int64_t task);
void mt_parallel_for(int64_t ntasks, mt_task_fn fn, void *ctx);
int mt_num_threads(void);

/* fn(ctx, r0, r1) over [0, rows) in contiguous chunks that the threads claim in turn, each a 2 * threads-th of
 * the rows left (so a worker that wakes late takes less), when rows * cost_per_row is worth a second thread;
 * otherwise fn(ctx, 0, rows) on the calling thread. fn gives a row the same result in any range. */
typedef void (*mt_rows_fn)(void *ctx, int64_t r0, int64_t r1);
void mt_parallel_rows(int64_t rows, int64_t cost_per_row, mt_rows_fn fn, void *ctx);

/* Clones of a hot function for AVX-512, AVX2+FMA and baseline x86-64, picked by the loader
 * on the running CPU; plain functions elsewhere. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MT_CLONES
#endif

/* Work (in multiply-adds) below which a kernel stays on the calling thread: waking a
 * second thread costs about a microsecond, more than small kernels take. */
#define MT_PAR_MIN_WORK 65536

/* exp(hi) for hi in [-87.3, 88.37] (NaN for NaN): Cody-Waite range reduction and a degree-6 polynomial
 * (about 2 ulp), written so gcc vectorises loops that call it. */
static inline __attribute__((always_inline)) float mt_expf_in_range(float hi) {
    float shifted = hi * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23 + n: n in the low mantissa bits */
    float n = shifted - 12582912.0f;                           /* round to nearest */
    float r = hi - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t low;
    memcpy(&low, &shifted, sizeof low);
    uint32_t bits = (low - 0x4B400000u + 127u) << 23; /* (n + 127) << 23 with no float-to-int conversion */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* exp(x) for x <= 88.37 or NaN, without mt_expf's overflow handling: for the exponents of a softmax
 * (x - max, x - lse), which are never positive. Below -87.3 it gives 0, NaN stays NaN. With NaN left to the
 * polynomial (no select), attention's passes ran 7-8% faster at head width 32 and 5% at 64 than with
 * 4861268's mt_expf (both builds in one process, in both orders). */
static inline __attribute__((always_inline)) float mt_expf_nonpositive(float x) {
    float y = mt_expf_in_range(x < -87.3f ? -87.3f : x); /* NaN stays NaN through the polynomial */
    return x < -87.3f ? 0.0f : y;
}

/* expf: results below FLT_MIN flush to 0, above FLT_MAX give inf, inputs in (88.37, 88.72]
 * saturate at expf(88.37), NaN stays NaN. */
static inline __attribute__((always_inline)) float mt_expf(float x) {
    return x > 88.72f ? __builtin_inff() : mt_expf_nonpositive(x > 88.37f ? 88.37f : x);
}

/* y[i] = exp(y[i]) for y[i] <= 0 (or NaN), i < n, in one vectorised sweep. Row kernels over short rows
 * (softmax over 8 keys, 20 classes) shift a block of rows by their maxima first and exponentiate it flat,
 * since a loop over one short row never fills a vector register. */
#define MT_EXP_BLOCK 4096
static inline __attribute__((always_inline)) void mt_exp_inplace(float *y, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = mt_expf_nonpositive(y[i]);
}

/* Rows per block so that a block holds at most MT_EXP_BLOCK values (at least one row). */
static inline __attribute__((always_inline)) int64_t mt_block_rows(int64_t cols) {
    return cols >= MT_EXP_BLOCK ? 1 : MT_EXP_BLOCK / (cols > 0 ? cols : 1);
}

/* Largest of x[0:n] (-inf when n == 0), skipping NaN: row kernels need no NaN test here, since
 * a NaN (or an inf - inf) reaches the row's sum and from there every output, as in PyTorch.
 * Short rows take a plain loop: a vector reduction there costs more in shuffles and stack
 * round trips than it saves. */
static inline __attribute__((always_inline)) float mt_max(const float *x, int64_t n) {
    float m = -__builtin_inff();
    if (n < 32) {
        for (int64_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
        return m;
    }
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* Values per partial sum in the sums below: float lanes over a block this long stay accurate,
 * and the blocks of a longer row add up in double, so a row of 2^24 values sums as well as
 * PyTorch's (or better) while a row of model size stays one float reduction. */
#define MT_SUM_BLOCK 1024

/* Eight floats in one vector (gcc's vector extension): the same order of operations in every build, which an
 * `omp simd` reduction does not give (16 lanes in the AVX-512 clone, 8 in the AVX2 one). */
typedef float mt_v8 __attribute__((vector_size(32), aligned(4)));
#define MT_V8(p) (*(mt_v8 *)(p))

/* The lanes of *v added as a tree: an `omp simd` reduction ends in a chain of scalar adds through the stack. By
 * pointer: a vector passed by value makes gcc print a note on every build (its ABI for them changed in 4.6). */
static inline __attribute__((always_inline)) float mt_hsum8(const mt_v8 *v) {
    return (((*v)[0] + (*v)[4]) + ((*v)[1] + (*v)[5])) + (((*v)[2] + (*v)[6]) + ((*v)[3] + (*v)[7]));
}

/* Sum of x[j] - shift, or of its square when `square`, over one block: four vector sums in turn, not one
 * (whose add latency bound LayerNorm's passes over rows of a model's width). */
static inline __attribute__((always_inline)) float mt_sum_block(const float *x, int64_t n, float shift, int square) {
    mt_v8 acc[4] = {{0}, {0}, {0}, {0}};
    int64_t j = 0;
    for (; j + 32 <= n; j += 32)
        for (int u = 0; u < 4; u++) {
            mt_v8 v = MT_V8(x + j + 8 * u) - shift;
            acc[u] += square ? v * v : v;
        }
    for (; j + 8 <= n; j += 8) {
        mt_v8 v = MT_V8(x + j) - shift;
        acc[0] += square ? v * v : v;
    }
    mt_v8 all = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    float s = mt_hsum8(&all);
    for (; j < n; j++) {
        float v = x[j] - shift;
        s += square ? v * v : v;
    }
    return s;
}

/* Sum of x[j] - shift (or its square) over x[0:n], blocks of MT_SUM_BLOCK added in double. */
static inline __attribute__((always_inline)) float mt_sum_shifted(const float *x, int64_t n, float shift, int square) {
    if (n <= MT_SUM_BLOCK) return mt_sum_block(x, n, shift, square);
    double total = 0.0;
    for (int64_t b = 0; b < n; b += MT_SUM_BLOCK)
        total += mt_sum_block(x + b, b + MT_SUM_BLOCK < n ? MT_SUM_BLOCK : n - b, shift, square);
    return (float)total;
}

/* Sum of x[0:n] (plain loop for short rows, as mt_max). */
static inline __attribute__((always_inline)) float mt_sum(const float *x, int64_t n) {
    float s = 0.0f;
    if (n < 32) {
        for (int64_t j = 0; j < n; j++) s += x[j];
        return s;
    }
    return mt_sum_shifted(x, n, 0.0f, 0);
}

/* The counter-based generator of dropout: splitmix64's output for seed + (i + 1) * MT_GOLDEN is
 * element i's random bits, so a mask is a pure function of (seed, position). */
#define MT_GOLDEN 0x9E3779B97F4A7C15ull
static inline __attribute__((always_inline)) uint64_t mt_splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Dropout's factor for element i: scale where kept ((bits >> 40) >= threshold, threshold = p * 2^24), else 0.
 * Takes values, not a job struct: a loop calling it then stays vectorized. */
static inline __attribute__((always_inline)) float mt_keep_factor(uint64_t seed, uint64_t threshold, float scale,
                                                                 uint64_t i) {
    return (mt_splitmix64(seed + (i + 1) * MT_GOLDEN) >> 40) >= threshold ? scale : 0.0f;
}

#endif
