/*
 * tests/unit/test_zap.c - common/zap.c: the allowlist parser's edge cases,
 * the ZAP handler answering hostile requests, and the whole path over real
 * TCP sockets: a CURVE ROUTER whose ZAP domain is vetted by the handler
 * serves a listed client (tagged with its tenant), while an unlisted key and
 * a plaintext client get nothing - their handshakes fail before any payload
 * arrives - and each refusal is in the audit log with its reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <zmq.h>

#include "common/zap.h"

static char g_dir[256];

static int make_dir(void **state)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/slm-zap-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void keypair(char pub[SLM_ZKEY_Z85_BUF], char sec[SLM_ZKEY_Z85_BUF])
{
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
}

static slm_allowlist_t *parse_ok(const char *text, size_t max)
{
    slm_allowlist_t *l = NULL;
    slm_status rc = slm_allowlist_parse(text, strlen(text), max, "t", &l);
    if (rc != SLM_OK)
        fail_msg("parse failed: %s", slm_error_message());
    return l;
}

/* Parsing fails and the message contains want. */
static void parse_bad(const char *text, size_t len, size_t max,
                      const char *want)
{
    slm_allowlist_t *l = (slm_allowlist_t *)1;
    assert_int_not_equal(slm_allowlist_parse(text, len, max, "t", &l), SLM_OK);
    assert_null(l);
    if (!strstr(slm_error_message(), want))
        fail_msg("message '%s' lacks '%s'", slm_error_message(), want);
}

static const char *lookup(const slm_allowlist_t *l, const char *z85)
{
    uint8_t key[32];
    assert_int_equal(slm_zkeys_decode(z85, "test", key), SLM_OK);
    return slm_allowlist_find(l, key);
}

static void test_allowlist_parse(void **state)
{
    char a[41], b[41], c[41], s[41], text[2048];
    keypair(a, s);
    keypair(b, s);
    keypair(c, s);

    snprintf(text, sizeof text,
             "# clients of the demo cluster\n"
             "\n"
             "   \t\n"
             "%s acme\n"
             "  %s\tacme   \n" /* a second key for the same tenant */
             "\t# indented comment\n"
             "%s Team_B.prod-2", /* no final newline */
             a, b, c);
    slm_allowlist_t *l = parse_ok(text, 16);
    assert_int_equal(slm_allowlist_count(l), 3);
    assert_string_equal(lookup(l, a), "acme");
    assert_string_equal(lookup(l, b), "acme");
    assert_string_equal(lookup(l, c), "Team_B.prod-2");
    char d[41];
    keypair(d, s);
    assert_null(lookup(l, d));
    slm_allowlist_destroy(&l);
    assert_null(l);
    slm_allowlist_destroy(&l);
    assert_null(slm_allowlist_find(NULL, (const uint8_t *)a));

    /* Empty input and comment-only input: an empty list, admitting no one. */
    l = parse_ok("", 4);
    assert_int_equal(slm_allowlist_count(l), 0);
    assert_null(lookup(l, a));
    slm_allowlist_destroy(&l);
    l = parse_ok("# nobody yet\n\n", 4);
    assert_int_equal(slm_allowlist_count(l), 0);
    slm_allowlist_destroy(&l);

    /* Tenant names: 64 bytes fine, 65 not; only [A-Za-z0-9_.-]. */
    char t64[65], t65[66];
    memset(t64, 'x', 64);
    t64[64] = '\0';
    memset(t65, 'y', 65);
    t65[65] = '\0';
    snprintf(text, sizeof text, "%s %s\n", a, t64);
    l = parse_ok(text, 4);
    assert_string_equal(lookup(l, a), t64);
    slm_allowlist_destroy(&l);
    snprintf(text, sizeof text, "%s %s\n", a, t65);
    parse_bad(text, strlen(text), 4, "t:1: tenant name of 65 bytes");
    const char *bad_tenants[] = {"a/b", "caf\xc3\xa9", "x\"y", "a\vb", "a;b"};
    for (size_t i = 0; i < sizeof bad_tenants / sizeof *bad_tenants; i++) {
        snprintf(text, sizeof text, "# x\n%s %s\n", a, bad_tenants[i]);
        parse_bad(text, strlen(text), 4, "t:2: tenant name has byte");
    }
    snprintf(text, sizeof text, "%s\n", a);
    parse_bad(text, strlen(text), 4, "t:1: missing tenant name");
    snprintf(text, sizeof text, "%s   \n", a);
    parse_bad(text, strlen(text), 4, "missing tenant name");

    /* Keys: short, long, non-Z85, overflowing. */
    snprintf(text, sizeof text, "%.39s acme\n", a);
    parse_bad(text, strlen(text), 4, "t:1: key is 39 characters");
    snprintf(text, sizeof text, "%sA acme\n", a);
    parse_bad(text, strlen(text), 4, "key is 41 characters");
    snprintf(text, sizeof text, "%.20s~%.19s acme\n", a, a + 21);
    parse_bad(text, strlen(text), 4, "not Z85");
    snprintf(text, sizeof text, "$%.39s acme\n", a + 1);
    parse_bad(text, strlen(text), 4, "overflow");

    /* Extra fields, CR, NUL, duplicates, too many, too long a line. */
    snprintf(text, sizeof text, "%s acme extra\n", a);
    parse_bad(text, strlen(text), 4, "unexpected text after the tenant");
    snprintf(text, sizeof text, "%s acme # note\n", a);
    parse_bad(text, strlen(text), 4, "unexpected text after the tenant");
    snprintf(text, sizeof text, "%s acme\r\n", a);
    parse_bad(text, strlen(text), 4, "carriage return");
    snprintf(text, sizeof text, "# a\r\n");
    parse_bad(text, strlen(text), 4, "t:1: carriage return");
    snprintf(text, sizeof text, "%s acme\n", a);
    text[45] = '\0'; /* inside the tenant */
    parse_bad(text, strlen(a) + 6, 4, "t:1: NUL byte");
    snprintf(text, sizeof text, "%s acme\n%s other\n%s acme\n", a, b, a);
    parse_bad(text, strlen(text), 4, "t:3: duplicate key (also on line 1)");
    snprintf(text, sizeof text, "%s x\n%s y\n%s z\n", a, b, c);
    parse_bad(text, strlen(text), 2, "t:3: more than 2 entries");
    char longline[600];
    memset(longline, '#', sizeof longline);
    parse_bad(longline, sizeof longline, 4, "exceeds 512");
    /* A valid line after a bad one is not reached: the first error wins. */
    snprintf(text, sizeof text, "junk\n%s acme\n", a);
    parse_bad(text, strlen(text), 4, "t:1:");

    assert_int_not_equal(slm_allowlist_parse("", 0, 0, "t", &l), SLM_OK);
    assert_int_not_equal(
        slm_allowlist_parse("", 0, SLM_ALLOWLIST_MAX_ENTRIES + 1, "t", &l),
        SLM_OK);
}

