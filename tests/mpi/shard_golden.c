/*
 * tests/mpi/shard_golden.c - every rank a shard of a TP x PP split, greedy
 * generation end to end, text on stdout. Started by
 * tests/integration/shard_golden.sh under mpirun for each split and compared
 * with the golden text; it exercises the plan, the slice loading, the
 * tensor-parallel layers, the pipeline and the MPI collectives together.
 *
 *   mpirun -np TP*PP shard_golden MODEL TOKENIZER TP PP STEPS PROMPT
 *
 * The last stage's tensor rank 0 picks each next token (the prompt's, or the
 * argmax) and broadcasts it to every shard; it alone prints. Each rank
 * reports its resident weight bytes on stderr. Any failure aborts the whole
 * job (slm_comm_abort), so no rank is left waiting in a collective.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/comm.h"
#include "collectives/comm_mpi.h"
#include "coordinator/sampler.h"
#include "model/tokenizer.h"
#include "shard/shard.h"

static int rank_of_world = -1;

#define CHECK_OR_ABORT(call, comm)                                             \
    do {                                                                       \
        slm_status rc__ = (call);                                              \
        if (rc__ != SLM_OK) {                                                  \
            fprintf(stderr, "rank %d: %s: %s\n", rank_of_world, #call,         \
                    slm_error_message());                                      \
            if (comm)                                                          \
                slm_comm_abort(comm, "shard_golden failed");                   \
            MPI_Abort(MPI_COMM_WORLD, 1);                                      \
        }                                                                      \
    } while (0)

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_of_world);
    int world_size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (argc != 7) {
        if (rank_of_world == 0)
            fprintf(stderr, "usage: shard_golden MODEL TOKENIZER TP PP STEPS "
                            "PROMPT\n");
        MPI_Finalize();
        return 2;
    }
    const int tp = atoi(argv[3]), pp = atoi(argv[4]), steps = atoi(argv[5]);
    const char *prompt = argv[6];
    slm_comm_t *world = NULL;
    CHECK_OR_ABORT(slm_comm_mpi_create(MPI_COMM_WORLD, &world), world);
    if (tp * pp != world_size) {
        fprintf(stderr, "tp * pp = %d but %d ranks\n", tp * pp, world_size);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    slm_shard_t *shard = NULL;
    CHECK_OR_ABORT(slm_shard_create(world, argv[1], tp, pp, &shard), world);
    const slm_model_config cfg = *slm_shard_config(shard);
    const slm_shard_slice *slice = slm_shard_slice_info(shard);
    slm_transformer_t *t = slm_shard_transformer(shard);
    fprintf(stderr, "rank %d: stage %d tp %d: %zu bytes of weights\n",
            rank_of_world, slice->stage, slice->tp_rank,
            slm_shard_weight_bytes(shard));

    slm_tokenizer_t *tok = NULL;
    CHECK_OR_ABORT(slm_tokenizer_load(argv[2], cfg.vocab_size, &tok), world);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK_OR_ABORT(slm_tokenizer_encode(tok, prompt, strlen(prompt), true,
                                        false, &ids, &n_ids),
                   world);
    const slm_sampling_params greedy = {0.0f, 0, 1.0f, 1.0f, 0};
    slm_sampler_t *sampler = NULL;
    CHECK_OR_ABORT(slm_sampler_create(cfg.vocab_size, &greedy, &sampler),
                   world);

    const int decider = slm_shard_decider(shard);
    int32_t token = ids[0];
    for (int pos = 0; pos < steps && pos < cfg.seq_len; pos++) {
        const float *logits = NULL;
        CHECK_OR_ABORT(slm_transformer_forward(t, token, pos, &logits), world);
        int32_t next = 0;
        if (rank_of_world == decider)
            next = (size_t)pos + 1 < n_ids
                       ? ids[pos + 1]
                       : slm_sampler_sample(sampler, (float *)logits, NULL, 0);
        CHECK_OR_ABORT(slm_comm_broadcast(&next, &next, 1, SLM_DTYPE_I32,
                                          decider, world, NULL),
                       world);
        if (next == SLM_TOKEN_BOS || next == SLM_TOKEN_EOS)
            break;
        if (rank_of_world == decider) {
            size_t len = 0;
            const char *piece = slm_tokenizer_decode(tok, token, next, &len);
            fwrite(piece, 1, len, stdout);
        }
        token = next;
    }
    if (rank_of_world == decider) {
        printf("\n");
        fflush(stdout);
    }
    if (slm_shard_tp_comm(shard))
        fprintf(stderr, "rank %d: %.3f ms in tensor-group collectives\n",
                rank_of_world,
                slm_comm_seconds(slm_shard_tp_comm(shard)) * 1e3);

    free(ids);
    slm_sampler_destroy(&sampler);
    slm_tokenizer_destroy(&tok);
    slm_shard_destroy(&shard);
    slm_comm_destroy(&world);
    MPI_Finalize();
    return 0;
}
