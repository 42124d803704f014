/* Blocked (flash-style) scaled dot-product attention, forward and backward, for every head layout
 * the ops use: F.scaled_dot_product_attention's (..., T, D) tensors and F.self_attention's packed
 * projection, both read and written by strides (see mt_attention in microtensor.h).
 *
 * Each (batch, head) pair is one task. Its Q, K and V are read in place when the head widths are
 * whole vectors (a packed projection's heads, side by side in each row, are first gathered a batch
 * row at a time, reading whole rows), else copied into zero-padded tiles; K and V are transposed
 * into panels of 16 keys so every product streams a contiguous panel. The forward pass runs over
 * blocks of BQ queries and up to FWD_BK keys with an online softmax: a running row max and sum
 * rescale the output accumulator, and only the log-sum-exp of each query row is kept. The backward
 * pass recomputes the weights from it a key block at a time (FlashAttention-2's order), so no T x T
 * matrix exists unless the caller asks for the weights. All products are one register-blocked
 * micro-kernel: 12 rows x 32 columns in AVX-512's 16-float vectors, 6 x 16 in AVX2+FMA's 8-float ones,
 * 3 x 16 in 4-float vectors on the portable build (all compiled; the kernel sgemm picks for the CPU, or
 * MICROTENSOR_ISA=avx2|generic, picks). Under a causal mask
 * whose hidden keys are skipped, each micro-tile of queries stops at its last query's key.
 *
 * Masked scores have -inf added, as PyTorch's math backend does (a NaN or +inf score stays NaN,
 * and a NaN or inf value poisons every row, even through a zero weight); blocks that a causal mask
 * hides entirely are skipped only when every q, k, v is finite and no score can overflow, which is
 * when skipping them gives the same numbers. A row with nothing to attend gets zero weights. Dropout
 * on the weights draws the counter-based mask of mt_dropout_forward over (B, H, Tq, Tk), in both
 * passes, so it is never stored. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "microtensor.h"

#define INLINE static inline __attribute__((always_inline))
#define BQ 48 /* queries per block of the forward */
/* Blocks of the backward: 64 queries x 64 keys (a multiple of 16: whole panels of the transposed K and V). Against
 * 48 x 48, its products run longer: on a Cascade Lake Xeon the AVX-512 build's backward took 0.89-0.99 of the time,
 * the AVX2 build's 0.93-1.02. */
#define BWD_BQ 64
#define BWD_BK 64
#define MR 6  /* rows of the micro-kernel */
#define MR16 12 /* rows of the AVX-512 micro-kernel (24 accumulators of 32 registers) */

typedef mt_v8 v8; /* internal.h's 8-float vector */
typedef float v4 __attribute__((vector_size(16), aligned(4)));
typedef float v16 __attribute__((vector_size(64), aligned(4)));
#define V16(p) (*(v16 *)(p))
#define V8 MT_V8
#define V4(p) (*(v4 *)(p))

static int64_t round8(int64_t n) { return (n + 7) & ~(int64_t)7; }

/* 1 / sum, except 0 for an empty sum: a query whose keys are all masked gets zero weights, as in
 * PyTorch; a NaN sum stays NaN. */
INLINE float inv_sum(float sum) { return sum == 0.0f ? 0.0f : 1.0f / sum; }

/* C[r][c] = scale * sum_p A[r*ars + p*acs] * B[p*ldb + c] for r < rows, c < 8*nv, or with add C[r][c] += the
 * sum (scale unused): the scores are scaled as they are stored, not in a pass of their own. rows and nv are
 * constants after inlining, so the 2*rows accumulators live in registers (vectors of 8: AVX2). The depth loop
 * is unrolled 4 times, as sgemm's micro-kernel: tiles 64 deep ran 15% faster alone, 48 x 128 in L1. */
