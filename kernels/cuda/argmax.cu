/* kernels/cuda/argmax.cu - greedy choice, one block per row: the first index
 * of the largest logit, as coordinator/sampler.c's argmax and its CPU twin
 * slm_cpu_argmax (kernels/cpu/sample.c). Exact: comparisons only. NaNs are
 * treated as the CPU loop (x[i] > x[best], best = 0 first) treats them: a
 * NaN never wins, except that a NaN at index 0 is never replaced. */
#include "kernels/cuda/util.cuh"

#include <stdint.h>

namespace
{

constexpr unsigned kThreads = 1024;

/* Does candidate (v, i) come before (bv, bi): larger value, then smaller
 * index; i < 0 is "no candidate" (a thread that saw only NaNs). */
__device__ __forceinline__ bool better(float v, int32_t i, float bv, int32_t bi)
{
    if (i < 0)
        return false;
    return bi < 0 || v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(kThreads)
    argmax_kernel(int32_t *out, const float *logits, size_t vocab)
{
    const float *row = logits + blockIdx.x * vocab;
    float bv = -INFINITY;
    int32_t bi = -1;
    for (size_t i = threadIdx.x; i < vocab; i += blockDim.x)
        if (!isnan(row[i]) && better(row[i], (int32_t)i, bv, bi)) {
            bv = row[i];
            bi = (int32_t)i;
        }
    for (int off = 16; off > 0; off /= 2) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        int32_t oi = __shfl_xor_sync(0xffffffffu, bi, off);
        if (better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    __shared__ float sv[32];
    __shared__ int32_t si[32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        const int n_warps = blockDim.x / 32;
        bv = lane < n_warps ? sv[lane] : -INFINITY;
        bi = lane < n_warps ? si[lane] : -1;
        for (int off = 16; off > 0; off /= 2) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, off);
            int32_t oi = __shfl_xor_sync(0xffffffffu, bi, off);
            if (better(ov, oi, bv, bi)) {
                bv = ov;
                bi = oi;
            }
        }
        if (lane == 0)
            out[blockIdx.x] = bi < 0 || isnan(row[0]) ? 0 : bi;
    }
}

} // namespace

extern "C" slm_status slm_cuda_argmax(int32_t *out, const float *logits,
                                      size_t rows, size_t vocab, void *stream)
{
    if (rows == 0)
        return SLM_OK;
    if (vocab == 0 || vocab > INT32_MAX)
        return slm_fail(SLM_ERR_RANGE, "cuda argmax: vocab %zu not in [1, %d]",
                        vocab, INT32_MAX);
    if (rows > slm_cuda::kMaxGridX)
        return slm_fail(SLM_ERR_RANGE, "cuda argmax: %zu rows exceed the grid",
                        rows);
    argmax_kernel<<<(unsigned)rows, kThreads, 0, (cudaStream_t)stream>>>(
        out, logits, vocab);
    return slm_cuda::launch_status("argmax");
}
