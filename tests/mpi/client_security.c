/*
 * tests/mpi/client_security.c - tenants and CURVE frame integrity, against a
 * running `shardlm serve` (tests/integration/serve_security.sh starts it).
 *
 *   client_security quota ENDPOINT SERVER.key ALICE.key_secret
 *                   BOB.key_secret CAROL.key_secret
 *     The server's allowlist gives alice "concurrent=1 tokens=300", carol
 *     "queue=50" and the server --queue-depth 4. Checks, each printed:
 *     - alice's second request while her first runs is RESOURCE_EXHAUSTED
 *       (concurrency), while bob's request, sent at the same time, completes;
 *     - alice asking for 301 tokens is RESOURCE_EXHAUSTED (tokens);
 *     - carol's fourth request (one running, two waiting: her half of the
 *       queue of 4) is RESOURCE_EXHAUSTED (queue share), bob's request sent
 *       after it is admitted and runs before carol's waiting ones (turns
 *       between tenants), and every admitted request completes.
 *
 *   client_security tamper ENDPOINT SERVER.key ALICE.key_secret
 *     A TCP proxy in a thread sits between a CURVE DEALER and the server and
 *     records what the client sends. Checks:
 *     - through the proxy, a HealthRequest is answered (the proxy is
 *       faithful);
 *     - replay: the proxy sends the client's last frame (that request) to
 *       the server a second time: the server drops the connection and does
 *       not answer it again;
 *     - tamper: one bit of the next request's frame flipped: the server drops
 *       the connection and never answers;
 *     - session replay: every byte the first client sent, handshake
 *       included, replayed on a fresh connection: the server closes it;
 *     - a direct client is still answered.
 *     The script then finds each refusal in the audit log.
 *
 *   client_security flood ENDPOINT SERVER.key ALICE.key_secret N
 *     Not a security check but the same plumbing: N short requests (random
 *     prompt ids of 1-40 tokens, 1-12 tokens out, greedy) from 8 DEALERs,
 *     up to 32 in flight; one in ten cancelled after its first chunk, one
 *     in twenty with a 1 ms deadline. Every request must end exactly once
 *     (Final, CANCELLED or DEADLINE_EXCEEDED) within the wait, and some
 *     must have been cancelled and some expired; prints the counts.
 *     The batching test then checks that the KV pool is whole again.
 *
 * Exit status 0: all passed; 1: a check failed (said on stderr); 2: usage or
 * local failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "common/zkeys.h"
#include "proto/client_wire.h"

#define WAIT_MS  60000 /* for a run of requests to end */
#define QUIET_MS 1000  /* for a reply that must not come */

static void *ctx;
static const char *endpoint;
static char server_key[SLM_ZKEY_Z85_BUF];
static int checks;

