/* common/hugemem.c - see hugemem.h. */
#include "common/hugemem.h"

#include <stdint.h>
#include <sys/mman.h>

#include "common/checked.h"

#define HUGE_PAGE ((size_t)2 << 20)

slm_status slm_hugemem_alloc(size_t bytes, const char *what, slm_hugemem *out)
{
    out->data = NULL;
    out->bytes = 0;
    if (bytes == 0)
        return SLM_OK;
    size_t rounded, padded;
    if (!slm_size_add(bytes, HUGE_PAGE - 1, &rounded) ||
        !slm_size_add(rounded & ~(HUGE_PAGE - 1), HUGE_PAGE, &padded))
        return slm_fail(SLM_ERR_RANGE, "%s: %zu bytes overflow", what, bytes);
    rounded &= ~(HUGE_PAGE - 1);
    uint8_t *p = mmap(NULL, padded, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return slm_fail(SLM_ERR_NOMEM, "%s: cannot allocate %zu bytes", what,
                        bytes);
    /* Over-map by one huge page, then trim to a 2 MiB-aligned start so that
     * whole huge pages can back the buffer. */
    uintptr_t start =
        ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    size_t head = start - (uintptr_t)p;
    if (head)
        munmap(p, head);
    if (HUGE_PAGE - head)
        munmap((uint8_t *)start + rounded, HUGE_PAGE - head);
    (void)madvise((void *)start, rounded, MADV_HUGEPAGE); /* only a hint */
    out->data = (void *)start;
    out->bytes = rounded;
    return SLM_OK;
}

slm_status slm_hugemem_seal(slm_hugemem *m, const char *what)
{
    if (m->data && mprotect(m->data, m->bytes, PROT_READ) != 0)
        return slm_fail(SLM_ERR_INTERNAL, "%s: cannot make weights read-only",
                        what);
    return SLM_OK;
}

void slm_hugemem_free(slm_hugemem *m)
{
    if (m->data)
        munmap(m->data, m->bytes);
    m->data = NULL;
    m->bytes = 0;
}
