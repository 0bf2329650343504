/*
 * coordinator/run.c - `shardlm run`; see run.h.
 *
 * Order of events, chosen so that a bad job fails before any weight is read
 * and no rank is ever left waiting:
 *   1. rank 0 validates the checkpoint header, the split (plan), the
 *      tokenizer and every input line, then broadcasts go / no-go (MPI);
 *   2. on go, the shards load their slices, build their groups, and connect
 *      to rank 0's control endpoint (handed out through MPI);
 *   3. rank 0 drives generation over the control plane, writes JSONL, and
 *      shuts the shards down.
 * Any failure after (1) ends the whole job with MPI_Abort: a tensor group
 * cannot continue without a member.
 */
#include "coordinator/run.h"

#include <getopt.h>
#include <mpi.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "collectives/comm_mpi.h"
#include "common/privilege.h"
#include "coordinator/batch.h"
#include "coordinator/cli.h"
#include "coordinator/cluster.h"
#include "coordinator/generate.h"
#include "coordinator/manifest_cmd.h"
#include "coordinator/server.h"
#include "model/checkpoint.h"
#include "model/hf_model.h"
#include "model/plan.h"
#include "model/tokenizer.h"
#include "shard/device.h"
#include "shard/shard.h"

typedef struct {
    const char *model, *tokenizer, *prompt, *input, *output, *bind, *listen;
    int64_t tp, pp, steps, threads, timeout_ms;
    int64_t heartbeat_ms, heartbeat_timeout_ms, queue_depth, max_tokens;
    int64_t max_batch, step_tokens, kv_block, kv_blocks; /* 0: default */
    slm_weight_format format;                            /* --weights */
    slm_sampling_params sampling;
    slm_device_kind device; /* as asked; each shard resolves it */
    bool allow_root, allow_core_dump;
    const char *manifest, *public_key;
    const char *server_key, *clients, *audit_log;
    bool insecure;
    bool no_prefix_cache; /* --prefix-cache off */
    const char *chat_template; /* --chat-template NAME: a built-in format */
    bool serve; /* clients over ZeroMQ until a signal, instead of a batch */
} run_options;

static void run_usage(FILE *f)
{
    fprintf(
        f,
        "usage: mpirun -np $((1 + TP * PP)) shardlm run --model M "
        "[--tokenizer T]\n"
        "           [--tp TP] [--pp PP] (--prompt TEXT | --input FILE.jsonl)\n"
        "           [--output FILE.jsonl] [-n STEPS] [--temperature F]\n"
        "           [--top-k K] [--top-p F] [--repetition-penalty F]\n"
        "           [--seed S] [common options]\n"
        "       mpirun -np $((1 + TP * PP)) shardlm serve --model M "
        "[--tokenizer T]\n"
        "           [--tp TP] [--pp PP] [--listen ENDPOINT] [-n TOKENS]\n"
        "           [--queue-depth N] [--max-tokens N] [--max-batch N]\n"
        "           [--step-tokens N] [--kv-block N] [--kv-blocks N]\n"
        "           [--prefix-cache on|off] [--weights f32|bf16|f16|int8]\n"
        "           [--chat-template NAME] [common options]\n"
        "  common options: [--threads N] [--control-bind ENDPOINT]\n"
        "           [--timeout-ms MS] [--heartbeat-ms MS]\n"
        "           [--heartbeat-timeout-ms MS] [--device auto|cpu|cuda]\n"
        "           [--manifest M [--public-key PUB]] [--allow-root]\n"
        "           [--allow-core-dump]\n"
        "  Rank 0 coordinates; ranks 1..TP*PP are shards. run answers\n"
        "  --prompt or the --input batch as JSON lines (stdout by default;\n"
        "  -n counts positions, prompt included). serve answers clients\n"
        "  (shardlm-client) on --listen, default %s, until\n"
        "  SIGTERM; -n is the completion length of a request that sets\n"
        "  none (default 256), --max-tokens the most one may ask\n"
        "  (default 65536; the model's context caps it too), --queue-depth\n"
        "  the requests that may wait (default 64; more are refused with\n"
        "  RESOURCE_EXHAUSTED). Requests run together: up to --max-batch\n"
        "  (32) per step, --step-tokens (128) tokens per step with prompts\n"
        "  fed in chunks, KV cache in blocks of --kv-block (16) positions\n"
        "  from a pool of --kv-blocks (default: max-batch whole contexts);\n"
        "  a request waits until the pool can hold it. --prefix-cache on\n"
        "  (default) lets a tenant's requests share the KV blocks of a\n"
        "  common prompt beginning (never across tenants); off: no sharing.\n"
        "  Chat requests (shardlm-client chat) are rendered in the format\n"
        "  that the model's tokenizer_config.json names, if shardlm knows\n"
        "  its template (it never runs one), or --chat-template NAME: %s.\n"
        "  Shards beat every --heartbeat-ms (200); one\n"
        "  silent for --heartbeat-timeout-ms (1000) is lost and the job\n"
        "  ends. The control endpoint defaults to %s (loopback).\n"
        "  --device: where shards run; auto (default) is cuda when every\n"
        "  shard sees a GPU (one per shard, by node-local rank), else cpu.\n",
        SLM_SERVER_DEFAULT_LISTEN, slm_chat_format_names(),
        SLM_CLUSTER_DEFAULT_BIND);
}

