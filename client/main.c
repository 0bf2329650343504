/*
 * client/main.c - shardlm-client, the command-line tool over libshardlm_client
 * (shardlm_client.h); it links nothing else of shardlm.
 *
 *   shardlm-client [--connect ENDPOINT] [--timeout-ms MS] COMMAND ...
 *   generate (--prompt TEXT | --token-ids 1,2,3) [-n MAX_TOKENS]
 *            [--temperature F] [--top-k K] [--top-p F]
 *            [--repetition-penalty F] [--seed S] [--stop STR]...
 *            [--deadline-ms MS] [--request-id ID] [--stats]
 *   chat [--system TEXT] [--message ROLE=TEXT]... [TEXT] [generate's
 *        options but --prompt and --token-ids]
 *   health
 *   info
 *
 * chat sends a conversation: the system message, the --message ones in
 * order, then TEXT as the user's - or, when neither TEXT nor --message is
 * given, the user's text read from stdin - and streams the reply.
 * generate streams the completion's text to stdout as it arrives and prints
 * nothing else there; --stats adds one line of counts and timings on stderr.
 * SIGINT or SIGTERM cancels the request on the server (a second one kills
 * the tool). health prints the server's state and one line per rank; info
 * prints "key: value" lines.
 *
 * Exit status:
 *   0        success (health: the server is SERVING)
 *   1        health: the server answered but is not SERVING; generate: the
 *            completion could not be written to stdout (the request is
 *            cancelled)
 *   10+code  a failure with an API code, also printed on stderr as
 *            "shardlm-client: CODE_NAME: message": 11 INVALID_ARGUMENT (a bad
 *            command line too), 12 RESOURCE_EXHAUSTED, 13 UNAVAILABLE,
 *            14 DEADLINE_EXCEEDED, 15 CANCELLED, 16 INTERNAL.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shardlm_client.h"

#define PROG             "shardlm-client"
#define DEFAULT_ENDPOINT "tcp://127.0.0.1:5555"
#define EXIT_NOT_SERVING 1
#define EXIT_OUTPUT      1
#define EXIT_CODE_BASE   10

static const char usage_text[] =
    "usage: " PROG " [--connect ENDPOINT] [--timeout-ms MS]\n"
    "       [--server-key FILE --key FILE] COMMAND ...\n"
    "\n"
    "  --connect ENDPOINT  the server (default " DEFAULT_ENDPOINT ")\n"
    "  --timeout-ms MS     the longest wait for a message from the server\n"
    "                      (default 30000)\n"
    "  --server-key FILE   the server's CURVE public key (PREFIX.key)\n"
    "  --key FILE          our CURVE secret key (PREFIX.key_secret, 0600);\n"
    "                      both or neither (plaintext: an --insecure server)\n"
    "\n"
    "commands:\n"
    "  generate (--prompt TEXT | --token-ids 1,2,3) [options]\n"
    "      streams the completion to stdout\n"
    "      -n, --max-tokens N      tokens to generate (0 = server default)\n"
    "      --temperature F         default 1.0; 0 = greedy\n"
    "      --top-k K               default 0 (off)\n"
    "      --top-p F               default 0.9\n"
    "      --repetition-penalty F  default 1.0 (off)\n"
    "      --seed S                default: the server picks one\n"
    "      --stop STR              a stop sequence (repeatable)\n"
    "      --deadline-ms MS        the server gives up after MS\n"
    "      --request-id ID         default: a unique id\n"
    "      --stats                 counts and timings on stderr\n"
    "  chat [--system TEXT] [--message ROLE=TEXT]... [TEXT] [options]\n"
    "      a conversation for a chat model: the system message, the\n"
    "      --message ones (ROLE: system, user, assistant) in order, then\n"
    "      TEXT as the user's (default: read from stdin when no --message\n"
    "      is given); streams the reply; generate's options apply\n"
    "  health    the server's state and one line per rank; exit 0 only\n"
    "            when SERVING\n"
    "  info      the model and how it is served\n"
    "\n"
    "exit status: 0 ok; 1 not SERVING (health) or stdout unwritable;\n"
    "10 + code on failure: 11 INVALID_ARGUMENT, 12 RESOURCE_EXHAUSTED,\n"
    "13 UNAVAILABLE, 14 DEADLINE_EXCEEDED, 15 CANCELLED, 16 INTERNAL\n";

/* Prints "shardlm-client: CODE: message" and returns the exit status. */
static int failure(shardlm_client_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int failure(shardlm_client_code_t code, const char *fmt, ...)
{
    fprintf(stderr, PROG ": %s: ", shardlm_client_code_name(code));
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_CODE_BASE + (int)code;
}

/* A bad command line: the message, then where to find the usage. */
static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    fprintf(stderr, PROG ": %s: ",
            shardlm_client_code_name(SHARDLM_CLIENT_INVALID_ARGUMENT));
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (" PROG " --help for usage)\n", stderr);
    return EXIT_CODE_BASE + SHARDLM_CLIENT_INVALID_ARGUMENT;
}

