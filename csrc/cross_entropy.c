/* Cross-entropy from logits with integer targets and ignore_index: the loss and its
 * gradient (softmax - onehot) in one pass over each row, log-sum-exp stable. */
#include <math.h>

#include "internal.h"
#include "microtensor.h"

#define CE_MAX_TASKS 64

typedef struct {
    const float *logits;
    const int64_t *targets;
    int64_t ignore_index, N, C, chunk;
    float *dlogits, *losses;
    double loss[CE_MAX_TASKS];
    int64_t count[CE_MAX_TASKS];
} ce_job;

/* Rows [r0, r1) of a block: e = exp(x - max) into e (row stride C), max per row into m. */
static inline void block_exp(const float *logits, float *e, float *m, int64_t r0, int64_t r1, int64_t C) {
    for (int64_t r = r0; r < r1; r++) {
        const float *x = logits + r * C;
        float *er = e + (r - r0) * C, mr = mt_max(x, C);
#pragma omp simd
        for (int64_t j = 0; j < C; j++) er[j] = x[j] - mr;
        m[r - r0] = mr;
    }
    mt_exp_inplace(e, (r1 - r0) * C);
}

/* Loss and gradient for a block of rows whose exponentials are already in dlogits. */
static MT_CLONES void ce_forward_task(void *ctx, int64_t t) {
    ce_job *s = ctx;
    int64_t C = s->C, r0 = t * s->chunk, r1 = r0 + s->chunk < s->N ? r0 + s->chunk : s->N;
    int64_t step = mt_block_rows(C);
    float m[MT_EXP_BLOCK];
    double loss = 0.0;
    int64_t count = 0;
    for (int64_t b0 = r0; b0 < r1; b0 += step) {
        int64_t b1 = b0 + step < r1 ? b0 + step : r1;
        block_exp(s->logits, s->dlogits + b0 * C, m, b0, b1, C);
        for (int64_t r = b0; r < b1; r++) {
            const float *x = s->logits + r * C;
            float *d = s->dlogits + r * C;
            int64_t target = s->targets[r];
            float sum = mt_sum(d, C), inv = 1.0f / sum;
            if (target == s->ignore_index) { /* gradient 0, or NaN for a NaN row, as PyTorch's */
                float zero = inv * 0.0f;
#pragma omp simd
                for (int64_t j = 0; j < C; j++) d[j] = zero;
                continue;
            }
            loss += (double)(logf(sum) - (x[target] - m[r - b0]));
            count++;
#pragma omp simd
            for (int64_t j = 0; j < C; j++) d[j] *= inv;
            d[target] -= 1.0f;
        }
    }
    s->loss[t] = loss;
    s->count[t] = count;
}

/* Split N rows into at most one task per thread when the work is worth it. */
static int64_t ce_tasks(int64_t N, int64_t C) {
    int threads = mt_num_threads();
    if (threads < 2 || N < 2 || N * C * 8 < MT_PAR_MIN_WORK) return 1;
    int64_t n = threads < CE_MAX_TASKS ? threads : CE_MAX_TASKS;
    return N < n ? N : n;
}

void mt_cross_entropy_forward(const float *logits, const int64_t *targets, int64_t ignore_index, float *dlogits,
                              double *loss_sum, int64_t *count, int64_t N, int64_t C) {
    ce_job s = {.logits = logits, .targets = targets, .ignore_index = ignore_index, .N = N, .C = C,
                .dlogits = dlogits};
    int64_t ntasks = ce_tasks(N, C);
    s.chunk = N > 0 ? (N + ntasks - 1) / ntasks : 1;
    ntasks = N > 0 ? (N + s.chunk - 1) / s.chunk : 0;
    if (ntasks > 1)
        mt_parallel_for(ntasks, ce_forward_task, &s);
    else if (ntasks == 1)
        ce_forward_task(&s, 0);
    double total = 0.0;
    int64_t n = 0;
    for (int64_t t = 0; t < ntasks; t++) {
        total += s.loss[t];
        n += s.count[t];
    }
    *loss_sum = total;
    *count = n;
}

static MT_CLONES void ce_rows(void *ctx, int64_t r0, int64_t r1) {
    const ce_job *s = ctx;
    int64_t C = s->C, step = mt_block_rows(C);
    float m[MT_EXP_BLOCK], e[MT_EXP_BLOCK];
    for (int64_t b0 = r0; b0 < r1; b0 += step) {
        int64_t b1 = b0 + step < r1 ? b0 + step : r1;
        if (C > MT_EXP_BLOCK) { /* one long row: vectorises on its own */
            const float *x = s->logits + b0 * C;
            float mr = mt_max(x, C);
            double sum = 0.0;
            for (int64_t j0 = 0; j0 < C; j0 += MT_SUM_BLOCK) { /* in blocks, as mt_sum */
                int64_t j1 = j0 + MT_SUM_BLOCK < C ? j0 + MT_SUM_BLOCK : C;
                float part = 0.0f;
#pragma omp simd reduction(+ : part)
                for (int64_t j = j0; j < j1; j++) part += mt_expf_nonpositive(x[j] - mr);
                sum += part;
            }
            m[0] = mr;
            e[0] = (float)sum;
        } else {
            block_exp(s->logits, e, m, b0, b1, C);
        }
        for (int64_t r = b0; r < b1; r++) {
            int64_t target = s->targets[r];
            float sum = C > MT_EXP_BLOCK ? e[0] : mt_sum(e + (r - b0) * C, C);
            s->losses[r] = target == s->ignore_index ? 0.0f
                                                     : logf(sum) - (s->logits[r * C + target] - m[r - b0]);
        }
    }
}

void mt_cross_entropy_rows(const float *logits, const int64_t *targets, int64_t ignore_index, float *losses,
                           int64_t N, int64_t C) {
    ce_job s = {.logits = logits, .targets = targets, .ignore_index = ignore_index, .N = N, .C = C,
                .losses = losses};
    mt_parallel_rows(N, 8 * C, ce_rows, &s);
}
