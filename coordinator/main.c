/*
 * coordinator/main.c - the `shardlm` command: generate, mkmodel.
 *
 * Every failure prints "shardlm: <message>" on stderr and exits non-zero; no
 * input, however malformed, crashes it.
 */
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/privilege.h"
#include "common/zkeys.h"
#include "coordinator/cli.h"
#include "coordinator/manifest_cmd.h"
#include "coordinator/generate.h"
#include "coordinator/run.h"
#include "coordinator/sampler.h"
#include "kernels/kernels.h"
#include "model/checkpoint.h"
#include "model/hf_model.h"
#include "model/mkmodel.h"
#include "model/tokenizer.h"
#include "shard/device.h"
#include "shard/transformer.h"

static int fail_exit(slm_status rc)
{
    fprintf(stderr, "shardlm: %s (%s)\n", slm_error_message(),
            slm_status_str(rc));
    return 1;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage:\n"
        "  shardlm generate --model M [--tokenizer T] [--prompt TEXT] [-n "
        "STEPS]\n"
        "                   [--temperature F] [--top-k K] [--top-p F]\n"
        "                   [--repetition-penalty F] [--seed S] [--threads N]\n"
        "                   [--weights resident|mapped|f32|bf16|f16|int8]\n"
        "                   [--device "
        "auto|cpu|cuda]\n"
        "      Streams the prompt and its continuation to stdout and the\n"
        "      speed to stderr. STEPS counts positions, BOS and prompt\n"
        "      included (llama2.c's -n); 0 = the model's context length.\n"
        "      --temperature 0 is greedy. Defaults: -n 256, temperature 1,\n"
        "      top-p 0.9, top-k 0 (off), penalty 1 (off), seed from the "
        "clock.\n"
        "      --weights resident (default) copies the checked weights into\n"
        "      private huge-page memory; mapped streams the file mapping;\n"
        "      int8 quantizes every matrix per output channel at load;\n"
        "      bf16, f16 hold every matrix in 16 bits, f32 in float32 (the\n"
        "      default is the file's own dtype; llama2.c files are f32).\n"
        "      --device auto (default) runs on a GPU when there is one and\n"
        "      this build has CUDA, else on the CPU; cuda insists on a GPU.\n"
        "  shardlm mkmodel --out FILE (--shape NAME | --dim D --hidden H\n"
        "                  --layers L --heads NH --kv-heads NKV --vocab V\n"
        "                  --seq-len S) [--separate-classifier] [--seed S]\n"
        "                  [--format llama2c|hf] [--arch NAME] [--dtype "
        "f32|bf16|f16]\n"
        "      Writes a model with seeded random weights: a llama2.c\n"
        "      checkpoint (the default), or with --format hf a Hugging Face\n"
        "      directory OUT of architecture NAME (llama, llama3, mistral,\n"
        "      qwen2, qwen3; default llama) in dtype (default bf16).\n"
        "      Shapes: %s.\n"
        "  shardlm keygen --curve PREFIX\n"
        "      Writes PREFIX.key_secret (0600) and PREFIX.key: a CURVE pair "
        "for\n"
        "      serve --server-key or shardlm-client --key (list client keys\n"
        "      in serve --clients FILE as \"<PREFIX.key contents> tenant\").\n"
        "  shardlm keygen --sign PREFIX\n"
        "      Writes PREFIX.secret (0600) and PREFIX.public: an Ed25519 pair\n"
        "      for signing manifests.\n"
        "  shardlm manifest --out M [--sign SECRET_KEY] FILE...\n"
        "  shardlm manifest --verify M [--public-key PUB] [FILE...]\n"
        "      Writes / checks a SHA-256 manifest of model files, optionally\n"
        "      signed; run, serve and generate take --manifest M\n"
        "      [--public-key PUB] and check it before using a weight.\n"
        "  mpirun -np $((1 + TP * PP)) shardlm run --model M [--tokenizer T]\n"
        "         --tp TP --pp PP (--prompt TEXT | --input FILE.jsonl) ...\n"
        "      An offline batch on a cluster of shards: `shardlm run --help`.\n"
        "  mpirun -np $((1 + TP * PP)) shardlm serve --model M [--tokenizer "
        "T]\n"
        "         --tp TP --pp PP [--listen ENDPOINT] ...\n"
        "      Serves shardlm-client requests over ZeroMQ (default\n"
        "      tcp://127.0.0.1:5555) until SIGTERM: `shardlm serve --help`.\n",
        slm_mkmodel_shape_names());
}

