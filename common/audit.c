/* common/audit.c - see audit.h. */
#include "common/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/utf8.h"
#include "common/zkeys.h"

#define DEFAULT_PER_SECOND 50
/* Worst case per input byte is 6 output bytes ("\u001f"); five fields plus
 * names, time and event fit with room to spare. */
#define LINE_CAP (5 * (6 * SLM_AUDIT_FIELD_MAX + 32) + 256)

typedef struct {
    double window_start; /* monotonic seconds */
    unsigned in_window;
    unsigned long long suppressed; /* not yet reported */
} flood;

struct slm_audit {
    pthread_mutex_t mu;
    int fd;
    bool owns_fd;
    bool log_admitted;
    bool warned; /* a write failure was reported on stderr */
    unsigned max_per_second;
    unsigned long long written, suppressed_total, failed;
    flood kinds[SLM_AUDIT__COUNT];
    char line[LINE_CAP];
};

static const char *const event_names[SLM_AUDIT__COUNT] = {
    [SLM_AUDIT_AUTH_REFUSED] = "auth_refused",
    [SLM_AUDIT_AUTH_ADMITTED] = "auth_admitted",
    [SLM_AUDIT_MALFORMED_MESSAGE] = "malformed_message",
    [SLM_AUDIT_MANIFEST_FAILURE] = "manifest_failure",
    [SLM_AUDIT_QUOTA_REJECTED] = "quota_rejected",
    [SLM_AUDIT_FRAME_REJECTED] = "frame_rejected",
};

const char *slm_audit_event_name(slm_audit_event ev)
{
    if ((unsigned)ev >= SLM_AUDIT__COUNT)
        return "unknown";
    return event_names[ev];
}

size_t slm_audit_escape(const char *s, size_t n, char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    if (!s)
        n = 0;
    if (n > SLM_AUDIT_FIELD_MAX)
        n = SLM_AUDIT_FIELD_MAX;
    const uint8_t *p = (const uint8_t *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char tmp[8];
        size_t len = 0, used = 1;
        const uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            len = 2;
        } else if (c == '\n' || c == '\t' || c == '\r') {
            tmp[0] = '\\';
            tmp[1] = c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
            len = 2;
        } else if (c < 0x20 || c == 0x7f) {
            len = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", c);
        } else if (c < 0x80) {
            tmp[0] = (char)c;
            len = 1;
        } else {
            const int k = slm_utf8_sequence(p + i, n - i);
            if (k <= 0) { /* malformed, or cut short: U+FFFD per byte */
                memcpy(tmp, "\xef\xbf\xbd", 3);
                len = 3;
            } else if (k == 3 && c == 0xe2 && p[i + 1] == 0x80 &&
                       (p[i + 2] == 0xa8 || p[i + 2] == 0xa9)) {
                /* Line/paragraph separators end a line in JavaScript. */
                len = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x",
                                       p[i + 2] == 0xa8 ? 0x2028 : 0x2029);
                used = 3;
            } else {
                memcpy(tmp, p + i, (size_t)k);
                len = (size_t)k;
                used = (size_t)k;
            }
        }
        if (o + len >= cap)
            break;
        memcpy(out + o, tmp, len);
        o += len;
        i += used;
    }
    out[o] = '\0';
    return o;
}

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "2026-11-24T21:30:00.123Z" into buf(cap). */
static void utc_now(char *buf, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%03ldZ", base, ts.tv_nsec / 1000000L);
}

/* Appends ,"name":"<escaped value>" to a->line at *o. */
static void add_field(slm_audit_t *a, size_t *o, const char *name,
                      const char *value)
{
    if (!value)
        return;
    const size_t left = sizeof a->line - *o;
    const int n = snprintf(a->line + *o, left, ",\"%s\":\"", name);
    /* Room after the value for its quote, the closing brace, the newline. */
    if (n < 0 || (size_t)n + 8 >= left)
        return;
    *o += (size_t)n;
    *o += slm_audit_escape(value, strlen(value), a->line + *o,
                           sizeof a->line - *o - 4);
    a->line[(*o)++] = '"';
    a->line[*o] = '\0';
}

/* Writes a->line(len) plus a newline; called with a->mu held. */
static void write_line(slm_audit_t *a, size_t len)
{
    a->line[len++] = '\n';
    size_t done = 0;
    while (done < len) {
        const ssize_t n = write(a->fd, a->line + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            a->failed++;
            if (!a->warned) {
                a->warned = true;
                fprintf(stderr, "shardlm: audit log write failed: %s\n",
                        n < 0 ? strerror(errno) : "no progress");
            }
            return;
        }
        done += (size_t)n;
    }
    a->written++;
}