INLINE void micro8(int rows, int nv, int64_t K, const float *A, int64_t ars, int64_t acs, const float *B,
                   int64_t ldb, float *C, int64_t ldc, int add, float scale) {
    v8 acc[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (v8){0};
#pragma GCC unroll 4
    for (int64_t p = 0; p < K; p++) {
        v8 b0 = V8(B + p * ldb), b1 = nv > 1 ? V8(B + p * ldb + 8) : b0;
#pragma GCC unroll 6
        for (int r = 0; r < rows; r++) {
            float a = A[r * ars + p * acs];
            acc[r][0] += a * b0;
            if (nv > 1) acc[r][1] += a * b1;
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) {
            float *c = C + r * ldc + 8 * v;
            V8(c) = add ? V8(c) + acc[r][v] : scale * acc[r][v];
        }
}

/* The same for np panels of 16 columns (bps apart), one AVX-512 vector each: every lane sums as micro8's. */
INLINE void micro16(int rows, int np, int64_t K, const float *A, int64_t ars, int64_t acs, const float *B,
                    int64_t ldb, int64_t bps, float *C, int64_t ldc, int add, float scale) {
    v16 acc[MR16][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR16; r++) acc[r][0] = acc[r][1] = (v16){0};
#pragma GCC unroll 4
    for (int64_t p = 0; p < K; p++) {
        v16 b0 = V16(B + p * ldb), b1 = np > 1 ? V16(B + bps + p * ldb) : b0;
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++) {
            float a = A[r * ars + p * acs];
            acc[r][0] += a * b0;
            if (np > 1) acc[r][1] += a * b1;
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < np; v++) {
            float *c = C + r * ldc + 16 * v;
            V16(c) = add ? V16(c) + acc[r][v] : scale * acc[r][v];
        }
}

/* The same in vectors of 4, which every SIMD ISA holds in one register (the portable build: 8-float
 * vectors there would live on the stack). */
INLINE void micro4(int rows, int nv, int64_t K, const float *A, int64_t ars, int64_t acs, const float *B,
                   int64_t ldb, float *C, int64_t ldc, int add, float scale) {
    v4 acc[3][4];
#pragma GCC unroll 3
    for (int r = 0; r < 3; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = (v4){0};
    for (int64_t p = 0; p < K; p++) {
#pragma GCC unroll 3
        for (int r = 0; r < rows; r++) {
            float a = A[r * ars + p * acs];
#pragma GCC unroll 4
            for (int v = 0; v < 2 * nv; v++) acc[r][v] += a * V4(B + p * ldb + 4 * v);
        }
    }
#pragma GCC unroll 3
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < 2 * nv; v++) {
            float *c = C + r * ldc + 4 * v;
            V4(c) = add ? V4(c) + acc[r][v] : scale * acc[r][v];
        }
}

/* Columns [c, c + 8*nv) of C (M x N) (+)= A (M x K, by strides) B (K x 8*nv, rows ldb apart, 16-column
 * panels bps apart), in tiles of mr rows: 12 with AVX-512 (then 8, 4, 2, 1); 6 with AVX2's 8-float vectors
 * (12 accumulators of 16 registers), the rest 4, 3, 2, 1 (a block of 16 or 64 rows ends in 4, not 3 + 1);
 * 3 with 4-float ones. */
INLINE void panel(int mr, int nv, int64_t M, int64_t K, const float *A, int64_t ars, int64_t acs, const float *B,
                  int64_t ldb, int64_t bps, float *C, int64_t ldc, int add, float scale) {
    int64_t r = 0;
    if (mr == MR16 && nv >= 2) {
        int np = nv / 2;
        for (; r + MR16 <= M; r += MR16)
            micro16(MR16, np, K, A + r * ars, ars, acs, B, ldb, bps, C + r * ldc, ldc, add, scale);
        for (; r + 8 <= M; r += 8) micro16(8, np, K, A + r * ars, ars, acs, B, ldb, bps, C + r * ldc, ldc, add, scale);
        for (; r + 4 <= M; r += 4) micro16(4, np, K, A + r * ars, ars, acs, B, ldb, bps, C + r * ldc, ldc, add, scale);
        for (; r + 2 <= M; r += 2) micro16(2, np, K, A + r * ars, ars, acs, B, ldb, bps, C + r * ldc, ldc, add, scale);
        for (; r < M; r++) micro16(1, np, K, A + r * ars, ars, acs, B, ldb, bps, C + r * ldc, ldc, add, scale);
        return;
    }
    if (mr >= MR) {
        for (; r + MR <= M; r += MR) micro8(MR, nv, K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, add, scale);
        for (; r + 4 <= M; r += 4) micro8(4, nv, K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, add, scale);
        for (; r + 3 <= M; r += 3) micro8(3, nv, K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, add, scale);
        for (; r + 2 <= M; r += 2) micro8(2, nv, K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, add, scale);
        for (; r < M; r++) micro8(1, nv, K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, add, scale);
        return;
    }
    for (; r + 3 <= M; r += 3) micro4(3, nv, K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, add, scale);
    for (; r < M; r++) micro4(1, nv, K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, add, scale);
}

/* C (M x N, N a multiple of 8) (+)= A (M x K) B (K x N), A read by strides so a transposed tile
 * costs no copy. Columns [16 i, 16 i + 16) of B start at B + i * bps with rows ldb apart: a row-major
 * B has bps = 16, a packed one (rows of 16 contiguous floats, panel after panel) has ldb = 16. */
INLINE void gemm(int mr, int64_t M, int64_t N, int64_t K, const float *A, int64_t ars, int64_t acs, const float *B,
                  int64_t ldb, int64_t bps, float *C, int64_t ldc, int add, float scale) {
    int64_t c = 0;
    if (mr == MR16)
        for (; c + 32 <= N; c += 32)
            panel(mr, 4, M, K, A, ars, acs, B + c / 16 * bps, ldb, bps, C + c, ldc, add, scale);
    for (; c + 16 <= N; c += 16) panel(mr, 2, M, K, A, ars, acs, B + c / 16 * bps, ldb, bps, C + c, ldc, add, scale);
    if (c < N) panel(mr, 1, M, K, A, ars, acs, B + c / 16 * bps, ldb, bps, C + c, ldc, add, scale);
}

/* Rows [0, n) of width w, `ld` apart at src, into dst with rows `pitch` apart (zero-padded to pitch). */
INLINE void pack_rows(const float *src, int64_t ld, int64_t n, int64_t w, float *dst, int64_t pitch) {
    for (int64_t t = 0; t < n; t++) { /* loops, not memcpy: rows of a head are short */
        for (int64_t c = 0; c < w; c++) dst[t * pitch + c] = src[t * ld + c];
        for (int64_t c = w; c < pitch; c++) dst[t * pitch + c] = 0.0f;
    }
}

typedef int32_t v8i __attribute__((vector_size(32)));

/* Columns c0..c0+7 of rows t0..t0+7 (ld apart), each as one vector across the 8 rows, stored
 * `stride` floats apart from dst: an 8 x 8 transpose in three rounds of shuffles. */
INLINE void transpose8(const float *src, int64_t ld, float *dst, int64_t stride) {
    v8 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = V8(src + i * ld);
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], (v8i){0, 8, 1, 9, 4, 12, 5, 13});
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], (v8i){2, 10, 3, 11, 6, 14, 7, 15});
    }
    for (int i = 0; i < 8; i += 4)
        for (int j = 0; j < 2; j++) {
            u[i + 2 * j] = __builtin_shuffle(t[i + j], t[i + j + 2], (v8i){0, 1, 8, 9, 4, 5, 12, 13});
            u[i + 2 * j + 1] = __builtin_shuffle(t[i + j], t[i + j + 2], (v8i){2, 3, 10, 11, 6, 7, 14, 15});
        }
    for (int c = 0; c < 4; c++) {
        V8(dst + c * stride) = __builtin_shuffle(u[c], u[c + 4], (v8i){0, 1, 2, 3, 8, 9, 10, 11});
        V8(dst + (c + 4) * stride) = __builtin_shuffle(u[c], u[c + 4], (v8i){4, 5, 6, 7, 12, 13, 14, 15});
    }
}

/* The transpose of rows [0, n) of width w (ld apart), packed as panels of 16 rows: row t, column c
 * goes to dst[(t / 16) * 16 * pitch + c * 16 + t % 16]; zero-padded to pitch columns and `padded` rows.
 * A block of keys starting at j0 (a multiple of 16) is then the packed B at dst + j0 * pitch. Whole
 * 8 x 8 squares go by vector transposes, the rest one float at a time. */
INLINE void pack_columns(const float *src, int64_t ld, int64_t n, int64_t w, int64_t pitch, float *dst,
                         int64_t padded) {
    int64_t whole = w == pitch ? n / 16 * 16 * pitch : 0; /* floats of the panels every store below fills */
    memset(dst + whole, 0, (size_t)(pitch * padded - whole) * sizeof(float));
    int64_t n8 = n & ~(int64_t)7, w8 = w & ~(int64_t)7;
    for (int64_t t = 0; t < n8; t += 8)
        for (int64_t c = 0; c < w8; c += 8) transpose8(src + t * ld + c, ld, dst + t / 16 * 16 * pitch + c * 16 + t % 16, 16);
    for (int64_t t = 0; t < n; t++) {
        float *panel = dst + t / 16 * 16 * pitch + t % 16;
        for (int64_t c = t < n8 ? w8 : 0; c < w; c++) panel[c * 16] = src[t * ld + c];
    }
}

/* One head's operands: Q (Tq x D), K (Tk x D), V (Tk x Dv) row-major, rows lq, lk, lv apart (the
 * caller's rows when the head widths are multiples of 8, else copies padded to dp / dvp), and the
 * transposes Kt (dp x tkp) and Vt (dvp x tkp) in panels of 16 keys. */
typedef struct {
    const float *q, *k, *v;
    int64_t lq, lk, lv;
    float *kt, *vt;
} packed;

/* Sizes of one call: head widths padded to 8, keys padded to 16, the forward's key block (all keys up
 * to FWD_BK, so short sequences need no online rescaling); and the micro-kernel's rows. */
typedef struct {
    int64_t dp, dvp, tkp, bk;
    int mr;
} pads;

/* 256, not 128: longer P V products and fewer rescalings (forward at T 256-512 0.94-0.98 of the time on a Cascade
 * Lake Xeon, AVX-512 build); the block of scores, BQ x FWD_BK floats (48 KB), stays in L2. */
#define FWD_BK 256