static slm_status parse_options(int argc, char **argv, bool serve,
                                run_options *o)
{
    enum {
        O_MODEL = 256,
        O_TOK,
        O_TP,
        O_PP,
        O_PROMPT,
        O_INPUT,
        O_OUTPUT,
        O_THREADS,
        O_BIND,
        O_TIMEOUT,
        O_LISTEN,
        O_HEARTBEAT,
        O_HEARTBEAT_TIMEOUT,
        O_QUEUE,
        O_MAX_TOKENS,
        O_DEVICE,
        O_SERVER_KEY,
        O_CLIENTS,
        O_AUDIT,
        O_INSECURE,
        O_MAX_BATCH,
        O_STEP_TOKENS,
        O_KV_BLOCK,
        O_KV_BLOCKS,
        O_PREFIX_CACHE,
        O_WEIGHTS,
        O_CHAT_TEMPLATE
    };
    static const struct option opts[] = {
        {"model", required_argument, NULL, O_MODEL},
        {"tokenizer", required_argument, NULL, O_TOK},
        {"tp", required_argument, NULL, O_TP},
        {"pp", required_argument, NULL, O_PP},
        {"prompt", required_argument, NULL, O_PROMPT},
        {"input", required_argument, NULL, O_INPUT},
        {"output", required_argument, NULL, O_OUTPUT},
        SLM_CLI_SAMPLING_OPTIONS,
        SLM_CLI_PRIVILEGE_OPTIONS,
        SLM_CLI_MANIFEST_OPTIONS,
        {"threads", required_argument, NULL, O_THREADS},
        {"control-bind", required_argument, NULL, O_BIND},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"listen", required_argument, NULL, O_LISTEN},
        {"heartbeat-ms", required_argument, NULL, O_HEARTBEAT},
        {"heartbeat-timeout-ms", required_argument, NULL, O_HEARTBEAT_TIMEOUT},
        {"queue-depth", required_argument, NULL, O_QUEUE},
        {"max-tokens", required_argument, NULL, O_MAX_TOKENS},
        {"device", required_argument, NULL, O_DEVICE},
        {"server-key", required_argument, NULL, O_SERVER_KEY},
        {"clients", required_argument, NULL, O_CLIENTS},
        {"audit-log", required_argument, NULL, O_AUDIT},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"max-batch", required_argument, NULL, O_MAX_BATCH},
        {"step-tokens", required_argument, NULL, O_STEP_TOKENS},
        {"kv-block", required_argument, NULL, O_KV_BLOCK},
        {"kv-blocks", required_argument, NULL, O_KV_BLOCKS},
        {"prefix-cache", required_argument, NULL, O_PREFIX_CACHE},
        {"weights", required_argument, NULL, O_WEIGHTS},
        {"chat-template", required_argument, NULL, O_CHAT_TEMPLATE},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->tp = o->pp = 1;
    o->steps = 256;
    const slm_cluster_timing timing = slm_cluster_default_timing();
    o->timeout_ms = timing.timeout_ms;
    o->heartbeat_ms = timing.heartbeat_ms;
    o->heartbeat_timeout_ms = timing.heartbeat_timeout_ms;
    o->queue_depth = 64;
    o->max_tokens = 65536;
    o->bind = SLM_CLUSTER_DEFAULT_BIND;
    o->listen = SLM_SERVER_DEFAULT_LISTEN;
    o->sampling = slm_sampling_defaults();
    o->sampling.seed = 1; /* batch jobs are reproducible by default */
    o->serve = serve;
    o->device = SLM_DEVICE_AUTO;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
        slm_status rc = SLM_OK;
        switch (c) {
        case O_MODEL:
            o->model = optarg;
            break;
        case O_TOK:
            o->tokenizer = optarg;
            break;
        case O_TP:
            rc = slm_cli_int("--tp", optarg, 1, SLM_PLAN_MAX_TP, &o->tp);
            break;
        case O_PP:
            rc = slm_cli_int("--pp", optarg, 1, SLM_PLAN_MAX_PP, &o->pp);
            break;
        case O_PROMPT:
            o->prompt = optarg;
            break;
        case O_INPUT:
            o->input = optarg;
            break;
        case O_OUTPUT:
            o->output = optarg;
            break;
        case 'n':
            rc = slm_cli_int("-n", optarg, 0, SLM_MAX_SEQ_LEN, &o->steps);
            break;
        case O_THREADS:
            rc = slm_cli_int("--threads", optarg, 1, 1024, &o->threads);
            break;
        case O_BIND:
            o->bind = optarg;
            break;
        case O_TIMEOUT:
            rc = slm_cli_int("--timeout-ms", optarg, 100, 3600000,
                             &o->timeout_ms);
            break;
        case O_LISTEN:
            o->listen = optarg;
            break;
        case O_HEARTBEAT:
            rc = slm_cli_int("--heartbeat-ms", optarg, 10, 60000,
                             &o->heartbeat_ms);
            break;
        case O_HEARTBEAT_TIMEOUT:
            rc = slm_cli_int("--heartbeat-timeout-ms", optarg, 50, 3600000,
                             &o->heartbeat_timeout_ms);
            break;
        case O_QUEUE:
            rc = slm_cli_int("--queue-depth", optarg, 0, 1 << 20,
                             &o->queue_depth);
            break;
        case O_MAX_TOKENS:
            rc =
                slm_cli_int("--max-tokens", optarg, 1, 1 << 24, &o->max_tokens);
            break;
        case O_DEVICE:
            rc = slm_device_parse(optarg, &o->device);
            break;
        case O_SERVER_KEY:
            o->server_key = optarg;
            break;
        case O_CLIENTS:
            o->clients = optarg;
            break;
        case O_AUDIT:
            o->audit_log = optarg;
            break;
        case O_INSECURE:
            o->insecure = true;
            break;
        case O_MAX_BATCH:
            rc = slm_cli_int("--max-batch", optarg, 1, SLM_KV_MAX_SEQS,
                             &o->max_batch);
            break;
        case O_STEP_TOKENS:
            rc = slm_cli_int("--step-tokens", optarg, 1, SLM_KV_MAX_TOKENS,
                             &o->step_tokens);
            break;
        case O_KV_BLOCK:
            rc = slm_cli_int("--kv-block", optarg, 1, SLM_KV_MAX_BLOCK,
                             &o->kv_block);
            break;
        case O_WEIGHTS: {
            slm_weights_mode ignored; /* shards copy their slice anyway */
            rc = slm_cli_weights_mode(optarg, &ignored, &o->format);
            break;
        }
        case O_KV_BLOCKS:
            rc = slm_cli_int("--kv-blocks", optarg, 1, SLM_KV_MAX_BLOCKS,
                             &o->kv_blocks);
            break;
        case O_CHAT_TEMPLATE: {
            slm_chat_format f;
            rc = slm_chat_format_from_name(optarg, &f);
            o->chat_template = optarg;
            break;
        }
        case O_PREFIX_CACHE:
            if (strcmp(optarg, "on") == 0 || strcmp(optarg, "off") == 0)
                o->no_prefix_cache = strcmp(optarg, "off") == 0;
            else
                rc = slm_fail(SLM_ERR_INVALID,
                              "--prefix-cache %s: expected on or off", optarg);
            break;
        case SLM_OPT_ALLOW_ROOT:
            o->allow_root = true;
            break;
        case SLM_OPT_ALLOW_CORE_DUMP:
            o->allow_core_dump = true;
            break;
        case SLM_OPT_MANIFEST:
            o->manifest = optarg;
            break;
        case SLM_OPT_PUBLIC_KEY:
            o->public_key = optarg;
            break;
        default: {
            bool handled = false, seeded = false;
            rc = slm_cli_sampling(c, optarg, &o->sampling, &handled, &seeded);
            if (!handled)
                return slm_fail(SLM_ERR_INVALID, "unknown option (see --help)");
        }
        }
        SLM_CHECK(rc);
    }
    /* A Hugging Face model has its tokenizer.json beside it. */
    if (optind != argc || !o->model ||
        (!o->tokenizer && !slm_hf_model_is_hf(o->model)))
        return slm_fail(SLM_ERR_INVALID, "--model, and --tokenizer for a "
                                         "llama2.c model, are required");
    if (!o->serve && o->chat_template)
        return slm_fail(SLM_ERR_INVALID,
                        "--chat-template is for serve (its chat requests)");
    if (o->serve && (o->prompt || o->input || o->output))
        return slm_fail(SLM_ERR_INVALID,
                        "serve takes its requests from clients on --listen: "
                        "no --prompt, --input or --output");
    if (o->heartbeat_timeout_ms < 2 * o->heartbeat_ms)
        return slm_fail(SLM_ERR_INVALID,
                        "--heartbeat-timeout-ms %lld must be at least twice "
                        "--heartbeat-ms %lld",
                        (long long)o->heartbeat_timeout_ms,
                        (long long)o->heartbeat_ms);
    if (o->serve && !o->insecure && (!o->server_key || !o->clients))
        return slm_fail(SLM_ERR_INVALID,
                        "serve needs --server-key FILE and --clients FILE "
                        "(CURVE: only listed clients get in), or --insecure "
                        "(plaintext, anyone who can reach --listen)");
    if (o->insecure && (o->server_key || o->clients))
        return slm_fail(SLM_ERR_INVALID,
                        "--insecure contradicts --server-key / --clients");
    /* serve: -n is a request's default completion length, 0 = 256 */
    if (o->serve && o->steps == 0)
        o->steps = 256;
    if (!o->serve && (!o->prompt) == (!o->input))
        return slm_fail(SLM_ERR_INVALID,
                        "exactly one of --prompt and --input is required");
    return slm_sampling_validate(&o->sampling);
}

