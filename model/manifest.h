/*
 * model/manifest.h - SHA-256 manifests of model files, optionally signed
 * with Ed25519 (libsodium), and the key files that sign them.
 *
 * Manifest format (text, strictly parsed; the writer's output is the only
 * spelling accepted, so parse then format gives back the same bytes):
 *   shardlm-manifest 1\n
 *   sha256 <64 lowercase hex> <size> <name>\n       one line per file
 *   ...
 * - every line ends in LF (also the last; no CR anywhere) and holds only
 *   printable ASCII (0x20..0x7e); a line is at most SLM_MANIFEST_MAX_LINE
 *   bytes with its LF; single spaces separate the fields;
 * - <size> is the file's byte count in decimal, no sign, no leading zeros,
 *   at most SLM_MANIFEST_MAX_FILE_SIZE;
 * - <name> is a plain file name in the manifest's own directory: 1 to
 *   SLM_MANIFEST_MAX_NAME bytes of [A-Za-z0-9._+-], not "." or "..", not
 *   starting with '-' (so no '/', no "..", no spaces or control bytes);
 * - names are unique and in strictly increasing byte order (strcmp), which
 *   makes the form canonical and duplicates plain to see;
 * - 1 to SLM_MANIFEST_MAX_FILES files.
 *
 * Signature: a detached file "<manifest>.sig" holding one line
 *   shardlm-ed25519-signature <128 lowercase hex>\n
 * an Ed25519 signature (crypto_sign_detached) over the manifest's exact
 * bytes. Key files, written by slm_manifest_keygen:
 *   PREFIX.secret (0600): shardlm-ed25519-secret-key <64 hex: 32-byte seed>\n
 *   PREFIX.public (0644): shardlm-ed25519-public-key <64 hex>\n
 * and read only through common/keyfile.h (mode, owner and type checked).
 *
 * Verification reads the manifest once into memory, checks the signature
 * over those bytes before parsing a single line, then hashes every listed
 * file (streaming, a bounded buffer) and compares size and digest. What it
 * vouches for is the file's content at the time it was hashed: a caller that
 * then opens the file by name again trusts that nobody rewrote it in between
 * (the manifest's directory must be writable only by whoever may change the
 * model).
 */
#ifndef SLM_MODEL_MANIFEST_H
#define SLM_MODEL_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define SLM_MANIFEST_MAGIC     "shardlm-manifest 1"
#define SLM_MANIFEST_MAX_FILES 1024
#define SLM_MANIFEST_MAX_NAME  255
#define SLM_MANIFEST_MAX_LINE  512 /* bytes, LF included */
/* The longest manifest that can parse: the header and MAX_FILES full lines. */
#define SLM_MANIFEST_MAX_BYTES                                                 \
    (SLM_MANIFEST_MAX_LINE * (SLM_MANIFEST_MAX_FILES + 1))
#define SLM_MANIFEST_MAX_FILE_SIZE (UINT64_C(1) << 48) /* 256 TiB */
#define SLM_MANIFEST_SIG_SUFFIX    ".sig"

typedef struct {
    char name[SLM_MANIFEST_MAX_NAME + 1]; /* NUL-terminated */
    uint64_t size;
    uint8_t sha256[32];
} slm_manifest_entry;

typedef struct slm_manifest slm_manifest_t;

/* Parses a manifest from data(len), which is untrusted. `what` names it in
 * messages ("manifest.txt line 3: ..."). Pure: touches no file (fuzzed). On
 * success the caller owns *out and frees it with slm_manifest_destroy; on
 * failure *out is NULL and the message names the line and the problem. */
slm_status slm_manifest_parse(const uint8_t *data, size_t len, const char *what,
                              slm_manifest_t **out);

/* Accepts NULL; sets *m to NULL. */
void slm_manifest_destroy(slm_manifest_t **m);

size_t slm_manifest_count(const slm_manifest_t *m);
/* Entry i < count, in name order; borrowed, valid while m lives. */
const slm_manifest_entry *slm_manifest_entry_at(const slm_manifest_t *m,
                                                size_t i);
/* The entry called `name`, or NULL; borrowed, valid while m lives. */
const slm_manifest_entry *slm_manifest_find(const slm_manifest_t *m,
                                            const char *name);

/* The canonical text of m. The caller owns *out (NUL-terminated, *len bytes
 * before the NUL) and frees it with free(). */
slm_status slm_manifest_format(const slm_manifest_t *m, char **out,
                               size_t *len);

/* NULL if name(len) may appear in a manifest, else why not (static). */
const char *slm_manifest_name_problem(const char *name, size_t len);

/* What a write or a verification did, for the caller to print its cost. */
typedef struct {
    size_t files;            /* files hashed */
    uint64_t bytes;          /* bytes hashed */
    double seconds;          /* wall time of the whole operation */
    bool signature_verified; /* verify: a signature was checked */
    bool signed_out;         /* write: a signature file was written */
} slm_manifest_report;

/* Writes a manifest of files(n) to out_path, refusing to overwrite it. Each
 * file must lie in out_path's directory (the same file as
 * <dir>/<its base name>), under a name the format allows; the n names must
 * be distinct. With secret_key_path (a PREFIX.secret file, mode 0600 or
 * stricter), also writes out_path + ".sig", likewise never overwriting.
 * NULL: unsigned. report may be NULL. On failure nothing is left behind. */
slm_status slm_manifest_write(const char *out_path, const char *const *files,
                              size_t n, const char *secret_key_path,
                              slm_manifest_report *report);

/* Verifies the manifest at manifest_path:
 *   1. with public_key_path, reads manifest_path + ".sig" and checks its
 *      signature over the manifest's bytes, before parsing any of them; a
 *      missing signature is an error. NULL: no signature required (none is
 *      checked even if present; report->signature_verified says which);
 *   2. parses it, and checks that each path in must_cover(n_must) - the
 *      files the caller is about to load - is listed under its base name
 *      and is the same file as <manifest dir>/<name>;
 *   3. hashes every listed file and compares its size and SHA-256.
 * Fails on the first difference with a message naming the file and what
 * differs. report may be NULL. */
slm_status slm_manifest_verify(const char *manifest_path,
                               const char *public_key_path,
                               const char *const *must_cover, size_t n_must,
                               slm_manifest_report *report);

/* Generates an Ed25519 key pair: PREFIX.secret (mode 0600) and
 * PREFIX.public (0644), each created exclusively; neither may exist. */
slm_status slm_manifest_keygen(const char *prefix);

#endif