INLINE pads pads_of(const mt_attention *a, int mr) {
    int64_t tkp = (a->Tk + 15) & ~(int64_t)15;
    pads p = {round8(a->D), round8(a->Dv), tkp, tkp < FWD_BK ? tkp : FWD_BK, mr};
    return p;
}

/* Whether the heads are read in place: widths whole vectors, so no padded copy is needed. */
INLINE int in_place(const mt_attention *a) { return a->D % 8 == 0 && a->Dv % 8 == 0; }

INLINE const float *head_of(mt_heads x, int64_t b, int64_t h) { return x.data + b * x.batch + h * x.head; }
INLINE float *out_head(mt_heads x, int64_t b, int64_t h) { return x.data + b * x.batch + h * x.head; }

/* Floats of one head's gathered rows: q, k, v and, for the backward, g and dot = rowsum(g * out). */
INLINE int64_t head_floats(const mt_attention *a, int backward) {
    return a->Tq * a->D + a->Tk * (a->D + a->Dv) + (backward ? a->Tq * (a->Dv + 1) : 0);
}

#define GATHER_MAX (1 << 18) /* floats of one batch row's gathered heads (1 MiB) */

/* Whether a pass gathers the heads of a batch row at once: when they lie side by side in each row (a
 * packed projection), whole vectors wide, 32 keys or more and all of them within GATHER_MAX floats.
 * Reading whole rows lets the hardware prefetcher stream them; one head's rows (short, far apart, and
 * all in a few cache sets) it does not follow. A few short rows cost less read in place. */
INLINE int gathered(const mt_attention *a, int backward) {
    int side_by_side = a->q.head == a->D && a->k.head == a->D && a->v.head == a->Dv &&
                       (!backward || (a->g.head == a->Dv && a->out.head == a->Dv));
    return in_place(a) && a->H > 1 && a->Tk >= 32 && side_by_side && a->H * head_floats(a, backward) <= GATHER_MAX;
}

/* dst[0:n) = src[0:n), inline: a call to memcpy per head row (32 floats) cost more than the copy
 * (the empty asm keeps GCC from turning the loops back into that call). */
INLINE void copy_row(float *dst, const float *src, int64_t n) {
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        V8(dst + c) = V8(src + c);
        __asm__ volatile("" ::: "memory");
    }
    for (; c < n; c++) {
        dst[c] = src[c];
        __asm__ volatile("" ::: "memory");
    }
}

/* Asks for n floats at x, a cache line at a time, for reading soon. */
INLINE void prefetch_span(const float *x, int64_t n) {
    for (int64_t c = 0; c < n; c += 16) __builtin_prefetch(x + c, 0, 3);
}

#define GATHER_AHEAD 4

/* Heads [h0, h1) of batch row b into buf, one head's rows after another's (head_floats each): q, k, v
 * and, for the backward, g and dot; row t of every array read at once, as it lies in memory, while row
 * t + GATHER_AHEAD is asked for: the rows (a projection's output) come from L3 or memory, and the copy
 * otherwise waits on every line (d256's call: forward 0.91-0.95 of its time, backward 0.96-0.98). */
INLINE void gather_heads(const mt_attention *a, int64_t b, int64_t h0, int64_t h1, float *buf, int backward) {
    int64_t hf = head_floats(a, backward), D = a->D, Dv = a->Dv, T = a->Tq > a->Tk ? a->Tq : a->Tk;
    int64_t k_at = a->Tq * D, v_at = k_at + a->Tk * D, g_at = v_at + a->Tk * Dv, dot_at = g_at + a->Tq * Dv;
    const float *q = head_of(a->q, b, h0), *k = head_of(a->k, b, h0), *v = head_of(a->v, b, h0);
    const float *g = backward ? head_of(a->g, b, h0) : NULL, *out = backward ? head_of(a->out, b, h0) : NULL;
    int64_t n = h1 - h0;
    for (int64_t t = 0; t < T; t++) {
        int64_t ahead = t + GATHER_AHEAD;
        if (ahead < a->Tq) prefetch_span(q + ahead * a->q.row, n * D);
        if (ahead < a->Tk) {
            prefetch_span(k + ahead * a->k.row, n * D);
            prefetch_span(v + ahead * a->v.row, n * Dv);
        }
        if (backward && ahead < a->Tq) {
            prefetch_span(g + ahead * a->g.row, n * Dv);
            prefetch_span(out + ahead * a->out.row, n * Dv);
        }
        for (int64_t h = 0; h < n; h++) {
            float *dst = buf + h * hf;
            if (t < a->Tq) copy_row(dst + t * D, q + t * a->q.row + h * D, D);
            if (t < a->Tk) {
                copy_row(dst + k_at + t * D, k + t * a->k.row + h * D, D);
                copy_row(dst + v_at + t * Dv, v + t * a->v.row + h * Dv, Dv);
            }
            if (!backward || t >= a->Tq) continue;
            const float *gr = g + t * a->g.row + h * Dv, *orow = out + t * a->out.row + h * Dv;
            float d = 0.0f;
#pragma omp simd reduction(+ : d)
            for (int64_t c = 0; c < Dv; c++) d += gr[c] * orow[c];
            copy_row(dst + g_at + t * Dv, gr, Dv);
            dst[dot_at + t] = d;
        }
    }
}

/* Asks for rows [0, n) of width w (ld apart) at x for writing, a cache line at a time: a head's output rows (short,
 * far apart, in memory no pass has touched lately) are asked for while the head before is worked on, so their
 * stores find the lines in the cache instead of each stalling on its own. Not in the AVX-512 build: on a Cascade
 * Lake Xeon the burst of prefetches stalled more than the stores did (0.97-0.99 of the time without them). */
INLINE void prefetch_for_write(float *x, int64_t ld, int64_t n, int64_t w) {
    for (int64_t t = 0; t < n; t++)
        for (int64_t c = 0; c < w; c += 16) __builtin_prefetch(x + t * ld + c, 1, 3);
}

/* Float counts of the per-thread workspace: packed operands, block tiles and row vectors. */
static int64_t workspace_floats(const mt_attention *a, pads p, int backward) {
    int64_t operands = a->Tq * (p.dp + p.dvp) + a->Tk * (p.dp + p.dvp) + (p.dp + p.dvp) * p.tkp;
    int64_t fwd = BQ * p.bk + BQ * p.dvp + BQ * ((a->Tk + p.bk - 1) / p.bk + 2);
    int64_t bwd = 3 * BWD_BQ * BWD_BK + BWD_BK * (p.dp + p.dvp) + a->Tq * (p.dp + 1);
    return operands + (fwd > bwd ? fwd : bwd) + (gathered(a, backward) ? a->H * head_floats(a, backward) : 0);
}

/* Sum of squares of n rows of width w (a multiple of 8; ld apart): NaN or inf when any value is. */
INLINE float sum_squares(const float *x, int64_t ld, int64_t n, int64_t w) {
    v8 acc[4] = {{0}, {0}, {0}, {0}}; /* four chains, not one FMA's latency per vector */
    for (int64_t t = 0; t < n; t++) {
        const float *y = x + t * ld;
        int64_t c = 0;
        for (; c + 32 <= w; c += 32)
            for (int i = 0; i < 4; i++) acc[i] += V8(y + c + 8 * i) * V8(y + c + 8 * i);
        for (; c < w; c += 8) acc[0] += V8(y + c) * V8(y + c);
    }
    v8 all = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    float sum = 0.0f;
    for (int l = 0; l < 8; l++) sum += all[l];
    return sum;
}