/* Collects generated text for one request. */
typedef struct {
    char *buf;
    size_t len, cap;
} text_buf;

static slm_status append_piece(void *user, const char *piece, size_t len,
                               int32_t token)
{
    (void)token;
    text_buf *t = user;
    if (t->len + len + 1 > t->cap) {
        size_t cap = (t->cap ? 2 * t->cap : 1024) + len;
        char *b = realloc(t->buf, cap);
        if (!b)
            return slm_fail(SLM_ERR_NOMEM, "out of memory");
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, piece, len);
    t->len += len;
    return SLM_OK;
}

/* The KV options as given (slm_kv_config_resolve fills in the rest, the
 * same on every rank). serve batches by default (unless the shards say in
 * their Hello that they run on GPUs); run feeds one sequence a token at a
 * time. */
static slm_kv_config kv_options(const run_options *o)
{
    const bool batch = o->serve;
    size_t seqs = o->max_batch ? (size_t)o->max_batch : batch ? 32 : 1;
    size_t tokens = o->step_tokens ? (size_t)o->step_tokens : batch ? 128 : 1;
    if (tokens < seqs && !o->step_tokens)
        tokens = seqs;
    return (slm_kv_config){.block_size = (size_t)o->kv_block,
                           .max_seqs = seqs,
                           .max_tokens = tokens,
                           .n_blocks = (size_t)o->kv_blocks};
}

