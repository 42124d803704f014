/* LayerNorm over the last axis: forward caches mean and rstd per row (llm.c style) so
 * backward needs no second pass over the statistics. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "microtensor.h"

typedef struct {
    int64_t R, C;
    const float *x, *weight; /* forward: the input; backward: the input the forward normalised */
    /* forward: x (or x + residual, written to sum_out, when residual is set) is normalised into y; each
     * row's mean and 1/std go to mean_out and rstd_out */
    const float *residual, *bias;
    float *sum_out, *y, *mean_out, *rstd_out;
    float eps;
    /* backward: dx, dweight and dbias from g and the forward's mean and rstd; with threads, task t sums
     * its rows' dweight and dbias into partials[t * 2C ...] and [t * 2C + C ...], rows per task: chunk */
    const float *g, *mean, *rstd;
    float *dx, *dweight, *dbias, *partials;
    int64_t chunk;
} ln_job;

/* 1/sqrt(var + eps) of a finite row whose squares overflow float (|x - mean| above ~1e19): in double. */
static float ln_rstd_double(const float *x, int64_t C, float hi, float eps) {
    double acc = 0.0;
    for (int64_t j = 0; j < C; j++) acc += ((double)x[j] - hi) * ((double)x[j] - hi);
    return (float)(1.0 / sqrt(acc / (double)C + eps));
}

/* Two passes, accurate for long rows far from zero: the mean of x - x[0] (small values, whatever
 * the offset), kept as hi + lo floats so that x - hi is exact and x - mean = (x - hi) - lo to about
 * an ulp; then the variance, mean((x - hi)^2) - lo^2. A NaN or inf in a row makes its output NaN. */
static MT_CLONES void ln_forward_rows(void *ctx, int64_t r0, int64_t r1) {
    const ln_job *s = ctx;
    int64_t C = s->C;
    const float *w = s->weight, *b = s->bias;
    float inv_c = 1.0f / (float)C;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = s->x + r * C;
        float *y = s->y + r * C;
        if (s->residual) {
            const float *a = s->residual + r * C;
            float *sum = s->sum_out + r * C;
#pragma omp simd
            for (int64_t j = 0; j < C; j++) sum[j] = x[j] + a[j];
            x = sum;
        }
        float d = mt_sum_shifted(x, C, x[0], 0) * inv_c, hi = x[0] + d, lo = d - (hi - x[0]);
        float var = mt_sum_shifted(x, C, hi, 1) * inv_c - lo * lo;
        float rstd = !isfinite(var) && isfinite(hi) ? ln_rstd_double(x, C, hi, s->eps)
                                                : 1.0f / sqrtf((var < 0.0f ? 0.0f : var) + s->eps);
        float shift = lo * rstd;
#pragma omp simd
        for (int64_t j = 0; j < C; j++) {
            float v = (x[j] - hi) * rstd - shift;
            v = w ? v * w[j] : v;
            y[j] = b ? v + b[j] : v;
        }
        s->mean_out[r] = hi;
        s->rstd_out[r] = rstd;
    }
}

void mt_layernorm_forward(const float *x, const float *weight, const float *bias, float *y, float *mean,
                          float *rstd, int64_t R, int64_t C, float eps) {
    ln_job s = {.R = R, .C = C, .x = x, .weight = weight, .bias = bias, .y = y, .mean_out = mean, .rstd_out = rstd,
                .eps = eps};
    mt_parallel_rows(R, 4 * C, ln_forward_rows, &s);
}

/* layernorm(x + residual) in one pass over each row; the sum is kept (in sum) for backward. */
void mt_add_layernorm_forward(const float *x, const float *residual, const float *weight, const float *bias,
                              float *sum, float *y, float *mean, float *rstd, int64_t R, int64_t C, float eps) {
    ln_job s = {.R = R, .C = C, .x = x, .weight = weight, .residual = residual, .bias = bias, .sum_out = sum, .y = y,
                .mean_out = mean, .rstd_out = rstd, .eps = eps};
    mt_parallel_rows(R, 5 * C, ln_forward_rows, &s);
}