/* Whether skipping what a mask hides gives PyTorch's numbers: every q, k, v finite and every score
 * finite, as |scale q . k| <= |scale| |q| |k| (Cauchy-Schwarz) bounds them. Padded copies are summed
 * with their zeros. */
INLINE int all_finite(const mt_attention *a, pads p, packed x) {
    float q = sum_squares(x.q, x.lq, a->Tq, p.dp), k = sum_squares(x.k, x.lk, a->Tk, p.dp);
    float v = sum_squares(x.v, x.lv, a->Tk, p.dvp);
    return isfinite(v) && fabsf(a->scale) * sqrtf(q) * sqrtf(k) < 1e37f; /* false for NaN, inf */
}

/* Dropout's factor for element n of the flat (B, H, Tq, Tk) weights: drop_scale when kept, else 0. */
INLINE float keep_factor(const mt_attention *a, uint64_t n) {
    return mt_keep_factor(a->drop_seed, a->drop_threshold, a->drop_scale, n);
}

/* Keys of the block [j0, j0 + nk) that the tile of query rows [i0 + r0, i0 + r0 + rows) needs: all of
 * them, or under a causal mask whose hidden keys are skipped (`trim`), those up to its last query. */
INLINE int64_t tile_keys(int trim, int64_t i0, int64_t r0, int64_t rows, int64_t j0, int64_t nk) {
    int64_t n = trim ? i0 + r0 + rows - j0 : nk;
    return n < 0 ? 0 : n > nk ? nk : n;
}

/* Keys of the block that query row r (of the block at i0) needs, as tile_keys for its micro-tile. */
INLINE int64_t row_keys(pads p, int trim, int64_t i0, int64_t nq, int64_t r, int64_t j0, int64_t nk) {
    int64_t r0 = r / p.mr * p.mr, rows = nq - r0 < p.mr ? nq - r0 : p.mr;
    return tile_keys(trim, i0, r0, rows, j0, nk);
}

/* Columns of a product over a tile's `lim` keys (scores, or dO V^T): whole vectors of 8, or in the AVX-512 build
 * whole panels of 16, so no 8-wide tail runs in 6-row tiles (K and V are packed zero-padded to 16 keys, and
 * the rows written hold whole panels; the columns past lim are overwritten or never read). */
INLINE int64_t key_columns(pads p, int64_t lim) { return p.mr == MR16 ? (lim + 15) & ~(int64_t)15 : round8(lim); }

/* Scores of queries [i0, i0+nq) against keys [j0, j0+nk) into s (rows ld apart): scale q . k (scaled as the
 * micro-kernel stores them), with -inf added where the causal or the given mask hides a key; -inf past a tile's
 * keys when trimmed. Without a mask only the hidden keys are visited (adding 0 to the others changes nothing):
 * attention forward+backward ran 0.95-0.99 of the time at head width 32. */
INLINE void scores(const mt_attention *a, pads p, packed x, const uint8_t *mask, int trim, int64_t i0, int64_t nq,
                   int64_t j0, int64_t nk, float *s, int64_t ld) {
    float scale = a->scale;
    for (int64_t r0 = 0; r0 < nq; r0 += p.mr) {
        int64_t rows = nq - r0 < p.mr ? nq - r0 : p.mr, lim = tile_keys(trim, i0, r0, rows, j0, nk);
        if (lim)
            gemm(p.mr, rows, key_columns(p, lim), a->D, x.q + (i0 + r0) * x.lq, x.lq, 1, x.kt + j0 * p.dp, 16, 16 * p.dp,
                 s + r0 * ld, ld, 0, scale);
        for (int64_t r = r0; r < r0 + rows; r++) {
            float *row = s + r * ld;
            int64_t seen = a->causal ? i0 + r + 1 - j0 : nk; /* keys of the block this query may see */
            seen = seen < 0 ? 0 : seen > lim ? lim : seen;
            int64_t done = mask ? lim : round8(lim); /* whole vectors where no mask row ends */
            if (mask) {
                const uint8_t *m = mask + (i0 + r) * a->mask_row + j0;
#pragma omp simd
                for (int64_t c = 0; c < lim; c++) row[c] -= c < seen && m[c] ? 0.0f : INFINITY;
            } else {
                for (int64_t c = seen; c < done; c++) row[c] -= INFINITY;
            }
            for (int64_t c = done; c < round8(nk); c++) row[c] = -INFINITY; /* to whole vectors of 8 */
        }
    }
}

/* Largest of x[0:n) (n a multiple of 8), skipping NaN as mt_max: in 8 lanes, so no scalar tail. */
INLINE float max8(const float *x, int64_t n) {
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    for (int64_t c = 0; c < n; c += 8)
#pragma omp simd
        for (int l = 0; l < 8; l++) m[l] = x[c + l] > m[l] ? x[c + l] : m[l];
    float best = -INFINITY;
    for (int l = 0; l < 8; l++) best = m[l] > best ? m[l] : best;
    return best;
}

/* x[c] = exp(x[c] - shift) for c < n in AVX-512's 16-float vectors (element by element: the same values at any
 * width), for the AVX-512 build, whose own loops stay 8 wide: its passes ran 0.81-0.91 of the time with it. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx2,fma,prefer-vector-width=512"), noinline))
#endif
static void exp_shifted_wide(float *x, int64_t n, float shift) {
#pragma omp simd
    for (int64_t c = 0; c < n; c++) x[c] = mt_expf_nonpositive(x[c] - shift);
}

/* x[c] = exp(x[c] - shift) for c < n: 16 wide in the AVX-512 build (mr == MR16), else in the build's own vectors. */
INLINE void exp_shifted(int mr, float *x, int64_t n, float shift) {
    if (mr == MR16) {
        exp_shifted_wide(x, n, shift);
        return;
    }
#pragma omp simd
    for (int64_t c = 0; c < n; c++) x[c] = mt_expf_nonpositive(x[c] - shift);
}

/* x[c] = exp(x[c] - shift) for c < n (a multiple of 8), returning their sum: 8 lanes at a time, as
 * a loop over a row's own keys (6, 12, ... under a causal mask) ran mostly in its scalar tail. The AVX-512
 * build (mr == MR16) takes the exponentials 16 wide first and sums them after, in the same order. */