/* Rank 0, step 1: everything that can be checked without the shards. */
static slm_status validate_job(const run_options *o, int world_size,
                               slm_model_config *cfg, int32_t *decider,
                               slm_tokenizer_t **tok, slm_batch *batch)
{
    slm_checkpoint_t *ck = NULL;
    slm_plan_t *plan = NULL;
    slm_status rc = SLM_OK;
    if ((int64_t)world_size != 1 + o->tp * o->pp) {
        return slm_fail(SLM_ERR_INVALID,
                        "--tp %lld --pp %lld needs %lld ranks (1 coordinator "
                        "+ %lld shards) but mpirun started %d: use mpirun "
                        "-np %lld",
                        (long long)o->tp, (long long)o->pp,
                        (long long)(1 + o->tp * o->pp),
                        (long long)(o->tp * o->pp), world_size,
                        (long long)(1 + o->tp * o->pp));
    }
#ifndef SLM_HAVE_CUDA
    /* Every rank runs this binary: without CUDA, --device cuda can be
     * refused here. Whether the shards' nodes have GPUs they find out
     * themselves (the coordinator's node may have none). */
    slm_device_kind kind;
    SLM_CHECK(slm_device_resolve(o->device, &kind));
#endif
    /* Mapped: the header and sizes are checked, no weight page is read. */
    SLM_CHECK_GOTO(slm_checkpoint_open(o->model, SLM_WEIGHTS_MAPPED, &ck), rc,
                   done);
    *cfg = *slm_checkpoint_config(ck);
    SLM_CHECK_GOTO(slm_plan_create(cfg, (int32_t)o->tp, (int32_t)o->pp, &plan),
                   rc, done);
    const slm_kv_config kv_given = kv_options(o);
    slm_kv_config kv;
    SLM_CHECK_GOTO(slm_kv_config_resolve(&kv_given, (size_t)cfg->seq_len, &kv),
                   rc, done);
    *decider = (slm_plan_pp(plan) - 1) * slm_plan_tp(plan);
    SLM_CHECK_GOTO(
        slm_tokenizer_open(o->model, o->tokenizer, cfg->vocab_size, tok), rc,
        done);
    if (o->serve) {
        /* requests come later, on stdin */
    } else if (o->input) {
        SLM_CHECK_GOTO(
            slm_batch_load(o->input, (int32_t)o->steps, &o->sampling, batch),
            rc, done);
    } else {
        const char *p = o->prompt;
        /* One request from --prompt, through the same parser's defaults. */
        batch->items = calloc(1, sizeof *batch->items);
        if (!batch->items || !(batch->items[0].prompt = strdup(p))) {
            rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
            goto done;
        }
        batch->n = 1;
        batch->items[0].steps = (int32_t)o->steps;
        batch->items[0].sampling = o->sampling;
    }
done:
    slm_plan_destroy(&plan);
    slm_checkpoint_destroy(&ck);
    return rc;
}

