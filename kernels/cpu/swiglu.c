/*
 * kernels/cpu/swiglu.c - SwiGLU gate, h1 = silu(h1) * h3; see kernels.h.
 *
 * Written as llama2.c run.c writes it (val *= 1 / (1 + expf(-val)); val *=
 * h3), in float, so the hidden activations match the reference's rounding.
 */
#include "kernels/kernels.h"

#include <math.h>

void slm_cpu_swiglu(float *restrict h1, const float *restrict h3, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float val = h1[i];
        val *= (1.0f / (1.0f + expf(-val)));
        val *= h3[i];
        h1[i] = val;
    }
}
