/* common/status.c - status strings and the per-thread error message. */
#include "common/status.h"

#include <stdio.h>
#include <string.h>

enum { SLM__ERRBUF = 1024 };
static _Thread_local char slm__errbuf[SLM__ERRBUF];

const char *slm_status_str(slm_status s)
{
    switch (s) {
#define SLM__STATUS_CASE(name, value, text)                                    \
    case name:                                                                 \
        return text;
        SLM_STATUS_LIST(SLM__STATUS_CASE)
#undef SLM__STATUS_CASE
    }
    return "unknown status";
}

slm_status slm_fail(slm_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(slm__errbuf, sizeof slm__errbuf, fmt, ap);
    va_end(ap);
    return code;
}

slm_status slm_error_prefix(slm_status code, const char *fmt, ...)
{
    char old[SLM__ERRBUF];
    memcpy(old, slm__errbuf, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(slm__errbuf, sizeof slm__errbuf, fmt, ap);
    va_end(ap);
    /* Truncation is acceptable for a message; keep whatever fits. */
    size_t used = n < 0 ? 0 : (size_t)n;
    if (used < sizeof slm__errbuf - 1) {
        size_t room = sizeof slm__errbuf - used;
        size_t old_len = strnlen(old, sizeof old - 1);
        if (room > 2) {
            memcpy(slm__errbuf + used, ": ", 2);
            size_t take = old_len < room - 3 ? old_len : room - 3;
            memcpy(slm__errbuf + used + 2, old, take);
            slm__errbuf[used + 2 + take] = '\0';
        }
    }
    return code;
}

const char *slm_error_message(void)
{
    return slm__errbuf;
}

void slm_error_clear(void)
{
    slm__errbuf[0] = '\0';
}