static slm_status write_line(FILE *out, char *line)
{
    size_t n = strlen(line);
    bool ok = fwrite(line, 1, n, out) == n && fflush(out) == 0;
    free(line);
    return ok ? SLM_OK : slm_fail(SLM_ERR_IO, "writing results failed");
}

/* Answers one request with a result line, or an error line when the request
 * itself is at fault (its prompt does not fit); a failure of the cluster is
 * returned, and ends the job. */
static slm_status answer(const slm_model_runner *runner,
                         const slm_model_config *cfg,
                         const slm_tokenizer_t *tok, const slm_batch_request *r,
                         text_buf *text, FILE *out)
{
    slm_sampler_t *sampler = NULL;
    char *line = NULL;
    SLM_CHECK(slm_sampler_create(cfg->vocab_size, &r->sampling, &sampler));
    text->len = 0;
    slm_generate_stats st = {0};
    slm_status rc = slm_generate(runner, tok, sampler, r->prompt, r->steps,
                                 append_piece, text, &st);
    slm_sampler_destroy(&sampler);
    if (rc == SLM_ERR_RANGE || rc == SLM_ERR_INVALID)
        rc = slm_batch_error_line(r->id_json, slm_error_message(), &line);
    else if (rc == SLM_OK)
        rc = slm_batch_result_line(r, text->buf ? text->buf : "", text->len,
                                   &st, &line);
    SLM_CHECK(rc);
    return write_line(out, line);
}

