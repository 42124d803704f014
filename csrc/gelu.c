/* GELU, forward and backward: the tanh approximation (as GPT-2 and llm.c) and the exact erf form. */
#include "internal.h"
#include "microtensor.h"

#define GELU_C 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_A 0.044715f

/* exp(x) for x <= 0 or -inf, as mt_expf_nonpositive but for NaN (here a finite value): a NaN x reaches
 * every result below through x itself. The polynomial is mt_expf_in_range's, evaluated by Estrin's
 * scheme (other bits): the GELU loops are bound by the latency of their longest dependency chain. */
static inline __attribute__((always_inline)) float exp_nonpositive(float x) {
    float hi = x > -87.3f ? x : -87.3f; /* NaN goes here too: no undefined int conversion */
    float n = (hi * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = hi - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float r2 = r * r, r4 = r2 * r2;
    float a = 1.6666665459e-1f * r + 5.0000001201e-1f, b = 8.3334519073e-3f * r + 4.1665795894e-2f;
    float c = 1.9875691500e-4f * r + 1.3981999507e-3f;
    float p = ((b * r2 + a) + c * r4) * r2 + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.3f ? 0.0f : p * scale;
}

/* tanh(x) as x P(x^2) / Q(x^2) on [-7.9053, 7.9053] (Eigen's rational fit; float tanh is +-1 beyond): a dozen
 * FMAs and a division, half the time of an exp-based tanh, absolute error below 4e-7, so the forward's y is
 * off by at most 2e-7 |x| (NaN stays NaN: comparisons with NaN are false). The backward does not use it:
 * 1 - t^2 near saturation needs more than t's absolute accuracy (see gelu_backward_range). */
static inline __attribute__((always_inline)) float gelu_tanh(float x) {
    float c = x > 7.90531110763549805f ? 7.90531110763549805f : x;
    c = c < -7.90531110763549805f ? -7.90531110763549805f : c;
    float c2 = c * c;
    float p = -2.76076847742355e-16f;
    p = p * c2 + 2.00018790482477e-13f;
    p = p * c2 + -8.60467152213735e-11f;
    p = p * c2 + 5.12229709037114e-08f;
    p = p * c2 + 1.48572235717979e-05f;
    p = p * c2 + 6.37261928875436e-04f;
    p = p * c2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * c2 + 1.18534705686654e-04f;
    q = q * c2 + 2.26843463243900e-03f;
    q = q * c2 + 4.89352518554385e-03f;
    return c * p / q;
}

typedef struct {
    const float *x;
    const float *g; /* backward: the gradient of y */
    float *out;     /* forward: y; backward: dx */
} gelu_job;

static MT_CLONES void gelu_forward_range(void *ctx, int64_t i0, int64_t i1) {
    const gelu_job *s = ctx;
    const float *x = s->x;
    float *y = s->out;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + gelu_tanh(GELU_C * (v + GELU_A * v * v * v)));
    }
}

void mt_gelu_forward(const float *x, float *y, int64_t n) {
    gelu_job s = {.x = x, .out = y};
    mt_parallel_rows(n, 16, gelu_forward_range, &s);
}

/* dx = g (0.5 (1 + t) + 0.5 x (1 - t^2) u'), t = tanh u, from e = exp(-2|u|) and r = 1 / (1 + e):
 * 0.5 (1 + t) = sigmoid(2u) is r for u >= 0 and e r below, and 0.5 (1 - t^2) = 2 e r^2, free of the
 * cancellation of 1 - t^2. */
static MT_CLONES void gelu_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const gelu_job *s = ctx;
    const float *x = s->x, *g = s->g;
    float *dx = s->out;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i];
        float u = GELU_C * (v + GELU_A * v * v * v);
        float e = exp_nonpositive(-2.0f * (u < 0 ? -u : u)), r = 1.0f / (1.0f + e);
        float dinner = GELU_C * (1.0f + 3.0f * GELU_A * v * v);
        dx[i] = g[i] * ((u < 0 ? e * r : r) + 2.0f * v * (e * r * r) * dinner);
    }
}

void mt_gelu_backward(const float *x, const float *g, float *dx, int64_t n) {
    gelu_job s = {.x = x, .g = g, .out = dx};
    mt_parallel_rows(n, 20, gelu_backward_range, &s);
}

/* Exact GELU x * Phi(x) (PyTorch's default, approximate='none'). For h = erfc(|x| / sqrt 2) / 2,
 * h = t exp(P(2t - 1) - x^2 / 2) with t = 1 / (1 + |x| / (2 sqrt 2)) and P of degree 10 fitted to
 * the relative error of h; Phi(x) = h for x < 0 and 1 - h otherwise. In float32: |Phi error| <= 1.3e-7,
 * relative error of h <= 1.2e-6 for |x| < 5 (the rounding of x^2 dominates). */
#define SQRT1_8 0.35355339059327373f   /* 1 / (2 sqrt 2) */
#define INV_SQRT_2PI 0.3989422804014327f /* the normal density at 0 */

/* By Estrin's scheme rather than Horner's, as exp_nonpositive (about 15% faster at 1 thread). */
static inline __attribute__((always_inline)) float half_erfc_poly(float u) {
    float u2 = u * u, u4 = u2 * u2, u8 = u4 * u4;
    float p01 = 6.726432018e-01f * u - 1.364941259e+00f, p23 = -4.689483769e-02f * u + 4.734277686e-02f;
    float p45 = 8.814810946e-03f * u - 9.864395110e-03f, p67 = -2.285053059e-03f * u + 1.713775044e-03f;
    float p89 = 5.088901606e-04f * u - 5.149025679e-05f;
    float q03 = p23 * u2 + p01, q47 = p67 * u2 + p45, q810 = -1.335836968e-04f * u2 + p89;
    return (q47 * u4 + q03) + q810 * u8;
}

/* Phi(x); NaN gives NaN, -inf 0 and +inf 1. */
static inline __attribute__((always_inline)) float normal_cdf(float x) {
    float ax = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + ax * SQRT1_8);
    float h = t * exp_nonpositive(half_erfc_poly(2.0f * t - 1.0f) - 0.5f * x * x);
    return x < 0 ? h : 1.0f - h;
}

typedef struct {
    const float *x;
    const float *cdf, *g; /* backward: Phi(x) from the forward, and the gradient of y */
    float *out;           /* forward: y; backward: dx */
    float *cdf_out;       /* forward: Phi(x) */
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
    gelu_erf_job s = {.x = x, .out = y, .cdf_out = cdf};
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
    gelu_erf_job s = {.x = x, .cdf = cdf, .g = g, .out = dx};
    mt_parallel_rows(n, 12, gelu_erf_backward_range, &s);
}
