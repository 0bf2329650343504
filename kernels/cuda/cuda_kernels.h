/*
 * kernels/cuda/cuda_kernels.h - host-side launchers of the CUDA kernels.
 *
 * Kept free of CUDA headers so that C code can include it: a stream is passed
 * as an opaque pointer (a cudaStream_t, or NULL for the default stream). Every
 * kernel here has a CPU twin in kernels/kernels.h that tests/gpu compares it
 * against. Pointers are device pointers unless a parameter says otherwise.
 */
#ifndef SLM_KERNELS_CUDA_KERNELS_H
#define SLM_KERNELS_CUDA_KERNELS_H

#include <stddef.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or no GPU. */
int slm_cuda_device_count(void);

/* out(rows, n) = rmsnorm of each row of x(rows, n) times weight(n); twin of
 * slm_cpu_rmsnorm applied row by row. In-place allowed. */
slm_status slm_cuda_rmsnorm(float *out, const float *x, const float *weight,
                            size_t rows, size_t n, float eps, void *stream);

#ifdef __cplusplus
}
#endif

#endif
