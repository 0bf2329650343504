/* common/zap.c - see zap.h. */
#include "common/zap.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* ---- the allowlist ---- */

typedef struct {
    uint8_t key[SLM_ZKEY_BYTES];
    char tenant[SLM_ALLOWLIST_TENANT_MAX + 1];
    size_t line; /* where it was read, for duplicate errors; 0 if added */
} entry;

typedef struct {
    char tenant[SLM_ALLOWLIST_TENANT_MAX + 1];
    slm_tenant_limits v;
    size_t line;
    bool keyed; /* some key maps to the tenant */
} limit_entry;

struct slm_allowlist {
    entry *e; /* (n), sorted by key once built */
    size_t n, cap, max;
    limit_entry *lim; /* (n_lim), sorted by tenant once built */
    size_t n_lim, cap_lim;
    bool has_default; /* a "limits *" line */
    slm_tenant_limits def;
    size_t def_line;
};

static int cmp_entry(const void *a, const void *b)
{
    return memcmp(((const entry *)a)->key, ((const entry *)b)->key,
                  SLM_ZKEY_BYTES);
}

slm_status slm_allowlist_create(size_t max_entries, slm_allowlist_t **out)
{
    *out = NULL;
    if (max_entries == 0 || max_entries > SLM_ALLOWLIST_MAX_ENTRIES)
        return slm_fail(SLM_ERR_RANGE,
                        "allowlist: max_entries %zu not in 1..%d", max_entries,
                        SLM_ALLOWLIST_MAX_ENTRIES);
    slm_allowlist_t *l = calloc(1, sizeof *l);
    if (!l)
        return slm_fail(SLM_ERR_NOMEM, "allowlist: out of memory");
    l->max = max_entries;
    *out = l;
    return SLM_OK;
}

void slm_allowlist_destroy(slm_allowlist_t **lp)
{
    if (!lp || !*lp)
        return;
    free((*lp)->e);
    free((*lp)->lim);
    free(*lp);
    *lp = NULL;
}

size_t slm_allowlist_count(const slm_allowlist_t *l)
{
    return l ? l->n : 0;
}

const char *slm_allowlist_find(const slm_allowlist_t *l,
                               const uint8_t key[SLM_ZKEY_BYTES])
{
    if (!l || !l->n)
        return NULL;
    entry probe;
    memcpy(probe.key, key, SLM_ZKEY_BYTES);
    const entry *hit = bsearch(&probe, l->e, l->n, sizeof *l->e, cmp_entry);
    return hit ? hit->tenant : NULL;
}

static int cmp_limit(const void *a, const void *b)
{
    return strcmp(((const limit_entry *)a)->tenant,
                  ((const limit_entry *)b)->tenant);
}

slm_tenant_limits slm_allowlist_limits(const slm_allowlist_t *l,
                                       const char *tenant)
{
    const slm_tenant_limits none = {0, 0, 0};
    if (!l || !tenant)
        return none;
    if (l->n_lim && strlen(tenant) <= SLM_ALLOWLIST_TENANT_MAX) {
        limit_entry probe;
        strcpy(probe.tenant, tenant);
        const limit_entry *hit =
            bsearch(&probe, l->lim, l->n_lim, sizeof *l->lim, cmp_limit);
        if (hit)
            return hit->v;
    }
    return l->has_default ? l->def : none;
}

/* Checks a tenant name (len bytes, not NUL-terminated). */
static slm_status check_tenant(const char *t, size_t len, const char *where)
{
    if (len == 0)
        return slm_fail(SLM_ERR_FORMAT, "%s: missing tenant name", where);
    if (len > SLM_ALLOWLIST_TENANT_MAX)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tenant name of %zu bytes exceeds %d", where, len,
                        SLM_ALLOWLIST_TENANT_MAX);
    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: tenant name has byte 0x%02x at %zu; allowed "
                            "are A-Z a-z 0-9 _ . -",
                            where, c, i + 1);
    }
    return SLM_OK;
}

/* Appends an entry (no order or duplicate check). */
static slm_status push(slm_allowlist_t *l, const uint8_t key[SLM_ZKEY_BYTES],
                       const char *tenant, size_t tenant_len, size_t line,
                       const char *where)
{
    if (l->n >= l->max)
        return slm_fail(SLM_ERR_RANGE, "%s: more than %zu entries", where,
                        l->max);
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        if (cap > l->max)
            cap = l->max;
        entry *e = realloc(l->e, cap * sizeof *e);
        if (!e)
            return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", where);
        l->e = e;
        l->cap = cap;
    }
    entry *e = &l->e[l->n++];
    memcpy(e->key, key, SLM_ZKEY_BYTES);
    memcpy(e->tenant, tenant, tenant_len);
    e->tenant[tenant_len] = '\0';
    e->line = line;
    return SLM_OK;
}