__attribute__((format(printf, 1, 2), noreturn)) static void
failed(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "client_security: FAIL: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

__attribute__((format(printf, 1, 2), noreturn)) static void
broken(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "client_security: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void passed(const char *what)
{
    printf("ok %d - %s\n", ++checks, what);
    fflush(stdout);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A CURVE DEALER with the secret key in key_file, connected to ep. */
static void *dealer(const char *key_file, const char *ep)
{
    char pub[SLM_ZKEY_Z85_BUF], sec[SLM_ZKEY_Z85_BUF];
    if (slm_zkeys_load_secret(key_file, pub, sec) != SLM_OK)
        broken("%s", slm_error_message());
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    const int linger = 0;
    if (!s || slm_zkeys_apply_client(s, server_key, pub, sec) != SLM_OK ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_connect(s, ep))
        broken("cannot connect to %s: %s", ep, zmq_strerror(zmq_errno()));
    return s;
}

static void send_msg(void *s, const slm_client_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (slm_client_pack_client(m, &buf, &len) != SLM_OK)
        broken("pack: %s", slm_error_message());
    if (zmq_send(s, buf, len, 0) != (int)len)
        broken("send: %s", zmq_strerror(zmq_errno()));
    free(buf);
}

/* A greedy GenerateRequest from BOS alone for exactly max_tokens tokens. */
static void generate(void *s, const char *id, uint32_t max_tokens)
{
    int32_t bos = 1;
    Shardlm__Client__TokenIds ids = SHARDLM__CLIENT__TOKEN_IDS__INIT;
    ids.ids = &bos;
    ids.n_ids = 1;
    Shardlm__Client__GenerateRequest g =
        SHARDLM__CLIENT__GENERATE_REQUEST__INIT;
    g.request_id = (char *)id;
    g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS;
    g.token_ids = &ids;
    g.max_tokens = max_tokens;
    g.ignore_eos = true;
    slm_client_msg m = SHARDLM__CLIENT__CLIENT_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_GENERATE;
    m.generate = &g;
    send_msg(s, &m);
}

static void health(void *s)
{
    Shardlm__Client__HealthRequest h = SHARDLM__CLIENT__HEALTH_REQUEST__INIT;
    slm_client_msg m = SHARDLM__CLIENT__CLIENT_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_HEALTH;
    m.health = &h;
    send_msg(s, &m);
}

/* Receives one reply from s within timeout_ms; NULL when none came. */
static slm_server_msg *receive(void *s, int timeout_ms)
{
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return NULL;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, s, 0) < 0)
        broken("recv: %s", zmq_strerror(zmq_errno()));
    const slm_client_limits lim =
        slm_client_default_limits(UINT32_MAX, UINT32_MAX);
    slm_server_msg *m = NULL;
    if (slm_client_unpack_response(zmq_msg_data(&msg), zmq_msg_size(&msg), &lim,
                                   &m) != SLM_OK)
        failed("a malformed reply: %s", slm_error_message());
    zmq_msg_close(&msg);
    return m;
}

/* ---- quota ---- */

/* How each request ended, in the order the ends arrived. */
typedef struct {
    char id[32];
    bool final; /* else an Error */
    int code;   /* the Error's */
    char message[256];
    uint32_t tokens; /* the Final's completion_tokens */
} outcome;

static outcome ends[64];
static int n_ends;

/* Collects replies from the n sockets until `want` more requests have
 * ended (Chunks and Queued notices are read and dropped). */
static void collect(void **socks, int n, int want)
{
    const int goal = n_ends + want;
    const double until = now_ms() + WAIT_MS;
    while (n_ends < goal) {
        zmq_pollitem_t it[8];
        for (int i = 0; i < n; i++)
            it[i] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
        const int left = (int)(until - now_ms());
        if (left <= 0 || zmq_poll(it, n, left) <= 0)
            failed("%d of %d requests ended within %d ms", n_ends - goal + want,
                   want, WAIT_MS);
        for (int i = 0; i < n; i++) {
            if (!(it[i].revents & ZMQ_POLLIN))
                continue;
            slm_server_msg *m = receive(socks[i], 0);
            if (!m)
                continue;
            outcome *o = &ends[n_ends];
            if (m->body_case == SHARDLM__CLIENT__SERVER_MESSAGE__BODY_FINAL) {
                snprintf(o->id, sizeof o->id, "%s", m->final->request_id);
                o->final = true;
                o->tokens = m->final->completion_tokens;
                n_ends++;
            } else if (m->body_case ==
                       SHARDLM__CLIENT__SERVER_MESSAGE__BODY_ERROR) {
                snprintf(o->id, sizeof o->id, "%s", m->error->request_id);
                o->final = false;
                o->code = m->error->code;
                snprintf(o->message, sizeof o->message, "%s",
                         m->error->message);
                n_ends++;
            }
            slm_client_free_response(&m);
        }
    }
}

static const outcome *end_of(const char *id, int *index)
{
    for (int i = 0; i < n_ends; i++)
        if (strcmp(ends[i].id, id) == 0) {
            if (index)
                *index = i;
            return &ends[i];
        }
    failed("no end for request %s", id);
}

static void expect_final(const char *id, uint32_t tokens)
{
    const outcome *o = end_of(id, NULL);
    if (!o->final)
        failed("%s ended with error %d: %s", id, o->code, o->message);
    if (o->tokens != tokens)
        failed("%s made %u tokens, expected %u", id, o->tokens, tokens);
}

static void expect_exhausted(const char *id, const char *why)
{
    const outcome *o = end_of(id, NULL);
    if (o->final || o->code != SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED)
        failed("%s: expected RESOURCE_EXHAUSTED, got %s %d (%s)", id,
               o->final ? "Final" : "Error", o->code, o->message);
    if (!strstr(o->message, why))
        failed("%s: the message '%s' does not say '%s'", id, o->message, why);
}

static int quota(char **keys)
{
    void *alice = dealer(keys[0], endpoint), *bob = dealer(keys[1], endpoint),
         *carol = dealer(keys[2], endpoint);
    void *all[] = {alice, bob, carol};

    /* Concurrency: a2 arrives while a1 runs (both leave in one go, and a1
     * is 250 steps long); bob's b1 is another tenant's and must run. */
    generate(alice, "a1", 250);
    generate(alice, "a2", 10);
    generate(bob, "b1", 20);
    collect(all, 3, 3);
    expect_exhausted("a2", "requests open, its limit");
    expect_final("a1", 250);
    expect_final("b1", 20);
    passed("tenant alice over its concurrency limit (1) gets "
           "RESOURCE_EXHAUSTED; bob's request at the same time completes");

    generate(alice, "a3", 301);
    generate(alice, "a4", 300);
    collect(all, 3, 2);
    expect_exhausted("a3", "at most 300 tokens");
    expect_final("a4", 300);
    passed("tenant alice asking for more tokens than its limit (300) gets "
           "RESOURCE_EXHAUSTED; within it, completes");

    /* Queue share: c1 runs, c2 and c3 wait (half the queue of 4), c4 is
     * refused; bob's b2 still gets in, and its turn comes before c2's. */
    generate(carol, "c1", 200);
    generate(carol, "c2", 5);
    generate(carol, "c3", 5);
    generate(carol, "c4", 5);
    generate(bob, "b2", 5);
    collect(all, 3, 5);
    expect_exhausted("c4", "its share");
    expect_final("c1", 200);
    expect_final("c2", 5);
    expect_final("c3", 5);
    expect_final("b2", 5);
    int at_b2 = 0, at_c2 = 0;
    end_of("b2", &at_b2);
    end_of("c2", &at_c2);
    if (at_b2 > at_c2)
        failed("bob's b2 ended after carol's c2: no turns between tenants");
    passed("tenant carol over its queue share (50% of 4) gets "
           "RESOURCE_EXHAUSTED; bob's later request is admitted and runs "
           "before carol's waiting ones");

    for (int i = 0; i < 3; i++)
        zmq_close(all[i]);
    return 0;
}

/* ---- tamper: a recording TCP proxy ---- */

enum { PASS, FLIP_NEXT };

typedef struct {
    int listen_fd;
    struct sockaddr_in server;
    pthread_mutex_t mu;
    int mode;       /* PASS or FLIP_NEXT (one chunk, then PASS) */
    uint8_t *first; /* all the first connection sent to the server */
    size_t first_len;
    uint8_t last[65536]; /* the last chunk a client sent */
    size_t last_len;
    bool inject;       /* send `last` to the server again */
    int server_closes; /* connections the server ended */
    int connections;
    bool stop;
} proxy;

static void *proxy_main(void *arg)
{
    proxy *p = arg;
    for (;;) {
        struct pollfd lp = {p->listen_fd, POLLIN, 0};
        if (poll(&lp, 1, 50) <= 0) {
            pthread_mutex_lock(&p->mu);
            const bool stop = p->stop;
            pthread_mutex_unlock(&p->mu);
            if (stop)
                return NULL;
            continue;
        }
        const int c = accept(p->listen_fd, NULL, NULL);
        if (c < 0)
            continue;
        const int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 ||
            connect(s, (struct sockaddr *)&p->server, sizeof p->server) != 0) {
            close(c);
            if (s >= 0)
                close(s);
            continue;
        }
        pthread_mutex_lock(&p->mu);
        const int conn = ++p->connections;
        pthread_mutex_unlock(&p->mu);
        uint8_t buf[65536];
        for (bool open = true; open;) {
            struct pollfd fds[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
            poll(fds, 2, 20);
            pthread_mutex_lock(&p->mu);
            if (p->stop)
                open = false;
            if (p->inject && p->last_len) {
                p->inject = false;
                if (write(s, p->last, p->last_len) != (ssize_t)p->last_len)
                    open = false;
            }
            pthread_mutex_unlock(&p->mu);
            if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                const ssize_t n = read(c, buf, sizeof buf);
                if (n <= 0)
                    break; /* the client left */
                pthread_mutex_lock(&p->mu);
                memcpy(p->last, buf, (size_t)n);
                p->last_len = (size_t)n;
                if (conn == 1) {
                    uint8_t *grown = realloc(p->first, p->first_len + n);
                    if (grown) {
                        memcpy(grown + p->first_len, buf, (size_t)n);
                        p->first = grown;
                        p->first_len += (size_t)n;
                    }
                }
                if (p->mode == FLIP_NEXT) {
                    buf[n - 1] ^= 0x01; /* inside the sealed box */
                    p->mode = PASS;
                }
                pthread_mutex_unlock(&p->mu);
                if (write(s, buf, (size_t)n) != n)
                    break;
            }
            if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
                const ssize_t n = read(s, buf, sizeof buf);
                if (n <= 0) {
                    pthread_mutex_lock(&p->mu);
                    p->server_closes++;
                    pthread_mutex_unlock(&p->mu);
                    break;
                }
                if (write(c, buf, (size_t)n) != n)
                    break;
            }
        }
        close(c);
        close(s);
    }
}