INLINE float exp_sum8(int mr, float *x, int64_t n, float shift) {
    float acc[8] = {0};
    if (mr == MR16) {
        exp_shifted_wide(x, n, shift);
        for (int64_t c = 0; c < n; c += 8)
#pragma omp simd
            for (int l = 0; l < 8; l++) acc[l] += x[c + l];
    } else {
        for (int64_t c = 0; c < n; c += 8)
#pragma omp simd
            for (int l = 0; l < 8; l++) {
                x[c + l] = mt_expf_nonpositive(x[c + l] - shift);
                acc[l] += x[c + l];
            }
    }
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Per-thread buffers of the forward pass. */
typedef struct {
    packed x;
    float *s, *o, *m, *l, *block_max;
} fwd_buf;

/* Whether the forward's weights are written once, by finish_rows from the scores' block: all keys in
 * one block and no dropout (which changes the block after the weights are taken). */
INLINE int one_block(const mt_attention *a, pads p) { return a->Tk <= p.bk && !a->drop_threshold; }

/* Online softmax of one block: fold rows of s (their tile's keys each) into the running max m and sum
 * l, rescale the output rows o, turn s into the (dropped-out) weights relative to the new max. */
INLINE void online_softmax(const mt_attention *a, pads p, fwd_buf w, int trim, int64_t i0, int64_t flat_row0,
                           int64_t nq, int64_t nk, int64_t j0, int64_t block) {
    int64_t nblocks = (a->Tk + p.bk - 1) / p.bk;
    for (int64_t r = 0; r < nq; r++) {
        float *row = w.s + r * p.bk;
        int64_t n = row_keys(p, trim, i0, nq, r, j0, nk);
        float bm = max8(row, round8(n)), m_new = w.m[r] > bm ? w.m[r] : bm;
        float shift = m_new == -INFINITY ? 0.0f : m_new, alpha = mt_expf_nonpositive(w.m[r] - shift);
        float sum = exp_sum8(p.mr, row, round8(n), shift);
        w.l[r] = w.l[r] * alpha + sum;
        w.m[r] = m_new;
        w.block_max[r * nblocks + block] = m_new;
        if (alpha != 1.0f) {
            float *o = w.o + r * p.dvp;
#pragma omp simd
            for (int64_t c = 0; c < p.dvp; c++) o[c] *= alpha;
        }
        if (a->weights && one_block(a, p)) {
            for (int64_t c = round8(n); c < nk; c++) row[c] = 0.0f; /* past the row's keys, for finish_rows */
        } else if (a->weights) {
            float *wr = a->weights + (flat_row0 + r) * a->Tk + j0;
            memcpy(wr, row, (size_t)n * sizeof(float));
            memset(wr + n, 0, (size_t)(nk - n) * sizeof(float));
        }
        if (a->drop_threshold) {
            uint64_t n0 = (uint64_t)((flat_row0 + r) * a->Tk + j0);
            for (int64_t c = 0; c < n; c++) row[c] *= keep_factor(a, n0 + (uint64_t)c);
        }
    }
}

/* The end of a query block: out = o / l, lse = max + log l (+inf for a row with nothing to attend),
 * and the stored weights brought to the final max and divided by l (zero for the skipped blocks). */
INLINE void finish_rows(const mt_attention *a, pads p, fwd_buf w, float *out, float *lse, int64_t flat_row0,
                        int64_t nq, int64_t blocks_done) {
    int64_t nblocks = (a->Tk + p.bk - 1) / p.bk;
    for (int64_t r = 0; r < nq; r++) {
        float inv = inv_sum(w.l[r]), shift = w.m[r] == -INFINITY ? 0.0f : w.m[r];
#pragma omp simd
        for (int64_t c = 0; c < a->Dv; c++) out[r * a->out.row + c] = w.o[r * p.dvp + c] * inv;
        lse[r] = w.l[r] == 0.0f ? INFINITY : shift + logf(w.l[r]);
        if (!a->weights) continue;
        float *wr = a->weights + (flat_row0 + r) * a->Tk;
        if (one_block(a, p)) {
            const float *row = w.s + r * p.bk;
#pragma omp simd
            for (int64_t c = 0; c < a->Tk; c++) wr[c] = row[c] * inv;
            continue;
        }
        for (int64_t blk = 0; blk < nblocks; blk++) {
            int64_t j0 = blk * p.bk, nk = a->Tk - j0 < p.bk ? a->Tk - j0 : p.bk;
            float f = blk < blocks_done ? mt_expf_nonpositive(w.block_max[r * nblocks + blk] - shift) * inv : 0.0f;
#pragma omp simd
            for (int64_t c = 0; c < nk; c++) wr[j0 + c] = blk < blocks_done ? wr[j0 + c] * f : 0.0f;
        }
    }
}

/* The job of one call: the arguments, and whether a worker ran out of memory. */
typedef struct {
    const mt_attention *a;
    int failed;
} job;

/* This thread's workspace, or NULL (the job marked as failed) when memory runs out. */
static float *workspace(job *j, pads p, int backward) {
    float *buf = malloc((size_t)workspace_floats(j->a, p, backward) * sizeof(float));
    if (buf == NULL) __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
    return buf;
}

/* Head (b, h)'s operands: Q, K and V gathered (`rows`, or NULL), in place, or as padded copies, and the transposes this pass
 * needs (Kt for the scores: the forward's, or the backward's when it recomputes the weights; Vt for the backward). Returns
 * the first float of buf left free. */
INLINE float *pack_head(const mt_attention *a, pads p, float *buf, int64_t b, int64_t h, int backward,
                        const float *rows, packed *x) {
    const float *q = head_of(a->q, b, h), *k = head_of(a->k, b, h), *v = head_of(a->v, b, h);
    if (rows) {
        const float *k_at = rows + a->Tq * a->D;
        *x = (packed){rows, k_at, k_at + a->Tk * a->D, a->D, a->D, a->Dv, buf, buf};
    } else if (in_place(a)) {
        *x = (packed){q, k, v, a->q.row, a->k.row, a->v.row, buf, buf};
    } else {
        float *pq = buf, *pk = pq + a->Tq * p.dp, *pv = pk + a->Tk * p.dp;
        pack_rows(q, a->q.row, a->Tq, a->D, pq, p.dp);
        pack_rows(k, a->k.row, a->Tk, a->D, pk, p.dp);
        pack_rows(v, a->v.row, a->Tk, a->Dv, pv, p.dvp);
        *x = (packed){pq, pk, pv, p.dp, p.dp, p.dvp, pv + a->Tk * p.dvp, NULL};
    }
    int need_kt = !backward || !a->weights;
    x->vt = x->kt + (need_kt ? p.dp * p.tkp : 0);
    if (need_kt) pack_columns(x->k, x->lk, a->Tk, a->D, p.dp, x->kt, p.tkp);
    if (!backward) return x->vt;
    pack_columns(x->v, x->lv, a->Tk, a->Dv, p.dvp, x->vt, p.tkp);
    return x->vt + p.dvp * p.tkp;
}

INLINE const uint8_t *mask_of(const mt_attention *a, int64_t b, int64_t h) {
    return a->mask ? a->mask + b * a->mask_batch + h * a->mask_head : NULL;
}

/* Forward of (batch, head) pairs [p0, p1). */
INLINE void forward_heads(void *ctx, int64_t p0, int64_t p1, int mr) {
    job *j = ctx;
    const mt_attention *a = j->a;
    pads p = pads_of(a, mr);
    float *group = workspace(j, p, 0), *buf = group + (gathered(a, 0) ? a->H * head_floats(a, 0) : 0);
    if (group == NULL) return;
    int64_t first_head = 0;
    for (int64_t pair = p0; pair < p1; pair++) {
        int64_t b = pair / a->H, h = pair % a->H;
        if (buf != group && (pair == p0 || h == 0)) {
            first_head = h;
            gather_heads(a, b, h, h + p1 - pair < a->H ? h + p1 - pair : a->H, group, 0);
        }
        if (pair + 1 < p1 && mr != MR16)
            prefetch_for_write(out_head(a->out, (pair + 1) / a->H, (pair + 1) % a->H), a->out.row, a->Tq, a->Dv);
        fwd_buf w;
        w.s = pack_head(a, p, buf, b, h, 0, buf != group ? group + (h - first_head) * head_floats(a, 0) : NULL, &w.x);
        w.o = w.s + BQ * p.bk;
        w.m = w.o + BQ * p.dvp;
        w.l = w.m + BQ;
        w.block_max = w.l + BQ;
        int trim = a->causal && all_finite(a, p, w.x); /* only a causal mask skips keys */
        const uint8_t *mask = mask_of(a, b, h);
        for (int64_t i0 = 0; i0 < a->Tq; i0 += BQ) {
            int64_t nq = a->Tq - i0 < BQ ? a->Tq - i0 : BQ, flat_row0 = pair * a->Tq + i0;
            int64_t key_end = trim && i0 + nq < a->Tk ? i0 + nq : a->Tk, blocks = 0;
            for (int64_t r = 0; r < nq; r++) w.m[r] = -INFINITY, w.l[r] = 0.0f;
            memset(w.o, 0, (size_t)(nq * p.dvp) * sizeof(float));
            for (int64_t j0 = 0; j0 < key_end; j0 += p.bk, blocks++) {
                int64_t nk = a->Tk - j0 < p.bk ? a->Tk - j0 : p.bk;
                scores(a, p, w.x, mask, trim, i0, nq, j0, nk, w.s, p.bk);
                online_softmax(a, p, w, trim, i0, flat_row0, nq, nk, j0, blocks);
                for (int64_t r0 = 0; r0 < nq; r0 += p.mr) {
                    int64_t rows = nq - r0 < p.mr ? nq - r0 : p.mr, lim = tile_keys(trim, i0, r0, rows, j0, nk);
                    gemm(p.mr, rows, p.dvp, lim, w.s + r0 * p.bk, p.bk, 1, w.x.v + j0 * w.x.lv, w.x.lv, 16,
                         w.o + r0 * p.dvp, p.dvp, 1, 1.0f);
                }
            }
            finish_rows(a, p, w, out_head(a->out, b, h) + i0 * a->out.row, a->lse + flat_row0, flat_row0, nq, blocks);
        }
    }
    free(group);
}

/* Few queries (decoding: one new position against the cached ones) go one query row at a time, by dot
 * products along the key rows read in place: the blocked pass would pack all of K to use it once. The
 * weights of all Tk keys are formed (zero where hidden) and all value rows summed, so a NaN or inf value
 * poisons the row as in the blocked pass. Head widths whole vectors (rows read in place, never past their
 * end); no dropout (its mask is drawn in the blocked order). */
#define ROW_QUERIES 2

INLINE int by_rows(const mt_attention *a) { return a->Tq <= ROW_QUERIES && !a->drop_threshold && in_place(a); }

/* s[0:8) = q . k_j for the 8 keys j < 8 (rows ld apart, D a multiple of 8), the keys in lanes and one
 * multiply-add per coordinate in order, as the blocked pass's micro-kernel sums them: 8 x 8 blocks of K
 * transposed on the fly. A row computed here then has the blocked pass's bits (with all keys in one block),
 * so the last position of a sequence querying alone (self_attention's last_only) matches the full pass. */
INLINE void dots8(const float *q, const float *k, int64_t ld, int64_t D, float *s) {
    v8 acc = {0}, column[8];
    for (int64_t c = 0; c < D; c += 8) {
        transpose8(k + c, ld, (float *)column, 8);
        for (int i = 0; i < 8; i++) acc += q[c + i] * column[i];
    }
    V8(s) = acc;
}

/* The same for the n < 8 keys left, their columns gathered a float at a time (lanes past n stay zero). */
INLINE void dots_tail(const float *q, const float *k, int64_t ld, int64_t D, int64_t n, float *s) {
    v8 acc = {0};
    for (int64_t c = 0; c < D; c++) {
        v8 column = {0};
        for (int64_t j = 0; j < n; j++) column[j] = k[j * ld + c];
        acc += q[c] * column;
    }
    for (int64_t j = 0; j < n; j++) s[j] = acc[j];
}

/* o[0:Dv) = sum_j p[j] v_j over n keys (rows ld apart, Dv a multiple of 8): 32 columns at a time in
 * four register accumulators, then 8 at a time. */
INLINE void weighted_rows(const float *p, const float *v, int64_t ld, int64_t n, int64_t Dv, float *o) {
    int64_t c0 = 0;
    for (; c0 + 32 <= Dv; c0 += 32) {
        v8 acc[4] = {{0}, {0}, {0}, {0}};
        for (int64_t j = 0; j < n; j++)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) acc[u] += p[j] * V8(v + j * ld + c0 + 8 * u);
        for (int u = 0; u < 4; u++) V8(o + c0 + 8 * u) = acc[u];
    }
    for (; c0 < Dv; c0 += 8) {
        v8 acc = {0};
        for (int64_t j = 0; j < n; j++) acc += p[j] * V8(v + j * ld + c0);
        V8(o + c0) = acc;
    }
}