slm_status slm_allowlist_add(slm_allowlist_t *l, const char *z85_key,
                             const char *tenant)
{
    if (!l || !z85_key || !tenant)
        return slm_fail(SLM_ERR_INVALID, "allowlist add: NULL argument");
    const size_t klen = strnlen(z85_key, SLM_ZKEY_Z85_LEN + 1);
    if (klen != SLM_ZKEY_Z85_LEN)
        return slm_fail(SLM_ERR_FORMAT,
                        "allowlist add: key is %s%zu characters, expected %d",
                        klen > SLM_ZKEY_Z85_LEN ? "more than " : "",
                        klen > SLM_ZKEY_Z85_LEN ? (size_t)SLM_ZKEY_Z85_LEN
                                                : klen,
                        SLM_ZKEY_Z85_LEN);
    uint8_t key[SLM_ZKEY_BYTES];
    SLM_CHECK(slm_zkeys_decode(z85_key, "allowlist add", key));
    const size_t tlen = strnlen(tenant, SLM_ALLOWLIST_TENANT_MAX + 1);
    SLM_CHECK(check_tenant(tenant, tlen, "allowlist add"));
    if (slm_allowlist_find(l, key))
        return slm_fail(SLM_ERR_FORMAT,
                        "allowlist add: key %.40s is already "
                        "listed",
                        z85_key);
    SLM_CHECK(push(l, key, tenant, tlen, 0, "allowlist add"));
    /* Keep the order: move the new entry down to its place. */
    entry tmp = l->e[l->n - 1];
    size_t i = l->n - 1;
    while (i > 0 && cmp_entry(&l->e[i - 1], &tmp) > 0) {
        l->e[i] = l->e[i - 1];
        i--;
    }
    l->e[i] = tmp;
    return SLM_OK;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* One "name=N" setting of a limits line: *out in 1..max. */
static slm_status parse_setting(const char *s, size_t len, const char *name,
                                uint32_t max, uint32_t *out, const char *where)
{
    const size_t nl = strlen(name);
    const char *v = s + nl + 1; /* after "name=" */
    const size_t vl = len - nl - 1;
    if (*out)
        return slm_fail(SLM_ERR_FORMAT, "%s: %s is given twice", where, name);
    uint64_t n = 0;
    for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9' || n > max)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: %s needs a whole number from 1 to %u", where,
                            name, max);
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    if (vl == 0 || n < 1 || n > max)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: %s needs a whole number from 1 to %u", where, name,
                        max);
    *out = (uint32_t)n;
    return SLM_OK;
}

/* The rest of a "limits <tenant|*> name=N..." line, after "limits". */
static slm_status parse_limits(slm_allowlist_t *l, const char *s, size_t len,
                               size_t line_no, const char *where)
{
    size_t i = 0;
    while (i < len && blank(s[i]))
        i++;
    const size_t t0 = i;
    while (i < len && !blank(s[i]))
        i++;
    const size_t t1 = i;
    const bool star = t1 - t0 == 1 && s[t0] == '*';
    if (!star)
        SLM_CHECK(check_tenant(s + t0, t1 - t0, where));
    slm_tenant_limits v = {0, 0, 0};
    bool any = false;
    for (;;) {
        while (i < len && blank(s[i]))
            i++;
        if (i == len)
            break;
        const size_t f0 = i;
        while (i < len && !blank(s[i]))
            i++;
        const char *f = s + f0;
        const size_t fl = i - f0;
        if (fl > 11 && memcmp(f, "concurrent=", 11) == 0)
            SLM_CHECK(parse_setting(f, fl, "concurrent", SLM_TENANT_LIMIT_MAX,
                                    &v.concurrent, where));
        else if (fl > 7 && memcmp(f, "tokens=", 7) == 0)
            SLM_CHECK(parse_setting(f, fl, "tokens", SLM_TENANT_LIMIT_MAX,
                                    &v.max_tokens, where));
        else if (fl > 6 && memcmp(f, "queue=", 6) == 0)
            SLM_CHECK(
                parse_setting(f, fl, "queue", 100, &v.queue_share, where));
        else
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: unknown limit '%.*s' (expected "
                            "concurrent=N, tokens=N or queue=PERCENT)",
                            where, (int)(fl > 64 ? 64 : fl), f);
        any = true;
    }
    if (!any)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: a limits line sets at least one of "
                        "concurrent=N, tokens=N, queue=PERCENT",
                        where);
    if (star) {
        if (l->has_default)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: a second 'limits *' line (the first is on "
                            "line %zu)",
                            where, l->def_line);
        l->has_default = true;
        l->def = v;
        l->def_line = line_no;
        return SLM_OK;
    }
    if (l->n_lim >= l->max)
        return slm_fail(SLM_ERR_RANGE, "%s: more than %zu limits lines", where,
                        l->max);
    if (l->n_lim == l->cap_lim) {
        size_t cap = l->cap_lim ? 2 * l->cap_lim : 8;
        if (cap > l->max)
            cap = l->max;
        limit_entry *e = realloc(l->lim, cap * sizeof *e);
        if (!e)
            return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", where);
        l->lim = e;
        l->cap_lim = cap;
    }
    limit_entry *e = &l->lim[l->n_lim++];
    memcpy(e->tenant, s + t0, t1 - t0);
    e->tenant[t1 - t0] = '\0';
    e->v = v;
    e->line = line_no;
    e->keyed = false;
    return SLM_OK;
}

