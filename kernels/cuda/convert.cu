/* kernels/cuda/convert.cu - float32 <-> float16 / bfloat16, element-wise,
 * rounding to nearest even; CPU twins: slm_cpu_f32_to_f16 and friends
 * (kernels/cpu/half.c), which round the same way, so results are exact. */
#include "kernels/cuda/util.cuh"

#include <stdint.h>

namespace
{

constexpr unsigned kThreads = 256;

template <typename T>
__global__ void to_half_kernel(T *dst, const float *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = slm_cuda::from_f32<T>(src[i]);
}

template <typename T>
__global__ void from_half_kernel(float *dst, const T *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = slm_cuda::to_f32(src[i]);
}

} // namespace

extern "C" size_t slm_cuda_dtype_size(slm_cuda_dtype dt)
{
    (void)dt; /* both halves are two bytes */
    return 2;
}

extern "C" slm_status slm_cuda_to_half(void *dst, const float *src, size_t n,
                                       slm_cuda_dtype dt, void *stream)
{
    SLM_CHECK(slm_cuda::check_dtype(dt, "to_half"));
    if (n == 0)
        return SLM_OK;
    unsigned grid = slm_cuda::grid_for(n, kThreads);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == SLM_CUDA_F16)
        to_half_kernel<<<grid, kThreads, 0, s>>>((__half *)dst, src, n);
    else
        to_half_kernel<<<grid, kThreads, 0, s>>>((__nv_bfloat16 *)dst, src, n);
    return slm_cuda::launch_status("to_half");
}

extern "C" slm_status slm_cuda_from_half(float *dst, const void *src, size_t n,
                                         slm_cuda_dtype dt, void *stream)
{
    SLM_CHECK(slm_cuda::check_dtype(dt, "from_half"));
    if (n == 0)
        return SLM_OK;
    unsigned grid = slm_cuda::grid_for(n, kThreads);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == SLM_CUDA_F16)
        from_half_kernel<<<grid, kThreads, 0, s>>>(dst, (const __half *)src, n);
    else
        from_half_kernel<<<grid, kThreads, 0, s>>>(
            dst, (const __nv_bfloat16 *)src, n);
    return slm_cuda::launch_status("from_half");
}
