/* Inverted dropout with a counter-based generator (splitmix64 of seed + index), so the mask
 * is a pure function of (seed, position): vectorisable, and identical in the numpy reference. */
#include "internal.h"
#include "microtensor.h"

typedef struct {
    const float *x;
    float *y, *mask;
    uint64_t threshold, seed;
    float scale;
} dropout_job;

/* Elements [i0, i1): each one's mask depends on its index alone, so any split draws the same mask. */
static MT_CLONES void dropout_range(void *ctx, int64_t i0, int64_t i1) {
    const dropout_job *s = ctx;
    const float *x = s->x;
    float *y = s->y, *mask = s->mask;
    uint64_t threshold = s->threshold, seed = s->seed;
    float scale = s->scale;
    if (mask == NULL) {
#pragma omp simd
        for (int64_t i = i0; i < i1; i++) y[i] = x[i] * mt_keep_factor(seed, threshold, scale, (uint64_t)i);
        return;
    }
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float m = mt_keep_factor(seed, threshold, scale, (uint64_t)i);
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

void mt_dropout_forward(const float *x, float *y, float *mask, int64_t n, uint64_t threshold, float scale,
                        uint64_t seed) {
    dropout_job s = {x, y, mask, threshold, seed, scale};
    mt_parallel_rows(n, 16, dropout_range, &s);
}
