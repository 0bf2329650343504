/*
 * tests/mpi/hf_logits.c - a Hugging Face model against transformers' own
 * outputs (tests/reference/hf_models.py), at a TP x PP split with every rank
 * a shard, for tests/integration/hf_reference.sh:
 *
 *   mpirun -np TP*PP hf_logits MODEL_DIR REF_JSON LOGITS_F32 TP PP TOL
 *       [WEIGHTS]
 *
 * WEIGHTS is what the shards hold the matrices in: auto (the file's dtype,
 * the default), f32, bf16, f16.
 *
 * Two checks, on the last stage's tensor rank 0 (the rank that has the
 * logits):
 *   1. teacher-forced over transformers' whole sequence (prompt + its
 *      greedy tokens): at every position, the relative error of the row of
 *      logits, ||ours - ref|| / ||ref||, is under TOL, and the argmax is
 *      transformers' next token wherever the reference's top-2 margin
 *      exceeds the error allowed;
 *   2. free-running greedy from the prompt: our tokens equal transformers'
 *      greedy tokens, every one.
 * Prints one line per check and the worst error; exits 0 when all hold, 1
 * otherwise. Any failure of the engine aborts the job.
 */
#include <jansson.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/comm.h"
#include "collectives/comm_mpi.h"
#include "common/file.h"
#include "coordinator/sampler.h"
#include "shard/shard.h"

static int world_rank = -1;

#define CHECK_OR_ABORT(call, comm)                                             \
    do {                                                                       \
        slm_status rc__ = (call);                                              \
        if (rc__ != SLM_OK) {                                                  \
            fprintf(stderr, "rank %d: %s: %s\n", world_rank, #call,           \
                    slm_error_message());                                      \
            if (comm)                                                          \
                slm_comm_abort(comm, "hf_logits failed");                      \
            MPI_Abort(MPI_COMM_WORLD, 1);                                      \
        }                                                                      \
    } while (0)

static void die(const char *msg)
{
    fprintf(stderr, "hf_logits: %s\n", msg);
    MPI_Abort(MPI_COMM_WORLD, 2);
}

/* The reference: tokens and n_prompt from ref.json, logits from the .f32. */
typedef struct {
    int32_t *tokens;
    size_t n_tokens, n_prompt, vocab;
    float *logits; /* (n_tokens - 1, vocab) */
} reference;

