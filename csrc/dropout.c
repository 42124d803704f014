/* Inverted dropout with a counter-based generator (splitmix64 of seed + index), so the mask
 * is a pure function of (seed, position): vectorisable, and identical in the numpy reference. */
#include "internal.h"
#include "microtensor.h"

MT_CLONES void mt_dropout_forward(const float *x, float *y, float *mask, int64_t n, uint64_t threshold,
                                  float scale, uint64_t seed) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = mt_splitmix64(seed + (uint64_t)(i + 1) * MT_GOLDEN);
        float m = (z >> 40) >= threshold ? scale : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}