/* Query i of head (b, h) into its output row, lse and, if asked, weights row; s holds round8(Tk) + Dv floats. */
INLINE void query_row(const mt_attention *a, int64_t b, int64_t h, int64_t pair, int64_t i, float *s) {
    const float *q = head_of(a->q, b, h) + i * a->q.row, *k = head_of(a->k, b, h), *v = head_of(a->v, b, h);
    const uint8_t *mask = mask_of(a, b, h);
    int64_t seen = a->causal && i + 1 < a->Tk ? i + 1 : a->Tk, j = 0, n8 = round8(a->Tk);
    for (; j + 8 <= a->Tk; j += 8) dots8(q, k + j * a->k.row, a->k.row, a->D, s + j);
    if (j < a->Tk) dots_tail(q, k + j * a->k.row, a->k.row, a->D, a->Tk - j, s + j);
#pragma omp simd
    for (j = 0; j < a->Tk; j++) s[j] = a->scale * s[j] - (j < seen ? 0.0f : INFINITY);
    for (j = 0; mask && j < a->Tk; j++) s[j] -= mask[i * a->mask_row + j] ? 0.0f : INFINITY;
    for (j = a->Tk; j < n8; j++) s[j] = -INFINITY;
    float best = max8(s, n8), shift = best == -INFINITY ? 0.0f : best;
    float l = exp_sum8(MR, s, n8, shift), inv = inv_sum(l), *o = s + n8;
    weighted_rows(s, v, a->v.row, a->Tk, a->Dv, o);
    float *out = out_head(a->out, b, h) + i * a->out.row;
    for (int64_t c = 0; c < a->Dv; c += 8) V8(out + c) = V8(o + c) * inv;
    a->lse[pair * a->Tq + i] = l == 0.0f ? INFINITY : shift + logf(l);
    float *wr = a->weights ? a->weights + (pair * a->Tq + i) * a->Tk : NULL;
    for (j = 0; wr && j < a->Tk; j++) wr[j] = s[j] * inv;
}

