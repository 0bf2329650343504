/*
 * kernels/cuda/cuda_kernels.h - host-side launchers of the CUDA kernels.
 *
 * Kept free of CUDA headers so that C code can include it: a stream is passed
 * as an opaque pointer (a cudaStream_t, or NULL for the default stream), and
 * half-precision data as void pointers with an slm_cuda_dtype saying which
 * half (float16 or bfloat16). Arithmetic accumulates in float32. Every kernel
 * here has a CPU twin in kernels/kernels.h that tests/gpu compares it
 * against. Pointers are device pointers unless a parameter says otherwise.
 * Activations are row-major (batch, width); `batch` rows are the decode step
 * of `batch` sequences. Launchers return SLM_ERR_INTERNAL with CUDA's error
 * text when a launch fails, SLM_ERR_RANGE when a size exceeds what the grid
 * can cover.
 */
#ifndef SLM_KERNELS_CUDA_KERNELS_H
#define SLM_KERNELS_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SLM_CUDA_F16, SLM_CUDA_BF16 } slm_cuda_dtype;

/* Number of usable CUDA devices; 0 when there is no driver or no GPU. */
int slm_cuda_device_count(void);

/* Bytes per element of dt (2). */
size_t slm_cuda_dtype_size(slm_cuda_dtype dt);

/* out(rows, n) = rmsnorm of each row of x(rows, n) times weight(n), all
 * float32; twin of slm_cpu_rmsnorm applied row by row. In-place allowed. */
slm_status slm_cuda_rmsnorm(float *out, const float *x, const float *weight,
                            size_t rows, size_t n, float eps, void *stream);

/* Conversions, element-wise: dst(n) of dt from src(n) float32, and back;
 * round to nearest even. Twins: slm_cpu_f32_to_f16 and friends. */
slm_status slm_cuda_to_half(void *dst, const float *src, size_t n,
                            slm_cuda_dtype dt, void *stream);
slm_status slm_cuda_from_half(float *dst, const void *src, size_t n,
                              slm_cuda_dtype dt, void *stream);

/* The fused residual step of a layer: x(rows, n) += delta(rows, n) (skipped
 * when delta is NULL), then out(rows, n) = rmsnorm(x) * weight(n). x is the
 * float32 residual stream; weight and out are of dt (out feeds the next
 * matrix product). Twin: slm_cpu_add then slm_cpu_rmsnorm. */
slm_status slm_cuda_residual_rmsnorm(float *x, const float *delta,
                                     const void *weight, void *out,
                                     size_t rows, size_t n, float eps,
                                     slm_cuda_dtype dt, void *stream);

/* Rotary embedding fused with the KV-cache write, for `rows` sequences at
 * positions pos(rows) (a device array): rotates q(rows, n_heads * head_dim)
 * in place and k(rows, n_kv_heads * head_dim) as it is written, with v, into
 * row pos[r] of sequence r's cache: k_cache / v_cache are (rows, seq_len,
 * n_kv_heads * head_dim). Heads are numbered from head_begin / kv_begin in
 * the whole model (the rotation depends only on the position and the index
 * within a head, as llama2.c's rope). All of dt. Twin: slm_cpu_rope plus a
 * copy. theta is llama2.c's 10000 (there is no parameter for it: a model
 * with another rope base needs one added here). head_dim must be even
 * (SLM_ERR_INVALID). A pos[r] outside [0, seq_len) writes nothing to the
 * cache and sets row r of q to NaN, so the bug shows instead of corrupting
 * another sequence's cache. */
slm_status slm_cuda_rope_kv_write(void *q, const void *k, const void *v,
                                  void *k_cache, void *v_cache,
                                  const int32_t *pos, size_t rows,
                                  size_t n_heads, size_t n_kv_heads,
                                  size_t head_dim, size_t seq_len,
                                  slm_cuda_dtype dt, void *stream);