/* Limits lines: per tenant, the "*" default, and every way one is wrong. */
static void test_allowlist_limits(void **state)
{
    char a[41], b[41], c[41], s[41], text[2048];
    keypair(a, s);
    keypair(b, s);
    keypair(c, s);
    snprintf(text, sizeof text,
             "%s alice\n"
             "%s bob\n"
             "%s carol\n"
             "limits alice concurrent=1 tokens=400\n"
             "  limits\t*   queue=50 concurrent=8\n"
             "limits bob tokens=1000000\n",
             a, b, c);
    slm_allowlist_t *l = parse_ok(text, 16);
    assert_int_equal(slm_allowlist_count(l), 3);
    slm_tenant_limits v = slm_allowlist_limits(l, "alice");
    assert_int_equal(v.concurrent, 1);
    assert_int_equal(v.max_tokens, 400);
    assert_int_equal(v.queue_share, 0); /* its own line replaces "*" whole */
    v = slm_allowlist_limits(l, "bob");
    assert_int_equal(v.concurrent, 0);
    assert_int_equal(v.max_tokens, 1000000);
    v = slm_allowlist_limits(l, "carol"); /* no line: the default */
    assert_int_equal(v.concurrent, 8);
    assert_int_equal(v.max_tokens, 0);
    assert_int_equal(v.queue_share, 50);
    v = slm_allowlist_limits(l, "nobody");
    assert_int_equal(v.queue_share, 50);
    slm_allowlist_destroy(&l);
    v = slm_allowlist_limits(NULL, "alice");
    assert_int_equal(v.concurrent + v.max_tokens + v.queue_share, 0);

    /* Without any limits line, nobody is limited. */
    snprintf(text, sizeof text, "%s alice\n", a);
    l = parse_ok(text, 4);
    v = slm_allowlist_limits(l, "alice");
    assert_int_equal(v.concurrent + v.max_tokens + v.queue_share, 0);
    slm_allowlist_destroy(&l);

    static const struct {
        const char *line, *want;
    } bad[] = {
        {"limits alice", "at least one"},
        {"limits alice concurrent=0", "from 1 to"},
        {"limits alice concurrent=1000001", "from 1 to"},
        {"limits alice concurrent=99999999999999999999999", "from 1 to"},
        {"limits alice concurrent=-1", "from 1 to"},
        {"limits alice concurrent=1x", "from 1 to"},
        {"limits alice queue=101", "from 1 to 100"},
        {"limits alice tokens=", "unknown limit"},
        {"limits alice tokens=5 tokens=6", "given twice"},
        {"limits alice speed=5", "unknown limit"},
        {"limits bad/name tokens=5", "tenant name"},
        {"limits dave tokens=5", "has no key"},
        {"limits alice tokens=5\nlimits alice queue=5", "set twice"},
        {"limits * tokens=5\nlimits * queue=5", "second 'limits *'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "%s alice\n%s\n", a, bad[i].line);
        parse_bad(text, strlen(text), 4, bad[i].want);
    }
}

static void test_allowlist_add_and_load(void **state)
{
    char a[41], b[41], s[41];
    keypair(a, s);
    keypair(b, s);
    slm_allowlist_t *l = NULL;
    assert_int_equal(slm_allowlist_create(2, &l), SLM_OK);
    assert_int_equal(slm_allowlist_add(l, a, "shard-0"), SLM_OK);
    assert_int_not_equal(slm_allowlist_add(l, a, "shard-1"), SLM_OK);
    assert_non_null(strstr(slm_error_message(), "already listed"));
    assert_int_not_equal(slm_allowlist_add(l, "short", "shard-1"), SLM_OK);
    assert_int_not_equal(slm_allowlist_add(l, b, "bad name"), SLM_OK);
    assert_int_equal(slm_allowlist_add(l, b, "shard-1"), SLM_OK);
    char c[41];
    keypair(c, s);
    assert_int_not_equal(slm_allowlist_add(l, c, "shard-2"), SLM_OK);
    assert_string_equal(lookup(l, a), "shard-0");
    assert_string_equal(lookup(l, b), "shard-1");
    assert_null(lookup(l, c));
    slm_allowlist_destroy(&l);

    /* Many adds stay sorted (bsearch finds every one). */
    assert_int_equal(slm_allowlist_create(64, &l), SLM_OK);
    char keys[64][41];
    for (int i = 0; i < 64; i++) {
        char name[16];
        keypair(keys[i], s);
        snprintf(name, sizeof name, "shard-%d", i);
        assert_int_equal(slm_allowlist_add(l, keys[i], name), SLM_OK);
    }
    for (int i = 0; i < 64; i++) {
        char name[16];
        snprintf(name, sizeof name, "shard-%d", i);
        assert_string_equal(lookup(l, keys[i]), name);
    }
    slm_allowlist_destroy(&l);

    /* From a file: 0600 and 0644 fine; group-writable, symlink refused. */
    char path[300], link[300], text[128];
    snprintf(path, sizeof path, "%s/clients.allow", g_dir);
    snprintf(text, sizeof text, "%s acme\n", a);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(slm_allowlist_load(path, 8, &l), SLM_OK);
    assert_string_equal(lookup(l, a), "acme");
    slm_allowlist_destroy(&l);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(slm_allowlist_load(path, 8, &l), SLM_OK);
    slm_allowlist_destroy(&l);
    assert_int_equal(chmod(path, 0664), 0);
    assert_int_not_equal(slm_allowlist_load(path, 8, &l), SLM_OK);
    assert_non_null(strstr(slm_error_message(), "mode 0664 is too open"));
    assert_int_equal(chmod(path, 0600), 0);
    snprintf(link, sizeof link, "%s/link.allow", g_dir);
    assert_int_equal(symlink(path, link), 0);
    assert_int_not_equal(slm_allowlist_load(link, 8, &l), SLM_OK);
    assert_non_null(strstr(slm_error_message(), "symbolic link"));
    /* Errors in a file name the file and line. */
    f = fopen(path, "ab");
    fputs("oops\n", f);
    fclose(f);
    assert_int_not_equal(slm_allowlist_load(path, 8, &l), SLM_OK);
    assert_non_null(strstr(slm_error_message(), "clients.allow:2: key is 4"));
}

/* ---- the handler, spoken to directly ---- */

typedef struct {
    char code[8];
    char user[80];
    char id[16];
    int frames;
} zap_reply;

/* Sends a request of n frames (lens[i] bytes each) to the handler and
 * reads its reply. */
static zap_reply ask(void *req, const char *const *frames, const size_t *lens,
                     int n)
{
    for (int i = 0; i < n; i++)
        assert_true(zmq_send(req, frames[i], lens[i],
                             i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
    zap_reply r = {0};
    int more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        assert_true(zmq_msg_recv(&m, req, 0) >= 0);
        char *dst = r.frames == 1   ? r.id
                    : r.frames == 2 ? r.code
                    : r.frames == 4 ? r.user
                                    : NULL;
        size_t cap = r.frames == 1   ? sizeof r.id
                     : r.frames == 2 ? sizeof r.code
                                     : sizeof r.user;
        if (dst) {
            size_t k = zmq_msg_size(&m) < cap - 1 ? zmq_msg_size(&m) : cap - 1;
            memcpy(dst, zmq_msg_data(&m), k);
            dst[k] = '\0';
        }
        if (r.frames == 0)
            assert_true(zmq_msg_size(&m) == 3 &&
                        memcmp(zmq_msg_data(&m), "1.0", 3) == 0);
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        r.frames++;
    }
    return r;
}

static void test_handler_requests(void **state)
{
    char a[41], s[41], sh[41], unk[41];
    keypair(a, s);
    keypair(sh, s);
    keypair(unk, s);
    char text[128];
    snprintf(text, sizeof text, "%s acme\n", a);
    slm_allowlist_t *clients = parse_ok(text, 8), *shards = NULL;
    assert_int_equal(slm_allowlist_create(4, &shards), SLM_OK);
    assert_int_equal(slm_allowlist_add(shards, sh, "shard-0"), SLM_OK);
    char log[300];
    snprintf(log, sizeof log, "%s/handler.log", g_dir);
    slm_audit_t *audit = NULL;
    assert_int_equal(
        slm_audit_open(&(slm_audit_options){.path = log, .log_admitted = true},
                       &audit),
        SLM_OK);

    void *ctx = zmq_ctx_new();
    slm_zap_t *z = NULL, *z2 = NULL;
    assert_int_equal(slm_zap_start(ctx, clients, shards, audit, &z), SLM_OK);
    /* One handler per context. */
    assert_int_not_equal(slm_zap_start(ctx, clients, shards, audit, &z2),
                         SLM_OK);
    assert_null(z2);
    assert_non_null(strstr(slm_error_message(), "one handler per context"));

    void *req = zmq_socket(ctx, ZMQ_REQ);
    const int zero = 0, timeout = 5000;
    zmq_setsockopt(req, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(req, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    assert_int_equal(zmq_connect(req, SLM_ZAP_ENDPOINT), 0);

    uint8_t ka[32], ksh[32], kunk[32];
    assert_int_equal(slm_zkeys_decode(a, "a", ka), SLM_OK);
    assert_int_equal(slm_zkeys_decode(sh, "sh", ksh), SLM_OK);
    assert_int_equal(slm_zkeys_decode(unk, "unk", kunk), SLM_OK);

    /* Frames: version, id, domain, address, identity, mechanism, key. */
    const char *f[20] = {"1.0", "r1",    SLM_ZAP_DOMAIN_CLIENTS, "10.1.2.3",
                         "",    "CURVE", (const char *)ka};
    size_t len[20] = {3, 2, strlen(SLM_ZAP_DOMAIN_CLIENTS), 8, 0, 5, 32};
    zap_reply r = ask(req, f, len, 7);
    assert_int_equal(r.frames, 6);
    assert_string_equal(r.code, "200");
    assert_string_equal(r.user, "acme");
    assert_string_equal(r.id, "r1");

    f[6] = (const char *)kunk; /* unknown key */
    f[1] = "r2";
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "400");
    assert_string_equal(r.user, "");
    assert_string_equal(r.id, "r2");

    f[6] = (const char *)ksh; /* a shard key on the clients' domain */
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "400");
    f[2] = SLM_ZAP_DOMAIN_SHARDS; /* ... and on its own */
    len[2] = strlen(SLM_ZAP_DOMAIN_SHARDS);
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "200");
    assert_string_equal(r.user, "shard-0");

    f[2] = "other"; /* unknown domain */
    len[2] = 5;
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "400");
    f[2] = "";
    len[2] = 0;
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "400");
    f[2] = SLM_ZAP_DOMAIN_CLIENTS;
    len[2] = strlen(SLM_ZAP_DOMAIN_CLIENTS);

    f[6] = (const char *)ka;
    len[6] = 31; /* short key */
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "400");
    len[6] = 32;
    f[7] = "extra"; /* 8 frames */
    len[7] = 5;
    r = ask(req, f, len, 8);
    assert_string_equal(r.code, "400");
    for (int i = 7; i < 20; i++) { /* 20 frames */
        f[i] = "x";
        len[i] = 1;
    }
    r = ask(req, f, len, 20);
    assert_string_equal(r.code, "400");
    f[5] = "PLAIN"; /* other mechanisms, even with a listed key */
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "400");
    f[5] = "NULL";
    len[5] = 4;
    r = ask(req, f, len, 6);
    assert_string_equal(r.code, "400");
    f[5] = "CURVE";
    len[5] = 5;

    f[0] = "2.0"; /* wrong version */
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "500");
    f[0] = "1.0";
    r = ask(req, f, len, 3); /* too few frames */
    assert_string_equal(r.code, "500");
    assert_string_equal(r.id, "r2");
    r = ask(req, f, len, 1);
    assert_string_equal(r.code, "500");
    assert_string_equal(r.id, "");

    /* A hostile address is escaped in the log. */
    static const char hostile_peer[] = "1.2.3.4\"}\n{\"event\":\"x\0y";
    f[3] = hostile_peer;
    len[3] = sizeof hostile_peer - 1;
    f[6] = (const char *)kunk;
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "400");

    /* Still serving after all that. */
    f[6] = (const char *)ka;
    f[1] = "last";
    len[1] = 4;
    r = ask(req, f, len, 7);
    assert_string_equal(r.code, "200");
    assert_string_equal(r.id, "last");

    unsigned long long admitted = 0, refused = 0;
    slm_zap_counts(z, &admitted, &refused);
    assert_int_equal(admitted, 3);
    assert_int_equal(refused, 13);

    zmq_close(req);
    slm_zap_stop(&z);
    assert_null(z);
    slm_zap_stop(&z);
    zmq_ctx_term(ctx);
    slm_audit_close(&audit);

    /* Every line parses; the refusals carry their reasons. */
    FILE *fl = fopen(log, "rb");
    assert_non_null(fl);
    char *line = NULL;
    size_t cap = 0;
    int lines = 0, malformed = 0, unknown_key = 0, hostile = 0;
    while (getline(&line, &cap, fl) > 0) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (!o)
            fail_msg("not JSON: %s", line);
        lines++;
        const char *ev = json_string_value(json_object_get(o, "event"));
        const char *why = json_string_value(json_object_get(o, "reason"));
        const char *peer = json_string_value(json_object_get(o, "peer"));
        if (strcmp(ev, "malformed_message") == 0)
            malformed++;
        assert_string_not_equal(ev, "x"); /* no forged event */
        const char *key = json_string_value(json_object_get(o, "key"));
        if (why && strcmp(why, "key not in the allowlist") == 0 && key &&
            strcmp(key, unk) == 0)
            unknown_key++;
        if (peer && strncmp(peer, "1.2.3.4\"}\n{", 11) == 0)
            hostile++;
        json_decref(o);
    }
    free(line);
    fclose(fl);
    assert_int_equal(lines, 16);
    assert_int_equal(malformed, 3);
    assert_int_equal(unknown_key, 2);
    assert_int_equal(hostile, 2); /* the refusal and the last admission */
    slm_allowlist_destroy(&clients);
    slm_allowlist_destroy(&shards);
}