/* Parses one line (without its "\n") into l. */
static slm_status parse_line(slm_allowlist_t *l, const char *s, size_t len,
                             size_t line_no, const char *source)
{
    char where[256];
    snprintf(where, sizeof where, "%s:%zu", source, line_no);
    if (len > SLM_ALLOWLIST_LINE_MAX)
        return slm_fail(SLM_ERR_FORMAT, "%s: line of %zu bytes exceeds %d",
                        where, len, SLM_ALLOWLIST_LINE_MAX);
    if (memchr(s, '\0', len))
        return slm_fail(SLM_ERR_FORMAT, "%s: NUL byte", where);
    if (memchr(s, '\r', len))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: carriage return (DOS line endings? use \\n)",
                        where);
    size_t i = 0;
    while (i < len && blank(s[i]))
        i++;
    if (i == len || s[i] == '#')
        return SLM_OK;
    if (len - i > 6 && memcmp(s + i, "limits", 6) == 0 && blank(s[i + 6]))
        return parse_limits(l, s + i + 6, len - i - 6, line_no, where);
    const size_t k0 = i;
    while (i < len && !blank(s[i]))
        i++;
    if (i - k0 != SLM_ZKEY_Z85_LEN)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: key is %zu characters, expected %d Z85 "
                        "characters",
                        where, i - k0, SLM_ZKEY_Z85_LEN);
    uint8_t key[SLM_ZKEY_BYTES];
    SLM_CHECK(slm_zkeys_decode(s + k0, where, key));
    while (i < len && blank(s[i]))
        i++;
    const size_t t0 = i;
    while (i < len && !blank(s[i]))
        i++;
    const size_t t1 = i;
    SLM_CHECK(check_tenant(s + t0, t1 - t0, where));
    while (i < len && blank(s[i]))
        i++;
    if (i != len)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: unexpected text after the tenant name (a line "
                        "is '<key> <tenant>')",
                        where);
    return push(l, key, s + t0, t1 - t0, line_no, where);
}

