/*
 * common/reader.h - a bounded little-endian cursor over an untrusted buffer.
 *
 * Every read is checked against the bytes remaining before it happens; a
 * failed read returns SLM_ERR_FORMAT with the field name and offset in the
 * message and leaves the cursor where it was.
 */
#ifndef SLM_COMMON_READER_H
#define SLM_COMMON_READER_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    const uint8_t *data; /* borrowed; (len) */
    size_t len;
    size_t off;
    const char *what; /* names the input in messages, e.g. a file path */
} slm_reader;

static inline slm_reader slm_reader_make(const void *data, size_t len,
                                         const char *what)
{
    slm_reader r = {(const uint8_t *)data, len, 0, what ? what : "input"};
    return r;
}

static inline size_t slm_reader_remaining(const slm_reader *r)
{
    return r->len - r->off;
}

slm_status slm_reader_i32(slm_reader *r, const char *field, int32_t *out);
slm_status slm_reader_f32(slm_reader *r, const char *field, float *out);
/* Hands out a borrowed pointer to the next n bytes and advances past them. */
slm_status slm_reader_bytes(slm_reader *r, const char *field, size_t n,
                            const uint8_t **out);

#endif
