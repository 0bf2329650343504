/*
 * common/audit.h - the security audit log: one JSON object per line.
 *
 * Format (one line per event, written with a single write(2) under a mutex,
 * so lines from different threads never interleave, and O_APPEND keeps them
 * whole against other processes appending to the same file):
 *   {"time":"2026-11-24T21:30:00.123Z","event":"auth_refused",
 *    "peer":"127.0.0.1","domain":"shardlm-clients","key":"<z85>",
 *    "tenant":"acme","reason":"key not in the allowlist"}
 * "time" is UTC with milliseconds; "event" is one of the names below; every
 * other field is present only when given. Field values come from peers and
 * files, so they are escaped: quote, backslash, every control character
 * (U+0000-U+001F, U+007F), U+2028/U+2029 as \uXXXX; malformed UTF-8 becomes
 * U+FFFD; each value is cut at SLM_AUDIT_FIELD_MAX input bytes.
 *
 * Flood control: a peer that retries a refused handshake in a loop must not
 * fill the disk. Each event kind may write at most max_per_second lines per
 * second; the rest are counted and reported as one line
 *   {"time":...,"event":"audit_suppressed","of":"auth_refused","count":95}
 * when the kind next writes (after its one-second window ends) or when the
 * log is closed.
 */
#ifndef SLM_COMMON_AUDIT_H
#define SLM_COMMON_AUDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

typedef enum {
    SLM_AUDIT_AUTH_REFUSED,      /* a handshake refused (ZAP 400) */
    SLM_AUDIT_AUTH_ADMITTED,     /* a handshake admitted; off by default */
    SLM_AUDIT_MALFORMED_MESSAGE, /* a peer's message failed validation */
    SLM_AUDIT_MANIFEST_FAILURE,  /* a model manifest or signature failed */
    SLM_AUDIT_QUOTA_REJECTED,    /* a tenant's request over its quota */
    SLM_AUDIT_FRAME_REJECTED,    /* a frame failed CURVE's checks (tampered,
                                    replayed, out of order) */
    SLM_AUDIT__COUNT
} slm_audit_event;

/* Longest field value written, in input bytes. */
#define SLM_AUDIT_FIELD_MAX 512

typedef struct {
    /* The file to append to (created 0600; an existing one must be a
     * regular file of ours that no one else may write, and not a symlink).
     * NULL: standard error. */
    const char *path;
    /* Write auth_admitted events (one per connection; busy servers leave
     * this off). */
    bool log_admitted;
    /* Lines per event kind per second; 0 means the default (50). */
    unsigned max_per_second;
} slm_audit_options;

/* Optional fields of one event; NULL leaves a field out. All borrowed for
 * the call only. */
typedef struct {
    const char *peer;   /* the peer's address, e.g. "127.0.0.1" */
    const char *domain; /* the ZAP domain, e.g. "shardlm-clients" */
    const char *key;    /* the peer's public key in Z85 */
    const char *tenant; /* the tenant name the key maps to */
    const char *reason; /* why: "key not in the allowlist" */
} slm_audit_entry;

typedef struct slm_audit slm_audit_t;

/* Opens the log. o may be NULL (standard error, defaults). The caller owns
 * *out and closes it with slm_audit_close. */
slm_status slm_audit_open(const slm_audit_options *o, slm_audit_t **out);

/* Writes any pending suppression counts, closes the file, frees *a and sets
 * it to NULL. Accepts NULL and *a == NULL. */
void slm_audit_close(slm_audit_t **a);

/* Records one event. Thread-safe. a == NULL records nothing (a component
 * that was given no log). A failed write is reported once on standard error
 * and counted, never returned: auditing must not take a server down. */
void slm_audit_record(slm_audit_t *a, slm_audit_event ev,
                      const slm_audit_entry *e);

/* Lines written and lines suppressed (flood control) so far; zeros for a
 * NULL log. Either pointer may be NULL. */
void slm_audit_counts(slm_audit_t *a, unsigned long long *written,
                      unsigned long long *suppressed);

/* "auth_refused", ...; never NULL. */
const char *slm_audit_event_name(slm_audit_event ev);

/* Appends s(n) to out(cap) as the body of a JSON string (no quotes), with
 * the escaping described above, at most SLM_AUDIT_FIELD_MAX input bytes.
 * Returns the bytes written; stops early, at a sequence boundary, rather than
 * overflow (out is always NUL-terminated when cap > 0). Exposed for tests. */
size_t slm_audit_escape(const char *s, size_t n, char *out, size_t cap);

#endif