/* serve's chat format: the one the model's tokenizer_config.json names (a
 * Hugging Face model), or --chat-template's. A model without one is served
 * all the same, its chat requests refused with *no_chat (the caller frees
 * it); a --chat-template that cannot be used ends the job. */
static slm_status open_chat(const run_options *o, slm_chat_t **chat,
                            char **no_chat)
{
    *chat = NULL;
    *no_chat = NULL;
    const char *m = o->model;
    const size_t n = strlen(m);
    struct stat st;
    const bool hf = (stat(m, &st) == 0 && S_ISDIR(st.st_mode)) ||
                    (n >= 12 && strcmp(m + n - 12, ".safetensors") == 0) ||
                    (n >= 5 && strcmp(m + n - 5, ".json") == 0);
    slm_status rc = SLM_OK;
    if (hf) {
        rc = slm_chat_load(m, o->chat_template, chat);
        if (rc != SLM_OK && o->chat_template)
            return rc;
    } else if (o->chat_template) {
        slm_chat_format f;
        SLM_CHECK(slm_chat_format_from_name(o->chat_template, &f));
        SLM_CHECK(slm_chat_create(f, chat));
    } else {
        rc = slm_fail(SLM_ERR_UNSUPPORTED,
                      "the model (a llama2.c checkpoint) has no chat "
                      "template; start serve with --chat-template NAME (one "
                      "of: %s)",
                      slm_chat_format_names());
    }
    if (rc == SLM_OK) {
        fprintf(stderr, "shardlm serve: chat requests use the %s format%s\n",
                slm_chat_format_name(slm_chat_get_format(*chat)),
                o->chat_template ? " (--chat-template)" : "");
        return SLM_OK;
    }
    if (!(*no_chat = strdup(slm_error_message())))
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    fprintf(stderr, "shardlm serve: chat requests will be refused: %s\n",
            *no_chat);
    return SLM_OK;
}

/* Rank 0, step 3. */
static slm_status coordinate(const run_options *o, FILE *out,
                             const slm_model_config *cfg, int32_t decider,
                             const slm_tokenizer_t *tok, const slm_batch *batch)
{
    slm_cluster_t *cluster = NULL;
    text_buf text = {NULL, 0, 0};
    slm_status rc = SLM_OK;
    const int32_t n_shards = (int32_t)(o->tp * o->pp);
    const slm_cluster_timing timing = {(int)o->timeout_ms, (int)o->heartbeat_ms,
                                       (int)o->heartbeat_timeout_ms};
    const slm_kv_config kv_given = kv_options(o);
    slm_kv_config kv;
    SLM_CHECK_GOTO(slm_kv_config_resolve(&kv_given, (size_t)cfg->seq_len, &kv),
                   rc, done);
    SLM_CHECK_GOTO(slm_cluster_create(MPI_COMM_WORLD, cfg, &kv, n_shards,
                                      decider, o->bind, &timing, &cluster),
                   rc, done);
    uint64_t max_bytes = 0;
    for (int32_t i = 0; i < n_shards; i++) {
        uint64_t b = slm_cluster_shard_weight_bytes(cluster, i);
        max_bytes = b > max_bytes ? b : max_bytes;
    }
    fprintf(stderr,
            "shardlm run: %d shards ready (tp %lld x pp %lld), at most %.1f "
            "MiB of weights each\n",
            n_shards, (long long)o->tp, (long long)o->pp,
            (double)max_bytes / 1048576.0);
    const slm_model_runner runner = slm_cluster_runner(cluster);
    if (o->serve) {
        /* Clients learn the model's file name, not where it lives. */
        const char *slash = strrchr(o->model, '/');
        slm_server_options so = {
            o->listen,
            slash ? slash + 1 : o->model,
            (int32_t)o->tp,
            (int32_t)o->pp,
            (uint32_t)o->queue_depth,
            (uint32_t)o->max_tokens,
            (uint32_t)(o->steps < o->max_tokens ? o->steps : o->max_tokens),
            o->server_key,
            o->clients,
            o->audit_log,
            o->insecure,
            !o->no_prefix_cache,
            NULL, /* chat: set below */
            NULL,
        };
        slm_chat_t *chat = NULL;
        char *no_chat = NULL;
        SLM_CHECK_GOTO(open_chat(o, &chat, &no_chat), rc, done);
        so.chat = chat;
        so.chat_unavailable = no_chat;
        rc = slm_server_run(cluster, cfg, tok, &so);
        slm_chat_destroy(&chat);
        free(no_chat);
        SLM_CHECK_GOTO(rc, rc, done);
    } else {
        for (size_t i = 0; i < batch->n; i++)
            SLM_CHECK_GOTO(
                answer(&runner, cfg, tok, &batch->items[i], &text, out), rc,
                done);
    }
done:
    /* After a failure the caller aborts the job at once; waiting for shards
     * stuck beside a lost one would only delay that. */
    if (rc == SLM_OK && cluster)
        rc = slm_cluster_shutdown(cluster, "done");
    slm_cluster_destroy(&cluster);
    free(text.buf);
    return rc;
}