/* Starts a line: {"time":"...","event":"<name>" - returns its length. */
static size_t begin_line(slm_audit_t *a, const char *event)
{
    char now[48];
    utc_now(now, sizeof now);
    const int n = snprintf(a->line, sizeof a->line,
                           "{\"time\":\"%s\",\"event\":\"%s\"", now, event);
    return n < 0 ? 0 : (size_t)n;
}

/* Reports kind's suppressed count, if any; called with a->mu held. */
static void flush_suppressed(slm_audit_t *a, slm_audit_event kind)
{
    flood *f = &a->kinds[kind];
    if (!f->suppressed)
        return;
    size_t o = begin_line(a, "audit_suppressed");
    const int n = snprintf(a->line + o, sizeof a->line - o,
                           ",\"of\":\"%s\",\"count\":%llu}", event_names[kind],
                           f->suppressed);
    f->suppressed = 0;
    if (n > 0)
        write_line(a, o + (size_t)n);
}

void slm_audit_record(slm_audit_t *a, slm_audit_event ev,
                      const slm_audit_entry *e)
{
    if (!a || (unsigned)ev >= SLM_AUDIT__COUNT)
        return;
    if (ev == SLM_AUDIT_AUTH_ADMITTED && !a->log_admitted)
        return;
    const double now = monotonic_seconds();
    pthread_mutex_lock(&a->mu);
    flood *f = &a->kinds[ev];
    if (now - f->window_start >= 1.0) {
        flush_suppressed(a, ev);
        f->window_start = now;
        f->in_window = 0;
    }
    if (f->in_window >= a->max_per_second) {
        f->suppressed++;
        a->suppressed_total++;
        pthread_mutex_unlock(&a->mu);
        return;
    }
    f->in_window++;
    size_t o = begin_line(a, event_names[ev]);
    if (e) {
        add_field(a, &o, "peer", e->peer);
        add_field(a, &o, "domain", e->domain);
        add_field(a, &o, "key", e->key);
        add_field(a, &o, "tenant", e->tenant);
        add_field(a, &o, "reason", e->reason);
    }
    a->line[o++] = '}';
    write_line(a, o);
    pthread_mutex_unlock(&a->mu);
}

void slm_audit_counts(slm_audit_t *a, unsigned long long *written,
                      unsigned long long *suppressed)
{
    if (!a) {
        if (written)
            *written = 0;
        if (suppressed)
            *suppressed = 0;
        return;
    }
    pthread_mutex_lock(&a->mu);
    if (written)
        *written = a->written;
    if (suppressed)
        *suppressed = a->suppressed_total;
    pthread_mutex_unlock(&a->mu);
}

slm_status slm_audit_open(const slm_audit_options *o, slm_audit_t **out)
{
    *out = NULL;
    slm_audit_options def = {0};
    if (!o)
        o = &def;
    int fd = STDERR_FILENO;
    if (o->path) {
        fd = open(o->path,
                  O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC |
                      O_NOCTTY | O_NONBLOCK,
                  0600);
        if (fd < 0) {
            const int e = errno;
            return slm_fail(SLM_ERR_IO, "audit log %s: %s", o->path,
                            e == ELOOP ? "is a symbolic link; refusing to "
                                         "follow it"
                                       : strerror(e));
        }
        /* Others must not be able to forge or erase entries. */
        slm_status rc = slm_zkeys_check_fd(fd, o->path, 022, 0);
        if (rc != SLM_OK) {
            close(fd);
            return slm_error_prefix(rc, "audit log");
        }
    }
    slm_audit_t *a = calloc(1, sizeof *a);
    if (!a) {
        if (o->path)
            close(fd);
        return slm_fail(SLM_ERR_NOMEM, "audit log: out of memory");
    }
    pthread_mutex_init(&a->mu, NULL);
    a->fd = fd;
    a->owns_fd = o->path != NULL;
    a->log_admitted = o->log_admitted;
    a->max_per_second =
        o->max_per_second ? o->max_per_second : DEFAULT_PER_SECOND;
    for (int k = 0; k < SLM_AUDIT__COUNT; k++)
        a->kinds[k].window_start = -1e9;
    *out = a;
    return SLM_OK;
}

void slm_audit_close(slm_audit_t **ap)
{
    if (!ap || !*ap)
        return;
    slm_audit_t *a = *ap;
    pthread_mutex_lock(&a->mu);
    for (int k = 0; k < SLM_AUDIT__COUNT; k++)
        flush_suppressed(a, (slm_audit_event)k);
    pthread_mutex_unlock(&a->mu);
    if (a->owns_fd)
        close(a->fd);
    pthread_mutex_destroy(&a->mu);
    free(a);
    *ap = NULL;
}
