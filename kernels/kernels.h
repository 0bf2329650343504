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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
 * head, the pair (2i, 2i+1) is rotated by angle pos * freqs[i] (llama2.c's
 * run.c convention: adjacent pairs; freqs[i] = theta^(-2i / head_size) for
 * most models, slm_model_config_rope_freqs). head_size must be even. */
void slm_cpu_rope(float *vec, size_t n_heads, size_t head_size, size_t pos,
                  const float *freqs);

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

/* One query head's attention for a token at position `pos` over a paged
 * KV cache: position t's keys and values are row
 *     table[t / block_size] * block_size + t % block_size
 * of k_pool and v_pool (rows of kv_stride floats), this head's kv head
 * starting at kv_off in the row. out(head_size), q(head_size), att(pos + 1)
 * scratch. Without AVX-512 (or for a head size not a multiple of 16) the
 * arithmetic of slm_cpu_attention, in the same order, so the two agree bit
 * for bit; with it, each score is a 16-lane sum, the softmax uses a vector
 * exp (kernels/cpu/exp_avx512.h, within 2 ulp) and the weights are
 * normalised once at the end, so the two agree to float rounding.
 * Single-threaded: the caller spreads (token, head) pairs over its
 * threads. */
void slm_cpu_attention_paged_head(float *out, const float *q,
                                  const float *k_pool, const float *v_pool,
                                  const uint32_t *table, size_t block_size,
                                  float *att, size_t head_size,
                                  size_t kv_stride, size_t kv_off, size_t pos);

/* SwiGLU: h1(n) = silu(h1) * h3, in place on h1. */
void slm_cpu_swiglu(float *h1, const float *h3, size_t n);

/* x(n) += y(n). */
void slm_cpu_add(float *x, const float *y, size_t n);

/* ---- Twins of the CUDA kernels (kernels/cuda/cuda_kernels.h) ----------- */

#include <stdint.h>

/* float32 -> float16 / bfloat16 bits and back, n elements, rounding to
 * nearest even (overflow to infinity, NaN kept a quiet NaN), exactly as
 * CUDA's __float2half_rn / __float2bfloat16_rn. kernels/cpu/half.c. */
void slm_cpu_f32_to_f16(uint16_t *dst, const float *src, size_t n);
void slm_cpu_f16_to_f32(float *dst, const uint16_t *src, size_t n);
void slm_cpu_f32_to_bf16(uint16_t *dst, const float *src, size_t n);
void slm_cpu_bf16_to_f32(float *dst, const uint16_t *src, size_t n);

/* Embedding lookup for a vocabulary slice: out(rows, dim) row r is row
 * tokens[r] - vocab_begin of table(vocab_count, dim) when the token is in
 * [vocab_begin, vocab_begin + vocab_count), zeros otherwise (negative tokens
 * included). kernels/cpu/embedding.c. */
void slm_cpu_embedding_slice(float *out, const float *table,
                             const int32_t *tokens, size_t rows,
                             size_t vocab_begin, size_t vocab_count,
                             size_t dim);

/* The first index of the largest of x(n), n >= 1, as coordinator/sampler.c
 * (best = 0, replaced only by a strictly larger value, so a NaN never wins
 * except at index 0). kernels/cpu/sample.c. */
int32_t slm_cpu_argmax(const float *x, size_t n);

/* Scratch entry of slm_cpu_sample_topk_topp. */
typedef struct {
    float prob;
    int32_t id;
} slm_cpu_candidate;

/* The choice coordinator/sampler.c makes for these logits when its random
 * draw is `coin` (uniform in [0, 1)) and there is no repetition penalty:
 * probabilities expf((logit - max) / temperature) (temperature > 0); with
 * top_k > 0 or top_p < 1 the candidates are sorted by (probability
 * descending, id ascending), cut to the top_k first, then to the shortest
 * prefix whose mass reaches top_p of the whole mass (of the kept mass after
 * a top-k cut); the token is the first whose cumulative mass exceeds coin
 * times the kept mass, walking the sorted list, or the ids in order when
 * neither cut is on. logits(vocab) are not modified; scratch(vocab) is
 * caller-provided. vocab >= 1, top_k >= 0, top_p in (0, 1].
 * kernels/cpu/sample.c. */
int32_t slm_cpu_sample_topk_topp(const float *logits, size_t vocab,
                                 float temperature, int32_t top_k, float top_p,
                                 float coin, slm_cpu_candidate *scratch);

/* ---- Batched products (prefill, batched decode) ------------------------ */