slm_status slm_allowlist_parse(const char *text, size_t len, size_t max_entries,
                               const char *source, slm_allowlist_t **out)
{
    *out = NULL;
    if (!source)
        source = "allowlist";
    if (!text && len)
        return slm_fail(SLM_ERR_INVALID, "%s: NULL text", source);
    slm_allowlist_t *l = NULL;
    SLM_CHECK(slm_allowlist_create(max_entries, &l));
    slm_status rc = SLM_OK;
    size_t line_no = 1;
    for (size_t pos = 0; pos < len; line_no++) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        const size_t end = nl ? (size_t)(nl - text) : len;
        SLM_CHECK_GOTO(parse_line(l, text + pos, end - pos, line_no, source),
                       rc, fail);
        pos = end + 1;
    }
    if (l->n_lim) {
        qsort(l->lim, l->n_lim, sizeof *l->lim, cmp_limit);
        for (size_t i = 0; i < l->n_lim; i++) {
            const limit_entry *e = &l->lim[i];
            if (i > 0 && strcmp(l->lim[i - 1].tenant, e->tenant) == 0) {
                const size_t a = l->lim[i - 1].line, b = e->line;
                rc = slm_fail(SLM_ERR_FORMAT,
                              "%s:%zu: limits for tenant %s are set twice "
                              "(also on line %zu)",
                              source, a > b ? a : b, e->tenant, a > b ? b : a);
                goto fail;
            }
        }
        for (size_t k = 0; k < l->n; k++) {
            limit_entry probe;
            strcpy(probe.tenant, l->e[k].tenant);
            limit_entry *hit =
                bsearch(&probe, l->lim, l->n_lim, sizeof *l->lim, cmp_limit);
            if (hit)
                hit->keyed = true;
        }
        for (size_t i = 0; i < l->n_lim; i++) {
            const limit_entry *e = &l->lim[i];
            if (!e->keyed) {
                rc = slm_fail(SLM_ERR_FORMAT,
                              "%s:%zu: limits for tenant %s, which has no key "
                              "in this file",
                              source, e->line, e->tenant);
                goto fail;
            }
        }
    }
    if (l->n > 1) {
        qsort(l->e, l->n, sizeof *l->e, cmp_entry);
        for (size_t i = 1; i < l->n; i++) {
            if (cmp_entry(&l->e[i - 1], &l->e[i]) == 0) {
                const size_t a = l->e[i - 1].line, b = l->e[i].line;
                rc = slm_fail(SLM_ERR_FORMAT,
                              "%s:%zu: duplicate key (also on line %zu)",
                              source, a > b ? a : b, a > b ? b : a);
                goto fail;
            }
        }
    }
    *out = l;
    return SLM_OK;
fail:
    slm_allowlist_destroy(&l);
    return rc;
}

slm_status slm_allowlist_load(const char *path, size_t max_entries,
                              slm_allowlist_t **out)
{
    *out = NULL;
    /* Bounded by entries: a line is at most LINE_MAX + 1 bytes, but comments
     * and blanks are free, so allow the whole file limit. */
    char *buf = malloc(SLM_ALLOWLIST_FILE_MAX);
    if (!buf)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", path);
    size_t len = 0;
    slm_status rc = slm_zkeys_read_checked(path, 0, 022, 0, buf,
                                           SLM_ALLOWLIST_FILE_MAX, &len);
    if (rc == SLM_OK)
        rc = slm_allowlist_parse(buf, len, max_entries, path, out);
    free(buf);
    return rc;
}

/* ---- the ZAP handler ---- */

#define ZAP_FRAMES_KEPT 8

struct slm_zap {
    void *rep;      /* bound to SLM_ZAP_ENDPOINT; the thread's */
    void *pipe_in;  /* the thread's end of the stop signal */
    void *pipe_out; /* the owner's end */
    pthread_t thread;
    const slm_allowlist_t *clients, *shards;
    slm_audit_t *audit;
    unsigned long long admitted, refused; /* __atomic */
};

/* Copies frame m into a NUL-terminated buf(cap), NULs replaced by '?'. */
static void frame_text(zmq_msg_t *m, char *buf, size_t cap)
{
    size_t n = zmq_msg_size(m);
    if (n >= cap)
        n = cap - 1;
    const char *d = zmq_msg_data(m);
    for (size_t i = 0; i < n; i++)
        buf[i] = d[i] ? d[i] : '?';
    buf[n] = '\0';
}