/* ---- end to end over TCP ---- */

/* A ROUTER bound to a free port; CURVE if secret is given; max_bytes < 0
 * leaves ZMQ_MAXMSGSIZE unlimited. Options are copied into the listener at
 * zmq_bind, so everything is set before it. */
static void *server_socket_max(void *ctx, const char *domain,
                               const char *secret, int64_t max_bytes,
                               char *endpoint, size_t cap)
{
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    const int zero = 0;
    assert_non_null(s);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max_bytes, sizeof max_bytes), 0);
    if (secret)
        assert_int_equal(slm_zkeys_apply_server(s, secret, domain), SLM_OK);
    else if (domain)
        assert_int_equal(
            zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, domain, strlen(domain)), 0);
    assert_int_equal(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    assert_int_equal(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, endpoint, &cap), 0);
    return s;
}

static void *server_socket(void *ctx, const char *domain, const char *secret,
                           char *endpoint, size_t cap)
{
    return server_socket_max(ctx, domain, secret, -1, endpoint, cap);
}

/* A DEALER connected to endpoint; CURVE if pub/sec are given. */
static void *client_socket(void *ctx, const char *endpoint,
                           const char *server_pub, const char *pub,
                           const char *sec)
{
    void *c = zmq_socket(ctx, ZMQ_DEALER);
    const int zero = 0;
    assert_non_null(c);
    zmq_setsockopt(c, ZMQ_LINGER, &zero, sizeof zero);
    if (pub)
        assert_int_equal(slm_zkeys_apply_client(c, server_pub, pub, sec),
                         SLM_OK);
    assert_int_equal(zmq_connect(c, endpoint), 0);
    return c;
}