/* getopt's complaint about argv[optind - 1], from c ('?' or ':'). */
static int getopt_error(int c, char **argv)
{
    const char *arg = argv[optind - 1];
    if (c == ':')
        return usage_error("option '%s' needs a value", arg);
    return usage_error("unknown option '%s'", arg);
}

/* ------------------------------------------------------------------------ */
/* Values                                                                    */

static bool parse_i64(const char *flag, const char *text, int64_t lo,
                      int64_t hi, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
        failure(SHARDLM_CLIENT_INVALID_ARGUMENT,
                "%s: '%s' is not an integer in [%" PRId64 ", %" PRId64 "]",
                flag, text, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_u64(const char *flag, const char *text, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    const unsigned long long v = strtoull(text, &end, 10);
    if (text[0] == '-' || errno != 0 || end == text || *end != '\0') {
        failure(SHARDLM_CLIENT_INVALID_ARGUMENT,
                "%s: '%s' is not an unsigned 64-bit integer", flag, text);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_float(const char *flag, const char *text, float *out)
{
    char *end = NULL;
    errno = 0;
    const float v = strtof(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v)) {
        failure(SHARDLM_CLIENT_INVALID_ARGUMENT,
                "%s: '%s' is not a finite number", flag, text);
        return false;
    }
    *out = v;
    return true;
}

/* "1,2,3" into a new array (the caller frees *ids). */
static bool parse_ids(const char *text, int32_t **ids, size_t *n)
{
    size_t count = 1;
    for (const char *p = text; *p; p++)
        count += *p == ',';
    int32_t *v = calloc(count, sizeof *v);
    if (!v) {
        failure(SHARDLM_CLIENT_INTERNAL, "out of memory for %zu token ids",
                count);
        return false;
    }
    const char *p = text;
    for (size_t i = 0; i < count; i++) {
        char *end = NULL;
        errno = 0;
        const long long x = strtoll(p, &end, 10);
        if (errno != 0 || end == p || (*end != ',' && *end != '\0') || x < 0 ||
            x > INT32_MAX) {
            failure(SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "--token-ids: item %zu of '%s' is not an id in [0, %d]",
                    i + 1, text, INT32_MAX);
            free(v);
            return false;
        }
        v[i] = (int32_t)x;
        p = end + (*end == ',');
    }
    *ids = v;
    *n = count;
    return true;
}

/* Writes s to f with control characters shown as '?' (they come from the
 * server and go to a terminal). */
static void put_clean(FILE *f, const char *s)
{
    for (; *s; s++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, f);
}

/* ------------------------------------------------------------------------ */
/* generate                                                                  */

_Static_assert(_Generic((sig_atomic_t)0, int : 1, default : 0),
               "the library's cancel_flag is a volatile int");
static volatile sig_atomic_t g_interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

typedef struct {
    bool printed;    /* some text went to stdout */
    int write_errno; /* non-zero: stdout failed */
} output;

static int on_chunk(const shardlm_client_chunk_t *chunk, void *user)
{
    output *o = user;
    if (chunk->text_len == 0)
        return 0;
    if (fwrite(chunk->text, 1, chunk->text_len, stdout) != chunk->text_len ||
        fflush(stdout) != 0) {
        o->write_errno = errno ? errno : EIO;
        return 1; /* nobody reads the completion: stop it */
    }
    o->printed = true;
    return 0;
}

enum {
    OPT_PROMPT = 1000,
    OPT_TOKEN_IDS,
    OPT_TEMPERATURE,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_REPETITION_PENALTY,
    OPT_SEED,
    OPT_STOP,
    OPT_DEADLINE_MS,
    OPT_REQUEST_ID,
    OPT_STATS,
    OPT_SYSTEM,
    OPT_MESSAGE,
};

/* The most of stdin read as the user's text: the server's cap on a
 * conversation's content. */
#define MAX_STDIN_BYTES ((size_t)256 << 10)

/* Reads all of stdin (at most MAX_STDIN_BYTES) into a new string. */
static char *read_stdin(void)
{
    char *p = malloc(MAX_STDIN_BYTES + 1);
    if (!p)
        return NULL;
    const size_t n = fread(p, 1, MAX_STDIN_BYTES + 1, stdin);
    if (n > MAX_STDIN_BYTES || ferror(stdin)) {
        free(p);
        return NULL;
    }
    p[n] = '\0';
    return p;
}

static int run_request(shardlm_client_t *c, int argc, char **argv, bool chat);

static int cmd_generate(shardlm_client_t *c, int argc, char **argv)
{
    return run_request(c, argc, argv, false);
}

static int cmd_chat(shardlm_client_t *c, int argc, char **argv)
{
    return run_request(c, argc, argv, true);
}

/* generate, or with `chat` the chat command: the same options and output. */
static int run_request(shardlm_client_t *c, int argc, char **argv, bool chat)
{
    static const struct option longopts[] = {
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"token-ids", required_argument, NULL, OPT_TOKEN_IDS},
        {"max-tokens", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, OPT_TEMPERATURE},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"repetition-penalty", required_argument, NULL, OPT_REPETITION_PENALTY},
        {"seed", required_argument, NULL, OPT_SEED},
        {"stop", required_argument, NULL, OPT_STOP},
        {"deadline-ms", required_argument, NULL, OPT_DEADLINE_MS},
        {"request-id", required_argument, NULL, OPT_REQUEST_ID},
        {"stats", no_argument, NULL, OPT_STATS},
        {"system", required_argument, NULL, OPT_SYSTEM},
        {"message", required_argument, NULL, OPT_MESSAGE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    shardlm_client_generate_request_t req = {0};
    req.sampling = shardlm_client_sampling_defaults();
    int32_t *ids = NULL;
    /* At most one stop sequence per argument. */
    const char **stops = calloc((size_t)argc + 1, sizeof *stops);
    /* At most one message per argument, the system one and stdin's. */
    shardlm_client_message_t *msgs = calloc((size_t)argc + 2, sizeof *msgs);
    size_t n_msgs = 0;
    const char *system = NULL;
    char *from_stdin = NULL;
    bool stats = false;
    int status = EXIT_CODE_BASE + SHARDLM_CLIENT_INVALID_ARGUMENT;
    if (!stops || !msgs) {
        status = failure(SHARDLM_CLIENT_INTERNAL, "out of memory");
        goto done;
    }
    optind = 0; /* a fresh scan of the command's own arguments */
    int ch;
    int64_t v = 0;
    while ((ch = getopt_long(argc, argv, ":n:h", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_PROMPT:
            req.prompt = optarg;
            break;
        case OPT_TOKEN_IDS:
            free(ids);
            ids = NULL;
            if (!parse_ids(optarg, &ids, &req.n_token_ids))
                goto done;
            req.token_ids = ids;
            break;
        case 'n':
            if (!parse_i64("-n", optarg, 0, UINT32_MAX, &v))
                goto done;
            req.max_tokens = (uint32_t)v;
            break;
        case OPT_TEMPERATURE:
            if (!parse_float("--temperature", optarg,
                             &req.sampling.temperature))
                goto done;
            break;
        case OPT_TOP_K:
            if (!parse_i64("--top-k", optarg, 0, INT32_MAX, &v))
                goto done;
            req.sampling.top_k = (int32_t)v;
            break;
        case OPT_TOP_P:
            if (!parse_float("--top-p", optarg, &req.sampling.top_p))
                goto done;
            break;
        case OPT_REPETITION_PENALTY:
            if (!parse_float("--repetition-penalty", optarg,
                             &req.sampling.repetition_penalty))
                goto done;
            break;
        case OPT_SEED:
            if (!parse_u64("--seed", optarg, &req.sampling.seed))
                goto done;
            req.sampling.has_seed = 1;
            break;
        case OPT_STOP:
            stops[req.n_stop++] = optarg;
            break;
        case OPT_DEADLINE_MS:
            if (!parse_u64("--deadline-ms", optarg, &req.deadline_ms))
                goto done;
            break;
        case OPT_REQUEST_ID:
            req.request_id = optarg;
            break;
        case OPT_STATS:
            stats = true;
            break;
        case OPT_SYSTEM:
        case OPT_MESSAGE:
            if (!chat) {
                status =
                    usage_error("generate: %s is for chat",
                                ch == OPT_SYSTEM ? "--system" : "--message");
                goto done;
            }
            if (ch == OPT_SYSTEM) {
                system = optarg;
                break;
            }
            {
                /* ROLE=TEXT; the role goes as given: the server judges it */
                char *eq = strchr(optarg, '=');
                if (!eq) {
                    status = usage_error("chat: --message '%s' is not "
                                         "ROLE=TEXT",
                                         optarg);
                    goto done;
                }
                *eq = '\0';
                msgs[n_msgs].role = optarg;
                msgs[n_msgs++].content = eq + 1;
            }
            break;
        case 'h':
            fputs(usage_text, stdout);
            status = 0;
            goto done;
        default:
            status = getopt_error(ch, argv);
            goto done;
        }
    }
    if (chat) {
        if (req.prompt || req.token_ids) {
            status = usage_error("chat: takes messages, not --prompt or "
                                 "--token-ids");
            goto done;
        }
        if (optind + 1 < argc) {
            status = usage_error("chat: unexpected argument '%s' (quote the "
                                 "user's text)",
                                 argv[optind + 1]);
            goto done;
        }
        const char *user = optind < argc ? argv[optind] : NULL;
        if (!user && n_msgs == 0) {
            if (!(user = from_stdin = read_stdin())) {
                status = failure(SHARDLM_CLIENT_INVALID_ARGUMENT,
                                 "cannot read the user's text from stdin "
                                 "(at most %zu bytes)",
                                 MAX_STDIN_BYTES);
                goto done;
            }
        }
        if (system) { /* first, whatever order the options came in */
            memmove(msgs + 1, msgs, n_msgs * sizeof *msgs);
            msgs[0].role = "system";
            msgs[0].content = system;
            n_msgs++;
        }
        if (user) {
            msgs[n_msgs].role = "user";
            msgs[n_msgs++].content = user;
        }
    } else if (optind < argc) {
        status =
            usage_error("generate: unexpected argument '%s'", argv[optind]);
        goto done;
    }
    if (!chat && !req.prompt == !req.token_ids) {
        status =
            usage_error("generate: %s", req.prompt ? "give --prompt or "
                                                     "--token-ids, not both"
                                                   : "--prompt or --token-ids "
                                                     "is required");
        goto done;
    }
    req.stop = req.n_stop ? stops : NULL;

    /* Interrupted, the request is cancelled rather than left running; the
     * handler is reset after one signal, so a second one kills. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = (int)SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a closed stdout is an error, not a death */
    req.cancel_flag = &g_interrupted;

    output out = {0};
    shardlm_client_result_t res;
    const shardlm_client_code_t rc =
        chat ? shardlm_client_chat(c, &req, msgs, n_msgs, on_chunk, &out, &res)
             : shardlm_client_generate(c, &req, on_chunk, &out, &res);
    if (out.printed && isatty(STDOUT_FILENO) && isatty(STDERR_FILENO))
        fputc('\n', stderr); /* the terminal's next line */
    if (out.write_errno) {
        fprintf(stderr, PROG ": cannot write the completion: %s\n",
                strerror(out.write_errno));
        status = EXIT_OUTPUT;
    } else if (rc != SHARDLM_CLIENT_OK) {
        status = failure(rc, "%s", shardlm_client_last_error(c));
    } else {
        status = 0;
        if (stats) {
            const double per_s = res.decode_ms > 0 ? res.completion_tokens *
                                                         1000.0 / res.decode_ms
                                                   : 0.0;
            fprintf(stderr,
                    PROG ": request_id=%s finish=%s prompt_tokens=%" PRIu32
                         " completion_tokens=%" PRIu32
                         " queue_ms=%.1f prefill_ms=%.1f decode_ms=%.1f "
                         "tokens_per_s=%.1f\n",
                    res.request_id,
                    shardlm_client_finish_reason_name(res.finish_reason),
                    res.prompt_tokens, res.completion_tokens, res.queue_ms,
                    res.prefill_ms, res.decode_ms, per_s);
        }
    }
done:
    free(ids);
    free(stops);
    free(msgs);
    free(from_stdin);
    return status;
}

/* ------------------------------------------------------------------------ */
/* health and info                                                           */

static int no_arguments(const char *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {{NULL, 0, NULL, 0}};
    optind = 0;
    const int ch = getopt_long(argc, argv, ":", longopts, NULL);
    if (ch != -1)
        return getopt_error(ch, argv);
    if (optind < argc)
        return usage_error("%s: unexpected argument '%s'", cmd, argv[optind]);
    return 0;
}

static int cmd_health(shardlm_client_t *c, int argc, char **argv)
{
    const int bad = no_arguments("health", argc, argv);
    if (bad)
        return bad;
    shardlm_client_health_t *h = NULL;
    const shardlm_client_code_t rc = shardlm_client_health(c, &h);
    if (rc != SHARDLM_CLIENT_OK)
        return failure(rc, "%s", shardlm_client_last_error(c));
    printf("state: %s\n", shardlm_client_state_name(h->state));
    for (size_t i = 0; i < h->n_ranks; i++) {
        const shardlm_client_rank_health_t *r = &h->ranks[i];
        printf("rank %" PRIu32 ": %s, last heartbeat %" PRIu64 " ms ago",
               r->rank, shardlm_client_state_name(r->state),
               r->last_heartbeat_ms);
        if (r->detail[0]) {
            fputs(": ", stdout);
            put_clean(stdout, r->detail);
        }
        fputc('\n', stdout);
    }
    const int status =
        h->state == SHARDLM_CLIENT_STATE_SERVING ? 0 : EXIT_NOT_SERVING;
    shardlm_client_health_free(&h);
    return status;
}

static int cmd_info(shardlm_client_t *c, int argc, char **argv)
{
    const int bad = no_arguments("info", argc, argv);
    if (bad)
        return bad;
    shardlm_client_info_t info;
    const shardlm_client_code_t rc = shardlm_client_info(c, &info);
    if (rc != SHARDLM_CLIENT_OK)
        return failure(rc, "%s", shardlm_client_last_error(c));
    fputs("model: ", stdout);
    put_clean(stdout, info.model);
    printf("\ntp: %" PRIu32 "\npp: %" PRIu32 "\nvocab_size: %" PRIu32
           "\nseq_len: %" PRIu32 "\nversion: ",
           info.tp, info.pp, info.vocab_size, info.seq_len);
    put_clean(stdout, info.version);
    fputc('\n', stdout);
    return 0;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    enum { OPT_CONNECT = 1000, OPT_TIMEOUT_MS, OPT_HELP, OPT_SKEY, OPT_KEY };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS},
        {"server-key", required_argument, NULL, OPT_SKEY},
        {"key", required_argument, NULL, OPT_KEY},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *endpoint = DEFAULT_ENDPOINT;
    shardlm_client_options_t opts = {0};
    opterr = 0; /* our messages, in our format */
    int ch;
    int64_t v = 0;
    /* "+": stop at the command; its options are its own. */
    while ((ch = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_CONNECT:
            endpoint = optarg;
            break;
        case OPT_TIMEOUT_MS:
            if (!parse_i64("--timeout-ms", optarg, 0, INT32_MAX, &v))
                return EXIT_CODE_BASE + SHARDLM_CLIENT_INVALID_ARGUMENT;
            opts.timeout_ms = (int32_t)v;
            break;
        case OPT_SKEY:
            opts.server_key_file = optarg;
            break;
        case OPT_KEY:
            opts.key_file = optarg;
            break;
        case 'h':
        case OPT_HELP:
            fputs(usage_text, stdout);
            return 0;
        default:
            return getopt_error(ch, argv);
        }
    }
    if (optind >= argc)
        return usage_error("no command (generate, chat, health or info)");
    const char *cmd = argv[optind];
    int (*run)(shardlm_client_t *, int, char **) = NULL;
    if (strcmp(cmd, "generate") == 0)
        run = cmd_generate;
    else if (strcmp(cmd, "chat") == 0)
        run = cmd_chat;
    else if (strcmp(cmd, "health") == 0)
        run = cmd_health;
    else if (strcmp(cmd, "info") == 0)
        run = cmd_info;
    else
        return usage_error("unknown command '%s'", cmd);

    shardlm_client_t *c = NULL;
    const shardlm_client_code_t rc =
        shardlm_client_connect(endpoint, &opts, &c);
    if (rc != SHARDLM_CLIENT_OK)
        return failure(rc, "%s", shardlm_client_last_error(NULL));
    const int status = run(c, argc - optind, argv + optind);
    shardlm_client_destroy(&c);
    return status;
}
