/* Adam / AdamW over one flat buffer of every parameter: one call per optimiser step
 * instead of one per parameter tensor. Follows PyTorch (bias-corrected moments, eps
 * after the square root; AdamW decays the weights before the update). */
#include <math.h>

#include "internal.h"
#include "microtensor.h"

typedef struct {
    float *param, *m, *v;
    const float *grad;
    float lr, beta1, beta2, eps, weight_decay, step_size, inv_sqrt_bias2, decay;
    int decoupled;
} adam_job;

static MT_CLONES void adam_range(void *ctx, int64_t i0, int64_t i1) {
    const adam_job *s = ctx;
    float *p = s->param, *m = s->m, *v = s->v;
    const float *g = s->grad;
    float b1 = s->beta1, b2 = s->beta2, wd = s->decoupled ? 0.0f : s->weight_decay;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float pi = p[i] * s->decay;
        float gi = g[i] + wd * p[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - s->step_size * mi / (sqrtf(vi) * s->inv_sqrt_bias2 + s->eps);
    }
}

void mt_adam_update(float *param, const float *grad, float *m, float *v, int64_t n, int64_t step, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int decoupled) {
    double bias1 = 1.0 - pow((double)beta1, (double)step);
    double bias2 = 1.0 - pow((double)beta2, (double)step);
    adam_job s = {param, m, v, grad, lr, beta1, beta2, eps, weight_decay,
                  (float)(lr / bias1), (float)(1.0 / sqrt(bias2)),
                  decoupled ? 1.0f - lr * weight_decay : 1.0f, decoupled};
    mt_parallel_rows(n, 16, adam_range, &s);
}
