/* kernels/cuda/sample.cu - temperature / top-k / top-p sampling on device
 * with a host-drawn coin; CPU twin: slm_cpu_sample_topk_topp
 * (kernels/cpu/sample.c), which follows coordinator/sampler.c's choice.
 *
 * One block per row, no workspace: the row's probabilities are cached in
 * shared memory when they fit, else recomputed from the logits on every
 * pass. The CPU sorts the candidates by (probability descending, id
 * ascending) and walks the sorted list; here each candidate
 * gets the 64-bit key (float bits of its probability << 32) | (~id), which
 * orders exactly as that sort (probabilities are >= 0, so their bits order
 * as the values), and every "position in the sorted list" question becomes
 * "the largest key K such that a block-wide count or sum over the keys >= K
 * passes a test", answered bit by bit from the top (64 passes):
 *   top-k:   the k-th largest key (count of keys >= K is >= k);
 *   top-p:   the shortest prefix whose mass reaches top_p * total;
 *   draw:    the first candidate whose cumulative mass exceeds coin * total.
 * Without truncation (top_k 0, top_p 1) the CPU walks in id order, so the
 * draw bisects on the id instead. Correctness over speed: about 200 passes
 * over the row (a few hundred microseconds for 32000 ids with the cache).
 *
 * Probabilities are (float)exp((double)x) - the correctly rounded expf,
 * which glibc's expf also returns in nearly all cases - so the candidates'
 * probabilities, and hence the sets and their order, are the CPU's bits;
 * sums are float64 as on the CPU but in a different order, so a coin within
 * about 1e-15 of a boundary between two tokens may pick the neighbour. */
#include "kernels/cuda/util.cuh"

#include <math.h>
#include <stdint.h>

namespace
{

constexpr unsigned kThreads = 1024;

/* The probability (unnormalized) of id i: from the shared-memory cache when
 * the row fits there, else recomputed from the logits. */
struct Probs {
    const float *row;
    float max;
    float temperature;
    const float *cache; /* (vocab) in shared memory, or null */

    __device__ float compute(size_t i) const
    {
        return (float)exp((double)((row[i] - max) / temperature));
    }
    __device__ float operator()(size_t i) const
    {
        return cache ? cache[i] : compute(i);
    }
};

__device__ __forceinline__ uint64_t key_of(float prob, size_t i)
{
    return ((uint64_t)__float_as_uint(prob) << 32) |
           (uint64_t)(0xffffffffu - (uint32_t)i);
}

/* Sum of probabilities (mass) or count of candidates with key >= lo. */
__device__ double mass_from(const Probs &P, size_t vocab, uint64_t lo)
{
    double s = 0.0;
    for (size_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float p = P(i);
        if (key_of(p, i) >= lo)
            s += p;
    }
    return slm_cuda::block_sum(s);
}

__device__ unsigned long long count_from(const Probs &P, size_t vocab,
                                         uint64_t lo)
{
    unsigned long long c = 0;
    for (size_t i = threadIdx.x; i < vocab; i += blockDim.x)
        if (key_of(P(i), i) >= lo)
            c++;
    return slm_cuda::block_sum(c);
}

/* Sum of the probabilities of ids [0, m). */
__device__ double prefix_mass(const Probs &P, size_t m)
{
    double s = 0.0;
    for (size_t i = threadIdx.x; i < m; i += blockDim.x)
        s += P(i);
    return slm_cuda::block_sum(s);
}

__device__ uint64_t min_key(const Probs &P, size_t vocab)
{
    __shared__ unsigned long long best;
    if (threadIdx.x == 0)
        best = ~0ull;
    __syncthreads();
    unsigned long long k = ~0ull;
    for (size_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        const unsigned long long ki = key_of(P(i), i);
        k = ki < k ? ki : k;
    }
    atomicMin(&best, k);
    __syncthreads();
    const uint64_t r = best;
    __syncthreads();
    return r;
}

/* launch bounds: 1024 threads leave 64 registers a thread (34 used) */
__global__ void __launch_bounds__(kThreads)
    sample_kernel(int32_t *out, const float *logits, size_t vocab,
                  float temperature, int32_t top_k, float top_p,
                  const float *coins, int use_cache)
{
    extern __shared__ float cache[]; /* (vocab) when use_cache */
    const float *row = logits + blockIdx.x * vocab;
    float m = -INFINITY;
    for (size_t i = threadIdx.x; i < vocab; i += blockDim.x)
        m = fmaxf(m, row[i]);
    const Probs P = {row, slm_cuda::block_max(m), temperature,
                     use_cache ? cache : nullptr};
    if (use_cache) {
        for (size_t i = threadIdx.x; i < vocab; i += blockDim.x)
            cache[i] = P.compute(i);
        __syncthreads();
    }
    const double coin = (double)coins[blockIdx.x];

    if (!(top_k > 0 || top_p < 1.0f)) {
        /* id order: the first id whose cumulative mass exceeds coin * sum,
         * i.e. the largest m with prefix_mass(m) <= r (clamped: rounding) */
        const double r = coin * prefix_mass(P, vocab);
        size_t ans = 0;
        for (int b = 31; b >= 0; b--) {
            const size_t cand = ans | ((size_t)1 << b);
            if (cand <= vocab && prefix_mass(P, cand) <= r)
                ans = cand;
        }
        if (threadIdx.x == 0)
            out[blockIdx.x] = (int32_t)(ans < vocab ? ans : vocab - 1);
        return;
    }

    /* lo: the smallest key kept; every candidate is kept at first */
    uint64_t lo = min_key(P, vocab);
    if (top_k > 0 && (size_t)top_k < vocab) {
        uint64_t ans = 0;
        for (int b = 63; b >= 0; b--) {
            const uint64_t cand = ans | ((uint64_t)1 << b);
            if (count_from(P, vocab, cand) >= (unsigned long long)top_k)
                ans = cand;
        }
        lo = ans; /* the k-th largest key */
    }
    if (top_p < 1.0f) {
        /* against the whole distribution, or the kept tokens after a top-k
         * cut (coordinator/sampler.c) */
        const double total = mass_from(P, vocab, top_k > 0 ? lo : 0);
        const double target = (double)top_p * total;
        uint64_t ans = 0;
        for (int b = 63; b >= 0; b--) {
            const uint64_t cand = ans | ((uint64_t)1 << b);
            if (mass_from(P, vocab, cand > lo ? cand : lo) >= target)
                ans = cand;
        }
        lo = ans > lo ? ans : lo; /* unchanged if the nucleus was never met */
    }
    const double r = coin * mass_from(P, vocab, lo);
    uint64_t ans = 0;
    for (int b = 63; b >= 0; b--) {
        const uint64_t cand = ans | ((uint64_t)1 << b);
        if (mass_from(P, vocab, cand > lo ? cand : lo) > r)
            ans = cand;
    }
    const uint64_t key = ans > lo ? ans : lo; /* none: the last kept */
    if (threadIdx.x == 0)
        out[blockIdx.x] =
            (int32_t)(0xffffffffu - (uint32_t)(key & 0xffffffffu));
}

} // namespace