/* Shards, step 2 and after. shards_mpi holds the shards only. */
static slm_status serve_as_shard(const run_options *o, int world_rank,
                                 MPI_Comm shards_mpi)
{
    slm_comm_t *shards = NULL;
    slm_shard_t *shard = NULL;
    slm_status rc = SLM_OK;
    if (o->serve) {
        /* scancel and srun signal every task at once: a shard that died of
         * it would look lost. The coordinator answers its clients and then
         * sends Shutdown; a launcher that means it follows with SIGKILL. */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
    }
    /* Every shard resolves --device on its own node, then they agree: all
     * on GPUs or all on CPUs (auto takes GPUs only if every shard has one),
     * and a shard that cannot have what was asked fails them all. */
    const int local_rank = slm_device_local_rank(shards_mpi);
    slm_device_kind device = SLM_DEVICE_CPU;
    int gpu = 0;
    const int local_shards = slm_device_local_count(shards_mpi);
    rc = slm_device_resolve(o->device, &device);
    if (rc == SLM_OK && device == SLM_DEVICE_CUDA &&
        local_shards > slm_device_count()) {
        if (o->device == SLM_DEVICE_AUTO)
            device = SLM_DEVICE_CPU;
        else
            rc = slm_fail(SLM_ERR_UNSUPPORTED,
                          "--device cuda: %d shards on this node but %d "
                          "GPUs; NCCL needs a GPU for each (use fewer shards "
                          "per node, or --device cpu)",
                          local_shards, slm_device_count());
    }
    if (rc == SLM_OK && device == SLM_DEVICE_CUDA)
        rc = slm_device_pick(local_rank, &gpu);
    int agree[2] = {rc == SLM_OK, device == SLM_DEVICE_CUDA};
    MPI_Allreduce(MPI_IN_PLACE, agree, 2, MPI_INT, MPI_MIN, shards_mpi);
    if (rc != SLM_OK)
        goto done;
    if (!agree[0]) {
        rc = slm_fail(SLM_ERR_UNSUPPORTED,
                      "another shard cannot run on --device %s",
                      slm_device_name(o->device));
        goto done;
    }
    device = agree[1] ? SLM_DEVICE_CUDA : SLM_DEVICE_CPU;
    SLM_CHECK_GOTO(slm_comm_mpi_create(shards_mpi, &shards), rc, done);
    const slm_kv_config kv = kv_options(o);
    SLM_CHECK_GOTO(slm_shard_create_on(shards, shards_mpi, o->model,
                                       (int32_t)o->tp, (int32_t)o->pp, &kv,
                                       o->format, device, gpu, &shard),
                   rc, done);
    SLM_CHECK_GOTO(slm_shard_serve(shard, MPI_COMM_WORLD, world_rank - 1,
                                   (int)o->timeout_ms, (int)o->heartbeat_ms),
                   rc, done);
done:
    slm_shard_destroy(&shard);
    if (rc != SLM_OK)
        return rc; /* the caller aborts; communicators die with the job */
    slm_comm_destroy(&shards);
    return rc;
}

