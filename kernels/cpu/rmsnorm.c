/* kernels/cpu/rmsnorm.c - RMSNorm; see kernels.h. The sum of squares runs in
 * float, in index order, as llama2.c's run.c does, so that single-rank logits
 * track the reference closely. */
#include "kernels/kernels.h"

#include <math.h>

void slm_cpu_rmsnorm(float *out, const float *x, const float *weight, size_t n,
                     float eps)
{
    float ss = 0.0f;
    for (size_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (size_t i = 0; i < n; i++)
        out[i] = weight[i] * (ss * x[i]);
}
