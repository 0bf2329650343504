/*
 * common/hugemem.h - large private buffers backed by transparent huge pages,
 * for weights that are streamed once per token (4 KiB pages cost about a
 * tenth of the bandwidth in TLB misses; see BENCHMARKS.md).
 */
#ifndef SLM_COMMON_HUGEMEM_H
#define SLM_COMMON_HUGEMEM_H

#include <stddef.h>

#include "common/status.h"

typedef struct {
    void *data;   /* 2 MiB-aligned; NULL when empty */
    size_t bytes; /* mapped length, a multiple of 2 MiB */
} slm_hugemem;

/* Maps at least `bytes` of zeroed, writable, 2 MiB-aligned memory and asks
 * for huge pages. `what` names the use in the error message. The caller
 * releases it with slm_hugemem_free. */
slm_status slm_hugemem_alloc(size_t bytes, const char *what, slm_hugemem *out);

/* Makes the whole buffer read-only, so weights cannot be changed once
 * loaded. */
slm_status slm_hugemem_seal(slm_hugemem *m, const char *what);

/* Accepts an empty buffer; leaves it empty. */
void slm_hugemem_free(slm_hugemem *m);

#endif
