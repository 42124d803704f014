/* Multi-head self-attention on a packed projection qkv (B, T, 3*D) = [q | k | v], llm.c style:
 * heads are read and written by stride, so no transpose surrounds the kernel. Each (batch, head)
 * is gathered into small contiguous T x hd tiles; every product runs along the head dimension in
 * 16-float vectors with the accumulator in a register (hd = 16 is one AVX-512 vector). */
#include <stdlib.h>

#include "internal.h"
#include "microtensor.h"

#define INLINE static inline __attribute__((always_inline))

typedef struct {
    int64_t B, T, H, hd, D;
} dims;

/* Workspace for one (batch, head): Q, K, V, G tiles (T x hd) and the T x T score gradient. */
typedef struct {
    float *q, *k, *v, *g, *ds;
} tiles;

static tiles make_tiles(float *buf, int64_t T, int64_t hd) {
    tiles t = {buf, buf + T * hd, buf + 2 * T * hd, buf + 3 * T * hd, buf + 4 * T * hd};
    return t;
}

static int64_t tiles_floats(int64_t T, int64_t hd) { return 4 * T * hd + T * T; }

/* 16 floats as one value (one AVX-512 register, or four SSE ones on the baseline clone); loads and
 * stores through it need no alignment. */
typedef float v16 __attribute__((vector_size(64), aligned(4)));
#define V16(p) (*(const v16 *)(p))

INLINE float dot(const float *restrict a, const float *restrict b, int64_t n) {
    v16 acc = {0};
    int64_t d = 0;
    for (; d + 16 <= n; d += 16) acc += V16(a + d) * V16(b + d);
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; d < n; d++) s += a[d] * b[d];
    return s;
}

/* out[d] = sum_j coef[j * cstride] * rows[j * hd + d] for d < hd: a weighted sum of T rows. */
INLINE void weighted_rows(const float *coef, int64_t cstride, const float *restrict rows, int64_t T, int64_t hd,
                          float *restrict out) {
    int64_t d = 0;
    for (; d + 16 <= hd; d += 16) {
        v16 acc = {0};
        for (int64_t j = 0; j < T; j++) acc += coef[j * cstride] * V16(rows + j * hd + d);
        *(v16 *)(out + d) = acc;
    }
    for (; d < hd; d++) {
        float acc = 0.0f;
        for (int64_t j = 0; j < T; j++) acc += coef[j * cstride] * rows[j * hd + d];
        out[d] = acc;
    }
}

/* Copy rows of width hd, `stride` apart, into a contiguous T x hd tile. */
INLINE void gather(const float *src, int64_t stride, int64_t T, int64_t hd, float *restrict dst) {
    for (int64_t i = 0; i < T; i++) memcpy(dst + i * hd, src + i * stride, (size_t)hd * sizeof(float));
}

/* The Q, K and V tiles of head h of batch b. */
INLINE void gather_head(const float *qkv, dims s, int64_t b, int64_t h, tiles t) {
    const float *head = qkv + b * s.T * 3 * s.D + h * s.hd;
    gather(head, 3 * s.D, s.T, s.hd, t.q);
    gather(head + s.D, 3 * s.D, s.T, s.hd, t.k);
    gather(head + 2 * s.D, 3 * s.D, s.T, s.hd, t.v);
}

/* Whether every score scale * q_i . k_j of a head is finite (|q . k| <= hd max|q| max|k|), so
 * that a masked score, which PyTorch computes and adds -inf to, is -inf without computing it. */
INLINE int scores_finite(tiles t, int64_t T, int64_t hd, float scale) {
    float qmax = 0.0f, kmax = 0.0f, probe = 0.0f; /* probe: NaN when any value is NaN or inf */
#pragma omp simd reduction(max : qmax, kmax) reduction(+ : probe)
    for (int64_t i = 0; i < T * hd; i++) {
        float q = t.q[i] < 0 ? -t.q[i] : t.q[i], k = t.k[i] < 0 ? -t.k[i] : t.k[i];
        qmax = q > qmax ? q : qmax;
        kmax = k > kmax ? k : kmax;
        probe += t.q[i] * 0.0f + t.k[i] * 0.0f;
    }
    return probe == 0.0f && qmax * kmax * (float)hd * (scale < 0 ? -scale : scale) < 1e37f;
}

/* Row i of the weights: softmax of scale * q_i . k_j with -inf added to the masked scores (only
 * computed when `finite` is false), and all zeros for a row whose scores are all -inf. */
INLINE void weights_row(tiles t, const uint8_t *mask_row, int causal, float scale, int finite, int64_t i,
                        int64_t T, int64_t hd, float *restrict w) {
    int64_t limit = causal ? i + 1 : T;
    for (int64_t j = 0; j < T; j++) {
        int allowed = j < limit && (mask_row == NULL || mask_row[j]);
        w[j] = allowed || !finite ? scale * dot(t.q + i * hd, t.k + j * hd, hd) - (allowed ? 0.0f : __builtin_inff())
                                  : -__builtin_inff();
    }
    float max = mt_max(w, T);
    max = max == -__builtin_inff() ? 0.0f : max;
#pragma omp simd
    for (int64_t j = 0; j < T; j++) w[j] = mt_expf(w[j] - max);
    float inv = mt_inv_sum(mt_sum(w, T));
#pragma omp simd
    for (int64_t j = 0; j < T; j++) w[j] *= inv;
}

