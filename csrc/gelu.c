/* GELU, forward and backward: the tanh approximation (as GPT-2 and llm.c) and the exact erf form. */
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

/* Exact GELU x * Phi(x) (PyTorch's default, approximate='none'). For h = erfc(|x| / sqrt 2) / 2,
 * h = t exp(P(2t - 1) - x^2 / 2) with t = 1 / (1 + |x| / (2 sqrt 2)) and P of degree 10 fitted to
 * the relative error of h; Phi(x) = h for x < 0 and 1 - h otherwise. In float32: |Phi error| <= 1.3e-7,
 * relative error of h <= 1.2e-6 for |x| < 5 (the rounding of x^2 dominates). */
#define SQRT1_8 0.35355339059327373f   /* 1 / (2 sqrt 2) */
#define INV_SQRT_2PI 0.3989422804014327f /* the normal density at 0 */

static inline __attribute__((always_inline)) float half_erfc_poly(float u) {
    float p = -1.335836968e-04f;
    p = p * u + 5.088901606e-04f;
    p = p * u - 5.149025679e-05f;
    p = p * u - 2.285053059e-03f;
    p = p * u + 1.713775044e-03f;
    p = p * u + 8.814810946e-03f;
    p = p * u - 9.864395110e-03f;
    p = p * u - 4.689483769e-02f;
    p = p * u + 4.734277686e-02f;
    p = p * u + 6.726432018e-01f;
    return p * u - 1.364941259e+00f;
}

/* exp(x) for x <= 0 or -inf, as mt_expf less its overflow and NaN cases (NaN: a finite value): the
 * arguments below are never positive, and a NaN x reaches every result through x itself. */
static inline __attribute__((always_inline)) float exp_nonpositive(float x) {
    float hi = x > -87.3f ? x : -87.3f; /* NaN goes here too: no undefined int conversion */
    return x < -87.3f ? 0.0f : mt_expf_in_range(hi);
}

/* Phi(x); NaN gives NaN, -inf 0 and +inf 1. */
static inline __attribute__((always_inline)) float normal_cdf(float x) {
    float ax = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + ax * SQRT1_8);
    float h = t * exp_nonpositive(half_erfc_poly(2.0f * t - 1.0f) - 0.5f * x * x);
    return x < 0 ? h : 1.0f - h;
}

typedef struct {
    const float *x, *cdf, *g;
    float *out, *cdf_out;
} gelu_erf_job;

static MT_CLONES void gelu_erf_forward_range(void *ctx, int64_t i0, int64_t i1) {
    const gelu_erf_job *s = ctx;
    const float *x = s->x;
    float *y = s->out, *cdf = s->cdf_out;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float c = normal_cdf(x[i]);
        cdf[i] = c;
        y[i] = x[i] * c;
    }
}

void mt_gelu_erf_forward(const float *x, float *y, float *cdf, int64_t n) {
    gelu_erf_job s = {x, NULL, NULL, y, cdf};
    mt_parallel_rows(n, 24, gelu_erf_forward_range, &s);
}

static MT_CLONES void gelu_erf_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const gelu_erf_job *s = ctx;
    const float *x = s->x, *cdf = s->cdf, *g = s->g;
    float *dx = s->out;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i];
        dx[i] = g[i] * (cdf[i] + v * INV_SQRT_2PI * exp_nonpositive(-0.5f * v * v));
    }
}

void mt_gelu_erf_backward(const float *x, const float *cdf, const float *g, float *dx, int64_t n) {
    gelu_erf_job s = {x, cdf, g, dx, NULL};
    mt_parallel_rows(n, 12, gelu_erf_backward_range, &s);
}
