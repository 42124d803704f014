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

/* Row max m and sum(exp(x - m)); writes exp(x - m) into e when e is not NULL. */
static inline float row_sum_exp(const float *x, float *e, int64_t C, float *max_out) {
    float m = -INFINITY, s = 0.0f;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < C; j++) m = x[j] > m ? x[j] : m;
    if (e) {
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < C; j++) {
            e[j] = mt_expf(x[j] - m);
            s += e[j];
        }
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < C; j++) s += mt_expf(x[j] - m);
    }
    *max_out = m;
    return s;
}

static MT_CLONES void ce_forward_task(void *ctx, int64_t t) {
    ce_job *s = ctx;
    int64_t C = s->C, r0 = t * s->chunk, r1 = r0 + s->chunk < s->N ? r0 + s->chunk : s->N;
    double loss = 0.0;
    int64_t count = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = s->logits + r * C;
        float *d = s->dlogits + r * C;
        int64_t target = s->targets[r];
        if (target == s->ignore_index) {
            for (int64_t j = 0; j < C; j++) d[j] = 0.0f;
            continue;
        }
        float m, sum = row_sum_exp(x, d, C, &m);
        loss += (double)(logf(sum) - (x[target] - m));
        count++;
        float inv = 1.0f / sum;
#pragma omp simd
        for (int64_t j = 0; j < C; j++) d[j] *= inv;
        d[target] -= 1.0f;
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

void mt_cross_entropy_forward(const float *logits, const int64_t *targets, int64_t ignore_index,
                              float *dlogits, double *loss_sum, int64_t *count, int64_t N, int64_t C) {
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
    for (int64_t r = r0; r < r1; r++) {
        const float *x = s->logits + r * s->C;
        int64_t target = s->targets[r];
        if (target == s->ignore_index) {
            s->losses[r] = 0.0f;
            continue;
        }
        float m, sum = row_sum_exp(x, NULL, s->C, &m);
        s->losses[r] = logf(sum) - (x[target] - m);
    }
}

void mt_cross_entropy_rows(const float *logits, const int64_t *targets, int64_t ignore_index, float *losses,
                           int64_t N, int64_t C) {
    ce_job s = {.logits = logits, .targets = targets, .ignore_index = ignore_index, .N = N, .C = C,
                .losses = losses};
    mt_parallel_rows(N, 8 * C, ce_rows, &s);
}