static bool frame_is(zmq_msg_t *m, const char *s)
{
    const size_t n = strlen(s);
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

static void send_str(void *sock, const char *s, int flags)
{
    (void)zmq_send(sock, s, strlen(s), flags);
}

/* Decides one request of n_frames (the first `kept` in f) and sends the
 * reply. */
static void decide(slm_zap_t *z, zmq_msg_t *f, int kept, int n_frames)
{
    const char *code = "400", *text = "not authorized", *user = "";
    const char *reason = NULL;
    slm_audit_event ev = SLM_AUDIT_AUTH_REFUSED;
    char peer[64] = "", domain[64] = "", key_z85[SLM_ZKEY_Z85_BUF] = "";
    if (kept >= 4) {
        frame_text(&f[2], domain, sizeof domain);
        frame_text(&f[3], peer, sizeof peer);
    }
    /* RFC 27: version, request id, domain, address, identity, mechanism,
     * credentials; CURVE has exactly one credential, the 32-byte key. */
    if (n_frames < 6 || !frame_is(&f[0], "1.0")) {
        code = "500";
        text = "malformed ZAP request";
        reason = n_frames < 6 ? "ZAP request with too few frames"
                              : "ZAP request version is not 1.0";
        ev = SLM_AUDIT_MALFORMED_MESSAGE;
    } else {
        const slm_allowlist_t *list = NULL;
        bool known = true;
        if (frame_is(&f[2], SLM_ZAP_DOMAIN_CLIENTS))
            list = z->clients;
        else if (frame_is(&f[2], SLM_ZAP_DOMAIN_SHARDS))
            list = z->shards;
        else
            known = false;
        if (!known)
            reason = "unknown ZAP domain";
        else if (!frame_is(&f[5], "CURVE"))
            reason = "mechanism is not CURVE";
        else if (n_frames != 7 || zmq_msg_size(&f[6]) != SLM_ZKEY_BYTES)
            reason = "malformed CURVE credentials";
        else {
            slm_zkeys_encode(zmq_msg_data(&f[6]), key_z85);
            const char *tenant = slm_allowlist_find(list, zmq_msg_data(&f[6]));
            if (tenant) {
                code = "200";
                text = "OK";
                user = tenant;
                ev = SLM_AUDIT_AUTH_ADMITTED;
            } else {
                reason = list ? "key not in the allowlist"
                              : "no allowlist for this domain";
            }
        }
    }
    if (ev == SLM_AUDIT_AUTH_ADMITTED)
        __atomic_add_fetch(&z->admitted, 1, __ATOMIC_RELAXED);
    else
        __atomic_add_fetch(&z->refused, 1, __ATOMIC_RELAXED);
    slm_audit_record(z->audit, ev,
                     &(slm_audit_entry){.peer = peer[0] ? peer : NULL,
                                        .domain = domain[0] ? domain : NULL,
                                        .key = key_z85[0] ? key_z85 : NULL,
                                        .tenant = user[0] ? user : NULL,
                                        .reason = reason});

    send_str(z->rep, "1.0", ZMQ_SNDMORE);
    if (kept >= 2)
        (void)zmq_send(z->rep, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]),
                       ZMQ_SNDMORE);
    else
        send_str(z->rep, "", ZMQ_SNDMORE);
    send_str(z->rep, code, ZMQ_SNDMORE);
    send_str(z->rep, text, ZMQ_SNDMORE);
    send_str(z->rep, user, ZMQ_SNDMORE);
    send_str(z->rep, "", 0); /* no metadata */
}

/* Receives one request (all its frames) and answers it; false when the
 * socket fails (the context is terminating). */
static bool serve_one(slm_zap_t *z)
{
    zmq_msg_t f[ZAP_FRAMES_KEPT];
    int kept = 0, n = 0;
    bool more = true, ok = true;
    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *m = kept < ZAP_FRAMES_KEPT ? &f[kept] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, z->rep, 0) < 0) {
            const int e = zmq_errno();
            zmq_msg_close(m);
            if (e == EINTR) /* a signal for another thread: go on */
                continue;
            ok = false; /* ETERM: the context is going away */
            break;
        }
        more = zmq_msg_more(m);
        n++;
        if (m == &scratch)
            zmq_msg_close(m);
        else
            kept++;
    }
    if (ok && !more)
        decide(z, f, kept, n);
    for (int i = 0; i < kept; i++)
        zmq_msg_close(&f[i]);
    return ok;
}

static void *zap_main(void *arg)
{
    slm_zap_t *z = arg;
    for (;;) {
        zmq_pollitem_t items[2] = {{z->rep, 0, ZMQ_POLLIN, 0},
                                   {z->pipe_in, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, -1) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break; /* ETERM: the context is going away */
        }
        if (items[1].revents & ZMQ_POLLIN)
            break;
        if ((items[0].revents & ZMQ_POLLIN) && !serve_one(z))
            break;
    }
    zmq_close(z->rep);
    zmq_close(z->pipe_in);
    return NULL;
}

