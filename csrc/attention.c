/* Scaled dot-product attention over (batch*heads, T, head_dim), llm.c style: the products
 * are strided-batched sgemms, the masked softmax runs a block of rows at a time with one
 * vectorised exponential sweep. The weights are kept for backward. As in PyTorch, a mask adds
 * -inf to the scores it drops (a NaN or +inf score stays NaN), and a query row with nothing
 * to attend (every score -inf) gets zero weights, like the reference. */
#include <math.h>

#include "internal.h"
#include "microtensor.h"

typedef struct {
    float *w;
    const uint8_t *mask;
    int64_t Tq, Tk;
    int causal;
} attn_softmax_job;

/* Rows [r0, r1) of the (BH*Tq, Tk) scores: -inf added to masked entries, then softmax in place. */
static MT_CLONES void attention_softmax_rows(void *ctx, int64_t r0, int64_t r1) {
    const attn_softmax_job *s = ctx;
    int64_t Tk = s->Tk, step = mt_block_rows(Tk);
    if (Tk <= MT_SHORT_COLS) {
        for (int64_t b0 = r0; b0 < r1; b0 += MT_SHORT_ROWS) {
            int64_t n = r1 - b0 < MT_SHORT_ROWS ? r1 - b0 : MT_SHORT_ROWS, keep[MT_SHORT_ROWS];
            for (int64_t r = 0; r < MT_SHORT_ROWS; r++)
                keep[r] = mt_kept_columns(b0 + r, Tk, s->causal ? s->Tq : 0);
            float *w = s->w + b0 * Tk;
            mt_softmax_short(w, w, n, Tk, keep, s->mask ? s->mask + b0 * Tk : NULL, 1.0f, 1);
        }
        return;
    }
    for (int64_t b0 = r0; b0 < r1; b0 += step) {
        int64_t b1 = b0 + step < r1 ? b0 + step : r1;
        for (int64_t r = b0; r < b1; r++) {
            float *w = s->w + r * Tk;
            const uint8_t *mask = s->mask ? s->mask + r * Tk : NULL;
            int64_t lim = mt_kept_columns(r, Tk, s->causal ? s->Tq : 0);
            for (int64_t j = lim; j < Tk; j++) w[j] -= INFINITY;
            if (mask)
                for (int64_t j = 0; j < lim; j++) w[j] -= mask[j] ? 0.0f : INFINITY;
            float m = mt_max(w, Tk);
            m = m == -INFINITY ? 0.0f : m;
#pragma omp simd
            for (int64_t j = 0; j < Tk; j++) w[j] -= m;
        }
        mt_exp_inplace(s->w + b0 * Tk, (b1 - b0) * Tk);
        for (int64_t r = b0; r < b1; r++) {
            float *w = s->w + r * Tk;
            float inv = mt_inv_sum(mt_sum(w, Tk));
#pragma omp simd
            for (int64_t j = 0; j < Tk; j++) w[j] *= inv;
        }
    }
}

void mt_attention_forward(const float *q, const float *k, const float *v, const uint8_t *mask, int causal,
                          float scale, float *out, float *weights, int64_t BH, int64_t Tq, int64_t Tk,
                          int64_t D, int64_t Dv) {
    mt_sgemm_strided_batched(0, 1, Tq, Tk, D, scale, q, D, Tq * D, k, D, Tk * D, 0.0f, weights, Tk, Tq * Tk,
                             BH);
    attn_softmax_job s = {weights, mask, Tq, Tk, causal};
    mt_parallel_rows(BH * Tq, 8 * Tk, attention_softmax_rows, &s);
    mt_sgemm_strided_batched(0, 0, Tq, Dv, Tk, 1.0f, weights, Tk, Tq * Tk, v, Dv, Tk * Dv, 0.0f, out, Dv,
                             Tq * Dv, BH);
}

typedef struct {
    const float *w;
    float *ds;
    int64_t Tk;
    float scale;
} attn_grad_job;

/* ds = w * (ds - sum(ds * w)) * scale, row by row (ds holds g v^T on entry). */
static MT_CLONES void attention_score_grad_rows(void *ctx, int64_t r0, int64_t r1) {
    const attn_grad_job *s = ctx;
    int64_t n = s->Tk;
    for (int64_t r = r0; r < r1; r++) {
        const float *w = s->w + r * n;
        float *ds = s->ds + r * n;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < n; j++) dot += ds[j] * w[j];
#pragma omp simd
        for (int64_t j = 0; j < n; j++) ds[j] = w[j] * (ds[j] - dot) * s->scale;
    }
}

void mt_attention_backward(const float *g, const float *q, const float *k, const float *v,
                           const float *weights, float scale, float *dq, float *dk, float *dv, float *scratch,
                           int64_t BH, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv) {
    int64_t sq = Tq * D, sk = Tk * D, sw = Tq * Tk, sg = Tq * Dv, sv = Tk * Dv;
    mt_sgemm_strided_batched(1, 0, Tk, Dv, Tq, 1.0f, weights, Tk, sw, g, Dv, sg, 0.0f, dv, Dv, sv, BH);
    mt_sgemm_strided_batched(0, 1, Tq, Tk, Dv, 1.0f, g, Dv, sg, v, Dv, sv, 0.0f, scratch, Tk, sw, BH);
    attn_grad_job s = {weights, scratch, Tk, scale};
    mt_parallel_rows(BH * Tq, 3 * Tk, attention_score_grad_rows, &s);
    mt_sgemm_strided_batched(0, 0, Tq, D, Tk, 1.0f, scratch, Tk, sw, k, D, sk, 0.0f, dq, D, sq, BH);
    mt_sgemm_strided_batched(1, 0, Tk, D, Tq, 1.0f, scratch, Tk, sw, q, D, sq, 0.0f, dk, D, sk, BH);
}
