/* Fused scaled-dot-product attention over (batch*heads, T, head_dim), one head at a time:
 * scores, mask, softmax and the weighted sum of values without leaving the cache. The
 * weights are kept for backward. A query row with nothing to attend gets zero weights
 * and a zero output (no NaN), like the numpy reference. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "microtensor.h"

typedef struct {
    const float *q, *k, *v, *g, *weights;
    const uint8_t *mask;
    float *out, *w_out, *dq, *dk, *dv;
    int64_t Tq, Tk, D;
    float scale;
    int causal;
} attn_job;

static inline float dot(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

/* w[j] = softmax over allowed j of scale * q . k_j; returns nothing to attend as all-zero w. */
static inline void attention_weights_row(const attn_job *s, int64_t h, int64_t i, float *w) {
    int64_t Tk = s->Tk, D = s->D;
    const float *q = s->q + (h * s->Tq + i) * D, *k = s->k + h * Tk * D;
    const uint8_t *mask = s->mask ? s->mask + (h * s->Tq + i) * Tk : NULL;
    int64_t lim = s->causal ? i + (Tk - s->Tq) + 1 : Tk;
    lim = lim < 0 ? 0 : lim > Tk ? Tk : lim;
    float m = -INFINITY;
    for (int64_t j = 0; j < Tk; j++) {
        int ok = j < lim && (!mask || mask[j]);
        w[j] = ok ? s->scale * dot(q, k + j * D, D) : -INFINITY;
        m = w[j] > m ? w[j] : m;
    }
    if (m == -INFINITY) m = 0.0f;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < Tk; j++) {
        float e = w[j] == -INFINITY ? 0.0f : mt_expf(w[j] - m);
        w[j] = e;
        sum += e;
    }
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma omp simd
    for (int64_t j = 0; j < Tk; j++) w[j] *= inv;
}

static MT_CLONES void attention_forward_heads(void *ctx, int64_t h0, int64_t h1) {
    const attn_job *s = ctx;
    int64_t Tq = s->Tq, Tk = s->Tk, D = s->D;
    for (int64_t h = h0; h < h1; h++)
        for (int64_t i = 0; i < Tq; i++) {
            float *w = s->w_out + (h * Tq + i) * Tk, *o = s->out + (h * Tq + i) * D;
            const float *v = s->v + h * Tk * D;
            attention_weights_row(s, h, i, w);
            for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
            for (int64_t j = 0; j < Tk; j++) {
                float wj = w[j];
#pragma omp simd
                for (int64_t d = 0; d < D; d++) o[d] += wj * v[j * D + d];
            }
        }
}

void mt_attention_forward(const float *q, const float *k, const float *v, const uint8_t *mask, int causal,
                          float scale, float *out, float *weights, int64_t BH, int64_t Tq, int64_t Tk,
                          int64_t D) {
    attn_job s = {q, k, v, NULL, NULL, mask, out, weights, NULL, NULL, NULL, Tq, Tk, D, scale, causal};
    mt_parallel_rows(BH, 2 * Tq * Tk * D + 8 * Tq * Tk, attention_forward_heads, &s);
}

/* One head: dv = W^T g, dS = W * (g v^T - rowsum(W * g v^T)) * scale, dq = dS k, dk = dS^T q. */
static MT_CLONES void attention_backward_head(const attn_job *s, int64_t h, float *ds) {
    int64_t Tq = s->Tq, Tk = s->Tk, D = s->D;
    const float *q = s->q + h * Tq * D, *k = s->k + h * Tk * D, *v = s->v + h * Tk * D;
    const float *g = s->g + h * Tq * D, *W = s->weights + h * Tq * Tk;
    float *dq = s->dq + h * Tq * D, *dk = s->dk + h * Tk * D, *dv = s->dv + h * Tk * D;
    for (int64_t j = 0; j < Tk * D; j++) dk[j] = dv[j] = 0.0f;
    for (int64_t i = 0; i < Tq; i++) {
        const float *w = W + i * Tk, *gi = g + i * D, *qi = q + i * D;
        float total = 0.0f;
        for (int64_t j = 0; j < Tk; j++) {
            ds[j] = w[j] != 0.0f ? dot(gi, v + j * D, D) : 0.0f;
            total += ds[j] * w[j];
        }
        float *dqi = dq + i * D;
        for (int64_t d = 0; d < D; d++) dqi[d] = 0.0f;
        for (int64_t j = 0; j < Tk; j++) {
            float wj = w[j];
            if (wj == 0.0f) continue;
            float dsj = wj * (ds[j] - total) * s->scale;
            const float *kj = k + j * D;
            float *dkj = dk + j * D, *dvj = dv + j * D;
#pragma omp simd
            for (int64_t d = 0; d < D; d++) {
                dqi[d] += dsj * kj[d];
                dkj[d] += dsj * qi[d];
                dvj[d] += wj * gi[d];
            }
        }
    }
}

static void attention_backward_heads(void *ctx, int64_t h0, int64_t h1) {
    const attn_job *s = ctx;
    float stack[256];
    float *ds = s->Tk <= 256 ? stack : malloc(sizeof(float) * (size_t)s->Tk);
    if (!ds) abort(); /* out of memory for one row of scores: nothing sensible to return */
    for (int64_t h = h0; h < h1; h++) attention_backward_head(s, h, ds);
    if (ds != stack) free(ds);
}

void mt_attention_backward(const float *g, const float *q, const float *k, const float *v,
                           const float *weights, float scale, float *dq, float *dk, float *dv, int64_t BH,
                           int64_t Tq, int64_t Tk, int64_t D) {
    attn_job s = {q, k, v, g, weights, NULL, NULL, NULL, dq, dk, dv, Tq, Tk, D, scale, 0};
    mt_parallel_rows(BH, 4 * Tq * Tk * D, attention_backward_heads, &s);
}