/* One vector of a row's backward: its terms of sum(g w) and sum(g w xhat) into sg and sgx, and of dw and db. */
static inline __attribute__((always_inline)) void ln_grad_sums8(const float *x, const float *g, const float *w,
                                                               float mean, float rstd, float *dw, float *db,
                                                               mt_v8 *sg, mt_v8 *sgx) {
    mt_v8 xhat = (MT_V8(x) - mean) * rstd, gv = MT_V8(g), gx = w ? gv * MT_V8(w) : gv;
    *sg += gx;
    *sgx += gx * xhat;
    MT_V8(dw) += gv * xhat;
    MT_V8(db) += gv;
}

/* Rows [r0, r1): dx, and the sums of g * xhat and g into dw, db (length C, accumulated). Each row sum is kept in
 * two vector sums taken in turn (with one, its add latency bound the loop). */
static MT_CLONES void ln_backward_range(const ln_job *s, int64_t r0, int64_t r1, float *dw, float *db) {
    int64_t C = s->C;
    const float *w = s->weight;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = s->x + r * C, *g = s->g + r * C;
        float *dx = s->dx + r * C;
        float mean = s->mean[r], rstd = s->rstd[r];
        mt_v8 sg[2] = {{0}, {0}}, sgx[2] = {{0}, {0}};
        int64_t j = 0;
        for (; j + 16 <= C; j += 16)
            for (int u = 0; u < 2; u++)
                ln_grad_sums8(x + j + 8 * u, g + j + 8 * u, w ? w + j + 8 * u : NULL, mean, rstd, dw + j + 8 * u,
                              db + j + 8 * u, sg + u, sgx + u);
        if (j + 8 <= C) {
            ln_grad_sums8(x + j, g + j, w ? w + j : NULL, mean, rstd, dw + j, db + j, sg, sgx);
            j += 8;
        }
        mt_v8 sg_all = sg[0] + sg[1], sgx_all = sgx[0] + sgx[1];
        float sum_gx = mt_hsum8(&sg_all), sum_gx_xhat = mt_hsum8(&sgx_all);
        for (; j < C; j++) {
            float xhat = (x[j] - mean) * rstd;
            float gx = w ? g[j] * w[j] : g[j];
            sum_gx += gx;
            sum_gx_xhat += gx * xhat;
            dw[j] += g[j] * xhat;
            db[j] += g[j];
        }
        float mean_gx = sum_gx / (float)C, mean_gx_xhat = sum_gx_xhat / (float)C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            float xhat = (x[c] - mean) * rstd;
            float gx = w ? g[c] * w[c] : g[c];
            dx[c] = rstd * (gx - mean_gx - xhat * mean_gx_xhat);
        }
    }
}

static void ln_backward_task(void *ctx, int64_t t) {
    const ln_job *s = ctx;
    int64_t r0 = t * s->chunk, r1 = r0 + s->chunk < s->R ? r0 + s->chunk : s->R;
    float *partial = s->partials + t * 2 * s->C;
    if (r0 < r1) ln_backward_range(s, r0, r1, partial, partial + s->C);
}

void mt_layernorm_backward(const float *g, const float *x, const float *weight, const float *mean,
                           const float *rstd, float *dx, float *dweight, float *dbias, int64_t R, int64_t C) {
    ln_job s = {.R = R, .C = C, .x = x, .weight = weight, .g = g, .mean = mean, .rstd = rstd, .dx = dx,
                .dweight = dweight, .dbias = dbias, .chunk = R};
    for (int64_t j = 0; j < C; j++) dweight[j] = dbias[j] = 0.0f;
    int threads = mt_num_threads();
    float *scratch = NULL;
    if (threads > 1 && R >= 2 * threads && R * C * 6 >= MT_PAR_MIN_WORK)
        scratch = calloc((size_t)(threads * 2 * C), sizeof(float));
    if (!scratch) {
        ln_backward_range(&s, 0, R, dweight, dbias);
        return;
    }
    /* Each task sums into its own scratch row; adding them in task order keeps results
     * the same from run to run for a given thread count. */
    s.chunk = (R + threads - 1) / threads;
    s.partials = scratch;
    int64_t ntasks = (R + s.chunk - 1) / s.chunk;
    mt_parallel_for(ntasks, ln_backward_task, &s);
    for (int64_t t = 0; t < ntasks; t++)
        for (int64_t j = 0; j < C; j++) {
            dweight[j] += scratch[t * 2 * C + j];
            dbias[j] += scratch[t * 2 * C + C + j];
        }
    free(scratch);
}