/* The client sends "ping"; if the server gets it within wait_ms, it answers
 * "pong" and the tenant (User-Id) is copied into tenant. Returns whether
 * the round trip happened. */
static bool round_trip(void *server, void *client, int wait_ms, char *tenant,
                       size_t cap)
{
    tenant[0] = '\0';
    assert_int_equal(zmq_send(client, "ping", 4, ZMQ_DONTWAIT), 4);
    zmq_pollitem_t item = {server, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, wait_ms) <= 0)
        return false;
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    assert_true(zmq_msg_recv(&id, server, 0) >= 0);
    assert_true(zmq_msg_recv(&body, server, 0) >= 0);
    assert_int_equal(zmq_msg_size(&body), 4);
    const char *user = zmq_msg_gets(&body, "User-Id");
    snprintf(tenant, cap, "%s", user ? user : "");
    assert_true(zmq_msg_send(&id, server, ZMQ_SNDMORE) >= 0);
    assert_int_equal(zmq_send(server, "pong", 4, 0), 4);
    zmq_msg_close(&body);
    char buf[8];
    const int timeout = 5000;
    zmq_setsockopt(client, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    assert_int_equal(zmq_recv(client, buf, sizeof buf, 0), 4);
    assert_memory_equal(buf, "pong", 4);
    return true;
}

