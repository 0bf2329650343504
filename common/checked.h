/*
 * common/checked.h - overflow-checked size arithmetic.
 *
 * Every size or offset derived from untrusted input goes through these helpers;
 * they return false (and leave *out untouched) when the result does not fit.
 */
#ifndef SLM_COMMON_CHECKED_H
#define SLM_COMMON_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool slm_size_mul(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

static inline bool slm_size_add(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

/* a * b * c, for three-dimensional tensor element counts. */
static inline bool slm_size_mul3(size_t a, size_t b, size_t c, size_t *out)
{
    size_t ab;
    return slm_size_mul(a, b, &ab) && slm_size_mul(ab, c, out);
}

static inline bool slm_u64_mul(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

static inline bool slm_u64_add(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

#endif
