/*
 * common/status.h - the one result type of shardlm, and the error message that
 * goes with it.
 *
 * Every fallible function returns an slm_status (0 = OK, negative = error) and,
 * on failure, leaves a human-readable message with context (file, field, value,
 * limit) in a thread-local buffer read by slm_error_message(). The message is
 * written where the failure is detected; callers add context by prefixing with
 * slm_error_prefix() rather than overwriting it.
 */
#ifndef SLM_COMMON_STATUS_H
#define SLM_COMMON_STATUS_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X-macro so that the enum and slm_status_str() cannot drift apart. */
#define SLM_STATUS_LIST(X)                                                     \
    X(SLM_OK, 0, "ok")                                                         \
    X(SLM_ERR_INVALID, -1, "invalid argument")                                 \
    X(SLM_ERR_NOMEM, -2, "out of memory")                                      \
    X(SLM_ERR_IO, -3, "i/o error")                                             \
    X(SLM_ERR_FORMAT, -4, "malformed input")                                   \
    X(SLM_ERR_RANGE, -5, "value out of range")                                 \
    X(SLM_ERR_UNSUPPORTED, -6, "unsupported")                                  \
    X(SLM_ERR_INTERNAL, -7, "internal error")                                 \
    X(SLM_ERR_UNAVAILABLE, -8, "unavailable")

typedef enum {
#define SLM__STATUS_ENUM(name, value, text) name = value,
    SLM_STATUS_LIST(SLM__STATUS_ENUM)
#undef SLM__STATUS_ENUM
} slm_status;

/* Short, static description of a status code; never NULL. */
const char *slm_status_str(slm_status s);

/* Records a formatted message for the calling thread and returns `code`, so a
 * failure site reads `return slm_fail(SLM_ERR_FORMAT, "...", ...);`. */
slm_status slm_fail(slm_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "<formatted>: " to the calling thread's message and returns `code`.
 * Used by callers that know context the failure site did not (a file name). */
slm_status slm_error_prefix(slm_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The calling thread's last message; borrowed, valid until the next slm_fail
 * on this thread. Empty string if none was set. */
const char *slm_error_message(void);

/* Clears the calling thread's message. */
void slm_error_clear(void);

#define SLM_CHECK(call)                                                        \
    do {                                                                       \
        slm_status slm__rc = (call);                                           \
        if (slm__rc != SLM_OK)                                                 \
            return slm__rc;                                                    \
    } while (0)

/* Runs `call`, stores its status in `rc`, and jumps to `label` on failure. */
#define SLM_CHECK_GOTO(call, rc, label)                                        \
    do {                                                                       \
        (rc) = (call);                                                         \
        if ((rc) != SLM_OK)                                                    \
            goto label;                                                        \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
