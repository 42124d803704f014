/* microtensor C kernels: every kernel the Python backend can call.
 *
 * Conventions: float32, contiguous row-major buffers, sizes as int64_t.
 * The kernels trust their caller: each op's Function (microtensor/ops/<op>.py) checks
 * dtypes, shapes, contiguity and index ranges before a pointer reaches this code.
 * Nullable pointers are marked "or NULL".
 */
#ifndef MICROTENSOR_H
#define MICROTENSOR_H

#include <stdint.h>

/* Threads: the number the kernels may use (MICROTENSOR_NUM_THREADS caps it). */
int mt_num_threads(void);
void mt_set_num_threads(int n);
/* Make the C allocator keep freed blocks for reuse instead of returning them to the OS (glibc only). */
void mt_keep_freed_memory(void);
/* Which sgemm micro-kernel the running CPU selected: "avx512", "avx2" or "generic". */
const char *mt_sgemm_isa(void);

/* C = alpha * op(A) @ op(B) + beta * C; op(A) is M x K, op(B) is K x N, C is M x N.
 * lda/ldb/ldc are the row strides (in elements) of A, B, C as stored. */
void mt_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc);
/* `batch` sgemms; matrix b of A/B/C starts at b*stride_a/b/c (a stride may be 0). */
void mt_sgemm_strided_batched(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                              float alpha, const float *A, int64_t lda, int64_t stride_a,
                              const float *B, int64_t ldb, int64_t stride_b, float beta,
                              float *C, int64_t ldc, int64_t stride_c, int64_t batch);
/* y (N, out) = x (N, in) @ w (out, in)^T + bias (out, or NULL). */
void mt_linear_forward(const float *x, const float *w, const float *bias, float *y,
                       int64_t N, int64_t in, int64_t out);
/* The three gradients of linear from g (N, out): dx (N, in) = g @ w, dw (out, in) = g^T @ x, db (out) = column
 * sums of g; pass NULL for any that is not needed. `add` (MT_ADD_DX | MT_ADD_DW | MT_ADD_DB) adds those into their
 * arrays instead (a running sum of the input's gradient, a parameter's .grad). */
enum { MT_ADD_DX = 1, MT_ADD_DW = 2, MT_ADD_DB = 4 };
void mt_linear_backward(const float *g, const float *x, const float *w, float *dx, float *dw, float *db, int add,
                        int64_t N, int64_t in, int64_t out);

/* Softmax over rows of length cols. */
void mt_softmax_forward(const float *x, float *y, int64_t rows, int64_t cols);
void mt_softmax_backward(const float *y, const float *g, float *dx, int64_t rows, int64_t cols);
void mt_log_softmax_forward(const float *x, float *y, int64_t rows, int64_t cols);
void mt_log_softmax_backward(const float *y, const float *g, float *dx, int64_t rows, int64_t cols);

/* LayerNorm over rows of x (R, C); weight/bias (C) or NULL; caches mean and rstd (R). */
void mt_layernorm_forward(const float *x, const float *weight, const float *bias, float *y,
                          float *mean, float *rstd, int64_t R, int64_t C, float eps);
/* layernorm(x + residual) as above, in one pass; the sum (R, C) is kept for backward. */
void mt_add_layernorm_forward(const float *x, const float *residual, const float *weight, const float *bias,
                              float *sum, float *y, float *mean, float *rstd, int64_t R, int64_t C, float eps);
/* dx (R, C), dweight and dbias (C) from the upstream gradient g and the cached mean/rstd. */
void mt_layernorm_backward(const float *g, const float *x, const float *weight, const float *mean,
                           const float *rstd, float *dx, float *dweight, float *dbias,
                           int64_t R, int64_t C);

/* Where the rows of one attention operand lie: row t (column c) of head h of batch b is at
 * data[b * batch + h * head + t * row + c]; the columns of a row are contiguous. */
typedef struct {
    float *data;
    int64_t batch, head, row;
} mt_heads;

/* One blocked (flash-style) attention call over B x H heads: softmax(scale q k^T + mask) v, with
 * q (Tq x D), k (Tk x D), v (Tk x Dv) per head. Masked scores have -inf added (PyTorch's rule); a
 * query with nothing to attend gets zero weights and output. */