/* What one call shares with its worker threads: the arguments, and whether any worker ran out of memory. */
typedef struct {
    const float *qkv, *g, *weights_in;
    const uint8_t *mask;
    float *out, *weights, *dqkv;
    int causal;
    float scale;
    dims s;
    int failed;
} job;

/* This thread's tiles, or NULL (the job marked as failed) when memory runs out. */
static float *thread_tiles(job *j, tiles *t) {
    float *buf = malloc((size_t)tiles_floats(j->s.T, j->s.hd) * sizeof(float));
    if (buf == NULL)
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
    else
        *t = make_tiles(buf, j->s.T, j->s.hd);
    return buf;
}

/* Forward of the (batch, head) pairs p0..p1-1, with this thread's own tiles. */
static MT_CLONES void forward_heads(void *ctx, int64_t p0, int64_t p1) {
    job *j = ctx;
    dims s = j->s;
    int64_t T = s.T, hd = s.hd;
    tiles t;
    float *buf = thread_tiles(j, &t);
    if (buf == NULL) return;
    for (int64_t p = p0; p < p1; p++) {
        int64_t b = p / s.H, h = p % s.H;
        gather_head(j->qkv, s, b, h, t);
        float *w = j->weights + p * T * T;
        const uint8_t *m = j->mask ? j->mask + p * T * T : NULL;
        int finite = scores_finite(t, T, hd, j->scale);
        for (int64_t i = 0; i < T; i++) {
            weights_row(t, m ? m + i * T : NULL, j->causal, j->scale, finite, i, T, hd, w + i * T);
            weighted_rows(w + i * T, 1, t.v, T, hd, j->out + (b * T + i) * s.D + h * hd);
        }
    }
    free(buf);
}

/* Multiply-adds of one (batch, head) pair, for the threading threshold. */
static int64_t head_cost(dims s) { return 4 * s.T * s.T * s.hd + 1; }

int mt_self_attention_forward(const float *qkv, const uint8_t *mask, int causal, float scale, float *out,
                              float *weights, int64_t B, int64_t T, int64_t H, int64_t hd) {
    job j = {.qkv = qkv, .mask = mask, .out = out, .weights = weights, .causal = causal, .scale = scale,
             .s = {B, T, H, hd, H * hd}};
    mt_parallel_rows(B * H, head_cost(j.s), forward_heads, &j);
    return j.failed ? -1 : 0;
}

/* Backward of one head: dW = G V^T, dS = W * (dW - rowsum(W * dW)) * scale, then
 * dV = W^T G, dK = dS^T Q, dQ = dS K into the head's columns of dqkv. */
INLINE void head_backward(const float *restrict w, float scale, tiles t, dims s, float *dq_base) {
    int64_t T = s.T, hd = s.hd, row = 3 * s.D;
    for (int64_t i = 0; i < T; i++) {
        float *dsi = t.ds + i * T;
        float wdw = 0.0f;
        for (int64_t j = 0; j < T; j++) {
            dsi[j] = dot(t.g + i * hd, t.v + j * hd, hd);
            wdw += w[i * T + j] * dsi[j];
        }
        for (int64_t j = 0; j < T; j++) dsi[j] = w[i * T + j] * (dsi[j] - wdw) * scale;
    }
    for (int64_t j = 0; j < T; j++) {
        float *dq = dq_base + j * row;
        weighted_rows(t.ds + j * T, 1, t.k, T, hd, dq);
        weighted_rows(t.ds + j, T, t.q, T, hd, dq + s.D);
        weighted_rows(w + j, T, t.g, T, hd, dq + 2 * s.D);
    }
}

/* Backward of the (batch, head) pairs p0..p1-1: each writes only its own head's columns of dqkv. */
static MT_CLONES void backward_heads(void *ctx, int64_t p0, int64_t p1) {
    job *j = ctx;
    dims s = j->s;
    int64_t T = s.T, hd = s.hd;
    tiles t;
    float *buf = thread_tiles(j, &t);
    if (buf == NULL) return;
    for (int64_t p = p0; p < p1; p++) {
        int64_t b = p / s.H, h = p % s.H;
        gather_head(j->qkv, s, b, h, t);
        gather(j->g + b * T * s.D + h * hd, s.D, T, hd, t.g);
        head_backward(j->weights_in + p * T * T, j->scale, t, s, j->dqkv + b * T * 3 * s.D + h * hd);
    }
    free(buf);
}

int mt_self_attention_backward(const float *g, const float *qkv, const float *weights, float scale, float *dqkv,
                               int64_t B, int64_t T, int64_t H, int64_t hd) {
    job j = {.qkv = qkv, .g = g, .weights_in = weights, .dqkv = dqkv, .scale = scale,
             .s = {B, T, H, hd, H * hd}};
    mt_parallel_rows(B * H, head_cost(j.s), backward_heads, &j);
    return j.failed ? -1 : 0;
}
