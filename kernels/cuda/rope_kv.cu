/* kernels/cuda/rope_kv.cu - rotary embedding fused with the KV-cache write;
 * CPU twin: slm_cpu_rope (kernels/cpu/rope.c, llama2.c's convention: within
 * each head the pair (2i, 2i+1) turns by pos * theta^(-2i / head_dim),
 * theta = 10000) plus a copy of k and v into the cache.
 *
 * One thread per pair: the pairs of q, then of k, then of v (v is only
 * copied). The angle is computed as the CPU computes it - powf of the same
 * float exponent, the same float product pos * freq, cosf and sinf - but
 * through double-precision pow/cos/sin rounded to float, which gives the
 * correctly rounded result glibc's float functions also give in nearly all
 * cases; CUDA's own powf/cosf may be 1-2 ulps off, and at pos 4096 one ulp of
 * freq moves the angle by 5e-4. The rotation is written with __fmul_rn /
 * __fsub_rn so that nvcc cannot contract it into FMAs (the CPU code is plain
 * C without FMA).
 *
 * A position outside [0, seq_len) would write outside the cache: the kernel
 * skips the cache write for that row and sets its q to NaN, so the bug shows
 * in the output instead of corrupting another sequence's memory. */
#include "kernels/cuda/util.cuh"

#include <stdint.h>

namespace
{

constexpr unsigned kThreads = 256;
constexpr float kTheta = 10000.0f;

/* grid (pair blocks, rows) */
template <typename T>
__global__ void rope_kv_kernel(T *q, const T *k, const T *v, T *k_cache,
                               T *v_cache, const int32_t *pos, size_t n_heads,
                               size_t n_kv_heads, size_t head_dim,
                               size_t seq_len)
{
    const size_t r = blockIdx.y;
    const size_t half_dim = head_dim / 2;
    const size_t q_pairs = n_heads * half_dim, kv_pairs = n_kv_heads * half_dim;
    const size_t q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
    const int32_t p = pos[r];
    const bool valid = p >= 0 && (size_t)p < seq_len;
    const size_t cache_row = (r * seq_len + (valid ? (size_t)p : 0)) * kv_dim;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
         t < q_pairs + 2 * kv_pairs; t += (size_t)gridDim.x * blockDim.x) {
        if (t >= q_pairs + kv_pairs) { /* v: copy */
            if (!valid)
                continue;
            const size_t j = 2 * (t - q_pairs - kv_pairs);
            v_cache[cache_row + j] = v[r * kv_dim + j];
            v_cache[cache_row + j + 1] = v[r * kv_dim + j + 1];
            continue;
        }
        const bool is_q = t < q_pairs;
        const size_t j = 2 * (is_q ? t : t - q_pairs); /* even index in row */
        const size_t i = j % head_dim;                 /* index within head */
        if (!valid) {
            if (is_q) {
                q[r * q_dim + j] = slm_cuda::from_f32<T>(NAN);
                q[r * q_dim + j + 1] = slm_cuda::from_f32<T>(NAN);
            }
            continue;
        }
        const float e = (float)i / (float)head_dim;
        const float freq = 1.0f / (float)pow((double)kTheta, (double)e);
        const float val = __fmul_rn((float)p, freq);
        const float fcr = (float)cos((double)val);
        const float fci = (float)sin((double)val);
        const T *src = is_q ? q + r * q_dim + j : k + r * kv_dim + j;
        const float v0 = slm_cuda::to_f32(src[0]);
        const float v1 = slm_cuda::to_f32(src[1]);
        const float o0 = __fsub_rn(__fmul_rn(v0, fcr), __fmul_rn(v1, fci));
        const float o1 = __fadd_rn(__fmul_rn(v0, fci), __fmul_rn(v1, fcr));
        T *dst = is_q ? q + r * q_dim + j : k_cache + cache_row + j;
        dst[0] = slm_cuda::from_f32<T>(o0);
        dst[1] = slm_cuda::from_f32<T>(o1);
    }
}

} // namespace

extern "C" slm_status
slm_cuda_rope_kv_write(void *q, const void *k, const void *v, void *k_cache,
                       void *v_cache, const int32_t *pos, size_t rows,
                       size_t n_heads, size_t n_kv_heads, size_t head_dim,
                       size_t seq_len, slm_cuda_dtype dt, void *stream)
{
    SLM_CHECK(slm_cuda::check_dtype(dt, "rope_kv_write"));
    if (rows == 0)
        return SLM_OK;
    if (head_dim == 0 || head_dim % 2 != 0)
        return slm_fail(SLM_ERR_INVALID,
                        "cuda rope_kv_write: head_dim %zu must be even",
                        head_dim);
    if (n_heads == 0 || n_kv_heads == 0 || seq_len == 0)
        return slm_fail(SLM_ERR_INVALID,
                        "cuda rope_kv_write: n_heads %zu, n_kv_heads %zu, "
                        "seq_len %zu must be > 0",
                        n_heads, n_kv_heads, seq_len);
    if (rows > slm_cuda::kMaxGridYZ)
        return slm_fail(SLM_ERR_RANGE,
                        "cuda rope_kv_write: %zu rows exceed the grid (%zu)",
                        rows, slm_cuda::kMaxGridYZ);
    /* the cache index (rows * seq_len * kv_dim) must fit in size_t */
    size_t kv_dim, cache;
    if (__builtin_mul_overflow(n_kv_heads, head_dim, &kv_dim) ||
        __builtin_mul_overflow(rows, seq_len, &cache) ||
        __builtin_mul_overflow(cache, kv_dim, &cache) ||
        n_heads > SIZE_MAX / head_dim)
        return slm_fail(SLM_ERR_RANGE, "cuda rope_kv_write: sizes overflow");
    const size_t pairs = (n_heads + 2 * n_kv_heads) * (head_dim / 2);
    dim3 grid(slm_cuda::grid_for(pairs, kThreads, 4096), (unsigned)rows);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == SLM_CUDA_F16)
        rope_kv_kernel<<<grid, kThreads, 0, s>>>(
            (__half *)q, (const __half *)k, (const __half *)v,
            (__half *)k_cache, (__half *)v_cache, pos, n_heads, n_kv_heads,
            head_dim, seq_len);
    else
        rope_kv_kernel<<<grid, kThreads, 0, s>>>(
            (__nv_bfloat16 *)q, (const __nv_bfloat16 *)k,
            (const __nv_bfloat16 *)v, (__nv_bfloat16 *)k_cache,
            (__nv_bfloat16 *)v_cache, pos, n_heads, n_kv_heads, head_dim,
            seq_len);
    return slm_cuda::launch_status("rope_kv_write");
}
