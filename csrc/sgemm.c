/* sgemm: C = alpha * op(A) @ op(B) + beta * C, row-major, float32.
 *
 * One register-blocked micro-kernel per instruction set (AVX-512: 8x48 tiles,
 * 6x64 or 8x32 where the columns fill those panels better; AVX2+FMA: 6x16;
 * portable C: 4x16), picked once at run time from the running CPU
 * (MICROTENSOR_ISA=avx2|generic forces a lower one, for tests).
 *
 * Two drivers:
 *  - small: the model's shapes (K <= 256 fits L1). A is read in place through
 *    (row, column) strides, so op(A) = A^T costs nothing; B is packed into NR-wide
 *    panels for op(B) = B^T, and for B itself when K >= 32 and the panels serve 4+
 *    row tiles (in place, rows 1 KB apart fall into a few L1 sets and evict each
 *    other: 2048x256 @ 256x64 ran 12-18% slower), else read in place.
 *    Threads split the columns (or rows) of C above a work threshold.
 *  - blocked: large shapes. BLIS loops: B packed once per KC x NC block (L3; KC 384 under AVX-512),
 *    A packed per MC x KC block (L2) into micro-panels, the micro-kernel over a
 *    KC x NR panel of B (L1) with constant strides, unrolled over K; threads take
 *    tasks from a grid of row blocks x column parts (columns split when there are
 *    fewer than two row blocks per thread). Where B's panel fills L1 (AVX-512), a
 *    one-thread product (on Ice Lake Xeons, each thread of a tall one) keeps A's
 *    panel in L1 and walks B's panels from L2. In either order the AVX-512
 *    micro-kernel asks for packed B 8 steps of k ahead (not on Ice Lake Xeons, whose
 *    hardware prefetcher does better).
 */
#define _ISOC11_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "microtensor.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MT_X86 1
#endif

/* C[0:mr, 0:nr] = alpha * sum_p a(i, p) b(p, j) + beta * C + bias[j];
 * a(i, p) = a[i*rs_a + p*cs_a], b(p, j) = b[p*ldb + j]; beta == 0 never reads C. */
typedef void (*ukr_fn)(int64_t mr, int64_t nr, int64_t k, const float *a, int64_t rs_a, int64_t cs_a,
                       const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta,
                       const float *bias);

/* The same product over packed panels: a(i, p) = a[p*MR + i], b(p, j) = b[p*NR + j]. */
typedef void (*packed_fn)(int64_t mr, int64_t nr, int64_t k, const float *a, const float *b, float *c,
                          int64_t ldc, float alpha, float beta, const float *bias);

typedef struct {
    int mr, nr;
    ukr_fn fn;
    packed_fn packed;
    const char *name;
    int kc; /* depth of one slice of K in the blocked driver */
} isa_t;

#define KC 256  /* depth of one block of K: a KC x NR panel of B (AVX2's 16 KB) stays in L1 */
/* The blocked driver's slices of K under AVX-512, whose B panel does not stay in L1 at any useful depth (below):
 * BLIS's depth for Skylake-X. Fewer slices, fewer waits at 2 threads: on a Cascade Lake Xeon d384's linear products
 * took 0.94-0.96 of the time at 2 threads, the GEMM table's 0.94-0.96, and 0.97-1.02 at 1 (d256's 0.99-1.02). */
#define KC_AVX512 384
#define MC 144  /* rows of A packed per task in the blocked driver: MC x KC (144 KB; 216 KB at KC_AVX512) stays in L2 */
#define NC 4032 /* columns of B packed at once in the blocked driver (a multiple of every NR): KC x NC (4 MB) in L3 */
/* A KC x NR panel of B larger than this (AVX-512's 72 KB: more than L1) does not stay in L1: a product on one
 * thread then keeps one MR-row panel of A there (12 KB) and walks B's panels under it, from L2, a task's
 * columns about PART_L2 wide (rounded up to whole panels: KC_AVX512 x 512-528, 768-792 KB). On a Cascade Lake
 * Xeon d384's linear products took 0.87-0.89 of the time at 1 thread (slices of 256); two threads sharing one
 * packed B took 1.08x longer in this order there, so they keep the other (each thread's own part of a split weight
 * gradient is a one-thread product) but where `threads_walk_b` is set (below). */
#define B_PANEL_L1_MAX (16 << 10)
#define PART_L2 512
/* Whether threads sharing one packed B also walk it under their own panel of A, where each has two row blocks or
 * more: on an Ice Lake Xeon (1.25 MB of L2, set with the ISA), in one process against the other order at 2 threads,
 * the GEMM table's products took 0.94-0.97 of the time, 2048x256x1024 0.95, and the forward of linears 1152-1536 wide
 * from 384 0.92-0.96, 768-1024 wide from 256 0.90-0.98 (384 and 256 wide 0.99-1.04, an identical build 0.98-1.11). */
static int threads_walk_b = 0;
#define BLOCKED_MIN_WORK ((int64_t)1 << 26) /* M*N*K from which packing both pays (2048x256x64: not yet) */
#define GEMM_PAR_MIN_WORK ((int64_t)1 << 17)
#define SMALL_PACK_MAX 2048 /* floats of packed B kept on the stack */
#define DOTS_MAX_ROWS 2 /* op(A) @ B^T by dot products up to this many rows: packing B costs more */
#define PACK_B_MIN_K 32 /* small driver: B (not transposed) packed from this depth, for 4+ row tiles */
/* Unrolls the micro-kernels' loops over rows before gcc places their accumulator arrays: rolled,
 * gcc keeps the arrays on the stack and stores every accumulator each step of k (1/3 the speed). */
#define UNROLL_ROWS _Pragma("GCC unroll 8")

/* ---------------------------------------------------------------- portable */

#define G_MR 4
#define G_NR 16

static void ukr_generic(int64_t mr, int64_t nr, int64_t k, const float *a, int64_t rs_a, int64_t cs_a,
                        const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta,
                        const float *bias) {
    float acc[G_MR][G_NR] = {{0}};
    for (int64_t p = 0; p < k; p++) {
        const float *bp = b + p * ldb;
        for (int64_t i = 0; i < mr; i++) {
            float ai = a[i * rs_a + p * cs_a];
            for (int64_t j = 0; j < nr; j++) acc[i][j] += ai * bp[j];
        }
    }
    for (int64_t i = 0; i < mr; i++) {
        float *cr = c + i * ldc;
        for (int64_t j = 0; j < nr; j++) {
            float r = alpha * acc[i][j] + (bias ? bias[j] : 0.0f);
            cr[j] = beta != 0.0f ? r + beta * cr[j] : r;
        }
    }
}

static void ukr_generic_packed(int64_t mr, int64_t nr, int64_t k, const float *a, const float *b, float *c,
                               int64_t ldc, float alpha, float beta, const float *bias) {
    ukr_generic(mr, nr, k, a, 1, G_MR, b, G_NR, c, ldc, alpha, beta, bias);
}

#ifdef MT_X86
/* ---------------------------------------------------------------- AVX-512 */
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

#define Z_MR 8
/* Three vectors wide: 24 accumulators, 11 loads per 24 FMAs (8 x 32: 10 per 16). In one process against
 * 8 x 32, the blocked products took 0.90-1.00 of the time at 1 thread (mostly 0.93-0.97) and 0.92-0.95 at 2
 * (MKL's AVX-512 sgemm runs the same 8 x 48 shape); 12 x 32 ran as 8 x 32. */
