/*
 * common/utf8.h - well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), the one definition that both the
 * client wire checks and the server's text stream use.
 */
#ifndef SLM_COMMON_UTF8_H
#define SLM_COMMON_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* The sequence at p(n), n >= 1: its length (1-4) when complete and
 * well-formed, 0 when p(n) is a well-formed beginning that needs more bytes,
 * -1 when malformed. */
int slm_utf8_sequence(const uint8_t *p, size_t n);

/* The offset of the first byte of s(n) that does not begin a complete,
 * well-formed sequence, or n. */
size_t slm_utf8_bad_offset(const char *s, size_t n);

#endif
