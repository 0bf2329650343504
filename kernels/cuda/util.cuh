/*
 * kernels/cuda/util.cuh - helpers shared by the kernels in kernels/cuda/:
 * loading and storing the two half types as float, block-wide reductions,
 * and the launch check every launcher ends with. Internal to kernels/cuda
 * (the public contract is cuda_kernels.h).
 */
#ifndef SLM_KERNELS_CUDA_UTIL_CUH
#define SLM_KERNELS_CUDA_UTIL_CUH

#include "kernels/cuda/cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <limits.h>

namespace slm_cuda
{

/* The largest grid.x, and grid.y / grid.z, a launch may ask for. */
constexpr size_t kMaxGridX = 0x7fffffffu;
constexpr size_t kMaxGridYZ = 65535u;

__device__ __forceinline__ float to_f32(__half v)
{
    return __half2float(v);
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __half from_f32<__half>(float v)
{
    return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

/* Sum over the block of every thread's v; every thread gets the result.
 * blockDim.x must be a multiple of 32 and at most 1024; every thread of the
 * block must call it (it synchronizes). The order of the sum is fixed by the
 * block shape, so the same inputs give the same bits. */
template <typename T> __device__ T block_sum(T v)
{
    __shared__ T partial[32];
    for (int off = 16; off > 0; off /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int n_warps = blockDim.x / 32;
    __syncthreads(); /* partial may still be read by a previous call */
    if (lane == 0)
        partial[warp] = v;
    __syncthreads();
    T s = lane < n_warps ? partial[lane] : T(0);
    for (int off = 16; off > 0; off /= 2)
        s += __shfl_xor_sync(0xffffffffu, s, off);
    return s;
}

/* Maximum over the block, as block_sum. */
__device__ inline float block_max(float v)
{
    __shared__ float partial[32];
    for (int off = 16; off > 0; off /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int n_warps = blockDim.x / 32;
    __syncthreads();
    if (lane == 0)
        partial[warp] = v;
    __syncthreads();
    float s = lane < n_warps ? partial[lane] : -INFINITY;
    for (int off = 16; off > 0; off /= 2)
        s = fmaxf(s, __shfl_xor_sync(0xffffffffu, s, off));
    return s;
}

/* The status of the launch just made: SLM_ERR_INTERNAL with CUDA's text
 * (prefixed by what) if it failed. */
inline slm_status launch_status(const char *what)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return slm_fail(SLM_ERR_INTERNAL, "cuda %s launch: %s", what,
                        cudaGetErrorString(e));
    return SLM_OK;
}

inline slm_status check_dtype(slm_cuda_dtype dt, const char *what)
{
    if (dt != SLM_CUDA_F16 && dt != SLM_CUDA_BF16)
        return slm_fail(SLM_ERR_INVALID, "cuda %s: unknown dtype %d", what,
                        (int)dt);
    return SLM_OK;
}

/* Blocks of `threads` covering n elements, capped for grid-stride loops. */
inline unsigned grid_for(size_t n, unsigned threads, size_t cap = 65536)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < cap ? b : cap);
}

} // namespace slm_cuda

#endif