#define Z_NR 48
#define Z_NV (Z_NR / 16)
/* Panels of 32 where 48 would leave a last panel of 16 columns or fewer that matters and 64 does not divide the
 * columns (49-63, 112, 160, ...): one vector's FMAs then wait on 9 loads (N = 64, now in panels of 64: 2048x256 @
 * (64x256)^T took 1.12-1.19x as long in panels of 48 as in panels of 32). */
#define Z_NR_NARROW 32
#define WIDE_ALWAYS_N 768
/* Panels of 64 (6 rows x 4 vectors: 24 accumulators, 10 loads per 24 FMAs) for column counts below WIDE_ALWAYS_N that
 * 64 divides and 48 does not (64, 128, 256, 512, ...): whole panels where 48 leaves a part-filled last one. In one
 * process against the 8 x 48 / 8 x 32 panels, d256's products with 256 columns took 0.83-0.93 of the time at 1
 * thread and 0.87-0.97 at 2; with 128 columns 0.92-1.01 at 1; columns that 48 divides ran no faster in 64 (384,
 * 1152, 1536: 0.99-1.05). */
#define Z64_MR 6
#define Z64_NR 64
#define B_AHEAD 8 /* steps of k between a packed B row's prefetch and its use (4-24 ran alike) */
/* Whether the kernel asks for a packed panel of B ahead (set with the ISA): on a Cascade Lake Xeon that took d384's
 * products to 0.93-0.94 of the time; on an Ice Lake Xeon, whose own prefetcher keeps up, leaving it out took them
 * to 0.90-0.98 (in one process, against an identical build's 0.98-1.12), and d256's 256-column ones to 0.90-1.01. */
static int z_prefetch_b = 1;

/* The tile of MR rows and nv (1-4) vectors of 16 columns (the last nr - 16 * (nv - 1) of them masked unless full).
 * Named accumulator arrays, not one two-dimensional one: with that, gcc spilled the strided kernel's row offsets
 * (N = 64 ran 1.18x slower). */
static inline __attribute__((always_inline)) void ukr512_t(const int MR, const int full, const int nv,
                                                           int64_t nr,
                                                           int64_t k, const float *a, int64_t rs_a,
                                                           int64_t cs_a, const float *b, int64_t ldb,
                                                           float *c, int64_t ldc, float alpha,
                                                           float beta, const float *bias) {
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1u);
    __mmask16 m2 = nr >= 48 ? (__mmask16)0xFFFF : nr <= 32 ? 0 : (__mmask16)((1u << (nr - 32)) - 1u);
    __mmask16 m3 = nr >= 64 ? (__mmask16)0xFFFF : nr <= 48 ? 0 : (__mmask16)((1u << (nr - 48)) - 1u);
    __m512 c0[Z_MR], c1[Z_MR], c2[Z_MR], c3[Z_MR];
    const int prefetch_b = z_prefetch_b && ldb == 16 * nv; /* a packed panel of B (a tile as wide), from L2 */
    UNROLL_ROWS
    for (int i = 0; i < MR; i++) {
        c0[i] = c1[i] = c2[i] = c3[i] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0); /* 0.93-0.97 of d384's time */
        if (nv >= 3) _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
        if (nv == 4) _mm_prefetch((const char *)(c + i * ldc + 32), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16 * nv - 1), _MM_HINT_T0);
    }
    _Pragma("GCC unroll 4")
    for (int64_t p = 0; p < k; p++) {
        if (prefetch_b) {
            _mm_prefetch((const char *)(b + B_AHEAD * 16 * nv), _MM_HINT_T0);
            if (nv > 1) _mm_prefetch((const char *)(b + B_AHEAD * 16 * nv + 16), _MM_HINT_T0);
            if (nv > 2) _mm_prefetch((const char *)(b + B_AHEAD * 16 * nv + 32), _MM_HINT_T0);
            if (nv > 3) _mm_prefetch((const char *)(b + B_AHEAD * 16 * nv + 48), _MM_HINT_T0);
        }
        __m512 b0 = full ? _mm512_loadu_ps(b) : _mm512_maskz_loadu_ps(m0, b);
        __m512 b1 = nv < 2 ? b0 : full ? _mm512_loadu_ps(b + 16) : _mm512_maskz_loadu_ps(m1, b + 16);
        __m512 b2 = nv < 3 ? b0 : full ? _mm512_loadu_ps(b + 32) : _mm512_maskz_loadu_ps(m2, b + 32);
        __m512 b3 = nv < 4 ? b0 : full ? _mm512_loadu_ps(b + 48) : _mm512_maskz_loadu_ps(m3, b + 48);
        UNROLL_ROWS
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i * rs_a]);
            c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
            if (nv > 1) c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
            if (nv > 2) c2[i] = _mm512_fmadd_ps(ai, b2, c2[i]);
            if (nv > 3) c3[i] = _mm512_fmadd_ps(ai, b3, c3[i]);
        }
        a += cs_a;
        b += ldb;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 bias1 = bias && nv > 1 ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    __m512 bias2 = bias && nv > 2 ? _mm512_maskz_loadu_ps(m2, bias + 32) : _mm512_setzero_ps();
    __m512 bias3 = bias && nv > 3 ? _mm512_maskz_loadu_ps(m3, bias + 48) : _mm512_setzero_ps();
    UNROLL_ROWS
    for (int i = 0; i < MR; i++) {
        float *cr = c + i * ldc;
        __m512 r0 = _mm512_fmadd_ps(va, c0[i], bias0);
        if (beta != 0.0f) r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), r0);
        _mm512_mask_storeu_ps(cr, m0, r0);
        if (nv > 1) {
            __m512 r1 = _mm512_fmadd_ps(va, c1[i], bias1);
            if (beta != 0.0f) r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), r1);
            _mm512_mask_storeu_ps(cr + 16, m1, r1);
        }
        if (nv > 2) {
            __m512 r2 = _mm512_fmadd_ps(va, c2[i], bias2);
            if (beta != 0.0f) r2 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m2, cr + 32), r2);
            _mm512_mask_storeu_ps(cr + 32, m2, r2);
        }
        if (nv > 3) {
            __m512 r3 = _mm512_fmadd_ps(va, c3[i], bias3);
            if (beta != 0.0f) r3 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m3, cr + 48), r3);
            _mm512_mask_storeu_ps(cr + 48, m3, r3);
        }
    }
}

/* The tile for nr <= Z_NR columns. */
#define Z_TILE(R)                                                                            \
        if (nr == Z_NR)                                                                      \
            ukr512_t(R, 1, Z_NV, nr, k, a, rs_a, cs_a, b, ldb, c, ldc, alpha, beta, bias);   \
        else if (nr == 32)                                                                   \
            ukr512_t(R, 1, 2, nr, k, a, rs_a, cs_a, b, ldb, c, ldc, alpha, beta, bias);      \
        else if (nr > 32)                                                                    \
            ukr512_t(R, 0, 3, nr, k, a, rs_a, cs_a, b, ldb, c, ldc, alpha, beta, bias);      \
        else if (nr > 16)                                                                    \
            ukr512_t(R, 0, 2, nr, k, a, rs_a, cs_a, b, ldb, c, ldc, alpha, beta, bias);      \
        else                                                                                 \
            ukr512_t(R, 0, 1, nr, k, a, rs_a, cs_a, b, ldb, c, ldc, alpha, beta, bias);
#define Z_CASE(R) \
    case R:       \
        Z_TILE(R) \
        break;
/* The tile for nr <= Z64_NR columns. */
#define Z64_CASE(R)                                                                          \
    case R:                                                                                  \
        if (nr == Z64_NR)                                                                    \
            ukr512_t(R, 1, 4, nr, k, a, rs_a, cs_a, b, ldb, c, ldc, alpha, beta, bias);      \
        else if (nr > Z_NR)                                                                  \
            ukr512_t(R, 0, 4, nr, k, a, rs_a, cs_a, b, ldb, c, ldc, alpha, beta, bias);      \
        else                                                                                 \
            Z_TILE(R)                                                                        \
        break;

