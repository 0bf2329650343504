/* kernels/cuda/attention.cu - decode attention over the KV cache with
 * grouped-query heads, flash-decoding style; CPU twin: slm_cpu_attention
 * (kernels/cpu/attention.c).
 *
 * Pass 1 (partial_kernel), grid (chunks, n_heads, rows): a block takes one
 * query head of one sequence and kChunk consecutive positions; it computes
 * the scores q.k / sqrtf(head_dim) in float32, their maximum m, the sum l of
 * expf(score - m), and o(head_dim) = sum of expf(score - m) * v, and writes
 * (o, m, l) to the workspace. Chunks past pos[r] write nothing.
 * Pass 2 (combine_kernel), grid (n_heads, rows): M = max m_c, L = sum l_c *
 * expf(m_c - M), out = sum o_c * expf(m_c - M) / L over the row's chunks.
 *
 * Workspace layout, all float32, C = ceil(seq_len / kChunk) chunks:
 *   o  (rows, n_heads, C, head_dim)   then
 *   ml (rows, n_heads, C, 2)          (m, l)
 * so slm_cuda_attention_workspace_bytes = rows * n_heads * C * (head_dim + 2)
 * * 4 bytes (about 1.1 MB for 8 rows, 32 heads, 4096 positions, head_dim 128).
 *
 * A position outside [0, seq_len) gives NaN outputs for that row (a bug
 * upstream made visible, never a read outside the cache). */
#include "kernels/cuda/util.cuh"

#include <stdint.h>

namespace
{

constexpr unsigned kThreads = 128;
constexpr size_t kChunk = 256;      /* positions per block of pass 1 */
constexpr size_t kMaxHeadDim = 256; /* q and o are staged in shared memory */

template <typename T>
__global__ void partial_kernel(const T *q, const T *k_cache, const T *v_cache,
                               const int32_t *pos, size_t n_heads,
                               size_t kv_mul, size_t head_dim, size_t seq_len,
                               size_t kv_dim, float *ws_o, float *ws_ml)
{
    __shared__ float q_s[kMaxHeadDim];
    __shared__ float att[kChunk];
    const size_t c = blockIdx.x, h = blockIdx.y, r = blockIdx.z;
    const int32_t p = pos[r];
    if (p < 0 || (size_t)p >= seq_len)
        return; /* combine_kernel writes NaN */
    const size_t n_pos = (size_t)p + 1, t0 = c * kChunk;
    if (t0 >= n_pos)
        return;
    const size_t t1 = t0 + kChunk < n_pos ? t0 + kChunk : n_pos;
    const size_t kv_off = (h / kv_mul) * head_dim;
    const T *k_base = k_cache + r * seq_len * kv_dim + kv_off;
    const T *v_base = v_cache + r * seq_len * kv_dim + kv_off;
    const T *q_row = q + (r * n_heads + h) * head_dim;
    for (size_t i = threadIdx.x; i < head_dim; i += blockDim.x)
        q_s[i] = slm_cuda::to_f32(q_row[i]);
    __syncthreads();

    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const unsigned n_warps = blockDim.x / 32;
    const float scale = sqrtf((float)head_dim);
    for (size_t t = t0 + warp; t < t1; t += n_warps) {
        const T *k = k_base + t * kv_dim;
        float dot = 0.0f;
        for (size_t i = lane; i < head_dim; i += 32)
            dot += q_s[i] * slm_cuda::to_f32(k[i]);
        for (int off = 16; off > 0; off /= 2)
            dot += __shfl_xor_sync(0xffffffffu, dot, off);
        if (lane == 0)
            att[t - t0] = dot / scale;
    }
    __syncthreads();

    float m = -INFINITY;
    for (size_t t = threadIdx.x; t < t1 - t0; t += blockDim.x)
        m = fmaxf(m, att[t]);
    m = slm_cuda::block_max(m);
    float l = 0.0f;
    for (size_t t = threadIdx.x; t < t1 - t0; t += blockDim.x) {
        const float e = expf(att[t] - m);
        att[t] = e;
        l += e;
    }
    l = slm_cuda::block_sum(l); /* synchronizes: att is complete */

    const size_t slot = (r * n_heads + h) * gridDim.x + c;
    float *o = ws_o + slot * head_dim;
    for (size_t i = threadIdx.x; i < head_dim; i += blockDim.x) {
        float acc = 0.0f;
        for (size_t t = t0; t < t1; t++)
            acc += att[t - t0] * slm_cuda::to_f32(v_base[t * kv_dim + i]);
        o[i] = acc;
    }
    if (threadIdx.x == 0) {
        ws_ml[2 * slot] = m;
        ws_ml[2 * slot + 1] = l;
    }
}

template <typename T>
__global__ void combine_kernel(T *out, const int32_t *pos, size_t n_heads,
                               size_t head_dim, size_t seq_len, size_t n_chunks,
                               const float *ws_o, const float *ws_ml)
{
    const size_t h = blockIdx.x, r = blockIdx.y;
    T *dst = out + (r * n_heads + h) * head_dim;
    const int32_t p = pos[r];
    if (p < 0 || (size_t)p >= seq_len) {
        for (size_t i = threadIdx.x; i < head_dim; i += blockDim.x)
            dst[i] = slm_cuda::from_f32<T>(NAN);
        return;
    }
    const size_t used = ((size_t)p + kChunk) / kChunk; /* ceil((p+1)/kChunk) */
    const size_t base = (r * n_heads + h) * n_chunks;
    float m_all = -INFINITY;
    for (size_t c = 0; c < used; c++)
        m_all = fmaxf(m_all, ws_ml[2 * (base + c)]);
    float l_all = 0.0f;
    for (size_t c = 0; c < used; c++)
        l_all +=
            ws_ml[2 * (base + c) + 1] * expf(ws_ml[2 * (base + c)] - m_all);
    for (size_t i = threadIdx.x; i < head_dim; i += blockDim.x) {
        float acc = 0.0f;
        for (size_t c = 0; c < used; c++)
            acc += ws_o[(base + c) * head_dim + i] *
                   expf(ws_ml[2 * (base + c)] - m_all);
        dst[i] = slm_cuda::from_f32<T>(acc / l_all);
    }
}

size_t chunks_for(size_t seq_len)
{
    return (seq_len + kChunk - 1) / kChunk;
}

} // namespace

