/* kernels/cuda/rmsnorm.cu - RMSNorm, one block per row; CPU twin:
 * kernels/cpu/rmsnorm.c. Sum of squares accumulates in float32. */
#include "kernels/cuda/cuda_kernels.h"

#include <cuda_runtime.h>

namespace
{

constexpr int kThreads = 256;

__global__ void rmsnorm_kernel(float *out, const float *x, const float *weight,
                               size_t n, float eps)
{
    const float *row = x + blockIdx.x * n;
    float *dst = out + blockIdx.x * n;
    float ss = 0.0f;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x)
        ss += row[i] * row[i];
    for (int off = 16; off > 0; off /= 2)
        ss += __shfl_xor_sync(0xffffffffu, ss, off);
    __shared__ float warp_sums[kThreads / 32];
    if (threadIdx.x % 32 == 0)
        warp_sums[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float s = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0f;
        for (int off = 16; off > 0; off /= 2)
            s += __shfl_xor_sync(0xffffffffu, s, off);
        if (threadIdx.x == 0)
            warp_sums[0] = s;
    }
    __syncthreads();
    const float scale = rsqrtf(warp_sums[0] / (float)n + eps);
    for (size_t i = threadIdx.x; i < n; i += blockDim.x)
        dst[i] = weight[i] * (scale * row[i]);
}

} // namespace

extern "C" int slm_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess)
        return 0;
    return n;
}

extern "C" slm_status slm_cuda_rmsnorm(float *out, const float *x,
                                       const float *weight, size_t rows,
                                       size_t n, float eps, void *stream)
{
    if (rows == 0 || n == 0)
        return SLM_OK;
    if (rows > 0x7fffffffu)
        return slm_fail(SLM_ERR_RANGE, "cuda rmsnorm: %zu rows exceed the grid",
                        rows);
    rmsnorm_kernel<<<(unsigned)rows, kThreads, 0, (cudaStream_t)stream>>>(
        out, x, weight, n, eps);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return slm_fail(SLM_ERR_INTERNAL, "cuda rmsnorm launch: %s",
                        cudaGetErrorString(e));
    return SLM_OK;
}
