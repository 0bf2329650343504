/*
 * bench/loadgen.c - a load generator for `shardlm serve`, built on
 * libshardlm_client alone (shardlm_client.h).
 *
 *   loadgen [--connect EP] [--streams N] [--prompt-tokens P] [--shared-prefix K]
 *           [--output-tokens T] [--duration-s S | --requests R]
 *           [--warmup W] [--seed X] [--timeout-ms MS]
 *           [--server-key S.key --key C.key_secret] [--json | --header]
 *
 * N streams run at once, each a thread with a handle of its own (the
 * library's rule: one handle per thread). Each sends Generate requests back
 * to back: P prompt token ids drawn deterministically from [3, vocab) (a
 * different prompt per request, the same for the same --seed; with
 * --shared-prefix K the first K ids are the same in every request, as a
 * system prompt would be), greedy
 * sampling, max_tokens = T with ignore_eos, so every request produces
 * exactly T tokens even from a random model. A request that finishes with
 * another count is an error ("SHORT").
 *
 * Phases: W warm-up requests (default 2) on a handle of their own, one at a
 * time, unmeasured (the server's first-request costs); then every stream
 * connects and asks for health (its handshake, CURVE included, done); then
 * all start together at t0. With --requests R each stream sends R; with
 * --duration-s S (the default, 10 s) each sends until t0 + S, and requests
 * still running then are let finish ("drain"), so that every request sent
 * is measured whole and none is cut off for having queued longest.
 *
 * What is measured (CLOCK_MONOTONIC, in this process):
 *   tok/s  output tokens that arrived inside the window, divided by the
 *          window: [t0, t0 + S] with --duration-s (tokens of the drain are
 *          left out, so the figure is that of N streams all busy); with
 *          --requests, [t0, the last request's end] and every token.
 *   TTFT   from just before a request is sent to the arrival of the chunk
 *          holding its first token: queueing at the server included, as a
 *          user sees it.
 *   ITL    between the arrivals of consecutive tokens of one request. A
 *          chunk holding k tokens counts as one gap (since the previous
 *          chunk) and then k - 1 gaps of zero: the tokens did arrive
 *          together, and a burst after a stall then shows as the stall, not
 *          as k small gaps. (Today's server sends one token per chunk.)
 *          Chunks without tokens (held-back text flushed at the end) are
 *          not arrivals.
 *   Percentiles are nearest-rank over every sample of every measured
 *   request (median = p50).
 *
 * Output: one line per run on stdout, a row of a Markdown table (--header
 * prints the table's head first), or with --json one JSON object. The first
 * message of each kind of error goes to stderr. Exit status: 0 when every
 * request succeeded, 1 when some failed (the line is still printed), 2 for a
 * bad command line or a server that cannot be used at all. SIGINT or SIGTERM
 * cancels the requests in flight, prints what was measured until then, and
 * ends the process by that signal (so that a calling shell stops too).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shardlm_client.h"

#define PROG             "loadgen"
#define DEFAULT_ENDPOINT "tcp://127.0.0.1:5555"
#define MAX_STREAMS      1024
#define MAX_PROMPT       65536 /* the library's limit on token ids */
#define FIRST_ID         3     /* past <unk>, BOS and EOS */
/* Short for the codes the library has, plus one of ours. */
#define N_CODES    (SHARDLM_CLIENT_INTERNAL + 2)
#define CODE_SHORT (SHARDLM_CLIENT_INTERNAL + 1)

static const char usage_text[] =
    "usage: " PROG " [options]\n"
    "  --connect EP         the server (default " DEFAULT_ENDPOINT ")\n"
    "  --streams N          concurrent streams, one thread and connection\n"
    "                       each (default 1)\n"
    "  --prompt-tokens P    prompt length in token ids (default 16)\n"
    "  --shared-prefix K    the first K of them the same in every request\n"
    "                       (default 0)\n"
    "  --output-tokens T    completion length, EOS ignored (default 32)\n"
    "  --duration-s S       each stream sends until S seconds have passed,\n"
    "                       then the requests in flight finish (default 10)\n"
    "  --requests R         instead: each stream sends R requests\n"
    "  --warmup W           unmeasured requests first, one at a time\n"
    "                       (default 2)\n"
    "  --seed X             prompt ids (default 1)\n"
    "  --timeout-ms MS      the longest wait for a message from the server,\n"
    "                       queueing included (default 600000)\n"
    "  --server-key FILE    the server's CURVE public key (PREFIX.key)\n"
    "  --key FILE           our CURVE secret key (PREFIX.key_secret); both\n"
    "                       or neither (plaintext: an --insecure server)\n"
    "  --json               one JSON object instead of a Markdown row\n"
    "  --header             print the Markdown table's head first\n"
    "Prints one line: streams, prompt and output tokens, requests completed,\n"
    "errors, window seconds, output tokens/s, TTFT and inter-token latency\n"
    "(median, p99, ms). Exit 0 if every request succeeded, 1 if some failed,\n"
    "2 for a bad command line or an unusable server.\n";