static int proxy_get(proxy *p, int *field)
{
    pthread_mutex_lock(&p->mu);
    const int v = *field;
    pthread_mutex_unlock(&p->mu);
    return v;
}

/* Waits up to ms for the server to end a proxied connection; whether it
 * did. */
static bool server_closed(proxy *p, int before, int ms)
{
    const double until = now_ms() + ms;
    while (proxy_get(p, &p->server_closes) == before) {
        if (now_ms() > until)
            return false;
        usleep(10000);
    }
    return true;
}

static void expect_health(void *s, const char *what)
{
    health(s);
    slm_server_msg *m = receive(s, 5000);
    if (!m || m->body_case != SHARDLM__CLIENT__SERVER_MESSAGE__BODY_HEALTH)
        failed("%s: no HealthResponse", what);
    slm_client_free_response(&m);
}

static void expect_silence(void *s, const char *what)
{
    slm_server_msg *m = receive(s, QUIET_MS);
    if (m)
        failed("%s: the server answered (message kind %d)", what,
               (int)m->body_case);
}

static int tamper(const char *key)
{
    proxy p = {.mode = PASS};
    pthread_mutex_init(&p.mu, NULL);
    unsigned port = 0;
    if (sscanf(endpoint, "tcp://127.0.0.1:%u", &port) != 1 || port > 65535)
        broken("tamper needs a tcp://127.0.0.1:PORT endpoint");
    p.server = (struct sockaddr_in){.sin_family = AF_INET,
                                    .sin_port = htons((uint16_t)port),
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    p.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (p.listen_fd < 0 || bind(p.listen_fd, (struct sockaddr *)&a, alen) ||
        listen(p.listen_fd, 4) ||
        getsockname(p.listen_fd, (struct sockaddr *)&a, &alen))
        broken("proxy: %s", strerror(errno));
    char via[64];
    snprintf(via, sizeof via, "tcp://127.0.0.1:%u", ntohs(a.sin_port));
    pthread_t thread;
    if (pthread_create(&thread, NULL, proxy_main, &p) != 0)
        broken("proxy thread");

    void *d1 = dealer(key, via);
    expect_health(d1, "through the proxy");
    passed("a request through the recording proxy is answered");

    int closes = proxy_get(&p, &p.server_closes);
    pthread_mutex_lock(&p.mu);
    p.inject = true; /* that request's frame, a second time */
    pthread_mutex_unlock(&p.mu);
    expect_silence(d1, "replayed frame");
    /* ZeroMQ stops reading the stream; the server's pings close it. */
    if (!server_closed(&p, closes, 8000))
        failed("replayed frame: the server kept the connection open");

    passed("a replayed frame: the server drops the connection and does not "
           "answer it");
    zmq_close(d1); /* the proxy serves one connection at a time */

    void *d2 = dealer(key, via);
    expect_health(d2, "a second client through the proxy");
    closes = proxy_get(&p, &p.server_closes);
    pthread_mutex_lock(&p.mu);
    p.mode = FLIP_NEXT;
    pthread_mutex_unlock(&p.mu);
    health(d2);
    expect_silence(d2, "tampered frame");
    if (!server_closed(&p, closes, 8000))
        failed("tampered frame: the server kept the connection open");
    passed("a frame with one bit flipped: the server drops the connection "
           "and does not answer it");

    /* The whole first session again, on a connection of its own. */
    pthread_mutex_lock(&p.mu);
    uint8_t *session = p.first;
    const size_t session_len = p.first_len;
    p.first = NULL;
    pthread_mutex_unlock(&p.mu);
    const int raw = socket(AF_INET, SOCK_STREAM, 0);
    if (raw < 0 ||
        connect(raw, (struct sockaddr *)&p.server, sizeof p.server) != 0 ||
        write(raw, session, session_len) != (ssize_t)session_len)
        broken("session replay: %s", strerror(errno));
    const double until = now_ms() + 5000;
    for (;;) {
        struct pollfd fd = {raw, POLLIN, 0};
        if (now_ms() > until)
            failed("session replay: the server kept the connection open");
        if (poll(&fd, 1, 100) > 0) {
            uint8_t buf[4096];
            if (read(raw, buf, sizeof buf) <= 0)
                break;
        }
    }
    close(raw);
    free(session);
    passed("a whole recorded session replayed (handshake and request): the "
           "server closes the connection");

    void *direct = dealer(key, endpoint);
    expect_health(direct, "a direct client afterwards");
    passed("a direct client is still served");

    zmq_close(d2);
    zmq_close(direct);
    pthread_mutex_lock(&p.mu);
    p.stop = true;
    pthread_mutex_unlock(&p.mu);
    pthread_join(thread, NULL);
    close(p.listen_fd);
    free(p.first);
    pthread_mutex_destroy(&p.mu);
    return 0;
}

/* ---- flood ---- */

/* The index k of a flood request id "f<k>", or -1 if `id` is not one of
 * the `total` sent: the server must echo ids exactly. */
static int flood_index(const char *id, int total)
{
    if (!id || id[0] != 'f' || id[1] < '0' || id[1] > '9')
        return -1;
    char *end;
    errno = 0;
    const long k = strtol(id + 1, &end, 10);
    if (errno || *end || k < 0 || k >= total)
        return -1;
    return (int)k;
}

static int flood(const char *key, int total)
{
    enum { SOCKS = 8, IN_FLIGHT = 32 };
    if (total <= 0)
        broken("flood: N must be positive");
    void *socks[SOCKS];
    for (int i = 0; i < SOCKS; i++)
        socks[i] = dealer(key, endpoint);
    /* Per request: whether its end came (exactly one each), and whether
     * it was cancelled already. */
    bool *ended_id = calloc((size_t)total, sizeof *ended_id);
    bool *cancel_sent = calloc((size_t)total, sizeof *cancel_sent);
    if (!ended_id || !cancel_sent)
        broken("flood: out of memory");
    uint64_t rng = 99;
    int sent = 0, ended = 0, finals = 0, cancelled = 0, expired = 0;
    int to_cancel = 0, with_deadline = 0;
    const double until = now_ms() + 10 * (double)WAIT_MS;
    while (ended < total) {
        while (sent < total && sent - ended < IN_FLIGHT) {
            char id[32];
            snprintf(id, sizeof id, "f%d", sent);
            int32_t ids[40];
            const size_t n = 1 + (size_t)(rng = rng * 6364136223846793005ull +
                                                1442695040888963407ull) %
                                     40;
            for (size_t i = 0; i < n; i++)
                ids[i] = 3 + (int32_t)((rng >> (i % 32)) % 500);
            Shardlm__Client__TokenIds t = SHARDLM__CLIENT__TOKEN_IDS__INIT;
            t.ids = ids;
            t.n_ids = n;
            Shardlm__Client__GenerateRequest g =
                SHARDLM__CLIENT__GENERATE_REQUEST__INIT;
            g.request_id = id;
            g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS;
            g.token_ids = &t;
            g.max_tokens = 1 + (uint32_t)((rng >> 40) % 12);
            g.ignore_eos = true;
            if (sent % 20 == 7) {
                g.deadline_ms = 1;
                with_deadline++;
            }
            to_cancel += sent % 10 == 3;
            slm_client_msg m = SHARDLM__CLIENT__CLIENT_MESSAGE__INIT;
            m.body_case = SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_GENERATE;
            m.generate = &g;
            send_msg(socks[sent % SOCKS], &m);
            sent++;
        }
        zmq_pollitem_t it[SOCKS];
        for (int i = 0; i < SOCKS; i++)
            it[i] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
        const int left = (int)(until - now_ms());
        if (left <= 0 || zmq_poll(it, SOCKS, left) <= 0)
            failed("flood: %d of %d requests ended in time", ended, total);
        for (int i = 0; i < SOCKS; i++) {
            if (!(it[i].revents & ZMQ_POLLIN))
                continue;
            slm_server_msg *m = receive(socks[i], 0);
            if (!m)
                continue;
            const char *rid = NULL;
            switch (m->body_case) {
            case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_CHUNK: {
                const int k = flood_index(m->chunk->request_id, sent);
                if (k < 0)
                    failed("flood: a chunk for request \"%s\", never sent",
                           m->chunk->request_id);
                if (ended_id[k])
                    failed("flood: a chunk for %s after its end",
                           m->chunk->request_id);
                if (k % 10 == 3 && !cancel_sent[k]) {
                    cancel_sent[k] = true;
                    Shardlm__Client__CancelRequest c =
                        SHARDLM__CLIENT__CANCEL_REQUEST__INIT;
                    c.request_id = m->chunk->request_id;
                    slm_client_msg cm = SHARDLM__CLIENT__CLIENT_MESSAGE__INIT;
                    cm.body_case = SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_CANCEL;
                    cm.cancel = &c;
                    send_msg(socks[i], &cm);
                }
                break;
            }
            case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_FINAL:
                rid = m->final->request_id;
                finals++;
                break;
            case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_ERROR:
                rid = m->error->request_id;
                if (m->error->code == SHARDLM__CLIENT__ERROR__CODE__CANCELLED)
                    cancelled++;
                else if (m->error->code ==
                         SHARDLM__CLIENT__ERROR__CODE__DEADLINE_EXCEEDED)
                    expired++;
                else
                    failed("flood: request %s: error %d: %s",
                           m->error->request_id, m->error->code,
                           m->error->message);
                break;
            default:
                break;
            }
            if (rid) {
                /* An end is counted once per id: a duplicate end, or one
                 * for an id never sent, would otherwise stand in for a
                 * request that never ended. */
                const int k = flood_index(rid, sent);
                if (k < 0)
                    failed("flood: an end for request \"%s\", never sent", rid);
                if (ended_id[k])
                    failed("flood: two ends for request %s", rid);
                ended_id[k] = true;
                ended++;
            }
            slm_client_free_response(&m);
        }
    }
    for (int k = 0; k < total; k++)
        if (!ended_id[k])
            failed("flood: request f%d never ended", k);
    printf("ok %d - flood: each of %d requests ended once: %d completed, %d "
           "cancelled (of %d asked), %d past their deadline (of %d with 1 "
           "ms)\n",
           ++checks, total, finals, cancelled, to_cancel, expired,
           with_deadline);
    /* Both ways of ending early must have happened, or this flood did
     * not test them. */
    if (cancelled == 0)
        failed("flood: no request was cancelled (%d were to be)", to_cancel);
    if (expired == 0)
        failed("flood: no request passed its 1 ms deadline (%d had one)",
               with_deadline);
    passed("flood: cancels and deadlines took effect");
    free(ended_id);
    free(cancel_sent);
    for (int i = 0; i < SOCKS; i++)
        zmq_close(socks[i]);
    return 0;
}

int main(int argc, char **argv)
{
    const bool is_quota = argc == 7 && strcmp(argv[1], "quota") == 0;
    const bool is_tamper = argc == 5 && strcmp(argv[1], "tamper") == 0;
    const bool is_flood = argc == 6 && strcmp(argv[1], "flood") == 0;
    if (!is_quota && !is_tamper && !is_flood) {
        fprintf(stderr,
                "usage: client_security quota ENDPOINT SERVER.key A.key_secret "
                "B.key_secret C.key_secret\n"
                "       client_security tamper ENDPOINT SERVER.key "
                "A.key_secret\n"
                "       client_security flood ENDPOINT SERVER.key "
                "A.key_secret N\n");
        return 2;
    }
    endpoint = argv[2];
    if (slm_zkeys_load_public(argv[3], server_key) != SLM_OK)
        broken("%s", slm_error_message());
    ctx = zmq_ctx_new();
    if (!ctx)
        broken("zmq_ctx_new");
    const int rc = is_quota    ? quota(argv + 4)
                   : is_tamper ? tamper(argv[4])
                               : flood(argv[4], atoi(argv[5]));
    zmq_ctx_term(ctx);
    return rc;
}