/* Forward of (batch, head) pairs [p0, p1) one query row at a time (by_rows). */
INLINE void forward_rows(void *ctx, int64_t p0, int64_t p1) {
    job *j = ctx;
    const mt_attention *a = j->a;
    float *s = malloc((size_t)(round8(a->Tk) + a->Dv) * sizeof(float));
    if (s == NULL) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t pair = p0; pair < p1; pair++)
        for (int64_t i = 0; i < a->Tq; i++) query_row(a, pair / a->H, pair % a->H, pair, i, s);
    free(s);
}

/* Multiply-adds of one (batch, head) pair, for the threading threshold. */
static int64_t pair_cost(const mt_attention *a) { return a->Tq * a->Tk * (a->D + a->Dv) + 1; }


/* Per-thread buffers of the backward pass: g (dO) in place or padded, rows lg apart. */
typedef struct {
    packed x;
    const float *g;
    int64_t lg;
    float *dq, *dot, *pw, *pd, *ds, *dk, *dv;
} bwd_buf;

/* Weights of queries [i0, i0+nq) on keys [j0, j0+nk), rows *lp apart: the saved ones read in place,
 * or recomputed from the log-sum-exp into w.pw; w.pd gets them after dropout (rows BWD_BK apart). */
INLINE const float *block_weights(const mt_attention *a, pads p, bwd_buf w, const uint8_t *mask, int trim,
                                  const float *lse, int64_t flat_row0, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                                  int64_t *lp) {
    const float *pw = w.pw;
    *lp = BWD_BK;
    if (a->weights) {
        pw = a->weights + flat_row0 * a->Tk + j0;
        *lp = a->Tk;
    } else {
        scores(a, p, w.x, mask, trim, i0, nq, j0, nk, w.pw, BWD_BK);
        for (int64_t r = 0; r < nq; r++) exp_shifted(p.mr, w.pw + r * BWD_BK, nk, lse[r]);
    }
    for (int64_t r = 0; r < nq && a->drop_threshold; r++) {
        uint64_t n0 = (uint64_t)((flat_row0 + r) * a->Tk + j0);
        for (int64_t c = 0; c < nk; c++) w.pd[r * BWD_BK + c] = pw[r * *lp + c] * keep_factor(a, n0 + (uint64_t)c);
    }
    return pw;
}

/* dS = P * (dP * dropout - rowsum(dO * O)) for one block (P rows lp apart), dP = dO V^T being in ds on entry up to each
 * row's tile keys (zero past them). */
INLINE void score_grads(const mt_attention *a, pads p, bwd_buf w, const float *weights, int64_t lp, int trim,
                        int64_t flat_row0, int64_t i0, int64_t nq, int64_t j0, int64_t nk) {
    for (int64_t r = 0; r < nq; r++) {
        float *ds = w.ds + r * BWD_BK, d = w.dot[i0 + r];
        const float *pw = weights + r * lp;
        int64_t n = row_keys(p, trim, i0, nq, r, j0, nk), n8 = round8(n) <= nk ? round8(n) : n;
        if (a->drop_threshold) {
            uint64_t n0 = (uint64_t)((flat_row0 + r) * a->Tk + j0);
            for (int64_t c = 0; c < n; c++) ds[c] *= keep_factor(a, n0 + (uint64_t)c);
        }
#pragma omp simd
        for (int64_t c = 0; c < n8; c++) ds[c] = pw[c] * (ds[c] - d); /* past n: pw 0, whole vectors */
        for (int64_t c = n8; c < nk; c++) ds[c] = 0.0f;
    }
}

/* C (rows x N) += A^T B over the block's queries, for each tile of mr keys of [j0, j0 + nk) only from
 * its first query that may see it (A = P or dS, nq x nk in rows lda apart; B rows ldb apart). */
INLINE void key_tiles(pads p, int trim, int64_t i0, int64_t nq, int64_t j0, int64_t nk, int64_t N, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    for (int64_t k0 = 0; k0 < nk; k0 += p.mr) {
        int64_t rows = nk - k0 < p.mr ? nk - k0 : p.mr, first = trim ? j0 + k0 - i0 : 0;
        first = first < 0 ? 0 : first > nq ? nq : first;
        gemm(p.mr, rows, N, nq - first, A + first * lda + k0, 1, lda, B + first * ldb, ldb, 16, C + k0 * ldc, ldc, 1,
             1.0f);
    }
}

/* Backward of one head, key block by key block: dV_j = sum_i P'^T dO_i, dK_j = sum_i dS^T Q_i * scale,
 * dQ_i += dS K_j (scaled at the end). */
INLINE void head_backward(const mt_attention *a, pads p, bwd_buf w, int64_t b, int64_t h, int64_t pair, int trim) {
    const uint8_t *mask = mask_of(a, b, h);
    const float *lse = a->lse + pair * a->Tq;
    for (int64_t j0 = 0; j0 < a->Tk; j0 += BWD_BK) {
        int64_t nk = a->Tk - j0 < BWD_BK ? a->Tk - j0 : BWD_BK;
        memset(w.dk, 0, (size_t)(nk * p.dp) * sizeof(float));
        memset(w.dv, 0, (size_t)(nk * p.dvp) * sizeof(float));
        int64_t first = trim ? j0 / BWD_BQ * BWD_BQ : 0; /* query blocks before see none of these keys */
        for (int64_t i0 = first; i0 < a->Tq; i0 += BWD_BQ) {
            int64_t nq = a->Tq - i0 < BWD_BQ ? a->Tq - i0 : BWD_BQ, flat_row0 = pair * a->Tq + i0;
            int64_t lp, lpd = a->drop_threshold ? BWD_BK : 0;
            const float *pw = block_weights(a, p, w, mask, trim, lse + i0, flat_row0, i0, nq, j0, nk, &lp);
            key_tiles(p, trim, i0, nq, j0, nk, p.dvp, lpd ? w.pd : pw, lpd ? lpd : lp, w.g + i0 * w.lg, w.lg, w.dv, p.dvp);
            for (int64_t r0 = 0; r0 < nq; r0 += p.mr) {
                int64_t rows = nq - r0 < p.mr ? nq - r0 : p.mr, lim = tile_keys(trim, i0, r0, rows, j0, nk);
                if (lim)
                    gemm(p.mr, rows, key_columns(p, lim), a->Dv, w.g + (i0 + r0) * w.lg, w.lg, 1, w.x.vt + j0 * p.dvp, 16,
                         16 * p.dvp, w.ds + r0 * BWD_BK, BWD_BK, 0, 1.0f);
            }
            score_grads(a, p, w, pw, lp, trim, flat_row0, i0, nq, j0, nk);
            key_tiles(p, trim, i0, nq, j0, nk, p.dp, w.ds, BWD_BK, w.x.q + i0 * w.x.lq, w.x.lq, w.dk, p.dp);
            for (int64_t r0 = 0; r0 < nq; r0 += p.mr) {
                int64_t rows = nq - r0 < p.mr ? nq - r0 : p.mr, lim = tile_keys(trim, i0, r0, rows, j0, nk);
                gemm(p.mr, rows, p.dp, lim, w.ds + r0 * BWD_BK, BWD_BK, 1, w.x.k + j0 * w.x.lk, w.x.lk, 16,
                     w.dq + (i0 + r0) * p.dp, p.dp, 1, 1.0f);
            }
        }
        float *dk = out_head(a->dk, b, h) + j0 * a->dk.row, *dv = out_head(a->dv, b, h) + j0 * a->dv.row;
        for (int64_t r = 0; r < nk; r++) {
#pragma omp simd
            for (int64_t c = 0; c < a->D; c++) dk[r * a->dk.row + c] = w.dk[r * p.dp + c] * a->scale;
            copy_row(dv + r * a->dv.row, w.dv + r * p.dvp, a->Dv);
        }
    }
    float *dq = out_head(a->dq, b, h);
    for (int64_t r = 0; r < a->Tq; r++)
#pragma omp simd
        for (int64_t c = 0; c < a->D; c++) dq[r * a->dq.row + c] = w.dq[r * p.dp + c] * a->scale;
}

