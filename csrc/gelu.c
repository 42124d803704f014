/* GELU with the tanh approximation (as GPT-2 and llm.c), forward and backward. */
#include "internal.h"
#include "microtensor.h"

#define GELU_C 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_A 0.044715f

typedef struct {
    const float *x, *g;
    float *y;
} gelu_job;

static MT_CLONES void gelu_forward_range(void *ctx, int64_t i0, int64_t i1) {
    const gelu_job *s = ctx;
    const float *x = s->x;
    float *y = s->y;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + mt_tanhf(GELU_C * (v + GELU_A * v * v * v)));
    }
}

void mt_gelu_forward(const float *x, float *y, int64_t n) {
    gelu_job s = {x, NULL, y};
    mt_parallel_rows(n, 16, gelu_forward_range, &s);
}

static MT_CLONES void gelu_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const gelu_job *s = ctx;
    const float *x = s->x, *g = s->g;
    float *dx = s->y;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i];
        float t = mt_tanhf(GELU_C * (v + GELU_A * v * v * v));
        float dinner = GELU_C * (1.0f + 3.0f * GELU_A * v * v);
        dx[i] = g[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * dinner);
    }
}

void mt_gelu_backward(const float *x, const float *g, float *dx, int64_t n) {
    gelu_job s = {x, g, dx};
    mt_parallel_rows(n, 20, gelu_backward_range, &s);
}
