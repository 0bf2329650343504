/* kernels/cpu/embedding.c - embedding lookup for a vocabulary slice; see
 * kernels.h. The twin of kernels/cuda/embedding.cu: with the vocabulary split
 * over a tensor group, each rank fills the rows whose token it holds and
 * zeros the others, and the group's all-reduce (a sum) completes the lookup. */
#include "kernels/kernels.h"

#include <string.h>

void slm_cpu_embedding_slice(float *out, const float *table,
                             const int32_t *tokens, size_t rows,
                             size_t vocab_begin, size_t vocab_count, size_t dim)
{
    for (size_t r = 0; r < rows; r++) {
        float *dst = out + r * dim;
        const int32_t tok = tokens[r];
        if (tok >= 0 && (size_t)tok >= vocab_begin &&
            (size_t)tok - vocab_begin < vocab_count)
            memcpy(dst, table + ((size_t)tok - vocab_begin) * dim,
                   dim * sizeof *dst);
        else
            for (size_t i = 0; i < dim; i++)
                dst[i] = 0.0f;
    }
}