static slm_status write_piece(void *user, const char *piece, size_t len,
                              int32_t token)
{
    (void)user;
    (void)token;
    if (fwrite(piece, 1, len, stdout) != len || fflush(stdout) != 0)
        return slm_fail(SLM_ERR_IO, "writing to stdout failed");
    return SLM_OK;
}

static slm_status forward_step(void *ctx, int32_t token, int32_t pos,
                               const float **logits)
{
    return slm_forward_step(ctx, token, pos, logits);
}

static slm_status forward_batch(void *ctx, const slm_step *step,
                                slm_step_out *out)
{
    *out = (slm_step_out){0};
    return slm_forward_batch(ctx, step, &out->logits, &out->rows);
}

static int cmd_generate(int argc, char **argv)
{
    enum { O_MODEL = 256, O_TOK, O_PROMPT, O_THREADS, O_WEIGHTS, O_DEVICE };
    static const struct option opts[] = {
        {"model", required_argument, NULL, O_MODEL},
        {"tokenizer", required_argument, NULL, O_TOK},
        {"prompt", required_argument, NULL, O_PROMPT},
        SLM_CLI_SAMPLING_OPTIONS,
        SLM_CLI_PRIVILEGE_OPTIONS,
        SLM_CLI_MANIFEST_OPTIONS,
        {"threads", required_argument, NULL, O_THREADS},
        {"weights", required_argument, NULL, O_WEIGHTS},
        {"device", required_argument, NULL, O_DEVICE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model = NULL, *tokenizer = NULL, *prompt = "";
    const char *manifest = NULL, *public_key = NULL;
    slm_device_kind device = SLM_DEVICE_AUTO;
    int gpu = 0;
    slm_weights_mode wmode = SLM_WEIGHTS_RESIDENT;
    slm_weight_format format = SLM_WFORMAT_AUTO;
    int64_t steps = 256, threads = 0;
    bool seeded = false, allow_root = false, allow_core_dump = false;
    slm_sampling_params sp = slm_sampling_defaults();
    slm_status rc = SLM_OK;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL:
            model = optarg;
            break;
        case O_TOK:
            tokenizer = optarg;
            break;
        case O_PROMPT:
            prompt = optarg;
            break;
        case 'n':
            rc = slm_cli_int("-n", optarg, 0, SLM_MAX_SEQ_LEN, &steps);
            break;
        case O_THREADS:
            rc = slm_cli_int("--threads", optarg, 1, 1024, &threads);
            break;
        case O_WEIGHTS:
            rc = slm_cli_weights_mode(optarg, &wmode, &format);
            break;
        case O_DEVICE:
            rc = slm_device_parse(optarg, &device);
            break;
        case 'h':
            usage(stdout);
            return 0;
        case SLM_OPT_ALLOW_ROOT:
            allow_root = true;
            break;
        case SLM_OPT_ALLOW_CORE_DUMP:
            allow_core_dump = true;
            break;
        case SLM_OPT_MANIFEST:
            manifest = optarg;
            break;
        case SLM_OPT_PUBLIC_KEY:
            public_key = optarg;
            break;
        default: {
            bool handled = false;
            rc = slm_cli_sampling(c, optarg, &sp, &handled, &seeded);
            if (!handled) {
                usage(stderr);
                return 2;
            }
        }
        }
        if (rc != SLM_OK)
            return fail_exit(rc);
    }
    /* A Hugging Face model has its tokenizer.json beside it. */
    if (optind != argc || !model ||
        (!tokenizer && !slm_hf_model_is_hf(model))) {
        fprintf(stderr,
                "shardlm generate: --model, and --tokenizer for a llama2.c "
                "model, are required%s\n",
                optind != argc ? "; stray arguments" : "");
        usage(stderr);
        return 2;
    }
    if (!seeded && sp.temperature > 0.0f) {
        sp.seed = (uint64_t)time(NULL);
        fprintf(stderr, "shardlm: seed %llu\n", (unsigned long long)sp.seed);
    }
    if (threads > 0)
        omp_set_num_threads((int)threads);

    slm_checkpoint_t *ck = NULL;
    slm_tokenizer_t *tok = NULL;
    slm_shard_weights_t *weights = NULL;
    slm_forward_t *fwd = NULL;
    slm_sampler_t *sampler = NULL;
    slm_generate_stats st = {0};
    SLM_CHECK_GOTO(slm_sampling_validate(&sp), rc, done);
    SLM_CHECK_GOTO(slm_privilege_enforce(allow_root, allow_core_dump), rc,
                   done);
    SLM_CHECK_GOTO(slm_manifest_check_inputs(manifest, public_key, model,
                                             tokenizer, "shardlm", true),
                   rc, done);
    /* Before anything is loaded: --device cuda without a GPU fails here. */
    SLM_CHECK_GOTO(slm_device_resolve(device, &device), rc, done);
    if (device == SLM_DEVICE_CUDA) {
        SLM_CHECK_GOTO(
            slm_device_pick(slm_device_local_rank(MPI_COMM_NULL), &gpu), rc,
            done);
        /* The GPU keeps its own half-precision copy: the file's pages are
         * read once, for the upload, so a resident copy would be waste;
         * the upload reads float32 rows. */
        wmode = SLM_WEIGHTS_MAPPED;
        format = SLM_WFORMAT_F32;
    }
    SLM_CHECK_GOTO(slm_checkpoint_open(model, wmode, &ck), rc, done);
    const slm_model_config *cfg = slm_checkpoint_config(ck);
    SLM_CHECK_GOTO(slm_tokenizer_open(model, tokenizer, cfg->vocab_size, &tok),
                   rc, done);
    SLM_CHECK_GOTO(slm_shard_weights_whole_as(ck, format, &weights), rc, done);
    SLM_CHECK_GOTO(slm_forward_create(device, gpu, weights, NULL, NULL, &fwd),
                   rc, done);
    SLM_CHECK_GOTO(slm_sampler_create(cfg->vocab_size, &sp, &sampler), rc,
                   done);
    const slm_model_runner runner = {forward_step,
                                     forward_batch,
                                     fwd,
                                     slm_forward_seq_len(fwd),
                                     slm_forward_kv(fwd),
                                     cfg};
    SLM_CHECK_GOTO(slm_generate(&runner, tok, sampler, prompt, (int32_t)steps,
                                write_piece, NULL, &st),
                   rc, done);
    printf("\n");
    char where[64];
    if (device == SLM_DEVICE_CUDA)
        snprintf(where, sizeof where, "cuda device %d", gpu);
    else
        snprintf(where, sizeof where, "%d threads, %s", omp_get_max_threads(),
                 slm_cpu_isa());
    fprintf(stderr,
            "shardlm: prompt %zu tokens in %.3f s; %zu tokens in %.3f s = "
            "%.2f tokens/s (%s)\n",
            st.prompt_tokens, st.prompt_seconds, st.generated_tokens,
            st.decode_seconds,
            st.decode_seconds > 0
                ? (double)st.generated_tokens / st.decode_seconds
                : 0.0,
            where);
done:
    slm_sampler_destroy(&sampler);
    slm_forward_destroy(&fwd);
    slm_shard_weights_destroy(&weights);
    slm_tokenizer_destroy(&tok);
    slm_checkpoint_destroy(&ck);
    return rc == SLM_OK ? 0 : fail_exit(rc);
}

