/*
 * common/keyfile.h - small key files: created exclusively with a fixed mode,
 * read whole with their type, owner and permissions checked.
 *
 * Key material reaches shardlm only through files read here, never through
 * argv (visible in ps and shell history) or the environment (inherited by
 * every child, readable in /proc). The checks follow OpenSSH's for private
 * keys: a secret key file must be a regular file owned by us (or root) that
 * no one else can read or write; a public key (a trust anchor) must not be
 * writable by anyone else.
 *
 * Not to be confused with common/zkeys.h (ZeroMQ CURVE keys), which has its
 * own formats.
 */
#ifndef SLM_COMMON_KEYFILE_H
#define SLM_COMMON_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef enum {
    SLM_KEYFILE_PUBLIC, /* created 0644; refused if group/other-writable */
    SLM_KEYFILE_SECRET, /* created 0600; refused if any group/other bit */
} slm_keyfile_kind;

/* Reads all of `path` into buf(cap). The checks run on the opened descriptor
 * (fstat, so a rename between check and read cannot swap the file), and the
 * open does not block on a FIFO: the file must be regular, owned by the
 * effective uid or root, and have the permissions `kind` requires; a file
 * larger than cap fails with SLM_ERR_RANGE. On success *len is the byte
 * count. On any failure buf is zeroed (it may have held secret bytes). */
slm_status slm_keyfile_read(const char *path, slm_keyfile_kind kind,
                            uint8_t *buf, size_t cap, size_t *len);

/* Creates `path` (O_CREAT | O_EXCL | O_NOFOLLOW: never overwrites, never
 * follows a planted symlink) with mode 0600 (SECRET) or 0644 (PUBLIC), both
 * narrowed by the umask, writes data(len) in full and fsyncs it. On failure
 * removes the file if it created it. */
slm_status slm_keyfile_write_new(const char *path, slm_keyfile_kind kind,
                                 const void *data, size_t len);

#endif