typedef struct {
    int64_t B, H, Tq, Tk, D, Dv;
    float scale;
    int causal; /* hide key j from query i when j > i */
    /* 1 = may attend, byte (b, h, i, j) at mask[b * mask_batch + h * mask_head + i * mask_row + j]; or NULL */
    const uint8_t *mask;
    int64_t mask_batch, mask_head, mask_row;
    /* Dropout on the weights: element n of the flat (B, H, Tq, Tk) weights is kept (times drop_scale) when
     * splitmix64(drop_seed + (n+1) * golden) >> 40 >= drop_threshold, as mt_dropout_forward; 0 = no dropout. */
    uint64_t drop_threshold, drop_seed;
    float drop_scale;
    mt_heads q, k, v;
    mt_heads out; /* forward: written (Tq x Dv per head); backward: read (the forward's output) */
    mt_heads g;   /* backward: the gradient of out */
    mt_heads dq, dk, dv; /* backward: written */
    float *lse; /* (B, H, Tq): forward writes each query's log-sum-exp (+inf: nothing to attend); backward reads */
    /* (B, H, Tq, Tk) or NULL: forward writes the weights (before dropout); backward reads them instead of
     * recomputing them from lse */
    float *weights;
} mt_attention;

/* Both return 0, or -1 when their per-thread workspace (a few tiles of T x head width) cannot be
 * allocated. */
int mt_attention_forward(const mt_attention *a);
int mt_attention_backward(const mt_attention *a);

/* Cross-entropy of logits (N, C) against targets (N) in [0, C) or == ignore_index.
 * Writes dlogits = softmax - onehot (0 for ignored rows), the loss sum and the count. */
void mt_cross_entropy_forward(const float *logits, const int64_t *targets, int64_t ignore_index, float *dlogits,
                              double *loss_sum, int64_t *count, int64_t N, int64_t C);
/* Per-row losses (0 for ignored rows). */
void mt_cross_entropy_rows(const float *logits, const int64_t *targets, int64_t ignore_index, float *losses,
                           int64_t N, int64_t C);

/* GELU, tanh approximation, elementwise over n values. */
void mt_gelu_forward(const float *x, float *y, int64_t n);
void mt_gelu_backward(const float *x, const float *g, float *dx, int64_t n);
/* Exact GELU y = x * Phi(x) (erf form), elementwise over n values; the forward also writes Phi(x),
 * which the backward reads back: dx = g * (Phi(x) + x phi(x)). */
void mt_gelu_erf_forward(const float *x, float *y, float *cdf, int64_t n);
void mt_gelu_erf_backward(const float *x, const float *cdf, const float *g, float *dx, int64_t n);

/* out[r, j] = mask[j] ? value : x[r, j] for r < outer, j < inner (mask: 0 or 1 bytes). */
void mt_masked_fill(const float *x, const uint8_t *mask, float value, float *out, int64_t outer, int64_t inner);

/* Inverted dropout: element i is kept when (splitmix64(seed + (i+1) * golden) >> 40) >= threshold
 * (threshold = p * 2^24); mask[i] = scale (= 1/(1-p)) when kept, else 0; y = x * mask. mask may be NULL: the
 * backward draws the same mask again from the seed instead of keeping it. */
void mt_dropout_forward(const float *x, float *y, float *mask, int64_t n, uint64_t threshold, float scale,
                        uint64_t seed);

/* One Adam (decoupled = 0, L2 decay) or AdamW step over n flat values, in place. */
void mt_adam_update(float *param, const float *grad, float *m, float *v, int64_t n, int64_t step,
                    float lr, float beta1, float beta2, float eps, float weight_decay, int decoupled);

/* out (n, D) = weight[ids]; ids in [0, V) for the table weight (V, D). */
void mt_embedding_forward(const float *weight, const int64_t *ids, float *out, int64_t n, int64_t D);
/* dweight (V, D) = 0, then dweight[ids[i]] += g[i] for i < n; ids in [0, V). */
void mt_embedding_backward(const int64_t *ids, const float *g, float *dweight, int64_t n, int64_t D, int64_t V);

#endif