/* Drains anything a server socket received (there must be nothing). */
static void assert_silent(void *server, int wait_ms)
{
    zmq_pollitem_t item = {server, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, wait_ms), 0);
}

/* Counts audit lines with this event and reason (and domain if given). */
static int count_log(const char *path, const char *event, const char *reason,
                     const char *domain)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        if (!o)
            fail_msg("not JSON: %s", line);
        const char *ev = json_string_value(json_object_get(o, "event"));
        const char *why = json_string_value(json_object_get(o, "reason"));
        const char *dom = json_string_value(json_object_get(o, "domain"));
        const char *peer = json_string_value(json_object_get(o, "peer"));
        if (strcmp(ev, event) == 0 &&
            (!reason || (why && strcmp(why, reason) == 0)) &&
            (!domain || (dom && strcmp(dom, domain) == 0))) {
            assert_non_null(peer);
            assert_string_equal(peer, "127.0.0.1");
            n++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return n;
}

static void test_curve_end_to_end(void **state)
{
    char srv_pub[41], srv_sec[41], alice_pub[41], alice_sec[41];
    char mallory_pub[41], mallory_sec[41], shard_pub[41], shard_sec[41];
    /* The server's and alice's keys come from files, as in deployment. */
    char prefix[300], path[320];
    snprintf(prefix, sizeof prefix, "%s/server", g_dir);
    assert_int_equal(slm_zkeys_generate(prefix), SLM_OK);
    snprintf(path, sizeof path, "%s.key_secret", prefix);
    assert_int_equal(slm_zkeys_load_secret(path, srv_pub, srv_sec), SLM_OK);
    snprintf(prefix, sizeof prefix, "%s/alice", g_dir);
    assert_int_equal(slm_zkeys_generate(prefix), SLM_OK);
    snprintf(path, sizeof path, "%s.key_secret", prefix);
    assert_int_equal(slm_zkeys_load_secret(path, alice_pub, alice_sec), SLM_OK);
    keypair(mallory_pub, mallory_sec);
    keypair(shard_pub, shard_sec);

    char allow[300], text[256];
    snprintf(allow, sizeof allow, "%s/e2e.allow", g_dir);
    snprintf(text, sizeof text, "# tenants\n%s acme\n", alice_pub);
    FILE *f = fopen(allow, "wb");
    fputs(text, f);
    fclose(f);
    chmod(allow, 0600);
    slm_allowlist_t *clients = NULL, *shards = NULL;
    assert_int_equal(slm_allowlist_load(allow, 64, &clients), SLM_OK);
    assert_int_equal(slm_allowlist_create(4, &shards), SLM_OK);
    assert_int_equal(slm_allowlist_add(shards, shard_pub, "shard-0"), SLM_OK);

    char log[300];
    snprintf(log, sizeof log, "%s/e2e.log", g_dir);
    slm_audit_t *audit = NULL;
    assert_int_equal(slm_audit_open(&(slm_audit_options){.path = log}, &audit),
                     SLM_OK);

    void *sctx = zmq_ctx_new(), *cctx = zmq_ctx_new();
    slm_zap_t *z = NULL;
    assert_int_equal(slm_zap_start(sctx, clients, shards, audit, &z), SLM_OK);
    char ep[128], shard_ep[128], null_ep[128];
    void *server =
        server_socket(sctx, SLM_ZAP_DOMAIN_CLIENTS, srv_sec, ep, sizeof ep);
    char tenant[80];

    /* A listed client is served, tagged with its tenant. */
    void *alice = client_socket(cctx, ep, srv_pub, alice_pub, alice_sec);
    assert_true(round_trip(server, alice, 5000, tenant, sizeof tenant));
    assert_string_equal(tenant, "acme");

    /* An unlisted key: its handshake fails; nothing reaches the server. */
    void *mallory = client_socket(cctx, ep, srv_pub, mallory_pub, mallory_sec);
    assert_false(round_trip(server, mallory, 700, tenant, sizeof tenant));
    zmq_close(mallory);
    /* A shard's key is not a client's key. */
    void *confused = client_socket(cctx, ep, srv_pub, shard_pub, shard_sec);
    assert_false(round_trip(server, confused, 500, tenant, sizeof tenant));
    zmq_close(confused);
    /* A client that expects another server key gets nothing either. */
    void *wrong_server =
        client_socket(cctx, ep, mallory_pub, alice_pub, alice_sec);
    assert_false(round_trip(server, wrong_server, 500, tenant, sizeof tenant));
    zmq_close(wrong_server);
    /* Plaintext: the mechanisms differ; the greeting fails. */
    void *plain = client_socket(cctx, ep, NULL, NULL, NULL);
    assert_false(round_trip(server, plain, 500, tenant, sizeof tenant));
    zmq_close(plain);
    /* And the raw bytes of a plaintext ZMTP message over TCP do nothing. */

    /* The listed client is still served, on its old and a new connection. */
    assert_true(round_trip(server, alice, 5000, tenant, sizeof tenant));
    assert_string_equal(tenant, "acme");
    void *alice2 = client_socket(cctx, ep, srv_pub, alice_pub, alice_sec);
    assert_true(round_trip(server, alice2, 5000, tenant, sizeof tenant));
    zmq_close(alice2);
    assert_silent(server, 100);

    /* The shards' socket: its own domain and list. */
    void *shard_srv = server_socket(sctx, SLM_ZAP_DOMAIN_SHARDS, srv_sec,
                                    shard_ep, sizeof shard_ep);
    void *shard = client_socket(cctx, shard_ep, srv_pub, shard_pub, shard_sec);
    assert_true(round_trip(shard_srv, shard, 5000, tenant, sizeof tenant));
    assert_string_equal(tenant, "shard-0");
    void *alice_as_shard =
        client_socket(cctx, shard_ep, srv_pub, alice_pub, alice_sec);
    assert_false(
        round_trip(shard_srv, alice_as_shard, 500, tenant, sizeof tenant));
    zmq_close(alice_as_shard);

    /* A socket without CURVE in this context: ZAP refuses the NULL
     * mechanism, so a misconfigured socket fails closed. */
    void *null_srv = server_socket(sctx, SLM_ZAP_DOMAIN_CLIENTS, NULL, null_ep,
                                   sizeof null_ep);
    void *plain2 = client_socket(cctx, null_ep, NULL, NULL, NULL);
    assert_false(round_trip(null_srv, plain2, 500, tenant, sizeof tenant));
    zmq_close(plain2);

    unsigned long long admitted = 0, refused = 0;
    slm_zap_counts(z, &admitted, &refused);
    assert_true(admitted >= 3); /* alice, alice2, shard */
    assert_true(refused >= 4);  /* mallory, confused, alice_as_shard, NULL */

    zmq_close(alice);
    zmq_close(shard);
    zmq_close(server);
    zmq_close(shard_srv);
    zmq_close(null_srv);
    slm_zap_stop(&z); /* after the server sockets: see zap.h */
    zmq_ctx_term(sctx);
    zmq_ctx_term(cctx);
    slm_audit_close(&audit);

    assert_true(count_log(log, "auth_refused", "key not in the allowlist",
                          SLM_ZAP_DOMAIN_CLIENTS) >= 2);
    assert_true(count_log(log, "auth_refused", "key not in the allowlist",
                          SLM_ZAP_DOMAIN_SHARDS) >= 1);
    assert_true(count_log(log, "auth_refused", "mechanism is not CURVE",
                          SLM_ZAP_DOMAIN_CLIENTS) >= 1);
    assert_int_equal(count_log(log, "auth_admitted", NULL, NULL), 0);
    slm_zkeys_wipe(srv_sec, sizeof srv_sec);
    slm_zkeys_wipe(alice_sec, sizeof alice_sec);
    slm_allowlist_destroy(&clients);
    slm_allowlist_destroy(&shards);
}