static void load_reference(const char *json_path, const char *logits_path,
                           reference *r)
{
    json_error_t err;
    json_t *root = json_load_file(json_path, 0, &err);
    if (!root)
        die("cannot read the reference json");
    const json_t *toks = json_object_get(root, "tokens");
    r->n_tokens = json_array_size(toks);
    r->n_prompt = (size_t)json_integer_value(json_object_get(root, "n_prompt"));
    r->vocab = (size_t)json_integer_value(json_object_get(root, "vocab_size"));
    if (r->n_tokens < 2 || r->n_prompt < 1 || r->n_prompt >= r->n_tokens ||
        r->vocab == 0)
        die("reference json: bad tokens, n_prompt or vocab_size");
    r->tokens = malloc(r->n_tokens * sizeof *r->tokens);
    if (!r->tokens)
        die("out of memory");
    for (size_t i = 0; i < r->n_tokens; i++)
        r->tokens[i] = (int32_t)json_integer_value(json_array_get(toks, i));
    json_decref(root);
    uint8_t *data = NULL;
    size_t len = 0;
    if (slm_file_read_all(logits_path, (size_t)1 << 30, &data, &len) != SLM_OK)
        die("cannot read the reference logits");
    if (len != (r->n_tokens - 1) * r->vocab * sizeof(float))
        die("reference logits: wrong size for tokens x vocab");
    r->logits = (float *)(void *)data;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    int world_size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (argc != 7 && argc != 8) {
        if (world_rank == 0)
            fprintf(stderr, "usage: hf_logits MODEL_DIR REF_JSON LOGITS_F32 "
                            "TP PP TOL [auto|f32|bf16|f16]\n");
        MPI_Finalize();
        return 2;
    }
    slm_weight_format format = SLM_WFORMAT_AUTO;
    if (argc == 8) {
        static const slm_weight_format formats[] = {
            SLM_WFORMAT_AUTO, SLM_WFORMAT_F32, SLM_WFORMAT_BF16,
            SLM_WFORMAT_F16};
        size_t i = 0;
        while (i < 4 && strcmp(argv[7], slm_weight_format_name(formats[i])))
            i++;
        if (i == 4)
            die("WEIGHTS is not one of auto, f32, bf16, f16");
        format = formats[i];
    }
    const int tp = atoi(argv[4]), pp = atoi(argv[5]);
    const double tol = atof(argv[6]);
    if (tp * pp != world_size)
        die("tp * pp is not the number of ranks");
    reference ref;
    load_reference(argv[2], argv[3], &ref);

    slm_comm_t *world = NULL;
    CHECK_OR_ABORT(slm_comm_mpi_create(MPI_COMM_WORLD, &world), world);
    slm_shard_t *shard = NULL;
    CHECK_OR_ABORT(slm_shard_create_on(world, MPI_COMM_NULL, argv[1], tp, pp,
                                       NULL, format, SLM_DEVICE_CPU, 0, &shard),
                   world);
    const slm_model_config cfg = *slm_shard_config(shard);
    if ((size_t)cfg.vocab_size != ref.vocab)
        die("the model's vocab_size is not the reference's");
    slm_transformer_t *t = slm_shard_transformer(shard);
    const int decider = slm_shard_decider(shard);
    const bool me = world_rank == decider;
    const size_t V = ref.vocab;

    /* 1. teacher-forced */
    double worst = 0.0;
    size_t bad_rows = 0, bad_argmax = 0, checked_argmax = 0;
    for (size_t pos = 0; pos + 1 < ref.n_tokens; pos++) {
        const float *logits = NULL;
        CHECK_OR_ABORT(
            slm_transformer_forward(t, ref.tokens[pos], pos, &logits), world);
        if (!me)
            continue;
        const float *want = ref.logits + pos * V;
        double num = 0.0, den = 0.0;
        size_t best = 0, ref_best = 0;
        for (size_t v = 0; v < V; v++) {
            const double d = (double)logits[v] - (double)want[v];
            num += d * d;
            den += (double)want[v] * (double)want[v];
            if (logits[v] > logits[best])
                best = v;
            if (want[v] > want[ref_best])
                ref_best = v;
        }
        const double rel = sqrt(num) / (sqrt(den) + 1e-30);
        if (!(rel <= tol)) {
            bad_rows++;
            fprintf(stderr, "position %zu: relative error %.3g > %.3g\n", pos,
                    rel, tol);
        }
        if (rel > worst || isnan(rel))
            worst = rel;
        /* The argmax must agree where the reference is decided by more than
         * the error allowed: the margin over the second best exceeds
         * 2 x tol x the row's largest magnitude. */
        double second = -INFINITY, big = 0.0;
        for (size_t v = 0; v < V; v++) {
            if (v != ref_best && want[v] > second)
                second = want[v];
            big = fmax(big, fabs((double)want[v]));
        }
        if ((double)want[ref_best] - second > 2.0 * tol * big) {
            checked_argmax++;
            if (best != ref_best) {
                bad_argmax++;
                fprintf(stderr, "position %zu: argmax %zu, reference %zu\n",
                        pos, best, ref_best);
            }
        }
    }

    /* 2. free-running greedy from the prompt */
    const slm_sampling_params greedy = {0.0f, 0, 1.0f, 1.0f, 0};
    slm_sampler_t *sampler = NULL;
    CHECK_OR_ABORT(slm_sampler_create(cfg.vocab_size, &greedy, &sampler),
                   world);
    int32_t token = ref.tokens[0];
    size_t diverged = 0;
    for (size_t pos = 0; pos + 1 < ref.n_tokens; pos++) {
        const float *logits = NULL;
        CHECK_OR_ABORT(slm_transformer_forward(t, token, pos, &logits), world);
        int32_t next = 0;
        if (me)
            next = pos + 1 < ref.n_prompt
                       ? ref.tokens[pos + 1]
                       : slm_sampler_sample(sampler, (float *)logits, NULL, 0);
        CHECK_OR_ABORT(slm_comm_broadcast(&next, &next, 1, SLM_DTYPE_I32,
                                          decider, world, NULL),
                       world);
        if (me && next != ref.tokens[pos + 1] && diverged == 0)
            diverged = pos + 1;
        token = next;
    }

    int failed = 0;
    if (me) {
        printf("teacher-forced: %zu positions, worst relative error %.3g "
               "(tolerance %.3g), %zu rows over; argmax checked at %zu, %zu "
               "differ\n",
               ref.n_tokens - 1, worst, tol, bad_rows, checked_argmax,
               bad_argmax);
        if (diverged)
            printf("greedy: diverges from transformers at position %zu\n",
                   diverged);
        else
            printf("greedy: all %zu generated tokens equal transformers'\n",
                   ref.n_tokens - ref.n_prompt);
        failed = bad_rows || bad_argmax || diverged || checked_argmax == 0;
        fflush(stdout);
    }
    MPI_Bcast(&failed, 1, MPI_INT, decider, MPI_COMM_WORLD);
    slm_sampler_destroy(&sampler);
    slm_shard_destroy(&shard);
    slm_comm_destroy(&world);
    free(ref.tokens);
    free(ref.logits);
    MPI_Finalize();
    return failed;
}
