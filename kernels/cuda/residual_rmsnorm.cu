/* kernels/cuda/residual_rmsnorm.cu - the fused residual step of a layer: x +=
 * delta, then out = rmsnorm(x) * weight in dt; one block per row. CPU twin:
 * slm_cpu_add then slm_cpu_rmsnorm (kernels/cpu/add.c, rmsnorm.c). The add
 * is exact (one IEEE addition); the sum of squares is float32 in a
 * different order from the CPU's sequential one. */
#include "kernels/cuda/util.cuh"

namespace
{

constexpr unsigned kThreads = 256;

template <typename T>
__global__ void residual_rmsnorm_kernel(float *x, const float *delta,
                                        const T *weight, T *out, size_t n,
                                        float eps)
{
    float *row = x + blockIdx.x * n;
    const float *d = delta ? delta + blockIdx.x * n : nullptr;
    T *dst = out + blockIdx.x * n;
    float ss = 0.0f;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = row[i];
        if (d) {
            v = __fadd_rn(v, d[i]);
            row[i] = v; /* read back below by this same thread */
        }
        ss = __fmaf_rn(v, v, ss);
    }
    ss = slm_cuda::block_sum(ss);
    const float scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (size_t i = threadIdx.x; i < n; i += blockDim.x)
        dst[i] = slm_cuda::from_f32<T>(
            __fmul_rn(slm_cuda::to_f32(weight[i]), __fmul_rn(scale, row[i])));
}

} // namespace

extern "C" slm_status slm_cuda_residual_rmsnorm(float *x, const float *delta,
                                                const void *weight, void *out,
                                                size_t rows, size_t n,
                                                float eps, slm_cuda_dtype dt,
                                                void *stream)
{
    SLM_CHECK(slm_cuda::check_dtype(dt, "residual_rmsnorm"));
    if (rows == 0 || n == 0)
        return SLM_OK;
    if (rows > slm_cuda::kMaxGridX)
        return slm_fail(SLM_ERR_RANGE,
                        "cuda residual_rmsnorm: %zu rows exceed the grid",
                        rows);
    cudaStream_t s = (cudaStream_t)stream;
    if (dt == SLM_CUDA_F16)
        residual_rmsnorm_kernel<<<(unsigned)rows, kThreads, 0, s>>>(
            x, delta, (const __half *)weight, (__half *)out, n, eps);
    else
        residual_rmsnorm_kernel<<<(unsigned)rows, kThreads, 0, s>>>(
            x, delta, (const __nv_bfloat16 *)weight, (__nv_bfloat16 *)out, n,
            eps);
    return slm_cuda::launch_status("residual_rmsnorm");
}
