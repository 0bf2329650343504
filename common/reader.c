/* common/reader.c - bounded reads; see reader.h. */
#include "common/reader.h"

#include <string.h>

slm_status slm_reader_bytes(slm_reader *r, const char *field, size_t n,
                            const uint8_t **out)
{
    if (n > slm_reader_remaining(r))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: truncated at offset %zu reading %s (%zu bytes "
                        "needed, %zu left)",
                        r->what, r->off, field, n, slm_reader_remaining(r));
    *out = r->data + r->off;
    r->off += n;
    return SLM_OK;
}

/* The formats we read are little-endian; so is every host we build for. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "shardlm reads little-endian formats by memcpy");

slm_status slm_reader_i32(slm_reader *r, const char *field, int32_t *out)
{
    const uint8_t *p = NULL;
    SLM_CHECK(slm_reader_bytes(r, field, sizeof *out, &p));
    memcpy(out, p, sizeof *out);
    return SLM_OK;
}

slm_status slm_reader_f32(slm_reader *r, const char *field, float *out)
{
    const uint8_t *p = NULL;
    SLM_CHECK(slm_reader_bytes(r, field, sizeof *out, &p));
    memcpy(out, p, sizeof *out);
    return SLM_OK;
}