static int cmd_mkmodel(int argc, char **argv)
{
    enum {
        O_OUT = 256,
        O_SHAPE,
        O_DIM,
        O_HIDDEN,
        O_LAYERS,
        O_HEADS,
        O_KV,
        O_VOCAB,
        O_SEQ,
        O_SEP,
        O_SEED,
        O_FORMAT,
        O_ARCH,
        O_DTYPE
    };
    static const struct option opts[] = {
        {"out", required_argument, NULL, O_OUT},
        {"shape", required_argument, NULL, O_SHAPE},
        {"dim", required_argument, NULL, O_DIM},
        {"hidden", required_argument, NULL, O_HIDDEN},
        {"layers", required_argument, NULL, O_LAYERS},
        {"heads", required_argument, NULL, O_HEADS},
        {"kv-heads", required_argument, NULL, O_KV},
        {"vocab", required_argument, NULL, O_VOCAB},
        {"seq-len", required_argument, NULL, O_SEQ},
        {"separate-classifier", no_argument, NULL, O_SEP},
        {"seed", required_argument, NULL, O_SEED},
        {"format", required_argument, NULL, O_FORMAT},
        {"arch", required_argument, NULL, O_ARCH},
        {"dtype", required_argument, NULL, O_DTYPE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL, *shape = NULL, *arch = NULL;
    bool hf = false;
    slm_weight_dtype dtype = SLM_WEIGHT_BF16;
    bool dtype_given = false;
    int64_t dims[7] = {0}; /* dim hidden layers heads kv vocab seq */
    bool any_dim = false, separate = false;
    uint64_t seed = 1;
    slm_status rc = SLM_OK;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c >= O_DIM && c <= O_SEQ) {
            rc = slm_cli_int(opts[c - O_OUT].name, optarg, 1, INT32_MAX,
                             &dims[c - O_DIM]);
            any_dim = true;
        } else if (c == O_OUT) {
            out = optarg;
        } else if (c == O_SHAPE) {
            shape = optarg;
        } else if (c == O_SEP) {
            separate = true;
        } else if (c == O_SEED) {
            rc = slm_cli_u64("--seed", optarg, &seed);
        } else if (c == O_FORMAT) {
            if (strcmp(optarg, "hf") == 0)
                hf = true;
            else if (strcmp(optarg, "llama2c") != 0)
                rc = slm_fail(SLM_ERR_INVALID,
                              "--format: '%s' is not one of llama2c, hf",
                              optarg);
        } else if (c == O_ARCH) {
            arch = optarg;
        } else if (c == O_DTYPE) {
            dtype_given = true;
            if (strcmp(optarg, "f32") == 0)
                dtype = SLM_WEIGHT_F32;
            else if (strcmp(optarg, "bf16") == 0)
                dtype = SLM_WEIGHT_BF16;
            else if (strcmp(optarg, "f16") == 0)
                dtype = SLM_WEIGHT_F16;
            else
                rc = slm_fail(SLM_ERR_INVALID,
                              "--dtype: '%s' is not one of f32, bf16, f16",
                              optarg);
        } else if (c == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
        if (rc != SLM_OK)
            return fail_exit(rc);
    }
    if (optind != argc || !out || (!shape) == (!any_dim)) {
        fprintf(stderr, "shardlm mkmodel: --out and either --shape or the "
                        "explicit dims are required\n");
        usage(stderr);
        return 2;
    }
    slm_model_config cfg = {0};
    if (shape) {
        rc = slm_mkmodel_shape(shape, &cfg);
        if (rc != SLM_OK)
            return fail_exit(rc);
    } else {
        cfg.dim = (int32_t)dims[0];
        cfg.hidden_dim = (int32_t)dims[1];
        cfg.n_layers = (int32_t)dims[2];
        cfg.n_heads = (int32_t)dims[3];
        cfg.n_kv_heads = (int32_t)(dims[4] ? dims[4] : dims[3]);
        cfg.vocab_size = (int32_t)dims[5];
        cfg.seq_len = (int32_t)dims[6];
        cfg.shared_classifier = true;
    }
    if (separate)
        cfg.shared_classifier = false;
    if (!hf && (arch || dtype_given)) {
        fprintf(stderr, "shardlm mkmodel: --arch and --dtype are for "
                        "--format hf (a llama2.c file is float32 Llama)\n");
        return 2;
    }
    if (hf) {
        rc = slm_mkmodel_arch(arch ? arch : "llama", &cfg);
        if (rc == SLM_OK)
            rc = slm_mkmodel_write_hf(out, &cfg, dtype, seed);
        if (rc != SLM_OK)
            return fail_exit(rc);
        fprintf(stderr, "shardlm: wrote %s (%s %s)\n", out,
                arch ? arch : "llama", slm_weight_dtype_name(dtype));
        return 0;
    }
    rc = slm_mkmodel_write(out, &cfg, seed);
    if (rc != SLM_OK)
        return fail_exit(rc);
    fprintf(stderr, "shardlm: wrote %s (%llu bytes)\n", out,
            (unsigned long long)slm_checkpoint_file_size(&cfg));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "generate") == 0)
        return cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "mkmodel") == 0)
        return cmd_mkmodel(argc - 1, argv + 1);
    if (strcmp(cmd, "manifest") == 0)
        return slm_manifest_main(argc - 1, argv + 1);
    if (strcmp(cmd, "keygen") == 0 && argc == 4 &&
        strcmp(argv[2], "--curve") == 0) {
        /* CURVE pairs for the client API: PREFIX.key_secret (0600) and
         * PREFIX.key, for a server (--server-key) or a client (--key). */
        slm_status rc = slm_zkeys_generate(argv[3]);
        if (rc != SLM_OK)
            return fail_exit(rc);
        fprintf(stderr, "shardlm: wrote %s.key_secret (0600) and %s.key\n",
                argv[3], argv[3]);
        return 0;
    }
    if (strcmp(cmd, "keygen") == 0)
        return slm_keygen_sign_main(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return slm_run_main(argc - 1, argv + 1, false);
    if (strcmp(cmd, "serve") == 0)
        return slm_run_main(argc - 1, argv + 1, true);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
        strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "shardlm: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