extern "C" size_t slm_cuda_attention_workspace_bytes(size_t rows,
                                                     size_t n_heads,
                                                     size_t head_dim,
                                                     size_t seq_len)
{
    size_t b;
    if (__builtin_mul_overflow(rows, n_heads, &b) ||
        __builtin_mul_overflow(b, chunks_for(seq_len), &b) ||
        head_dim > SIZE_MAX - 2 ||
        __builtin_mul_overflow(b, head_dim + 2, &b) ||
        __builtin_mul_overflow(b, sizeof(float), &b))
        return SIZE_MAX; /* no allocation can satisfy it */
    return b;
}

extern "C" slm_status
slm_cuda_decode_attention(void *out, const void *q, const void *k_cache,
                          const void *v_cache, const int32_t *pos, size_t rows,
                          size_t n_heads, size_t n_kv_heads, size_t head_dim,
                          size_t seq_len, void *workspace, slm_cuda_dtype dt,
                          void *stream)
{
    SLM_CHECK(slm_cuda::check_dtype(dt, "decode_attention"));
    if (rows == 0)
        return SLM_OK;
    if (n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 ||
        head_dim == 0 || seq_len == 0)
        return slm_fail(SLM_ERR_INVALID,
                        "cuda decode_attention: n_heads %zu must be a "
                        "positive multiple of n_kv_heads %zu; head_dim %zu, "
                        "seq_len %zu must be > 0",
                        n_heads, n_kv_heads, head_dim, seq_len);
    if (head_dim > kMaxHeadDim)
        return slm_fail(SLM_ERR_RANGE,
                        "cuda decode_attention: head_dim %zu exceeds %zu",
                        head_dim, kMaxHeadDim);
    const size_t n_chunks = chunks_for(seq_len);
    if (rows > slm_cuda::kMaxGridYZ || n_heads > slm_cuda::kMaxGridYZ ||
        n_chunks > slm_cuda::kMaxGridX)
        return slm_fail(SLM_ERR_RANGE,
                        "cuda decode_attention: grid (%zu chunks, %zu heads, "
                        "%zu rows) exceeds (%zu, %zu, %zu)",
                        n_chunks, n_heads, rows, slm_cuda::kMaxGridX,
                        slm_cuda::kMaxGridYZ, slm_cuda::kMaxGridYZ);
    size_t kv_dim, cache;
    if (__builtin_mul_overflow(n_kv_heads, head_dim, &kv_dim) ||
        __builtin_mul_overflow(rows, seq_len, &cache) ||
        __builtin_mul_overflow(cache, kv_dim, &cache) ||
        slm_cuda_attention_workspace_bytes(rows, n_heads, head_dim, seq_len) ==
            SIZE_MAX)
        return slm_fail(SLM_ERR_RANGE, "cuda decode_attention: sizes overflow");
    float *ws_o = (float *)workspace;
    float *ws_ml = ws_o + rows * n_heads * n_chunks * head_dim;
    const size_t kv_mul = n_heads / n_kv_heads;
    dim3 grid1((unsigned)n_chunks, (unsigned)n_heads, (unsigned)rows);
    dim3 grid2((unsigned)n_heads, (unsigned)rows);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == SLM_CUDA_F16) {
        partial_kernel<<<grid1, kThreads, 0, s>>>(
            (const __half *)q, (const __half *)k_cache, (const __half *)v_cache,
            pos, n_heads, kv_mul, head_dim, seq_len, kv_dim, ws_o, ws_ml);
        SLM_CHECK(slm_cuda::launch_status("decode_attention"));
        combine_kernel<<<grid2, kThreads, 0, s>>>((__half *)out, pos, n_heads,
                                                  head_dim, seq_len, n_chunks,
                                                  ws_o, ws_ml);
    } else {
        partial_kernel<<<grid1, kThreads, 0, s>>>(
            (const __nv_bfloat16 *)q, (const __nv_bfloat16 *)k_cache,
            (const __nv_bfloat16 *)v_cache, pos, n_heads, kv_mul, head_dim,
            seq_len, kv_dim, ws_o, ws_ml);
        SLM_CHECK(slm_cuda::launch_status("decode_attention"));
        combine_kernel<<<grid2, kThreads, 0, s>>>((__nv_bfloat16 *)out, pos,
                                                  n_heads, head_dim, seq_len,
                                                  n_chunks, ws_o, ws_ml);
    }
    return slm_cuda::launch_status("decode_attention combine");
}