/* Backward of (batch, head) pairs [p0, p1): each writes only its own head's gradients. */
INLINE void backward_heads(void *ctx, int64_t p0, int64_t p1, int mr) {
    job *j = ctx;
    const mt_attention *a = j->a;
    pads p = pads_of(a, mr);
    float *group = workspace(j, p, 1), *buf = group + (gathered(a, 1) ? a->H * head_floats(a, 1) : 0);
    if (group == NULL) return;
    int64_t first_head = 0, hf = head_floats(a, 1);
    for (int64_t pair = p0; pair < p1; pair++) {
        int64_t b = pair / a->H, h = pair % a->H;
        if (buf != group && (pair == p0 || h == 0)) {
            first_head = h;
            gather_heads(a, b, h, h + p1 - pair < a->H ? h + p1 - pair : a->H, group, 1);
        }
        const float *rows = buf != group ? group + (h - first_head) * hf : NULL;
        if (pair + 1 < p1 && mr != MR16) {
            int64_t next_b = (pair + 1) / a->H, next_h = (pair + 1) % a->H;
            prefetch_for_write(out_head(a->dq, next_b, next_h), a->dq.row, a->Tq, a->D);
            prefetch_for_write(out_head(a->dk, next_b, next_h), a->dk.row, a->Tk, a->D);
            prefetch_for_write(out_head(a->dv, next_b, next_h), a->dv.row, a->Tk, a->Dv);
        }
        bwd_buf w;
        float *free_at = pack_head(a, p, buf, b, h, 1, rows, &w.x);
        w.g = rows ? rows + a->Tq * a->D + a->Tk * (a->D + a->Dv) : head_of(a->g, b, h);
        w.lg = rows ? a->Dv : a->g.row;
        if (!in_place(a)) {
            pack_rows(w.g, a->g.row, a->Tq, a->Dv, free_at, p.dvp);
            w.g = free_at;
            w.lg = p.dvp;
            free_at += a->Tq * p.dvp;
        }
        w.dq = free_at;
        w.dot = w.dq + a->Tq * p.dp;
        w.pw = w.dot + a->Tq;
        w.pd = a->drop_threshold ? w.pw + BWD_BQ * BWD_BK : w.pw;
        w.ds = w.pw + 2 * BWD_BQ * BWD_BK;
        w.dk = w.ds + BWD_BQ * BWD_BK;
        w.dv = w.dk + BWD_BK * p.dp;
        memset(w.dq, 0, (size_t)(a->Tq * p.dp) * sizeof(float));
        const float *out = head_of(a->out, b, h);
        for (int64_t r = 0; r < a->Tq && rows; r++) w.dot[r] = rows[hf - a->Tq + r];
        for (int64_t r = 0; r < a->Tq && !rows; r++) {
            float d = 0.0f;
            const float *gr = w.g + r * w.lg, *orow = out + r * a->out.row;
#pragma omp simd reduction(+ : d)
            for (int64_t c = 0; c < a->Dv; c++) d += gr[c] * orow[c];
            w.dot[r] = d;
        }
        head_backward(a, p, w, b, h, pair, a->causal && all_finite(a, p, w.x));
    }
    free(group);
}

/* Both passes compiled three times: for AVX-512, AVX2+FMA, and the baseline that other CPUs run; as for
 * sgemm, MICROTENSOR_ISA=avx2|generic forces the lower ones, so the tests reach all three. */
#if defined(__x86_64__) && defined(__GNUC__)
#define AVX2_FMA __attribute__((target("avx2,fma")))
/* The loops outside micro16 vectorize 8 wide, as AVX2's: their sums run in the same order, so both builds give
 * the same bits (16 wide, dq and dk differed, and the seed run ended at 99.9% instead of 100%). */
#define AVX512 __attribute__((target("avx512f,avx2,fma,prefer-vector-width=256")))
static int use_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && strcmp(mt_sgemm_isa(), "generic");
}
static int use_avx512(void) { return !strcmp(mt_sgemm_isa(), "avx512"); }
#else
#define AVX2_FMA
#define AVX512
static int use_avx2(void) { return 0; }
static int use_avx512(void) { return 0; }
#endif

static AVX512 void forward_avx512(void *ctx, int64_t p0, int64_t p1) { forward_heads(ctx, p0, p1, MR16); }
static AVX2_FMA void forward_avx2(void *ctx, int64_t p0, int64_t p1) { forward_heads(ctx, p0, p1, MR); }
static void forward_generic(void *ctx, int64_t p0, int64_t p1) { forward_heads(ctx, p0, p1, 3); }
static AVX2_FMA void rows_avx2(void *ctx, int64_t p0, int64_t p1) { forward_rows(ctx, p0, p1); }
static void rows_generic(void *ctx, int64_t p0, int64_t p1) { forward_rows(ctx, p0, p1); }
static AVX512 void backward_avx512(void *ctx, int64_t p0, int64_t p1) { backward_heads(ctx, p0, p1, MR16); }
static AVX2_FMA void backward_avx2(void *ctx, int64_t p0, int64_t p1) { backward_heads(ctx, p0, p1, MR); }
static void backward_generic(void *ctx, int64_t p0, int64_t p1) { backward_heads(ctx, p0, p1, 3); }

int mt_attention_forward(const mt_attention *a) {
    job j = {a, 0};
    int avx2 = use_avx2();
    mt_rows_fn fn = by_rows(a)      ? (avx2 ? rows_avx2 : rows_generic)
                    : use_avx512() ? forward_avx512
                    : avx2         ? forward_avx2
                                   : forward_generic;
    mt_parallel_rows(a->B * a->H, pair_cost(a), fn, &j);
    return j.failed ? -1 : 0;
}

int mt_attention_backward(const mt_attention *a) {
    job j = {a, 0};
    mt_rows_fn fn = use_avx512() ? backward_avx512 : use_avx2() ? backward_avx2 : backward_generic;
    mt_parallel_rows(a->B * a->H, 2 * pair_cost(a), fn, &j);
    return j.failed ? -1 : 0;
}