/* Without a handler in the context, a socket set up by
 * slm_zkeys_apply_server admits no one (ZMQ_ZAP_ENFORCE_DOMAIN). */
static void test_no_handler_fails_closed(void **state)
{
    char srv_pub[41], srv_sec[41], pub[41], sec[41];
    keypair(srv_pub, srv_sec);
    keypair(pub, sec);
    void *sctx = zmq_ctx_new(), *cctx = zmq_ctx_new();
    char ep[128], tenant[80];
    void *server =
        server_socket(sctx, SLM_ZAP_DOMAIN_CLIENTS, srv_sec, ep, sizeof ep);
    void *c = client_socket(cctx, ep, srv_pub, pub, sec);
    assert_false(round_trip(server, c, 700, tenant, sizeof tenant));
    zmq_close(c);
    zmq_close(server);
    zmq_ctx_term(sctx);
    zmq_ctx_term(cctx);
}

/* Whether a listed client's `payload`-byte message reaches a CURVE server
 * whose ZMQ_MAXMSGSIZE is max_bytes. */
static bool passes_limit(const slm_allowlist_t *clients, const char *srv_pub,
                         const char *srv_sec, const char *pub, const char *sec,
                         int64_t max_bytes, size_t payload)
{
    void *sctx = zmq_ctx_new(), *cctx = zmq_ctx_new();
    slm_zap_t *z = NULL;
    assert_int_equal(slm_zap_start(sctx, clients, NULL, NULL, &z), SLM_OK);
    char ep[128];
    void *server = server_socket_max(sctx, SLM_ZAP_DOMAIN_CLIENTS, srv_sec,
                                     max_bytes, ep, sizeof ep);
    void *c = client_socket(cctx, ep, srv_pub, pub, sec);
    char *buf = calloc(1, payload + 1);
    assert_int_equal(zmq_send(c, buf, payload, ZMQ_DONTWAIT), (int)payload);
    free(buf);
    zmq_pollitem_t item = {server, 0, ZMQ_POLLIN, 0};
    /* Long enough for a loaded machine: a false "nothing" would fail. */
    const bool got = zmq_poll(&item, 1, 2500) > 0;
    zmq_close(c);
    zmq_close(server);
    slm_zap_stop(&z);
    zmq_ctx_term(sctx);
    zmq_ctx_term(cctx);
    return got;
}

