/*
 * kernels/cpu/add.c - the residual connection, x += y; see kernels.h.
 *
 * Each element is one independent addition, so the compiler's SSE
 * vectorization is exact and enough: n is the model width (a few thousand).
 */
#include "kernels/kernels.h"

void slm_cpu_add(float *restrict x, const float *restrict y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}
