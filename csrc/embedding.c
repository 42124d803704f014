/* Embedding lookup (gather rows) and its backward (scatter-add rows into a zeroed gradient).
 * Every id is in [0, V): the caller checks them. */
#include <string.h>

#include "internal.h"
#include "microtensor.h"

void mt_embedding_forward(const float *weight, const int64_t *ids, float *out, int64_t n, int64_t D) {
    for (int64_t i = 0; i < n; i++) memcpy(out + i * D, weight + ids[i] * D, sizeof(float) * (size_t)D);
}

void mt_embedding_backward(const int64_t *ids, const float *g, float *dweight, int64_t n, int64_t D, int64_t V) {
    memset(dweight, 0, sizeof(float) * (size_t)(V * D));
    for (int64_t i = 0; i < n; i++) {
        float *row = dweight + ids[i] * D;
        const float *gi = g + i * D;
#pragma omp simd
        for (int64_t d = 0; d < D; d++) row[d] += gi[d];
    }
}