/* ZeroMQ applies ZMQ_MAXMSGSIZE to the CURVE handshake's commands and to
 * the encrypted frame (payload + 33 bytes: "\x07MESSAGE", flags, nonce,
 * MAC), which is what zap.h's advice rests on. */
static void test_maxmsgsize_with_curve(void **state)
{
    char srv_pub[41], srv_sec[41], pub[41], sec[41];
    keypair(srv_pub, srv_sec);
    keypair(pub, sec);
    char text[128];
    snprintf(text, sizeof text, "%s acme\n", pub);
    slm_allowlist_t *l = parse_ok(text, 4);
    /* Too small for INITIATE: even a 1-byte message never arrives. */
    assert_false(passes_limit(l, srv_pub, srv_sec, pub, sec, 256, 1));
    assert_true(passes_limit(l, srv_pub, srv_sec, pub, sec, 512, 1));
    /* The limit counts the encrypted frame. */
    assert_true(passes_limit(l, srv_pub, srv_sec, pub, sec, 4096,
                             4096 - SLM_ZKEY_CURVE_OVERHEAD));
    assert_false(passes_limit(l, srv_pub, srv_sec, pub, sec, 4096, 4096 - 32));
    slm_allowlist_destroy(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allowlist_parse),
        cmocka_unit_test(test_allowlist_limits),
        cmocka_unit_test(test_allowlist_add_and_load),
        cmocka_unit_test(test_handler_requests),
        cmocka_unit_test(test_curve_end_to_end),
        cmocka_unit_test(test_no_handler_fails_closed),
        cmocka_unit_test(test_maxmsgsize_with_curve),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