int slm_run_main(int argc, char **argv, bool serve)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            run_usage(stdout);
            return 0;
        }
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    run_options o;
    slm_status rc = parse_options(argc, argv, serve, &o);
    /* Every rank, before it loads a weight or opens a socket; a refusal is
     * part of the go / no-go below. */
    if (rc == SLM_OK)
        rc = slm_privilege_enforce(o.allow_root, o.allow_core_dump);
    /* Every rank checks the files it will read itself (on another node
     * they are other copies), before any weight is used. */
    if (rc == SLM_OK) {
        char who[64];
        snprintf(who, sizeof who, "shardlm %s: rank %d",
                 serve ? "serve" : "run", rank);
        rc = slm_manifest_check_inputs(o.manifest, o.public_key, o.model,
                                       o.tokenizer, who, true);
    }
    if (o.threads > 0)
        omp_set_num_threads((int)o.threads);

    slm_model_config cfg = {0};
    int32_t decider = 0;
    slm_tokenizer_t *tok = NULL;
    slm_batch batch = {NULL, 0};
    FILE *out = stdout;
    if (rank == 0 && rc == SLM_OK)
        rc = validate_job(&o, size, &cfg, &decider, &tok, &batch);
    /* The output file too is checked before any shard loads. */
    if (rank == 0 && rc == SLM_OK && o.output && !(out = fopen(o.output, "w")))
        rc = slm_fail(SLM_ERR_IO, "%s: cannot create", o.output);
    /* Every rank parsed the same command line; rank 0 also checked the
     * model. One verdict for all, before any shard loads a weight. */
    int go = rc == SLM_OK;
    MPI_Allreduce(MPI_IN_PLACE, &go, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!go) {
        /* Rank 0 speaks for all when it failed too (the same command line
         * fails the same way everywhere); otherwise each failing rank says
         * why itself (a manifest mismatch on its own node's copy). */
        int rank0_ok = rank == 0 ? rc == SLM_OK : 0;
        MPI_Bcast(&rank0_ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (rc != SLM_OK && (rank == 0 || rank0_ok))
            fprintf(stderr, "shardlm run: rank %d: %s (%s)\n", rank,
                    slm_error_message(), slm_status_str(rc));
        if (rank == 0 && rc != SLM_OK && o.model == NULL)
            run_usage(stderr);
        slm_tokenizer_destroy(&tok);
        slm_batch_free(&batch);
        MPI_Finalize();
        return 1;
    }

    /* Collective over the world: the coordinator takes no part in the
     * shards' communicator. */
    MPI_Comm shards_mpi = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? MPI_UNDEFINED : 0, rank,
                   &shards_mpi);
    if (rank == 0) {
        rc = coordinate(&o, out, &cfg, decider, tok, &batch);
        if (out && out != stdout && fclose(out) != 0 && rc == SLM_OK)
            rc = slm_fail(SLM_ERR_IO, "%s: close failed", o.output);
    } else {
        rc = serve_as_shard(&o, rank, shards_mpi);
    }
    slm_tokenizer_destroy(&tok);
    slm_batch_free(&batch);
    if (rc != SLM_OK) {
        fprintf(stderr, "shardlm run: rank %d: %s (%s)\n", rank,
                slm_error_message(), slm_status_str(rc));
        /* Ends every rank of the job. A lost rank is EX_TEMPFAIL (75), so
         * a launcher can retry that and not a bad command line. */
        MPI_Abort(MPI_COMM_WORLD, rc == SLM_ERR_UNAVAILABLE ? 75 : 1);
    }
    if (shards_mpi != MPI_COMM_NULL)
        MPI_Comm_free(&shards_mpi);
    MPI_Finalize();
    return 0;
}
