/*
 * kernels/kernels.h - the compute kernels of the forward pass, CPU backend.
 *
 * Shapes are in the comments as (rows, cols). Inputs here come from our own
 * code, never from outside: sizes were validated when the model was loaded,
 * so these functions do not return a status. Buffers must not alias unless a
 * function says in-place is allowed.
 *
 * The implementations live one op per file in kernels/cpu/. Hot loops pick an
 * AVX-512 or AVX2 path at run time (see slm_cpu_isa()), never by -march.
 */
#ifndef SLM_KERNELS_H
#define SLM_KERNELS_H

#include <stddef.h>

/* The instruction set the hot kernels dispatch to on this machine:
 * "avx512", "avx2" or "scalar". Decided once, at first use. */
const char *slm_cpu_isa(void);

/* out(rows) = W(rows, cols) @ x(cols). W is row-major. Multi-threaded with
 * OpenMP over rows; the caller sets the thread count (omp_set_num_threads). */
void slm_cpu_matvec(float *out, const float *w, const float *x, size_t rows,
                    size_t cols);

/* out(n) = x(n) / sqrt(mean(x^2) + eps) * weight(n). In-place (out == x)
 * allowed. */
void slm_cpu_rmsnorm(float *out, const float *x, const float *weight, size_t n,
                     float eps);

/* Rotary position embedding, in place, on vec(n_heads * head_size): within each
 * head, the pair (2i, 2i+1) is rotated by angle pos * theta^(-2i / head_size)
 * (llama2.c's run.c convention: adjacent pairs, theta = 10000). head_size must
 * be even. */
void slm_cpu_rope(float *vec, size_t n_heads, size_t head_size, size_t pos,
                  float theta);

/* Numerically stable softmax over x(n), in place. n >= 1. */
void slm_cpu_softmax(float *x, size_t n);

/* Grouped-query attention for one token at position `pos`.
 *   out(n_heads * head_size)           result for each query head
 *   q(n_heads * head_size)             queries (already rotated)
 *   k_cache, v_cache(pos + 1, kv_stride) rows 0..pos hold keys/values; head g
 *                                      of a row starts at g * head_size
 *   att(n_heads, att_stride)           scratch for scores, att_stride >= pos+1
 * Query head h reads kv head h / (n_heads / n_kv_heads); n_heads must be a
 * multiple of n_kv_heads. Scores are scaled by 1/sqrt(head_size). */
void slm_cpu_attention(float *out, const float *q, const float *k_cache,
                       const float *v_cache, float *att, size_t att_stride,
                       size_t n_heads, size_t n_kv_heads, size_t head_size,
                       size_t kv_stride, size_t pos);

/* SwiGLU: h1(n) = silu(h1) * h3, in place on h1. */
void slm_cpu_swiglu(float *h1, const float *h3, size_t n);

/* x(n) += y(n). */
void slm_cpu_add(float *x, const float *y, size_t n);

#endif