/* Decode attention with grouped-query heads: for each of `rows` sequences,
 * each of n_heads query heads (head h reads kv head h / (n_heads /
 * n_kv_heads)) attends over positions 0..pos[r] of its cache (layout as
 * above), out(rows, n_heads * head_dim) of dt. Long contexts are split over
 * blocks (flash-decoding): each block keeps a running max and sum, and a
 * second pass combines them. workspace: at least
 * slm_cuda_attention_workspace_bytes(rows, n_heads, head_dim, seq_len)
 * device bytes, which is rows * n_heads * ceil(seq_len / 256) * (head_dim +
 * 2) * 4 (SIZE_MAX if that overflows); no initialization needed. head_dim
 * <= 256 (SLM_ERR_RANGE), n_heads a multiple of n_kv_heads
 * (SLM_ERR_INVALID). A pos[r] outside [0, seq_len) gives NaN for row r.
 * Twin: slm_cpu_attention. */
size_t slm_cuda_attention_workspace_bytes(size_t rows, size_t n_heads,
                                          size_t head_dim, size_t seq_len);
slm_status slm_cuda_decode_attention(void *out, const void *q,
                                     const void *k_cache, const void *v_cache,
                                     const int32_t *pos, size_t rows,
                                     size_t n_heads, size_t n_kv_heads,
                                     size_t head_dim, size_t seq_len,
                                     void *workspace, slm_cuda_dtype dt,
                                     void *stream);

/* Fused SwiGLU: out(n) = silu(gate(n)) * up(n), all of dt (n = rows *
 * hidden). In-place on gate allowed. Twin: slm_cpu_swiglu. */
slm_status slm_cuda_swiglu(void *out, const void *gate, const void *up,
                           size_t n, slm_cuda_dtype dt, void *stream);

/* Embedding lookup for a vocabulary slice: out(rows, dim) float32 is row
 * tokens[r] - vocab_begin of table(vocab_count, dim) (dt) when the token is
 * in [vocab_begin, vocab_begin + vocab_count), and zeros otherwise (the
 * tensor group's all-reduce then completes it). tokens(rows) is a device
 * array. Twin: slm_cpu_embedding_slice. */
slm_status slm_cuda_embedding(float *out, const void *table,
                              const int32_t *tokens, size_t rows,
                              size_t vocab_begin, size_t vocab_count,
                              size_t dim, slm_cuda_dtype dt, void *stream);

/* Greedy choice on device: out(rows) = the first index of the largest of
 * each row of logits(rows, vocab) (float32), as the CPU sampler's argmax.
 * Twin: slm_cpu_argmax. */
slm_status slm_cuda_argmax(int32_t *out, const float *logits, size_t rows,
                           size_t vocab, void *stream);

/* Sampling on device, one row per sequence: temperature (> 0), then top-k
 * (0: off) and top-p (1: off) over the softmax, then a draw with the uniform
 * coins(rows) in [0, 1) (host-generated, so a seed reproduces the CPU
 * sampler's choice; a device array). out(rows). Parameters outside those
 * ranges give SLM_ERR_INVALID. Slow on purpose (about 200 passes over each
 * row, no workspace); greedy decoding should call slm_cuda_argmax. Twin:
 * slm_cpu_sample_topk_topp. */
slm_status slm_cuda_sample(int32_t *out, const float *logits, size_t rows,
                           size_t vocab, float temperature, int32_t top_k,
                           float top_p, const float *coins, void *stream);

/* Matrix products through cuBLAS: y(rows, out_dim) = x(rows, in_dim) .
 * w(out_dim, in_dim)^T, x and w of dt, y of dt or float32 (y_f32), float32
 * accumulation. `handle` is a cublasHandle_t from slm_cuda_blas_create,
 * bound to `stream` there; the caller owns it and frees it with
 * slm_cuda_blas_destroy (NULL accepted; nulls the pointer). Sizes above
 * INT_MAX give SLM_ERR_RANGE. Twin: slm_cpu_matvec row by row. */
slm_status slm_cuda_blas_create(void **handle, void *stream);
void slm_cuda_blas_destroy(void **handle);
slm_status slm_cuda_matmul(void *handle, void *y, int y_f32, const void *x,
                           const void *w, size_t rows, size_t in_dim,
                           size_t out_dim, slm_cuda_dtype dt);

#ifdef __cplusplus
}
#endif

#endif
