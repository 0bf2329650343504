/* kernels/cuda/swiglu.cu - fused SwiGLU, out = silu(gate) * up, element-wise
 * in float32; CPU twin: kernels/cpu/swiglu.c (the same float operations in
 * the same order: val *= 1 / (1 + expf(-val)); val *= up). In-place on gate
 * is allowed: each element is read before it is written, by one thread. */
#include "kernels/cuda/util.cuh"

namespace
{

constexpr unsigned kThreads = 256;

template <typename T>
__global__ void swiglu_kernel(T *out, const T *gate, const T *up, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float val = slm_cuda::to_f32(gate[i]);
        val = __fmul_rn(val, 1.0f / (1.0f + expf(-val)));
        val = __fmul_rn(val, slm_cuda::to_f32(up[i]));
        out[i] = slm_cuda::from_f32<T>(val);
    }
}

} // namespace

extern "C" slm_status slm_cuda_swiglu(void *out, const void *gate,
                                      const void *up, size_t n,
                                      slm_cuda_dtype dt, void *stream)
{
    SLM_CHECK(slm_cuda::check_dtype(dt, "swiglu"));
    if (n == 0)
        return SLM_OK;
    unsigned grid = slm_cuda::grid_for(n, kThreads);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == SLM_CUDA_F16)
        swiglu_kernel<<<grid, kThreads, 0, s>>>(
            (__half *)out, (const __half *)gate, (const __half *)up, n);
    else
        swiglu_kernel<<<grid, kThreads, 0, s>>>((__nv_bfloat16 *)out,
                                                (const __nv_bfloat16 *)gate,
                                                (const __nv_bfloat16 *)up, n);
    return slm_cuda::launch_status("swiglu");
}
