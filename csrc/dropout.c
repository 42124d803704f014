/* Inverted dropout with a counter-based generator (splitmix64 of seed + index), so the mask
 * is a pure function of (seed, position): vectorisable, and identical in the numpy reference. */
#include "internal.h"
#include "microtensor.h"

#define GOLDEN 0x9E3779B97F4A7C15ull

static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

MT_CLONES void mt_dropout_forward(const float *x, float *y, float *mask, int64_t n, uint64_t threshold,
                                  float scale, uint64_t seed) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = splitmix64(seed + (uint64_t)(i + 1) * GOLDEN);
        float m = (z >> 40) >= threshold ? scale : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}
