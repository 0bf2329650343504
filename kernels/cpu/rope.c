/*
 * kernels/cpu/rope.c - rotary position embedding; see kernels.h.
 *
 * Kept to llama2.c run.c's exact float operations (powf, cosf, sinf, the same
 * products and differences in the same order), because single-rank logits are
 * checked against that reference. The only change is that the frequencies come
 * precomputed (slm_model_config_rope_freqs, with run.c's powf expression) and
 * the angle of pair i is applied to every head, rather than recomputed per
 * head: the values are identical, the transcendental calls are not repeated.
 * Plain C on purpose: inside a target("fma") function the compiler could
 * contract v0 * fcr - v1 * fci into an FMA and change the rounding.
 */
#include "kernels/kernels.h"

#include <math.h>

void slm_cpu_rope(float *vec, size_t n_heads, size_t head_size, size_t pos,
                  const float *freqs)
{
    for (size_t i = 0; i + 1 < head_size; i += 2) {
        float val = (float)pos * freqs[i / 2];
        float fcr = cosf(val);
        float fci = sinf(val);
        for (size_t h = 0; h < n_heads; h++) {
            float *v = vec + h * head_size + i;
            float v0 = v[0];
            float v1 = v[1];
            v[0] = v0 * fcr - v1 * fci;
            v[1] = v0 * fci + v1 * fcr;
        }
    }
}
