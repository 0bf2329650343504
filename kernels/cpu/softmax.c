/*
 * kernels/cpu/softmax.c - numerically stable softmax; see kernels.h.
 *
 * The same float operations in the same order as llama2.c run.c's softmax
 * (max, then expf(x - max) summed in index order, then division), so that
 * attention weights track the reference bit for bit where libm agrees.
 */
#include "kernels/kernels.h"

#include <math.h>

void slm_cpu_softmax(float *x, size_t n)
{
    float max_val = x[0];
    for (size_t i = 1; i < n; i++)
        if (x[i] > max_val)
            max_val = x[i];
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    for (size_t i = 0; i < n; i++)
        x[i] /= sum;
}