slm_status slm_zap_start(void *zmq_ctx, const slm_allowlist_t *clients,
                         const slm_allowlist_t *shards, slm_audit_t *audit,
                         slm_zap_t **out)
{
    *out = NULL;
    if (!zmq_ctx)
        return slm_fail(SLM_ERR_INVALID, "ZAP handler: no ZeroMQ context");
    slm_zap_t *z = calloc(1, sizeof *z);
    if (!z)
        return slm_fail(SLM_ERR_NOMEM, "ZAP handler: out of memory");
    z->clients = clients;
    z->shards = shards;
    z->audit = audit;
    slm_status rc = SLM_OK;
    const int zero = 0;
    char pipe_ep[64];
    snprintf(pipe_ep, sizeof pipe_ep, "inproc://slm-zap-stop-%p", (void *)z);
    z->rep = zmq_socket(zmq_ctx, ZMQ_REP);
    if (!z->rep || zmq_setsockopt(z->rep, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(z->rep, SLM_ZAP_ENDPOINT) != 0) {
        const int e = zmq_errno();
        rc = slm_fail(SLM_ERR_IO, "ZAP handler: cannot bind %s: %s%s",
                      SLM_ZAP_ENDPOINT, zmq_strerror(e),
                      e == EADDRINUSE ? " (one handler per context)" : "");
        goto fail;
    }
    z->pipe_in = zmq_socket(zmq_ctx, ZMQ_PAIR);
    z->pipe_out = zmq_socket(zmq_ctx, ZMQ_PAIR);
    if (!z->pipe_in || !z->pipe_out ||
        zmq_setsockopt(z->pipe_in, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(z->pipe_out, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(z->pipe_in, pipe_ep) != 0 ||
        zmq_connect(z->pipe_out, pipe_ep) != 0) {
        rc = slm_fail(SLM_ERR_IO,
                      "ZAP handler: cannot make its stop signal: "
                      "%s",
                      zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (pthread_create(&z->thread, NULL, zap_main, z) != 0) {
        rc = slm_fail(SLM_ERR_INTERNAL, "ZAP handler: cannot start its thread");
        goto fail;
    }
    *out = z;
    return SLM_OK;
fail:
    if (z->rep)
        zmq_close(z->rep);
    if (z->pipe_in)
        zmq_close(z->pipe_in);
    if (z->pipe_out)
        zmq_close(z->pipe_out);
    free(z);
    return rc;
}

void slm_zap_stop(slm_zap_t **zp)
{
    if (!zp || !*zp)
        return;
    slm_zap_t *z = *zp;
    /* If the send fails the context is terminating, and the thread's poll
     * ends with ETERM instead. */
    (void)zmq_send(z->pipe_out, "", 0, 0);
    pthread_join(z->thread, NULL);
    zmq_close(z->pipe_out);
    free(z);
    *zp = NULL;
}

void slm_zap_counts(slm_zap_t *z, unsigned long long *admitted,
                    unsigned long long *refused)
{
    if (admitted)
        *admitted = z ? __atomic_load_n(&z->admitted, __ATOMIC_RELAXED) : 0;
    if (refused)
        *refused = z ? __atomic_load_n(&z->refused, __ATOMIC_RELAXED) : 0;
}

/* ---- handshake failures seen by a server socket's monitor ---- */

static const char *protocol_error(uint32_t code)
{
    switch (code) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_INVALID_SEQUENCE:
        return "a frame out of sequence: replayed or reordered (its CURVE "
               "nonce did not increase); connection dropped";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        return "a frame failed CURVE authentication (tampered, or sealed with "
               "another key); connection dropped";
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "the peer does not speak CURVE (plaintext client?); "
               "connection dropped";
    case ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE:
        return "the CURVE key exchange failed (a replayed or forged "
               "handshake?); connection dropped";
    default:
        return NULL;
    }
}

void slm_zap_audit_handshake(slm_audit_t *audit, const char *domain,
                             uint16_t event, uint32_t value, const char *peer)
{
    char other[160];
    const char *why;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
        /* A peer that hangs up before the greeting is through: a plaintext
         * peer that saw our CURVE greeting first and gave up (which of the
         * two notices the mismatch first is a race), or a probe. */
        snprintf(other, sizeof other,
                 "the peer closed the connection during the handshake, "
                 "before authenticating (%s)",
                 value ? strerror((int)value) : "end of stream");
        why = other;
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
        why = protocol_error(value);
        if (!why) {
            snprintf(other, sizeof other,
                     "a malformed handshake or frame (ZMTP error 0x%08x); "
                     "connection dropped",
                     value);
            why = other;
        }
    } else {
        return;
    }
    slm_audit_record(
        audit, SLM_AUDIT_FRAME_REJECTED,
        &(slm_audit_entry){.peer = peer, .domain = domain, .reason = why});
}