/* out(batch, rows) = x(batch, cols) @ W(rows, cols)^T: row b of out is W
 * times row b of x. W is row-major (rows = output features), as for
 * slm_cpu_matvec; x and out are row-major, one token per row. W is read from
 * memory once per call whatever the batch (cache-blocked), so a batch of B
 * tokens costs about one matvec's memory traffic and B times its arithmetic.
 * batch == 1 is slm_cpu_matvec. Multi-threaded with OpenMP over rows (one
 * parallel region, rows handed out in chunks as threads come free); the
 * caller sets the thread count. Each thread uses 32 KiB of stack for a
 * packed tile. No alignment needed. kernels/cpu/matmul.c. */
void slm_cpu_matmul(float *out, const float *w, const float *x, size_t batch,
                    size_t rows, size_t cols);

/* The 16-bit weight types: bfloat16 (the top half of a float32) and IEEE
 * half precision. */
typedef enum { SLM_HALF_BF16, SLM_HALF_F16 } slm_half_type;

/* slm_cpu_matmul with W(rows, cols) of 16-bit values of `type`, row-major:
 * each weight is widened to float32 exactly, in registers, and x, the
 * products and the sums are float32, so the result is slm_cpu_matmul's with
 * the widened W (up to summation order). Reads W once per call: half the
 * bytes of float32, which batch-1 decode is bound by. Any batch >= 1;
 * threads and alignment as slm_cpu_matmul. kernels/cpu/matmul.c. */
void slm_cpu_matmul_h16(float *out, const uint16_t *w, slm_half_type type,
                        const float *x, size_t batch, size_t rows, size_t cols);

/* Float weights pre-packed for the batched products ("panels"): W(rows,
 * cols) cut into panels of SLM_PANEL_ROWS consecutive rows, the last one
 * padded with zero rows, each panel stored column by column, so that the
 * SLM_PANEL_ROWS weights of one column of a panel are adjacent: element
 * (r, c) is at
 *   (r / SLM_PANEL_ROWS) * SLM_PANEL_ROWS * cols + c * SLM_PANEL_ROWS
 *   + r % SLM_PANEL_ROWS.
 * A product then streams the weights in the order it uses them, with no
 * transposing at run time (slm_cpu_matmul packs on every call). The loader
 * packs once (shard/weights.c). kernels/cpu/panels.c. */
#define SLM_PANEL_ROWS 32

/* Floats of the packed W into *floats; false when that overflows size_t. */
bool slm_cpu_panels_floats(size_t rows, size_t cols, size_t *floats);

/* Packs W(rows, cols), row r at w + r * ldw (ldw >= cols), into
 * dst(slm_cpu_panels_floats). */
void slm_cpu_pack_panels(float *dst, const float *w, size_t rows, size_t cols,
                         size_t ldw);

/* Row r of a packed W into dst(cols): the embedding lookup of a table that
 * is also the (packed) classifier. */
void slm_cpu_panels_row(float *dst, const float *wp, size_t rows, size_t cols,
                        size_t r);

/* slm_cpu_matmul with W packed: out(batch, rows) = x(batch, cols) @ W^T,
 * any batch >= 1 (batch 1 is bound by memory bandwidth, like
 * slm_cpu_matvec). wp is 64-byte aligned. Multi-threaded with OpenMP
 * over panels, handed out as threads come free. */
void slm_cpu_matmul_panels(float *out, const float *wp, const float *x,
                           size_t batch, size_t rows, size_t cols);

/* Symmetric per-output-channel int8 quantization of W(rows, cols):
 * scale(rows)[r] = max_j |W[r, j]| / 127 and q(rows, cols)[r, j] =
 * round(W[r, j] / scale[r]) (nearest, ties to even), in [-127, 127]; an
 * all-zero row gets scale 0 and q 0. So W[r, j] is q[r, j] * scale[r] within
 * scale[r] / 2 (plus float rounding). W must be finite. Single-threaded
 * (a load-time step). kernels/cpu/matmul_q8.c. */
void slm_cpu_quantize_q8(int8_t *q, float *scale, const float *w, size_t rows,
                         size_t cols);

/* out(batch, rows) = x(batch, cols) @ (scale * q)(rows, cols)^T: the product
 * of slm_cpu_matmul with the weights dequantized from slm_cpu_quantize_q8.
 * Weight-only quantization: the int8 weights are widened to float in
 * registers and x stays float, so the only error beyond float rounding is
 * the weights' own. Reads q once per call (a quarter of the float32 bytes),
 * which is what batch-1 decode is bound by. Threads and alignment as
 * slm_cpu_matmul. kernels/cpu/matmul_q8.c. */
void slm_cpu_matmul_q8(float *out, const int8_t *q, const float *scale,
                       const float *x, size_t batch, size_t rows, size_t cols);

#endif