static const char header_text[] =
    "| streams | prompt | output | requests | errors | window s | tok/s | "
    "TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

static void die_usage(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void die_usage(const char *fmt, ...)
{
    fputs(PROG ": ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (" PROG " --help for usage)\n", stderr);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t parse_int(const char *flag, const char *text, int64_t lo,
                         int64_t hi)
{
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi)
        die_usage("%s: '%s' is not an integer in [%" PRId64 ", %" PRId64 "]",
                  flag, text, lo, hi);
    return v;
}

static double parse_seconds(const char *flag, const char *text)
{
    char *end = NULL;
    errno = 0;
    const double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(v > 0) || v > 86400)
        die_usage("%s: '%s' is not a number of seconds in (0, 86400]", flag,
                  text);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Samples                                                                   */

typedef struct {
    double *v;
    size_t n, cap;
} samples;

static bool samples_push(samples *s, double x)
{
    if (s->n == s->cap) {
        const size_t cap = s->cap ? 2 * s->cap : 256;
        double *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return true;
}

/* Appends src to dst; false when memory ran out. */
static bool samples_append(samples *dst, const samples *src)
{
    for (size_t i = 0; i < src->n; i++)
        if (!samples_push(dst, src->v[i]))
            return false;
    return true;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p % of them at or below
 * it. s sorted; 0 when empty. */
static double percentile(const samples *s, double p)
{
    if (s->n == 0)
        return 0.0;
    size_t rank = (size_t)(p / 100.0 * (double)s->n);
    if ((double)rank < p / 100.0 * (double)s->n)
        rank++; /* ceil */
    return s->v[rank > 0 ? rank - 1 : 0];
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                   */

typedef struct {
    const char *endpoint;
    shardlm_client_options_t opts;
    uint32_t streams, prompt, output, requests, warmup, vocab;
    uint32_t shared; /* leading prompt ids common to every request */
    uint64_t seed;
    double duration; /* 0: --requests */
} config;

_Static_assert(_Generic((sig_atomic_t)0, int : 1, default : 0),
               "the library's cancel_flag is a volatile int");
/* The signal (SIGINT, SIGTERM) that stopped us, or 0; the library's
 * cancel_flag. */
static volatile sig_atomic_t g_stop;
static double g_t0, g_window_end; /* set before the go barrier */
static pthread_barrier_t g_ready, g_go;

/* The first message of each kind of error, for stderr. */
static pthread_mutex_t g_err_lock = PTHREAD_MUTEX_INITIALIZER;
static bool g_err_shown[N_CODES];

static const char *code_name(int code)
{
    return code == CODE_SHORT
               ? "SHORT"
               : shardlm_client_code_name((shardlm_client_code_t)code);
}

static void show_error(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void show_error(int code, const char *fmt, ...)
{
    pthread_mutex_lock(&g_err_lock);
    if (!g_err_shown[code]) {
        g_err_shown[code] = true;
        fprintf(stderr, PROG ": %s: ", code_name(code));
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs(" (further errors of this kind are only counted)\n", stderr);
    }
    pthread_mutex_unlock(&g_err_lock);
}

typedef struct {
    const config *cfg;
    uint32_t index;
    shardlm_client_t *client;
    int32_t *ids; /* cfg->prompt */
    /* The request in flight. */
    double sent, last;
    uint32_t got;
    /* Results. */
    samples ttft, itl; /* seconds */
    uint64_t window_tokens;
    uint64_t completed, cancelled;
    uint64_t errors[N_CODES];
    double last_end;
    bool oom, setup_failed;
} stream;

/* splitmix64: prompt ids that depend only on the seed, the stream and the
 * request's number. */
static uint64_t mix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void make_prompt(const config *cfg, uint64_t stream_no, uint64_t n,
                        int32_t *ids)
{
    const uint64_t span = cfg->vocab - FIRST_ID;
    uint64_t state = cfg->seed;
    for (uint32_t i = 0; i < cfg->shared; i++)
        ids[i] = (int32_t)(FIRST_ID + mix(&state) % span);
    state = cfg->seed ^ (stream_no * 0xd1b54a32d192ed03ull) ^
            (n * 0x8cb92ba72f3d8dd7ull);
    for (uint32_t i = cfg->shared; i < cfg->prompt; i++)
        ids[i] = (int32_t)(FIRST_ID + mix(&state) % span);
}

static int on_chunk(const shardlm_client_chunk_t *chunk, void *user)
{
    stream *s = user;
    if (chunk->n_token_ids == 0)
        return 0;
    const double t = now_s();
    for (size_t i = 0; i < chunk->n_token_ids; i++) {
        bool ok;
        if (s->got == 0)
            ok = samples_push(&s->ttft, t - s->sent);
        else
            ok = samples_push(&s->itl, i == 0 ? t - s->last : 0.0);
        s->oom |= !ok;
        s->got++;
    }
    s->last = t;
    if (t <= g_window_end)
        s->window_tokens += chunk->n_token_ids;
    return 0;
}

/* One request: its code, or CODE_SHORT for a completion of the wrong
 * length. Only whole, successful requests of the measured phase leave
 * latency samples; the tokens that arrived inside the window count
 * whatever became of their request. */
static int run_one(stream *s, uint64_t n, bool measure)
{
    const config *cfg = s->cfg;
    make_prompt(cfg, s->index, n, s->ids);
    shardlm_client_generate_request_t req = {0};
    req.token_ids = s->ids;
    req.n_token_ids = cfg->prompt;
    /* sampling all zero: greedy */
    req.max_tokens = cfg->output;
    req.ignore_eos = 1;
    req.cancel_flag = &g_stop;
    const size_t ttft_mark = s->ttft.n, itl_mark = s->itl.n;
    s->got = 0;
    s->sent = now_s();
    shardlm_client_result_t res;
    const shardlm_client_code_t rc =
        shardlm_client_generate(s->client, &req, on_chunk, s, &res);
    const double end = now_s();
    int code = (int)rc;
    if (rc == SHARDLM_CLIENT_OK &&
        (res.completion_tokens != cfg->output || s->got != cfg->output)) {
        code = CODE_SHORT;
        show_error(code,
                   "request %s: %" PRIu32 " tokens arrived and the server "
                   "counted %" PRIu32 " (finish %s), expected %" PRIu32,
                   res.request_id, s->got, res.completion_tokens,
                   shardlm_client_finish_reason_name(res.finish_reason),
                   cfg->output);
    } else if (rc != SHARDLM_CLIENT_OK && !g_stop) {
        show_error(code, "%s", shardlm_client_last_error(s->client));
    }
    if (!measure || code != SHARDLM_CLIENT_OK) {
        s->ttft.n = ttft_mark;
        s->itl.n = itl_mark;
    }
    if (!measure)
        return code;
    if (rc == SHARDLM_CLIENT_CANCELLED && g_stop) {
        s->cancelled++; /* ours: interrupted */
    } else if (code != SHARDLM_CLIENT_OK) {
        s->errors[code]++;
    } else {
        s->completed++;
        s->last_end = end;
    }
    return code;
}

/* Waits at both barriers whatever happened, so no one waits forever. */
static void *stream_main(void *arg)
{
    stream *s = arg;
    const config *cfg = s->cfg;
    shardlm_client_health_t *h = NULL;
    shardlm_client_code_t rc =
        shardlm_client_connect(cfg->endpoint, &cfg->opts, &s->client);
    if (rc == SHARDLM_CLIENT_OK)
        rc = shardlm_client_health(s->client, &h);
    shardlm_client_health_free(&h);
    if (rc != SHARDLM_CLIENT_OK) {
        fprintf(stderr, PROG ": stream %" PRIu32 ": %s: %s\n", s->index,
                shardlm_client_code_name(rc),
                shardlm_client_last_error(s->client));
        s->setup_failed = true;
    }
    pthread_barrier_wait(&g_ready);
    pthread_barrier_wait(&g_go); /* g_t0 is set */
    if (s->setup_failed)
        return NULL;
    const double until = g_t0 + cfg->duration;
    for (uint64_t n = 0; !g_stop; n++) {
        if (cfg->duration > 0 ? now_s() >= until : n >= cfg->requests)
            break;
        const int code = run_one(s, n, true);
        /* A server that is gone stays gone; a refusal (a full queue) is
         * retried after a pause rather than in a tight loop. */
        if (code == SHARDLM_CLIENT_UNAVAILABLE ||
            code == SHARDLM_CLIENT_INTERNAL || s->oom)
            break;
        if (code == SHARDLM_CLIENT_RESOURCE_EXHAUSTED)
            nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    return NULL;
}

static void on_signal(int sig)
{
    g_stop = sig;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    enum {
        O_CONNECT = 1000,
        O_STREAMS,
        O_PROMPT,
        O_OUTPUT,
        O_DURATION,
        O_REQUESTS,
        O_WARMUP,
        O_SEED,
        O_TIMEOUT,
        O_SKEY,
        O_KEY,
        O_JSON,
        O_HEADER,
        O_HELP,
        O_SHARED,
    };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, O_CONNECT},
        {"streams", required_argument, NULL, O_STREAMS},
        {"prompt-tokens", required_argument, NULL, O_PROMPT},
        {"shared-prefix", required_argument, NULL, O_SHARED},
        {"output-tokens", required_argument, NULL, O_OUTPUT},
        {"duration-s", required_argument, NULL, O_DURATION},
        {"requests", required_argument, NULL, O_REQUESTS},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"seed", required_argument, NULL, O_SEED},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"server-key", required_argument, NULL, O_SKEY},
        {"key", required_argument, NULL, O_KEY},
        {"json", no_argument, NULL, O_JSON},
        {"header", no_argument, NULL, O_HEADER},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    config cfg = {
        .endpoint = DEFAULT_ENDPOINT,
        .opts = {.timeout_ms = 600000},
        .streams = 1,
        .prompt = 16,
        .output = 32,
        .warmup = 2,
        .seed = 1,
    };
    bool json = false, header = false, by_requests = false, by_duration = false;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_CONNECT:
            cfg.endpoint = optarg;
            break;
        case O_STREAMS:
            cfg.streams =
                (uint32_t)parse_int("--streams", optarg, 1, MAX_STREAMS);
            break;
        case O_PROMPT:
            cfg.prompt =
                (uint32_t)parse_int("--prompt-tokens", optarg, 1, MAX_PROMPT);
            break;
        case O_OUTPUT:
            cfg.output =
                (uint32_t)parse_int("--output-tokens", optarg, 1, UINT32_MAX);
            break;
        case O_DURATION:
            cfg.duration = parse_seconds("--duration-s", optarg);
            by_duration = true;
            break;
        case O_REQUESTS:
            cfg.requests =
                (uint32_t)parse_int("--requests", optarg, 1, UINT32_MAX);
            by_requests = true;
            break;
        case O_WARMUP:
            cfg.warmup = (uint32_t)parse_int("--warmup", optarg, 0, 1000000);
            break;
        case O_SHARED:
            cfg.shared =
                (uint32_t)parse_int("--shared-prefix", optarg, 0, MAX_PROMPT);
            break;
        case O_SEED:
            cfg.seed = (uint64_t)parse_int("--seed", optarg, 0, INT64_MAX);
            break;
        case O_TIMEOUT:
            cfg.opts.timeout_ms =
                (int32_t)parse_int("--timeout-ms", optarg, 1, INT32_MAX);
            break;
        case O_SKEY:
            cfg.opts.server_key_file = optarg;
            break;
        case O_KEY:
            cfg.opts.key_file = optarg;
            break;
        case O_JSON:
            json = true;
            break;
        case O_HEADER:
            header = true;
            break;
        case 'h':
        case O_HELP:
            fputs(usage_text, stdout);
            return 0;
        case ':':
            die_usage("option '%s' needs a value", argv[optind - 1]);
        default:
            die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        die_usage("unexpected argument '%s'", argv[optind]);
    if (by_requests && by_duration)
        die_usage("give --duration-s or --requests, not both");
    if (cfg.shared > cfg.prompt)
        die_usage("--shared-prefix %" PRIu32 " is longer than the prompt "
                  "(--prompt-tokens %" PRIu32 ")",
                  cfg.shared, cfg.prompt);
    if (!by_requests && !by_duration)
        cfg.duration = 10.0;
    if (!cfg.opts.server_key_file != !cfg.opts.key_file)
        die_usage("--server-key and --key go together (CURVE), or neither "
                  "(plaintext)");

    /* The model's vocabulary and context, asked with the library's usual
     * timeout (a server that is not there is not waited on for minutes). */
    shardlm_client_options_t probe_opts = cfg.opts;
    if (probe_opts.timeout_ms > SHARDLM_CLIENT_DEFAULT_TIMEOUT_MS)
        probe_opts.timeout_ms = SHARDLM_CLIENT_DEFAULT_TIMEOUT_MS;
    shardlm_client_t *c = NULL;
    if (shardlm_client_connect(cfg.endpoint, &probe_opts, &c) !=
        SHARDLM_CLIENT_OK) {
        fprintf(stderr, PROG ": %s\n", shardlm_client_last_error(NULL));
        return 2;
    }
    shardlm_client_info_t info;
    shardlm_client_code_t rc = shardlm_client_info(c, &info);
    if (rc != SHARDLM_CLIENT_OK)
        fprintf(stderr, PROG ": info: %s: %s\n", shardlm_client_code_name(rc),
                shardlm_client_last_error(c));
    shardlm_client_destroy(&c);
    if (rc != SHARDLM_CLIENT_OK)
        return 2;
    /* The server puts BOS in front of the ids. */
    if (info.vocab_size <= FIRST_ID ||
        (uint64_t)cfg.prompt + 1 + cfg.output > info.seq_len) {
        fprintf(stderr,
                PROG ": the model (vocab %" PRIu32 ", context %" PRIu32
                     ") cannot take %" PRIu32 " prompt tokens (plus BOS) and "
                     "%" PRIu32 " output tokens\n",
                info.vocab_size, info.seq_len, cfg.prompt, cfg.output);
        return 2;
    }
    cfg.vocab = info.vocab_size;
    /* The warm-up's handle, with the long timeout: it may queue. */
    if (shardlm_client_connect(cfg.endpoint, &cfg.opts, &c) !=
        SHARDLM_CLIENT_OK) {
        fprintf(stderr, PROG ": %s\n", shardlm_client_last_error(NULL));
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int status = 0;
    stream warm = {0};
    stream *st = calloc(cfg.streams, sizeof *st);
    pthread_t *tids = calloc(cfg.streams, sizeof *tids);
    int32_t *ids = calloc((size_t)cfg.streams + 1, cfg.prompt * sizeof *ids);
    if (!st || !tids || !ids) {
        fprintf(stderr, PROG ": out of memory for %" PRIu32 " streams\n",
                cfg.streams);
        status = 2;
        goto done;
    }
    /* Warm-up: stream number cfg.streams, so its prompts are not reused;
     * g_window_end is 0, so none of its tokens count. */
    warm.cfg = &cfg;
    warm.index = cfg.streams;
    warm.client = c;
    warm.ids = ids;
    for (uint32_t i = 0; i < cfg.warmup && !g_stop; i++) {
        const int code = run_one(&warm, i, false);
        if (code != SHARDLM_CLIENT_OK) {
            fprintf(stderr, PROG ": warm-up request %" PRIu32 " failed (%s)\n",
                    i + 1, code_name(code));
            status = 2;
            goto done;
        }
    }
    if (g_stop)
        goto done; /* interrupted in the warm-up: nothing to report */

    if (pthread_barrier_init(&g_ready, NULL, cfg.streams + 1) != 0 ||
        pthread_barrier_init(&g_go, NULL, cfg.streams + 1) != 0) {
        fprintf(stderr, PROG ": cannot make the barriers\n");
        status = 2;
        goto done;
    }
    uint32_t started = 0;
    for (; started < cfg.streams; started++) {
        stream *s = &st[started];
        s->cfg = &cfg;
        s->index = started;
        s->ids = ids + (size_t)(started + 1) * cfg.prompt;
        const int e = pthread_create(&tids[started], NULL, stream_main, s);
        if (e != 0) {
            /* The barriers count every stream: no way to start without
             * them. Those started will wait forever; end the process. */
            fprintf(stderr, PROG ": cannot start stream %" PRIu32 ": %s\n",
                    started, strerror(e));
            exit(2);
        }
    }
    pthread_barrier_wait(&g_ready);
    g_t0 = now_s();
    g_window_end = cfg.duration > 0 ? g_t0 + cfg.duration : 1e300;
    pthread_barrier_wait(&g_go);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    const double t_end = now_s();

    samples ttft = {0}, itl = {0};
    uint64_t window_tokens = 0, completed = 0, cancelled = 0, errors = 0;
    uint64_t by_code[N_CODES] = {0};
    double last_end = g_t0;
    uint32_t failed_setup = 0;
    bool oom = false;
    for (uint32_t i = 0; i < started; i++) {
        stream *s = &st[i];
        oom |= s->oom || !samples_append(&ttft, &s->ttft) ||
               !samples_append(&itl, &s->itl);
        window_tokens += s->window_tokens;
        completed += s->completed;
        cancelled += s->cancelled;
        failed_setup += s->setup_failed;
        for (int k = 0; k < N_CODES; k++) {
            by_code[k] += s->errors[k];
            errors += s->errors[k];
        }
        if (s->last_end > last_end)
            last_end = s->last_end;
    }
    if (oom) {
        fprintf(stderr, PROG ": out of memory for the samples\n");
        status = 2;
        goto report_done;
    }
    if (ttft.n) /* qsort's pointer must not be NULL, even for none */
        qsort(ttft.v, ttft.n, sizeof *ttft.v, cmp_double);
    if (itl.n)
        qsort(itl.v, itl.n, sizeof *itl.v, cmp_double);
    /* The window: --duration-s S is S (or less when interrupted); with
     * --requests, until the last request ended. */
    double window = cfg.duration > 0 ? cfg.duration : last_end - g_t0;
    if (g_stop && t_end - g_t0 < window)
        window = t_end - g_t0;
    const double tps = window > 0 ? (double)window_tokens / window : 0.0;
    errors += failed_setup;
    if (json) {
        printf("{\"streams\":%" PRIu32 ",\"prompt_tokens\":%" PRIu32
               ",\"output_tokens\":%" PRIu32 ",\"mode\":\"%s\""
               ",\"requests_completed\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"cancelled\":%" PRIu64 ",\"streams_failed\":%" PRIu32
               ",\"errors_by_code\":{",
               cfg.streams, cfg.prompt, cfg.output,
               cfg.duration > 0 ? "duration" : "requests", completed, errors,
               cancelled, failed_setup);
        bool first = true;
        for (int k = 1; k < N_CODES; k++)
            if (by_code[k]) {
                printf("%s\"%s\":%" PRIu64, first ? "" : ",", code_name(k),
                       by_code[k]);
                first = false;
            }
        printf(
            "},\"window_s\":%.3f,\"elapsed_s\":%.3f,\"window_tokens\":%" PRIu64
            ",\"tokens_per_s\":%.2f,\"ttft_ms_p50\":%.2f"
            ",\"ttft_ms_p99\":%.2f,\"itl_ms_p50\":%.3f,\"itl_ms_p99\":%.3f"
            ",\"ttft_samples\":%zu,\"itl_samples\":%zu}\n",
            window, t_end - g_t0, window_tokens, tps,
            1e3 * percentile(&ttft, 50), 1e3 * percentile(&ttft, 99),
            1e3 * percentile(&itl, 50), 1e3 * percentile(&itl, 99), ttft.n,
            itl.n);
    } else {
        if (header)
            fputs(header_text, stdout);
        printf("| %" PRIu32 " | %" PRIu32 " | %" PRIu32 " | %" PRIu64
               " | %" PRIu64 " | %.1f | %.2f | %.1f | %.1f | %.2f | %.2f |\n",
               cfg.streams, cfg.prompt, cfg.output, completed, errors, window,
               tps, 1e3 * percentile(&ttft, 50), 1e3 * percentile(&ttft, 99),
               1e3 * percentile(&itl, 50), 1e3 * percentile(&itl, 99));
    }
    fflush(stdout);
    if (errors)
        status = 1;
report_done:
    free(ttft.v);
    free(itl.v);
    for (uint32_t i = 0; i < started; i++)
        shardlm_client_destroy(&st[i].client);
    pthread_barrier_destroy(&g_ready);
    pthread_barrier_destroy(&g_go);
done:
    free(warm.ttft.v);
    free(warm.itl.v);
    if (st)
        for (uint32_t i = 0; i < cfg.streams; i++) {
            free(st[i].ttft.v);
            free(st[i].itl.v);
        }
    free(st);
    free(tids);
    free(ids);
    shardlm_client_destroy(&c);
    if (g_stop) { /* die of it, so that a calling shell stops too */
        signal(g_stop, SIG_DFL);
        raise(g_stop);
    }
    return status;
}
