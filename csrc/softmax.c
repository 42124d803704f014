/* Softmax and log-softmax over the last axis (max-subtracted), forward and backward. */
#include <math.h>

#include "internal.h"
#include "microtensor.h"

typedef struct {
    const float *x, *g;
    float *y;
    int64_t cols, causal_tq;
} softmax_job;

/* Columns of row r that a causal mask keeps: j <= (r % tq) + (cols - tq). */
static int64_t kept_columns(int64_t r, int64_t cols, int64_t causal_tq) {
    if (causal_tq <= 0) return cols;
    int64_t lim = r % causal_tq + (cols - causal_tq) + 1;
    return lim < 0 ? 0 : lim > cols ? cols : lim;
}

/* One row: y = exp(x - max) / sum over the first n entries, 0 beyond (a row with n == 0 is all 0). */
static inline void softmax_row(const float *x, float *y, int64_t n, int64_t cols) {
    float m = -INFINITY, s = 0.0f;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) {
        float e = mt_expf(x[j] - m);
        y[j] = e;
        s += e;
    }
    float inv = 1.0f / s;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) y[j] *= inv;
    for (int64_t j = n; j < cols; j++) y[j] = 0.0f;
}

static MT_CLONES void softmax_rows(void *ctx, int64_t r0, int64_t r1) {
    const softmax_job *s = ctx;
    for (int64_t r = r0; r < r1; r++)
        softmax_row(s->x + r * s->cols, s->y + r * s->cols, kept_columns(r, s->cols, s->causal_tq), s->cols);
}

void mt_softmax_forward(const float *x, float *y, int64_t rows, int64_t cols, int64_t causal_tq) {
    softmax_job s = {x, NULL, y, cols, causal_tq};
    mt_parallel_rows(rows, 8 * cols, softmax_rows, &s);
}

/* dx = y * (g - sum(g * y)). */
static MT_CLONES void softmax_backward_rows(void *ctx, int64_t r0, int64_t r1) {
    const softmax_job *s = ctx;
    int64_t n = s->cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *y = s->x + r * n, *g = s->g + r * n;
        float *dx = s->y + r * n;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < n; j++) dot += g[j] * y[j];
#pragma omp simd
        for (int64_t j = 0; j < n; j++) dx[j] = y[j] * (g[j] - dot);
    }
}

void mt_softmax_backward(const float *y, const float *g, float *dx, int64_t rows, int64_t cols) {
    softmax_job s = {y, g, dx, cols, 0};
    mt_parallel_rows(rows, 2 * cols, softmax_backward_rows, &s);
}

/* y = (x - max) - log(sum exp(x - max)). */
static MT_CLONES void log_softmax_rows(void *ctx, int64_t r0, int64_t r1) {
    const softmax_job *s = ctx;
    int64_t n = s->cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = s->x + r * n;
        float *y = s->y + r * n;
        float m = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : m)
        for (int64_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < n; j++) sum += mt_expf(x[j] - m);
        float log_sum = logf(sum);
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = (x[j] - m) - log_sum; /* not x - (m + log_sum): keeps
                                                                       small terms when |m| is huge */
    }
}

void mt_log_softmax_forward(const float *x, float *y, int64_t rows, int64_t cols) {
    softmax_job s = {x, NULL, y, cols, 0};
    mt_parallel_rows(rows, 8 * cols, log_softmax_rows, &s);
}

/* dx = g - exp(y) * sum(g). */
static MT_CLONES void log_softmax_backward_rows(void *ctx, int64_t r0, int64_t r1) {
    const softmax_job *s = ctx;
    int64_t n = s->cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *y = s->x + r * n, *g = s->g + r * n;
        float *dx = s->y + r * n;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < n; j++) sum += g[j];
#pragma omp simd
        for (int64_t j = 0; j < n; j++) dx[j] = g[j] - mt_expf(y[j]) * sum;
    }
}

void mt_log_softmax_backward(const float *y, const float *g, float *dx, int64_t rows, int64_t cols) {
    softmax_job s = {y, g, dx, cols, 0};
    mt_parallel_rows(rows, 8 * cols, log_softmax_backward_rows, &s);
}