static void ukr_avx512(int64_t mr, int64_t nr, int64_t k, const float *a, int64_t rs_a, int64_t cs_a,
                       const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta,
                       const float *bias) {
    switch (mr) {
        Z_CASE(1) Z_CASE(2) Z_CASE(3) Z_CASE(4) Z_CASE(5) Z_CASE(6) Z_CASE(7) Z_CASE(8)
        default: break;
    }
}

/* Packed panels: the strides are constants, so each case compiles to the plain BLIS loop. */
#define Z_PACKED(name, width)                                                                                  \
    static void name(int64_t mr, int64_t nr, int64_t k, const float *a, const float *b, float *c, int64_t ldc,  \
                     float alpha, float beta, const float *bias) {                                             \
        const int64_t rs_a = 1, cs_a = Z_MR, ldb = width;                                                      \
        switch (mr) {                                                                                          \
            Z_CASE(1) Z_CASE(2) Z_CASE(3) Z_CASE(4) Z_CASE(5) Z_CASE(6) Z_CASE(7) Z_CASE(8)                    \
            default: break;                                                                                    \
        }                                                                                                      \
    }
Z_PACKED(ukr_avx512_packed, Z_NR)
Z_PACKED(ukr_avx512_packed_narrow, Z_NR_NARROW)

static void ukr_avx512_64(int64_t mr, int64_t nr, int64_t k, const float *a, int64_t rs_a, int64_t cs_a,
                          const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta,
                          const float *bias) {
    switch (mr) {
        Z64_CASE(1) Z64_CASE(2) Z64_CASE(3) Z64_CASE(4) Z64_CASE(5) Z64_CASE(6)
        default: break;
    }
}

static void ukr_avx512_packed_64(int64_t mr, int64_t nr, int64_t k, const float *a, const float *b, float *c,
                                 int64_t ldc, float alpha, float beta, const float *bias) {
    const int64_t rs_a = 1, cs_a = Z64_MR, ldb = Z64_NR;
    switch (mr) {
        Z64_CASE(1) Z64_CASE(2) Z64_CASE(3) Z64_CASE(4) Z64_CASE(5) Z64_CASE(6)
        default: break;
    }
}
#pragma GCC pop_options

/* ---------------------------------------------------------------- AVX2 + FMA */
#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define Y_MR 6
#define Y_NR 16

static const int32_t y_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline __m256i y_mask(int64_t n) {
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(y_mask_table + 8 - n));
}

static inline __attribute__((always_inline)) void ukr256_t(const int MR, const int full, int64_t nr,
                                                           int64_t k, const float *a, int64_t rs_a,
                                                           int64_t cs_a, const float *b, int64_t ldb,
                                                           float *c, int64_t ldc, float alpha,
                                                           float beta, const float *bias) {
    __m256i m0 = y_mask(nr), m1 = y_mask(nr - 8);
    __m256 c0[Y_MR], c1[Y_MR];
    UNROLL_ROWS
    for (int i = 0; i < MR; i++) {
        c0[i] = _mm256_setzero_ps();
        c1[i] = _mm256_setzero_ps();
        /* C's rows arrive while the loop runs (rows 8 KB apart miss L1; stores to missing lines wait too) */
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 15), _MM_HINT_T0);
    }
    _Pragma("GCC unroll 4")
    for (int64_t p = 0; p < k; p++) {
        __m256 b0 = full ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, m0);
        __m256 b1 = full ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, m1);
        UNROLL_ROWS
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i * rs_a);
            c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
        }
        a += cs_a;
        b += ldb;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    __m256 bias0 = bias ? _mm256_maskload_ps(bias, m0) : _mm256_setzero_ps();
    __m256 bias1 = bias ? _mm256_maskload_ps(bias + 8, m1) : _mm256_setzero_ps();
    /* Every row of C read before any is written: a load 4 KB past a store just issued (C's rows when N is
     * 1024 or 2048) waits for that store, six times a tile (1024^3 and 2048^3 1-2% faster). */
    UNROLL_ROWS
    for (int i = 0; i < MR; i++) {
        const float *cr = c + i * ldc;
        c0[i] = _mm256_fmadd_ps(va, c0[i], bias0);
        c1[i] = _mm256_fmadd_ps(va, c1[i], bias1);
        if (beta != 0.0f) {
            c0[i] = _mm256_fmadd_ps(vb, full ? _mm256_loadu_ps(cr) : _mm256_maskload_ps(cr, m0), c0[i]);
            c1[i] = _mm256_fmadd_ps(vb, full ? _mm256_loadu_ps(cr + 8) : _mm256_maskload_ps(cr + 8, m1), c1[i]);
        }
    }
    UNROLL_ROWS
    for (int i = 0; i < MR; i++) {
        float *cr = c + i * ldc;
        if (full) { /* a masked store costs AMD CPUs about ten plain ones */
            _mm256_storeu_ps(cr, c0[i]);
            _mm256_storeu_ps(cr + 8, c1[i]);
        } else {
            _mm256_maskstore_ps(cr, m0, c0[i]);
            _mm256_maskstore_ps(cr + 8, m1, c1[i]);
        }
    }
}

#define Y_CASE(R)                                                                            \
    case R:                                                                                  \
        if (nr == Y_NR)                                                                      \
            ukr256_t(R, 1, nr, k, a, rs_a, cs_a, b, ldb, c, ldc, alpha, beta, bias);         \
        else                                                                                 \
            ukr256_t(R, 0, nr, k, a, rs_a, cs_a, b, ldb, c, ldc, alpha, beta, bias);         \
        break;

/* d[p*ld + i] = src[i*lds + p] for an 8 x 8 block, 8 values per store, stores in increasing order of p:
 * the packing of B^T and of A. Rows from h on (h >= 1) repeat row h-1, so ld = 6 packs 6 rows, each
 * store's last two values overwritten by the next (two floats past d[7*ld + 5] are written). */
