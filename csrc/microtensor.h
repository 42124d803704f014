/* microtensor C kernels: every kernel the Python backend can call.
 *
 * Conventions: float32, contiguous row-major buffers, sizes as int64_t.
 * The kernels trust their caller: microtensor/_backend/c.py checks dtypes,
 * shapes, contiguity and index ranges before a pointer reaches this code.
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
/* The three gradients of linear from g (N, out): dx (N, in) = g @ w, dw (out, in) = g^T @ x,
 * db (out) = column sums of g; pass NULL for any that is not needed. */
void mt_linear_backward(const float *g, const float *x, const float *w, float *dx, float *dw, float *db,
                        int64_t N, int64_t in, int64_t out);

/* Softmax over rows of length cols. causal_tq > 0 masks column j of row r when
 * j > r % causal_tq (aligned at the first query, as PyTorch's is_causal); 0 means no mask. */
void mt_softmax_forward(const float *x, float *y, int64_t rows, int64_t cols, int64_t causal_tq);
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

/* Scaled dot-product attention: q (BH, Tq, D), k (BH, Tk, D), v (BH, Tk, Dv) give out
 * (BH, Tq, Dv) and weights (BH, Tq, Tk); mask (BH, Tq, Tk) of 0/1 bytes (1 = attend) or
 * NULL; rows with nothing to attend get zero weights. */
void mt_attention_forward(const float *q, const float *k, const float *v, const uint8_t *mask,
                          int causal, float scale, float *out, float *weights, int64_t BH,
                          int64_t Tq, int64_t Tk, int64_t D, int64_t Dv);
/* scratch: BH*Tq*Tk floats of workspace the caller provides. */
void mt_attention_backward(const float *g, const float *q, const float *k, const float *v,
                           const float *weights, float scale, float *dq, float *dk, float *dv,
                           float *scratch, int64_t BH, int64_t Tq, int64_t Tk, int64_t D,
                           int64_t Dv);

/* Self-attention on a packed projection qkv (B, T, 3*D) = [q | k | v] with D = H * hd, each split
 * into H heads of hd. out (B, T, D) has the heads concatenated; weights (B, H, T, T); mask
 * (B, H, T, T) of 0/1 bytes (1 = attend) or NULL; causal hides keys j > i; rows with nothing to
 * attend get zero weights and output. Both return 0, or -1 when their small workspace cannot be
 * allocated (nothing is written then). */
int mt_self_attention_forward(const float *qkv, const uint8_t *mask, int causal, float scale, float *out,
                               float *weights, int64_t B, int64_t T, int64_t H, int64_t hd);
/* dqkv (B, T, 3*D) from g (B, T, D) and the saved weights. */
int mt_self_attention_backward(const float *g, const float *qkv, const float *weights, float scale,
                               float *dqkv, int64_t B, int64_t T, int64_t H, int64_t hd);

/* Ids and targets: the kernels below check every index before using any, and return -1
 * when all are in range, else the position of the first bad one (writing nothing else). */

/* Cross-entropy of logits (N, C) against targets (N) in [0, C) or == ignore_index.
 * Writes dlogits = softmax - onehot (0 for ignored rows), the loss sum and the count. */
int64_t mt_cross_entropy_forward(const float *logits, const int64_t *targets, int64_t ignore_index,
                              float *dlogits, double *loss_sum, int64_t *count, int64_t N, int64_t C);
/* Per-row losses (0 for ignored rows). */
int64_t mt_cross_entropy_rows(const float *logits, const int64_t *targets, int64_t ignore_index,
                           float *losses, int64_t N, int64_t C);

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
 * (threshold = p * 2^24); mask[i] = scale (= 1/(1-p)) when kept, else 0; y = x * mask. */
void mt_dropout_forward(const float *x, float *y, float *mask, int64_t n, uint64_t threshold, float scale,
                        uint64_t seed);

/* One Adam (decoupled = 0, L2 decay) or AdamW step over n flat values, in place. */
void mt_adam_update(float *param, const float *grad, float *m, float *v, int64_t n, int64_t step,
                    float lr, float beta1, float beta2, float eps, float weight_decay, int decoupled);

/* out (n, D) = weight[ids]; ids in [0, V). */
int64_t mt_embedding_forward(const float *weight, const int64_t *ids, float *out, int64_t n, int64_t D,
                             int64_t V);
/* dweight (V, D) = 0, then dweight[ids[i]] += g[i] for i < n. */
int64_t mt_embedding_backward(const int64_t *ids, const float *g, float *dweight, int64_t n, int64_t D,
                           int64_t V);

#endif
