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

/* Rows [r0, r1): dx, and the sums of g * xhat and g into dw, db (length C, accumulated). */
static MT_CLONES void ln_backward_range(const ln_job *s, int64_t r0, int64_t r1, float *dw, float *db) {
    int64_t C = s->C;
    const float *w = s->weight;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = s->x + r * C, *g = s->g + r * C;
        float *dx = s->dx + r * C;
        float mean = s->mean[r], rstd = s->rstd[r];
        float sum_gx = 0.0f, sum_gx_xhat = 0.0f;
#pragma omp simd reduction(+ : sum_gx, sum_gx_xhat)
        for (int64_t j = 0; j < C; j++) {
            float xhat = (x[j] - mean) * rstd;
            float gx = w ? g[j] * w[j] : g[j];
            sum_gx += gx;
            sum_gx_xhat += gx * xhat;
            dw[j] += g[j] * xhat;
            db[j] += g[j];
        }
        float mean_gx = sum_gx / (float)C, mean_gx_xhat = sum_gx_xhat / (float)C;
#pragma omp simd
        for (int64_t j = 0; j < C; j++) {
            float xhat = (x[j] - mean) * rstd;
            float gx = w ? g[j] * w[j] : g[j];
            dx[j] = rstd * (gx - mean_gx - xhat * mean_gx_xhat);
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