static inline void transpose8(const float *src, int64_t lds, int h, float *d, int64_t ld) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + (h > 1) * lds);
    __m256 r2 = _mm256_loadu_ps(src + (h > 2 ? 2 : h - 1) * lds), r3 = _mm256_loadu_ps(src + (h > 3 ? 3 : h - 1) * lds);
    __m256 r4 = _mm256_loadu_ps(src + (h > 4 ? 4 : h - 1) * lds), r5 = _mm256_loadu_ps(src + (h > 5 ? 5 : h - 1) * lds);
    __m256 r6 = _mm256_loadu_ps(src + (h > 6 ? 6 : h - 1) * lds), r7 = _mm256_loadu_ps(src + (h > 7 ? 7 : h - 1) * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + ld, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* One panel of B^T (w columns of op(B), i.e. w rows of B, kc deep) with 8 x 8 transposes. */
static void pack_bt_panel_avx2(const float *B, int64_t ldb, int64_t kc, int64_t w, int nr, float *d) {
    int64_t w8 = w / 8 * 8, k8 = kc / 8 * 8;
    for (int64_t jj = 0; jj < w8; jj += 8)
        for (int64_t p = 0; p < k8; p += 8) transpose8(B + jj * ldb + p, ldb, 8, d + p * nr + jj, nr);
    for (int64_t jj = 0; jj < w; jj++)
        for (int64_t p = jj < w8 ? k8 : 0; p < kc; p++) d[p * nr + jj] = B[jj * ldb + p];
}

/* n full panels (w = 6, 8, 16 or 32 wide, kc deep, `panel` floats apart) from rows of the source:
 * d[q*panel + p*w + 0:w] = src[p*lds + q*w + 0:w], in vector copies (a memcpy call per 24-64 bytes
 * cost a quarter of the K = 2048 weight gradients), row by row. Each row is a new page when rows are
 * 4 KB apart (g^T of a 1024-wide g), where the hardware prefetchers stop: the row PACK_AHEAD rows on
 * is asked for in software. */
#define PACK_AHEAD 8
static void pack_rows_avx2(const float *src, int64_t lds, int64_t kc, int w, int64_t n, int64_t panel, float *d) {
    for (int64_t p = 0; p < kc; p++, src += lds, d += w) {
        if (p + PACK_AHEAD < kc)
            for (int64_t c = 0; c < n * w; c += 16) _mm_prefetch((const char *)(src + PACK_AHEAD * lds + c), _MM_HINT_T0);
        if (w == 6) {
            for (int64_t q = 0; q < n; q++) {
                _mm_storeu_ps(d + q * panel, _mm_loadu_ps(src + q * 6));
                _mm_storeu_si64(d + q * panel + 4, _mm_loadu_si64(src + q * 6 + 4));
            }
        } else {
            for (int64_t q = 0; q < n; q++)
                for (int j = 0; j < w; j += 8) _mm256_storeu_ps(d + q * panel + j, _mm256_loadu_ps(src + q * w + j));
        }
    }
}

/* One full panel of A (mr = 6 or 8 rows, kc deep): d[p*mr + i] = A[i*lda + p], 8 x 8 transposes, while
 * the next `ahead` rows (the next panel's) are fetched. */
static void pack_a_panel_avx2(const float *A, int64_t lda, int64_t kc, int mr, int64_t ahead, float *d) {
    int64_t k8 = kc / 8 * 8;
    for (int64_t p = 0; p < k8; p += 8) {
        if (p % 16 == 0)
            for (int64_t r = 0; r < ahead; r++) _mm_prefetch((const char *)(A + (mr + r) * lda + p), _MM_HINT_T0);
        transpose8(A + p, lda, mr, d + p * mr, mr);
    }
    for (int64_t p = k8; p < kc; p++)
        for (int i = 0; i < mr; i++) d[p * mr + i] = A[i * lda + p];
}

static void ukr_avx2(int64_t mr, int64_t nr, int64_t k, const float *a, int64_t rs_a, int64_t cs_a,
                     const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta,
                     const float *bias) {
    switch (mr) {
        Y_CASE(1) Y_CASE(2) Y_CASE(3) Y_CASE(4) Y_CASE(5) Y_CASE(6)
        default: break;
    }
}

static void ukr_avx2_packed(int64_t mr, int64_t nr, int64_t k, const float *a, const float *b, float *c,
                            int64_t ldc, float alpha, float beta, const float *bias) {
    const int64_t rs_a = 1, cs_a = Y_MR, ldb = Y_NR;
    switch (mr) {
        Y_CASE(1) Y_CASE(2) Y_CASE(3) Y_CASE(4) Y_CASE(5) Y_CASE(6)
        default: break;
    }
}
#pragma GCC pop_options
#endif /* MT_X86 */

/* ---------------------------------------------------------------- dispatch */

static const isa_t ISA_GENERIC = {G_MR, G_NR, ukr_generic, ukr_generic_packed, "generic", KC};
#ifdef MT_X86
static const isa_t ISA_AVX512 = {Z_MR, Z_NR, ukr_avx512, ukr_avx512_packed, "avx512", KC_AVX512};
static const isa_t ISA_AVX512_64 = {Z64_MR, Z64_NR, ukr_avx512_64, ukr_avx512_packed_64, "avx512", KC_AVX512};
static const isa_t ISA_AVX512_NARROW = {Z_MR, Z_NR_NARROW, ukr_avx512, ukr_avx512_packed_narrow, "avx512", KC_AVX512};
static const isa_t ISA_AVX2 = {Y_MR, Y_NR, ukr_avx2, ukr_avx2_packed, "avx2", KC};
#endif

static const isa_t *select_isa(void) {
    const char *force = getenv("MICROTENSOR_ISA");
    int allow512 = 1, allow2 = 1;
    if (force && force[0] == 'g') allow512 = allow2 = 0;
    if (force && force[0] == 'a' && force[3] == '2' && force[4] == 0) allow512 = 0;
#ifdef MT_X86
    __builtin_cpu_init();
    if (allow512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) {
        threads_walk_b = __builtin_cpu_is("icelake-server");
        z_prefetch_b = !threads_walk_b;
        return &ISA_AVX512;
    }
    if (allow2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &ISA_AVX2;
#else
    (void)allow512;
    (void)allow2;
#endif
    return &ISA_GENERIC;
}

static const isa_t *active_isa(void) {
    static const isa_t *chosen;
    const isa_t *isa = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (!isa) {
        isa = select_isa();
        __atomic_store_n(&chosen, isa, __ATOMIC_RELEASE);
    }
    return isa;
}

/* The active kernel; under AVX-512 below WIDE_ALWAYS_N columns, in panels of 64 where those are whole and 48 are not
 * (Z64_NR), else of 32 where 48 would leave a thin last panel (Z_NR_NARROW). */
static const isa_t *isa_for(int64_t n) {
    const isa_t *isa = active_isa();
#ifdef MT_X86
    int64_t left = n % Z_NR;
    if (isa == &ISA_AVX512 && left && n < WIDE_ALWAYS_N)
        return n % Z64_NR == 0 ? &ISA_AVX512_64 : left <= 16 ? &ISA_AVX512_NARROW : isa;
#endif
    return isa;
}

const char *mt_sgemm_isa(void) { return active_isa()->name; }

/* Whether the 8 x 8 AVX2 transposer may run: the chosen kernel is AVX2 or AVX-512. */
static int has_avx2(void) {
#ifdef MT_X86
    return active_isa() != &ISA_GENERIC;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------- helpers */

/* One cached scratch buffer for packed panels: a fresh malloc of a megabyte is a fresh mmap,
 * and its page faults cost as much as a 512^3 product's packing saves. A call that finds the
 * cache in use (another Python thread inside sgemm) falls back to malloc. */
#define SCRATCH_CACHE_MAX ((size_t)64 << 20)
static float *scratch_buf;
static size_t scratch_len;
static int scratch_busy;

/* 64-byte aligned, so no 32-byte load of a packed panel straddles two cache lines. */
static float *scratch_alloc(size_t n) {
    return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
}

static float *scratch_get(size_t n) {
    if (n * sizeof(float) > SCRATCH_CACHE_MAX || __atomic_exchange_n(&scratch_busy, 1, __ATOMIC_ACQUIRE))
        return scratch_alloc(n);
    if (scratch_len < n) {
        free(scratch_buf);
        scratch_buf = scratch_alloc(n);
        scratch_len = scratch_buf ? n : 0;
    }
    if (!scratch_buf) __atomic_store_n(&scratch_busy, 0, __ATOMIC_RELEASE);
    return scratch_buf ? scratch_buf : scratch_alloc(n);
}

static void scratch_put(float *p) {
    if (p && p == scratch_buf)
        __atomic_store_n(&scratch_busy, 0, __ATOMIC_RELEASE);
    else
        free(p);
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Copy columns [j0, j0+nc) and rows [p0, p0+kc) of op(B) into NR-wide panels (kc x NR each):
 * panel q holds columns j0 + q*NR ... The columns past nc in the last panel are left as they
 * are: the micro-kernels mask them out and never read them. */
static void pack_b(int trans_b, const float *B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
                   int64_t nc, int nr, float *dst) {
    for (int64_t q = 0; q * nr < nc; q++) {
        int64_t w = min64(nr, nc - q * nr);
        float *d = dst + q * kc * nr;
        int64_t j = j0 + q * nr;
        if (!trans_b && w == nr && nr % 8 == 0 && has_avx2()) { /* all full panels at once */
            int64_t n = (nc - q * nr) / nr;
            pack_rows_avx2(B + p0 * ldb + j, ldb, kc, nr, n, kc * nr, d);
            q += n - 1;
        } else if (trans_b && nr % 8 == 0 && has_avx2()) {
            pack_bt_panel_avx2(B + j * ldb + p0, ldb, kc, w, nr, d);
        } else if (trans_b) {
            for (int64_t jj = 0; jj < w; jj++) {
                const float *src = B + (j + jj) * ldb + p0;
                for (int64_t p = 0; p < kc; p++) d[p * nr + jj] = src[p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++) memcpy(d + p * nr, B + (p0 + p) * ldb + j, sizeof(float) * (size_t)w);
        }
    }
}

/* Copy rows [i0, i0+mc) and columns [p0, p0+kc) of op(A) into MR-row panels (kc x MR each);
 * rows past mc in the last panel are never read by the micro-kernels and stay unset. */
static void pack_a(int trans_a, const float *A, int64_t lda, int64_t i0, int64_t mc, int64_t p0,
                   int64_t kc, int mr, float *dst) {
    for (int64_t q = 0; q * mr < mc; q++) {
        int64_t h = min64(mr, mc - q * mr);
        float *d = dst + q * kc * mr;
        int64_t i = i0 + q * mr;
        if (trans_a && h == mr && (mr == 6 || mr == 8) && has_avx2()) { /* up to 8 panels, row by row */
            int64_t n = min64(8, mc / mr - q);
            pack_rows_avx2(A + p0 * lda + i, lda, kc, mr, n, kc * mr, d);
            q += n - 1;
        } else if (trans_a) {
            for (int64_t p = 0; p < kc; p++) memcpy(d + p * mr, A + (p0 + p) * lda + i, sizeof(float) * (size_t)h);
        } else if (h == mr && (mr == 6 || mr == 8) && has_avx2()) {
            pack_a_panel_avx2(A + i * lda + p0, lda, kc, mr, min64(mr, mc - (q + 1) * mr), d);
        } else {
            for (int64_t ii = 0; ii < h; ii++) {
                const float *src = A + (i + ii) * lda + p0;
                for (int64_t p = 0; p < kc; p++) d[p * mr + ii] = src[p];
            }
        }
    }
}

/* ---------------------------------------------------------------- small driver */

typedef struct {
    const isa_t *isa;
    int trans_b;
    int64_t M, N, K;
    float alpha, beta;
    const float *a;
    int64_t rs_a, cs_a;
    const float *B;
    int64_t ldb;
    float *c;
    int64_t ldc;
    const float *bias;
    float *bpack;      /* NULL when B is read in place */
    int64_t split_cols; /* tasks split columns (1) or rows (0) */
    int64_t chunk;      /* columns or rows per task */
} small_job;

/* C[i0:i1, j0:j1] over all of K, in KC-deep slices so the B panel stays in L1. With `own_pack` (a task's
 * own columns), each slice of B is packed just before its use, into the task's part of bpack as kc x NR
 * panels: packed whole, a B of megabytes went out to L3 and came back (64x2048 @ 2048x256 lost 20%). */
static void small_block(const small_job *s, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int own_pack) {
    const isa_t *isa = s->isa;
    float *own = own_pack ? s->bpack + (j0 / isa->nr) * s->K * isa->nr : NULL;
    for (int64_t p0 = 0; p0 < s->K || p0 == 0; p0 += KC) {
        int64_t kc = min64(KC, s->K - p0);
        float beta = p0 == 0 ? s->beta : 1.0f;
        const float *bias = p0 == 0 ? s->bias : NULL;
        if (own) pack_b(s->trans_b, s->B, s->ldb, p0, kc, j0, j1 - j0, isa->nr, own);
        for (int64_t ib = i0; ib < i1; ib += MC) /* MC rows of A stay in L2 while every panel of B passes */
        for (int64_t j = j0; j < j1; j += isa->nr) {
            int64_t nr = min64(isa->nr, j1 - j);
            const float *b;
            int64_t ldb;
            if (own) {
                b = own + (j - j0) / isa->nr * kc * isa->nr;
                ldb = isa->nr;
            } else if (s->bpack) {
                b = s->bpack + (j / isa->nr) * s->K * isa->nr + p0 * isa->nr;
                ldb = isa->nr;
            } else {
                b = s->B + p0 * s->ldb + j;
                ldb = s->ldb;
            }
            for (int64_t i = ib; i < min64(ib + MC, i1); i += isa->mr) {
                int64_t mr = min64(isa->mr, i1 - i);
                isa->fn(mr, nr, kc, s->a + i * s->rs_a + p0 * s->cs_a, s->rs_a, s->cs_a, b, ldb,
                        s->c + i * s->ldc + j, s->ldc, s->alpha, beta, bias ? bias + j : NULL);
            }
        }
        if (s->K == 0) break;
    }
}

static void small_task(void *ctx, int64_t t) {
    const small_job *s = ctx;
    int64_t lo = t * s->chunk;
    int64_t hi = min64(lo + s->chunk, s->split_cols ? s->N : s->M);
    if (lo >= hi) return;
    if (s->split_cols)
        small_block(s, 0, s->M, lo, hi, s->bpack != NULL);
    else
        small_block(s, lo, hi, 0, s->N, 0);
}

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* *c = alpha * sum + bias + beta * *c (beta == 0 never reads *c). */
static inline void put(float *c, float sum, float alpha, float beta, const float *bias) {
    float r = alpha * sum + (bias ? *bias : 0.0f);
    *c = beta != 0.0f ? r + beta * *c : r;
}

/* C[i, j] = alpha * sum_p a[p * step] b[j * ldb + p] + beta * C[i, j] + bias[j]: four rows of B at a time,
 * so four independent sums hide the adds' latency. */
static inline void dot_row(int64_t N, int64_t K, float alpha, const float *a, int64_t step, const float *B,
                           int64_t ldb, float beta, float *c, const float *bias) {
    int64_t j = 0;
    for (; j + 4 <= N; j += 4) {
        const float *b0 = B + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        if (step == 1) {
#pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (int64_t p = 0; p < K; p++) {
                s0 += a[p] * b0[p];
                s1 += a[p] * b1[p];
                s2 += a[p] * b2[p];
                s3 += a[p] * b3[p];
            }
        } else {
            for (int64_t p = 0; p < K; p++) {
                float ap = a[p * step];
                s0 += ap * b0[p];
                s1 += ap * b1[p];
                s2 += ap * b2[p];
                s3 += ap * b3[p];
            }
        }
        float sums[4] = {s0, s1, s2, s3};
        for (int q = 0; q < 4; q++) put(c + j + q, sums[q], alpha, beta, bias ? bias + j + q : NULL);
    }
    for (; j < N; j++) {
        const float *b = B + j * ldb;
        float acc = 0.0f;
        for (int64_t p = 0; p < K; p++) acc += a[p * step] * b[p];
        put(c + j, acc, alpha, beta, bias ? bias + j : NULL);
    }
}

/* op(A) @ B^T by dot products along B's rows: for a row or two of A (a decoding step's linears), where
 * packing B for the micro-kernel would copy all of it to use it once, and for when the memory for a
 * packed panel is not there. */
static MT_CLONES void gemm_dots(int trans_a, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                                int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                                const float *bias) {
    for (int64_t i = 0; i < M; i++)
        dot_row(N, K, alpha, A + i * (trans_a ? 1 : lda), trans_a ? lda : 1, B, ldb, beta, C + i * ldc, bias);
}

static void gemm_small(const isa_t *isa, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                       float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc, const float *bias, int threads) {
    small_job s = {isa, trans_b, M, N, K, alpha, beta, A, trans_a ? 1 : lda, trans_a ? lda : 1,
                   B, ldb, C, ldc, bias, NULL, 1, N};
    int64_t panels = (N + isa->nr - 1) / isa->nr;
    /* per-head products of attention pack here, not on the heap */
    float local[SMALL_PACK_MAX] __attribute__((aligned(64)));
    int pack = trans_b || (K >= PACK_B_MIN_K && M >= 4 * (int64_t)isa->mr);
    if (pack && panels * isa->nr * K <= SMALL_PACK_MAX) {
        s.bpack = local;
    } else if (pack) {
        s.bpack = scratch_get((size_t)(panels * isa->nr * K));
        if (!s.bpack && trans_b) { /* B itself is read in place when there is no memory to pack it */
            gemm_dots(trans_a, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
            return;
        }
    }
    int64_t ntasks = 1;
    if (threads > 1) {
        /* Columns split evenly and let each thread pack its own part of B^T; with many
         * panels, packing once and splitting rows measured faster (256x64 @ (256x64)^T), and so
         * did a C 16 or more times taller than wide, where every thread would otherwise read all of
         * A and write part of every row of C (2 threads: 2048x16 @ 16x64 0.48-0.74 of the time,
         * 2048x64 @ (64x64)^T 0.69-0.98; 256-row C lost 12-20% split by rows). */
        int pack_once = trans_b && panels > 2 * threads && M >= 2 * (int64_t)isa->mr * threads;
        if (panels >= threads && !pack_once && M < 16 * N) {
            s.split_cols = 1;
            s.chunk = round_up((N + threads - 1) / threads, isa->nr);
            ntasks = (N + s.chunk - 1) / s.chunk;
        } else if (M >= 2 * (int64_t)isa->mr) {
            s.split_cols = 0;
            s.chunk = round_up((M + threads - 1) / threads, isa->mr);
            ntasks = (M + s.chunk - 1) / s.chunk;
        }
    }
    if (!s.split_cols && s.bpack) pack_b(trans_b, B, ldb, 0, K, 0, N, isa->nr, s.bpack);
    if (ntasks > 1)
        mt_parallel_for(ntasks, small_task, &s);
    else
        small_task(&s, 0);
    if (s.bpack != local) scratch_put(s.bpack);
}

/* ---------------------------------------------------------------- blocked driver */

/* BLIS's loops: for each NC-wide block of columns and KC-deep slice of K, B is packed once into
 * NR-wide panels (shared, L3), then tasks over a grid of MC-row blocks x column parts each pack
 * their rows of A into MR-row panels on their own stack (L2) and run the micro-kernel over
 * panel pairs (a KC x NR panel of B stays in L1). */
typedef struct {
    const isa_t *isa;
    int trans_a, trans_b;
    int64_t M, N, K;
    float alpha, beta;
    const float *A;
    int64_t lda;
    const float *B;
    int64_t ldb;
    float *C;
    int64_t ldc;
    const float *bias;
    float *bpack, *next; /* this slice's packed B; the next slice's, packed while this one is used */
    int64_t j0, nc, p0, kc, npack; /* npack: tasks that pack the next slice (0: none ahead) */
    int a_panel_in_l1; /* the tile loop walks B's panels under one panel of A (see B_PANEL_L1_MAX) */
    int64_t mtiles, mblocks, part; /* MR-row tiles, row blocks (tiles split evenly), columns per part (a multiple of NR) */
} blocked_job;

/* Part t (8 panels) of the kc-deep slice of B from depth p0 into d. */
static void blocked_pack_b(const blocked_job *s, int64_t t, int64_t p0, int64_t kc, float *d) {
    int nr = s->isa->nr;
    int64_t lo = t * 8 * nr, w = min64(8 * nr, s->nc - lo);
    pack_b(s->trans_b, s->B, s->ldb, p0, kc, s->j0 + lo, w, nr, d + (lo / nr) * kc * nr);
}

static void blocked_pack_b_task(void *ctx, int64_t t) {
    const blocked_job *s = ctx;
    blocked_pack_b(s, t, s->p0, s->kc, s->bpack);
}

/* The micro-kernel on rows i0 + i (packed in ap) and columns j of this slice. */
static inline void blocked_tile(const blocked_job *s, const float *ap, int64_t i0, int64_t i, int64_t mc, int64_t j,
                                int64_t jhi, float beta, const float *bias) {
    const isa_t *isa = s->isa;
    isa->packed(min64(isa->mr, mc - i), min64(isa->nr, jhi - j), s->kc, ap + (i / isa->mr) * s->kc * isa->mr,
                s->bpack + (j / isa->nr) * s->kc * isa->nr, s->C + (i0 + i) * s->ldc + s->j0 + j, s->ldc,
                s->alpha, beta, bias ? bias + s->j0 + j : NULL);
}

/* Row block t % mblocks: its A packed, then the micro-kernel over its tiles in column part t / mblocks, or under A's
 * panel in L1 (one thread, or each where threads_walk_b) over every part in turn, A packed once (the part of B and
 * the block of A, 0.8 + 0.2 MB, share L2; packing A once a part, the K 384 products with 1152 and 1536 columns took
 * 1.03-1.06x as long on an Ice Lake Xeon, 1.25 MB of L2, and the same time on a Cascade Lake one, 1 MB). */
static void blocked_compute_task(void *ctx, int64_t t) {
    const blocked_job *s = ctx;
    const isa_t *isa = s->isa;
    int64_t b = t % s->mblocks, mr = s->isa->mr;
    int64_t i0 = b * s->mtiles / s->mblocks * mr, mc = min64((b + 1) * s->mtiles / s->mblocks * mr, s->M) - i0;
    int64_t jlo = (t / s->mblocks) * s->part, jhi = min64(jlo + s->part, s->nc);
    if (mc <= 0 || jlo >= jhi) return;
    float ap[MC * KC_AVX512 + 8] __attribute__((aligned(64))); /* + 8: pack_a's last store runs 2 past */
    pack_a(s->trans_a, s->A, s->lda, i0, mc, s->p0, s->kc, isa->mr, ap);
    float beta = s->p0 == 0 ? s->beta : 1.0f;
    const float *bias = s->p0 == 0 ? s->bias : NULL;
    if (s->a_panel_in_l1) {
        for (int64_t lo = 0; lo < s->nc; lo += s->part) {
            int64_t hi = min64(lo + s->part, s->nc);
            for (int64_t i = 0; i < mc; i += isa->mr)
                for (int64_t j = lo; j < hi; j += isa->nr) blocked_tile(s, ap, i0, i, mc, j, hi, beta, bias);
        }
    } else {
        for (int64_t j = jlo; j < jhi; j += isa->nr)
            for (int64_t i = 0; i < mc; i += isa->mr) blocked_tile(s, ap, i0, i, mc, j, jhi, beta, bias);
    }
}

/* The first npack tasks pack the next slice of B, the rest compute this one: one wait per slice, not two. */
static void blocked_step_task(void *ctx, int64_t t) {
    const blocked_job *s = ctx;
    int64_t kc = s->isa->kc;
    if (t < s->npack)
        blocked_pack_b(s, t, s->p0 + kc, min64(kc, s->K - s->p0 - kc), s->next);
    else
        blocked_compute_task(ctx, t - s->npack);
}

static void run_tasks(int threads, int64_t ntasks, mt_task_fn fn, void *ctx) {
    if (threads > 1) {
        mt_parallel_for(ntasks, fn, ctx);
        return;
    }
    for (int64_t t = 0; t < ntasks; t++) fn(ctx, t);
}

/* The blocked product on `threads` threads, B packed into bpack (nc x kc floats, twice that from 2 threads
 * when K > one slice). */
static void blocked_run(const isa_t *isa, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                        const float *bias, int threads, float *bpack) {
    /* Row blocks of at most MC rows, as many as a multiple of the threads where rows are plenty
     * (15 blocks on 2 threads leave one idle an eighth of the time). */
    int64_t mtiles = (M + isa->mr - 1) / isa->mr, mblocks = (M + MC - 1) / MC;
    if (threads > 1 && mblocks > 1 && round_up(mblocks, threads) <= mtiles) mblocks = round_up(mblocks, threads);
    int64_t kc_max = min64(isa->kc, K), nc_max = min64(NC, round_up(N, isa->nr));
    /* Threads pack the next slice of B in the tasks that compute this one: deep products (dx's K = 1024 or
     * 1536) otherwise wait for both threads twice a slice. One thread keeps to one buffer. */
    int ahead = threads > 1 && K > isa->kc;
    int a_panel_in_l1 = isa->kc * isa->nr * (int64_t)sizeof(float) > B_PANEL_L1_MAX &&
                        (threads == 1 || (threads_walk_b && mblocks >= 2 * threads));
    blocked_job s = {isa, trans_a, trans_b, M, N, K, alpha, beta, A, lda, B, ldb, C, ldc, bias, bpack,
                     bpack + nc_max * kc_max, 0, 0, 0, 0, 0, a_panel_in_l1, mtiles, mblocks, 0};
    for (s.j0 = 0; s.j0 < N; s.j0 += NC) {
        s.nc = min64(NC, N - s.j0);
        /* Columns split too when there are fewer than two row blocks per thread; under A's panel in L1, into
         * parts whose packed B fits L2. */
        int64_t parts = min64((2 * threads + mblocks - 1) / mblocks, (s.nc + 4 * isa->nr - 1) / (4 * isa->nr));
        if (a_panel_in_l1) parts = (s.nc + PART_L2 - 1) / PART_L2;
        s.part = round_up((s.nc + parts - 1) / parts, isa->nr);
        parts = (s.nc + s.part - 1) / s.part;
        int64_t npack = (s.nc + 8 * isa->nr - 1) / (8 * isa->nr);
        for (s.p0 = 0; s.p0 < K; s.p0 += isa->kc) {
            s.kc = min64(isa->kc, K - s.p0);
            if (s.p0 == 0 || !ahead) run_tasks(threads, npack, blocked_pack_b_task, &s);
            s.npack = ahead && s.p0 + isa->kc < K ? npack : 0;
            run_tasks(threads, s.npack + mblocks * (a_panel_in_l1 ? 1 : parts), blocked_step_task, &s);
            if (ahead) {
                float *t = s.bpack;
                s.bpack = s.next;
                s.next = t;
            }
        }
    }
}

/* Weight gradients (op(A) = A^T, K = the rows of a batch, 2048 deep: 8 slices) on several threads: C split
 * into one part per thread (rows, or columns when C is wider than tall: the operand packed by every part is
 * then the smaller one), each part a 1-thread blocked product with its own packed B: no waits between K
 * slices, and every value computed as on one thread. */
typedef struct {
    const isa_t *isa;
    int trans_a, trans_b, rows;
    int64_t M, N, K;
    float alpha, beta;
    const float *A;
    int64_t lda;
    const float *B;
    int64_t ldb;
    float *C;
    int64_t ldc;
    const float *bias;
    float *bpack;
    int64_t chunk, bsize; /* rows or columns per part; floats of packed B per part */
} split_job;

static void split_task(void *ctx, int64_t t) {
    const split_job *s = ctx;
    int64_t lo = t * s->chunk, n = min64(s->chunk, (s->rows ? s->M : s->N) - lo);
    if (n <= 0) return;
    if (s->rows)
        blocked_run(s->isa, s->trans_a, s->trans_b, n, s->N, s->K, s->alpha, s->A + lo * (s->trans_a ? 1 : s->lda),
                    s->lda, s->B, s->ldb, s->beta, s->C + lo * s->ldc, s->ldc, s->bias, 1, s->bpack + t * s->bsize);
    else
        blocked_run(s->isa, s->trans_a, s->trans_b, s->M, n, s->K, s->alpha, s->A, s->lda,
                    s->B + lo * (s->trans_b ? s->ldb : 1), s->ldb, s->beta, s->C + lo, s->ldc,
                    s->bias ? s->bias + lo : NULL, 1, s->bpack + t * s->bsize);
}

static int gemm_blocked(const isa_t *isa, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                        float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                        float *C, int64_t ldc, const float *bias, int threads) {
    int64_t kc_max = min64(isa->kc, K);
    if (threads > 1 && trans_a && K > isa->kc) {
        int rows = N <= M;
        int64_t unit = rows ? isa->mr : isa->nr, chunk = round_up(((rows ? M : N) + threads - 1) / threads, unit);
        int64_t parts = ((rows ? M : N) + chunk - 1) / chunk;
        int64_t bsize = min64(NC, round_up(rows ? N : chunk, isa->nr)) * kc_max;
        float *bpack = parts > 1 ? scratch_get((size_t)(bsize * parts)) : NULL;
        if (bpack) {
            split_job s = {isa, trans_a, trans_b, rows, M, N, K, alpha, beta, A, lda, B, ldb, C, ldc, bias, bpack,
                           chunk, bsize};
            mt_parallel_for(parts, split_task, &s);
            scratch_put(bpack);
            return 1;
        }
    }
    int64_t nc_max = min64(NC, round_up(N, isa->nr));
    float *bpack = scratch_get((size_t)(nc_max * kc_max * (threads > 1 && K > isa->kc ? 2 : 1)));
    if (!bpack) return 0;
    blocked_run(isa, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, threads, bpack);
    scratch_put(bpack);
    return 1;
}

/* ---------------------------------------------------------------- entry points */

/* C = beta * C + bias when there is nothing to multiply. */
static void scale_only(int64_t M, int64_t N, float beta, float *C, int64_t ldc, const float *bias) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float r = beta != 0.0f ? beta * C[i * ldc + j] : 0.0f;
            C[i * ldc + j] = r + (bias ? bias[j] : 0.0f);
        }
}

static void gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                 const float *bias, int allow_threads) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_only(M, N, beta, C, ldc, bias);
        return;
    }
    if (!trans_a && trans_b && M <= DOTS_MAX_ROWS) {
        gemm_dots(0, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
        return;
    }
    const isa_t *isa = isa_for(N);
    int64_t work = M * N * K;
    int threads = allow_threads && work >= GEMM_PAR_MIN_WORK ? mt_num_threads() : 1;
    if (work >= BLOCKED_MIN_WORK &&
        gemm_blocked(isa, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, threads))
        return;
    gemm_small(isa, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, threads);
}

void mt_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL, 1);
}

