/* kernels/cuda/embedding.cu - embedding lookup for a vocabulary slice; CPU
 * twin: kernels/cpu/embedding.c. A token outside [vocab_begin, vocab_begin +
 * vocab_count) (negative ones included) gives a row of zeros, so the sum over
 * the tensor group's slices is the full lookup. Conversion to float32 is
 * exact. */
#include "kernels/cuda/util.cuh"

#include <stdint.h>

namespace
{

constexpr unsigned kThreads = 256;

/* grid (column blocks, rows) */
template <typename T>
__global__ void embedding_kernel(float *out, const T *table,
                                 const int32_t *tokens, size_t vocab_begin,
                                 size_t vocab_count, size_t dim)
{
    const size_t r = blockIdx.y;
    const int32_t tok = tokens[r];
    const bool mine = tok >= 0 && (size_t)tok >= vocab_begin &&
                      (size_t)tok - vocab_begin < vocab_count;
    const T *src = mine ? table + ((size_t)tok - vocab_begin) * dim : nullptr;
    float *dst = out + r * dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < dim;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = mine ? slm_cuda::to_f32(src[i]) : 0.0f;
}

} // namespace

extern "C" slm_status slm_cuda_embedding(float *out, const void *table,
                                         const int32_t *tokens, size_t rows,
                                         size_t vocab_begin, size_t vocab_count,
                                         size_t dim, slm_cuda_dtype dt,
                                         void *stream)
{
    SLM_CHECK(slm_cuda::check_dtype(dt, "embedding"));
    if (rows == 0 || dim == 0)
        return SLM_OK;
    if (rows > slm_cuda::kMaxGridYZ)
        return slm_fail(SLM_ERR_RANGE,
                        "cuda embedding: %zu rows exceed the grid (%zu)", rows,
                        slm_cuda::kMaxGridYZ);
    dim3 grid(slm_cuda::grid_for(dim, kThreads, 1024), (unsigned)rows);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == SLM_CUDA_F16)
        embedding_kernel<<<grid, kThreads, 0, s>>>(
            out, (const __half *)table, tokens, vocab_begin, vocab_count, dim);
    else
        embedding_kernel<<<grid, kThreads, 0, s>>>(
            out, (const __nv_bfloat16 *)table, tokens, vocab_begin, vocab_count,
            dim);
    return slm_cuda::launch_status("embedding");
}
