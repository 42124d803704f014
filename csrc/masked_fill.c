/* masked_fill: value where a bool mask is set, x elsewhere; the mask repeats over the leading axes
 * (a causal mask over every batch and head), so it is read from cache, not broadcast in memory. */
#include "internal.h"
#include "microtensor.h"

typedef struct {
    const float *x;
    const uint8_t *mask;
    float value, *out;
    int64_t inner;
} masked_fill_job;

static MT_CLONES void masked_fill_rows(void *ctx, int64_t r0, int64_t r1) {
    const masked_fill_job *s = ctx;
    const uint8_t *mask = s->mask;
    const float value = s->value;
    const int64_t inner = s->inner;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = s->x + r * inner;
        float *out = s->out + r * inner;
#pragma omp simd
        for (int64_t j = 0; j < inner; j++) out[j] = mask[j] ? value : x[j];
    }
}

void mt_masked_fill(const float *x, const uint8_t *mask, float value, float *out, int64_t outer, int64_t inner) {
    masked_fill_job s = {x, mask, value, out, inner};
    mt_parallel_rows(outer, inner, masked_fill_rows, &s);
}