typedef struct {
    int trans_a, trans_b;
    int64_t M, N, K;
    float alpha, beta;
    const float *A;
    int64_t lda, stride_a;
    const float *B;
    int64_t ldb, stride_b;
    float *C;
    int64_t ldc, stride_c, per_task, batch;
} batched_job;

static void batched_task(void *ctx, int64_t t) {
    const batched_job *s = ctx;
    int64_t hi = min64((t + 1) * s->per_task, s->batch);
    for (int64_t b = t * s->per_task; b < hi; b++)
        gemm(s->trans_a, s->trans_b, s->M, s->N, s->K, s->alpha, s->A + b * s->stride_a, s->lda,
             s->B + b * s->stride_b, s->ldb, s->beta, s->C + b * s->stride_c, s->ldc, NULL, 0);
}

void mt_sgemm_strided_batched(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                              const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb,
                              int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c,
                              int64_t batch) {
    if (batch <= 0) return;
    if (batch == 1) {
        mt_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int threads = M * N * K * batch >= GEMM_PAR_MIN_WORK ? mt_num_threads() : 1;
    int64_t ntasks = threads > 1 ? min64(batch, 4 * (int64_t)threads) : 1;
    batched_job s = {trans_a, trans_b, M, N, K, alpha, beta, A, lda, stride_a, B, ldb, stride_b,
                     C, ldc, stride_c, (batch + ntasks - 1) / ntasks, batch};
    ntasks = (batch + s.per_task - 1) / s.per_task;
    mt_parallel_for(ntasks, batched_task, &s);
}

void mt_linear_forward(const float *x, const float *w, const float *bias, float *y, int64_t N, int64_t in,
                       int64_t out) {
    gemm(0, 1, N, out, in, 1.0f, x, in, w, in, 0.0f, y, out, bias, 1);
}

/* db[j] += sum over rows [r0, r1) of g[r][j] for columns j in [j0, j1): rows added as vectors, so the inner loop
 * runs along j. */
static MT_CLONES void column_sums_add(const float *g, float *db, int64_t r0, int64_t r1, int64_t j0, int64_t j1,
                                     int64_t out) {
    for (int64_t r = r0; r < r1; r++) {
        const float *row = g + r * out;
#pragma omp simd
        for (int64_t j = j0; j < j1; j++) db[j] += row[j];
    }
}

typedef struct {
    const float *g;
    float *db;
    int64_t N, out;
} column_sums_job;

static void column_sums_columns(void *ctx, int64_t j0, int64_t j1) {
    const column_sums_job *s = ctx;
    column_sums_add(s->g, s->db, 0, s->N, j0, j1, s->out);
}

/* linear's dx = g @ w, dw = g^T @ x and db in one walk down the N rows: each block of FUSED_ROWS rows
 * of g and x serves dx's rows, then dw's next slice of K and db while it is still in L2, instead of
 * three passes over g from L3/DRAM (w packed once). Threads split the `in` columns of dx and dw alike,
 * so every column is computed the same way at any thread count; the first thread adds up db. */
#define FUSED_ROWS 128
#define FUSED_MIN_ROWS 1024
#define FUSED_MIN_OUT 32 /* narrower g is cheap to read twice, and dw's tiles lose K depth (out 16: 12% slower) */
/* Threads split the fused pass by column panels, so one panel left one thread alone at the work (2048 x 64 x 256 at
 * 2 threads: the separate products took 0.61-0.77 of the time; at 1 thread 1.03-1.05 in one process). A rule on the
 * panels, not on the thread count, so the bits do not depend on it. */
#define FUSED_MIN_PANELS 2
#define FUSED_MAX_WEIGHT 65536 /* out * in: w packed and dw stay in L2 (1024 x 1024 ran 30% slower fused) */

/* GEMM's beta for one of linear's gradients: 1 where `add` asks for it to be added into its array. */
static float beta_of(int add, int flag) { return add & flag ? 1.0f : 0.0f; }

typedef struct {
    const isa_t *isa;
    const float *g, *x;
    float *dx, *dw, *db, *wpack, *xpack;
    float dx_beta, dw_beta; /* 1: added into */
    int64_t N, in, out, chunk;
} fused_job;

static void fused_task(void *ctx, int64_t t) {
    const fused_job *f = ctx;
    const isa_t *isa = f->isa;
    int64_t j0 = t * f->chunk, j1 = min64(j0 + f->chunk, f->in);
    if (j0 >= j1) return;
    float *xpack = f->xpack + (j0 / isa->nr) * FUSED_ROWS * isa->nr;
    for (int64_t r0 = 0; r0 < f->N; r0 += FUSED_ROWS) {
        int64_t rows = min64(FUSED_ROWS, f->N - r0);
        small_job sx = {isa, 0, rows, f->in, f->out, 1.0f, f->dx_beta, f->g + r0 * f->out, f->out, 1,
                        NULL, f->in, f->dx + r0 * f->in, f->in, NULL, f->wpack, 1, 0};
        small_block(&sx, 0, rows, j0, j1, 0);
        pack_b(0, f->x + r0 * f->in, f->in, 0, rows, j0, j1 - j0, isa->nr, xpack);
        small_job sw = {isa, 0, f->out, f->in, rows, 1.0f, r0 ? 1.0f : f->dw_beta, f->g + r0 * f->out, 1, f->out,
                        NULL, f->in, f->dw, f->in, NULL, xpack - (j0 / isa->nr) * rows * isa->nr, 1, 0};
        small_block(&sw, 0, f->out, j0, j1, 0);
        if (f->db && t == 0) column_sums_add(f->g, f->db, r0, r0 + rows, 0, f->out, f->out);
    }
}

/* 1 when it ran; 0 when g is too small to pay, `in` fills one panel or memory for the packed panels is not there. */
static int linear_backward_fused(const float *g, const float *x, const float *w, float *dx, float *dw, float *db,
                                 int add, int64_t N, int64_t in, int64_t out) {
    const isa_t *isa = isa_for(in);
    int64_t panels = (in + isa->nr - 1) / isa->nr;
    if (N < FUSED_MIN_ROWS || out < FUSED_MIN_OUT || panels < FUSED_MIN_PANELS || out * in > FUSED_MAX_WEIGHT) return 0;
    float *wpack = scratch_get((size_t)(panels * isa->nr * (out + FUSED_ROWS)));
    if (!wpack) return 0;
    int threads = mt_num_threads();
    fused_job f = {isa, g, x, dx, dw, db, wpack, wpack + panels * isa->nr * out, beta_of(add, MT_ADD_DX),
                   beta_of(add, MT_ADD_DW), N, in, out,
                   round_up((in + threads - 1) / threads, isa->nr)};
    pack_b(0, w, in, 0, out, 0, in, isa->nr, wpack);
    if (db && !(add & MT_ADD_DB)) memset(db, 0, (size_t)out * sizeof(float));
    run_tasks(threads, (in + f.chunk - 1) / f.chunk, fused_task, &f);
    scratch_put(wpack);
    return 1;
}

void mt_linear_backward(const float *g, const float *x, const float *w, float *dx, float *dw, float *db, int add,
                        int64_t N, int64_t in, int64_t out) {
    if (dx && dw && linear_backward_fused(g, x, w, dx, dw, db, add, N, in, out)) return;
    if (dx) mt_sgemm(0, 0, N, in, out, 1.0f, g, out, w, in, beta_of(add, MT_ADD_DX), dx, in);
    if (dw) mt_sgemm(1, 0, out, in, N, 1.0f, g, out, x, in, beta_of(add, MT_ADD_DW), dw, in);
    if (db) { /* threads split the columns, each summed down all rows in order: the same bits at any count */
        if (!(add & MT_ADD_DB)) memset(db, 0, (size_t)out * sizeof(float));
        column_sums_job s = {g, db, N, out};
        mt_parallel_rows(out, N, column_sums_columns, &s);
    }
}
