/*
 * common/file.h - reading and mapping files with hard size limits.
 */
#ifndef SLM_COMMON_FILE_H
#define SLM_COMMON_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Reads the whole of `path` into a new buffer. Fails with SLM_ERR_RANGE if the
 * file is larger than max_bytes. On success the caller owns *out and frees it
 * with free(); *out_len is its length. */
slm_status slm_file_read_all(const char *path, size_t max_bytes, uint8_t **out,
                             size_t *out_len);

/* A read-only private mapping of a whole file. */
typedef struct {
    const uint8_t *data; /* (size); NULL when size is 0 */
    size_t size;
} slm_file_map;

/* Maps `path` read-only. The caller owns the mapping and releases it with
 * slm_file_unmap(). */
slm_status slm_file_map_open(const char *path, slm_file_map *out);
void slm_file_unmap(slm_file_map *m);

#endif