extern "C" slm_status slm_cuda_sample(int32_t *out, const float *logits,
                                      size_t rows, size_t vocab,
                                      float temperature, int32_t top_k,
                                      float top_p, const float *coins,
                                      void *stream)
{
    if (!(temperature > 0.0f) || !isfinite(temperature) || top_k < 0 ||
        !(top_p > 0.0f && top_p <= 1.0f))
        return slm_fail(SLM_ERR_INVALID,
                        "cuda sample: temperature %g must be finite and > 0, "
                        "top_k %d >= 0, top_p %g in (0, 1]",
                        (double)temperature, top_k, (double)top_p);
    if (rows == 0)
        return SLM_OK;
    if (vocab == 0 || vocab > INT32_MAX)
        return slm_fail(SLM_ERR_RANGE, "cuda sample: vocab %zu not in [1, %d]",
                        vocab, INT32_MAX);
    if (rows > slm_cuda::kMaxGridX)
        return slm_fail(SLM_ERR_RANGE, "cuda sample: %zu rows exceed the grid",
                        rows);
    /* Cache the row's probabilities in shared memory when they fit (32000
     * floats take 125 KiB; the opt-in limit is 163 KiB on sm_80, 227 KiB on
     * sm_90): every pass then reads shared memory instead of recomputing a
     * float64 exp per id. */
    size_t smem = 0;
    int dev = 0, optin = 0;
    cudaFuncAttributes fa;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                               dev) != cudaSuccess ||
        cudaFuncGetAttributes(&fa, sample_kernel) != cudaSuccess)
        return slm_fail(SLM_ERR_INTERNAL, "cuda sample: %s",
                        cudaGetErrorString(cudaGetLastError()));
    if (vocab * sizeof(float) + fa.sharedSizeBytes <= (size_t)optin) {
        smem = vocab * sizeof(float);
        if (smem > 48 * 1024 &&
            cudaFuncSetAttribute(sample_kernel,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)smem) != cudaSuccess)
            return slm_fail(SLM_ERR_INTERNAL,
                            "cuda sample: %zu bytes of shared memory: %s", smem,
                            cudaGetErrorString(cudaGetLastError()));
    }
    sample_kernel<<<(unsigned)rows, kThreads, smem, (cudaStream_t)stream>>>(
        out, logits, vocab, temperature, top_k, top_p, coins, smem > 0);
    return slm_cuda::launch_status("sample");
}
