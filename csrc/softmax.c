/* Softmax and log-softmax over the last axis (max-subtracted), forward and backward.
 * Rows are handled a block at a time: shift each row by its max, exponentiate the whole
 * block in one vectorised sweep, then normalise each row (see mt_exp_inplace). */
#include <math.h>

#include "internal.h"
#include "microtensor.h"

typedef struct {
    const float *in; /* forward: x; backward: y, the forward's output */
    const float *g;  /* backward: the gradient of y */
    float *out;      /* forward: y; backward: dx */
    int64_t cols;
} softmax_job;


/* Softmax of up to SHORT_ROWS rows of at most SHORT_COLS columns, vectorised across rows: the block
 * is transposed into a small tile so each step (max, exp, sum) is one vector operation over the rows,
 * instead of a short, latency-bound loop per row. */
#define SHORT_ROWS 16
#define SHORT_COLS 32
static inline __attribute__((always_inline)) void softmax_short(const float *x, float *y, int64_t rows, int64_t cols) {
    float t[SHORT_COLS][SHORT_ROWS], m[SHORT_ROWS], s[SHORT_ROWS];
    for (int64_t r = 0; r < SHORT_ROWS; r++)
        for (int64_t j = 0; j < cols; j++) t[j][r] = r < rows ? x[r * cols + j] : -INFINITY;
#pragma omp simd
    for (int r = 0; r < SHORT_ROWS; r++) m[r] = -INFINITY, s[r] = 0.0f;
    for (int64_t j = 0; j < cols; j++) {
#pragma omp simd
        for (int r = 0; r < SHORT_ROWS; r++) m[r] = t[j][r] > m[r] ? t[j][r] : m[r];
    }
    for (int64_t j = 0; j < cols; j++) {
#pragma omp simd
        for (int r = 0; r < SHORT_ROWS; r++) {
            t[j][r] = mt_expf_nonpositive(t[j][r] - m[r]);
            s[r] += t[j][r];
        }
    }
#pragma omp simd
    for (int r = 0; r < SHORT_ROWS; r++) s[r] = 1.0f / s[r];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) y[r * cols + j] = t[j][r] * s[r];
}

/* y = exp(x - max) / sum. A NaN or +inf in a row, or a row of -inf, makes the whole row NaN, as in
 * PyTorch. */
static MT_CLONES void softmax_rows(void *ctx, int64_t r0, int64_t r1) {
    const softmax_job *s = ctx;
    int64_t cols = s->cols, step = mt_block_rows(cols);
    if (cols <= SHORT_COLS) {
        for (int64_t b0 = r0; b0 < r1; b0 += SHORT_ROWS)
            softmax_short(s->in + b0 * cols, s->out + b0 * cols, r1 - b0 < SHORT_ROWS ? r1 - b0 : SHORT_ROWS, cols);
        return;
    }
    for (int64_t b0 = r0; b0 < r1; b0 += step) {
        int64_t b1 = b0 + step < r1 ? b0 + step : r1;
        for (int64_t r = b0; r < b1; r++) {
            const float *x = s->in + r * cols;
            float *y = s->out + r * cols;
            float m = mt_max(x, cols);
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) y[j] = x[j] - m;
        }
        mt_exp_inplace(s->out + b0 * cols, (b1 - b0) * cols);
        for (int64_t r = b0; r < b1; r++) {
            float *y = s->out + r * cols;
            float inv = 1.0f / mt_sum(y, cols);
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) y[j] *= inv;
        }
    }
}

void mt_softmax_forward(const float *x, float *y, int64_t rows, int64_t cols) {
    softmax_job s = {.in = x, .out = y, .cols = cols};
    mt_parallel_rows(rows, 8 * cols, softmax_rows, &s);
}

/* dx = y * (g - sum(g * y)). */
static MT_CLONES void softmax_backward_rows(void *ctx, int64_t r0, int64_t r1) {
    const softmax_job *s = ctx;
    int64_t n = s->cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *y = s->in + r * n, *g = s->g + r * n;
        float *dx = s->out + r * n;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < n; j++) dot += g[j] * y[j];
#pragma omp simd
        for (int64_t j = 0; j < n; j++) dx[j] = y[j] * (g[j] - dot);
    }
}

void mt_softmax_backward(const float *y, const float *g, float *dx, int64_t rows, int64_t cols) {
    softmax_job s = {.in = y, .g = g, .out = dx, .cols = cols};
    mt_parallel_rows(rows, 2 * cols, softmax_backward_rows, &s);
}

/* y = (x - max) - log(sum exp(x - max)); not x - (max + log(sum)), which loses the small
 * terms when |max| is huge. y itself holds exp(x - max) until the last step. */
static MT_CLONES void log_softmax_rows(void *ctx, int64_t r0, int64_t r1) {
    const softmax_job *s = ctx;
    int64_t cols = s->cols, step = mt_block_rows(cols);
    for (int64_t b0 = r0; b0 < r1; b0 += step) {
        int64_t b1 = b0 + step < r1 ? b0 + step : r1;
        for (int64_t r = b0; r < b1; r++) {
            const float *x = s->in + r * cols;
            float *y = s->out + r * cols;
            float m = mt_max(x, cols);
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) y[j] = x[j] - m;
        }
        mt_exp_inplace(s->out + b0 * cols, (b1 - b0) * cols);
        for (int64_t r = b0; r < b1; r++) {
            const float *x = s->in + r * cols;
            float *y = s->out + r * cols;
            float m = mt_max(x, cols), log_sum = logf(mt_sum(y, cols));
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) y[j] = (x[j] - m) - log_sum;
        }
    }
}

void mt_log_softmax_forward(const float *x, float *y, int64_t rows, int64_t cols) {
    softmax_job s = {.in = x, .out = y, .cols = cols};
    mt_parallel_rows(rows, 8 * cols, log_softmax_rows, &s);
}

/* dx = g - exp(y) * sum(g); dx holds exp(y) first, computed flat over the rows. */
static MT_CLONES void log_softmax_backward_rows(void *ctx, int64_t r0, int64_t r1) {
    const softmax_job *s = ctx;
    int64_t n = s->cols;
    float *dx = s->out + r0 * n;
    const float *y = s->in + r0 * n;
#pragma omp simd
    for (int64_t i = 0; i < (r1 - r0) * n; i++) dx[i] = mt_expf(y[i]);
    for (int64_t r = r0; r < r1; r++) {
        const float *g = s->g + r * n;
        float *d = s->out + r * n;
        float sum = mt_sum(g, n);
#pragma omp simd
        for (int64_t j = 0; j < n; j++) d[j] = g[j] - d[j] * sum;
    }
}

void mt_log_softmax_backward(const float *y, const float *g, float *dx, int64_t rows, int64_t cols) {
    softmax_job s = {.in = y, .g = g, .out = dx, .cols = cols};
    mt_parallel_rows(rows, 8 * cols, log_softmax_backward_rows, &s);
}
