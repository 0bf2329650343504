/*
 * bench/bench_tp.c - decode throughput and per-rank weight memory of a
 * tensor/pipeline split, under mpirun (every rank a shard):
 *
 *   mpirun -np TP*PP bench_tp --model M --tp TP --pp PP [--tokens N]
 *          [--warmup N]
 *
 * Rank 0 prints, per rank, the weight bytes the shard copied into its own
 * memory and its resident set (VmRSS), then the decode tokens/s and the time
 * per token spent in the tensor group's collectives (the all-reduces and the
 * logits all-gather), the slowest rank's. Threads per rank come from
 * OMP_NUM_THREADS.
 */
#include <getopt.h>
#include <mpi.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collectives/comm.h"
#include "common/clock.h"
#include "collectives/comm_mpi.h"
#include "coordinator/cli.h"
#include "coordinator/sampler.h"
#include "shard/shard.h"

/* VmRSS of this process in bytes, 0 if unknown. */
static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0.0;
    char line[256];
    double kb = 0.0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atof(line + 6);
    fclose(f);
    return kb * 1024.0;
}

static int fail(slm_comm_t *world, slm_status rc)
{
    fprintf(stderr, "bench_tp: %s (%s)\n", slm_error_message(),
            slm_status_str(rc));
    if (world)
        slm_comm_abort(world, "bench_tp failed");
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"tp", required_argument, NULL, 't'},
        {"pp", required_argument, NULL, 'p'},
        {"tokens", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, 'w'},
        {NULL, 0, NULL, 0},
    };
    const char *model = NULL;
    int64_t tp = 1, pp = 1, tokens = 64, warmup = 4;
    slm_status rc = SLM_OK;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 't':
            rc = slm_cli_int("--tp", optarg, 1, SLM_PLAN_MAX_TP, &tp);
            break;
        case 'p':
            rc = slm_cli_int("--pp", optarg, 1, SLM_PLAN_MAX_PP, &pp);
            break;
        case 'n':
            rc = slm_cli_int("--tokens", optarg, 1, 100000, &tokens);
            break;
        case 'w':
            rc = slm_cli_int("--warmup", optarg, 0, 100000, &warmup);
            break;
        default:
            rc = slm_fail(SLM_ERR_INVALID, "unknown option");
            break;
        }
        if (rc != SLM_OK)
            return fail(NULL, rc);
    }
    if (!model)
        return fail(NULL, slm_fail(SLM_ERR_INVALID, "--model is required"));

    slm_comm_t *world = NULL;
    slm_shard_t *shard = NULL;
    slm_sampler_t *greedy = NULL;
    SLM_CHECK_GOTO(slm_comm_mpi_create(MPI_COMM_WORLD, &world), rc, out);
    const int rank = slm_comm_rank(world), size = slm_comm_size(world);
    SLM_CHECK_GOTO(
        slm_shard_create(world, model, (int32_t)tp, (int32_t)pp, &shard), rc,
        out);
    const slm_model_config *cfg = slm_shard_config(shard);
    const slm_sampling_params sp = {0.0f, 0, 1.0f, 1.0f, 0};
    SLM_CHECK_GOTO(slm_sampler_create(cfg->vocab_size, &sp, &greedy), rc, out);
    if (warmup + tokens > cfg->seq_len) {
        rc = slm_fail(SLM_ERR_INVALID, "warmup + tokens exceeds seq_len %d",
                      cfg->seq_len);
        goto out;
    }

    double mem[2] = {(double)slm_shard_weight_bytes(shard), rss_bytes()};
    double *all = rank == 0 ? calloc((size_t)size * 2, sizeof *all) : NULL;
    MPI_Gather(mem, 2, MPI_DOUBLE, all, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);

    slm_transformer_t *t = slm_shard_transformer(shard);
    slm_comm_t *tpc = slm_shard_tp_comm(shard);
    const int decider = slm_shard_decider(shard);
    int32_t token = 1;
    double t0 = 0.0;
    for (int64_t pos = 0; pos < warmup + tokens; pos++) {
        if (pos == warmup) {
            MPI_Barrier(MPI_COMM_WORLD);
            if (tpc)
                slm_comm_reset_stats(tpc);
            t0 = slm_now_seconds();
        }
        const float *logits = NULL;
        SLM_CHECK_GOTO(slm_transformer_forward(t, token, (int32_t)pos, &logits),
                       rc, out);
        if (rank == decider)
            token = slm_sampler_sample(greedy, (float *)logits, NULL, 0);
        SLM_CHECK_GOTO(slm_comm_broadcast(&token, &token, 1, SLM_DTYPE_I32,
                                          decider, world, NULL),
                       rc, out);
    }
    double elapsed = slm_now_seconds() - t0;
    double coll = tpc ? slm_comm_seconds(tpc) : 0.0, coll_max = 0.0;
    MPI_Reduce(&coll, &coll_max, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("model        %s (dim %d, hidden %d, layers %d, vocab %d)\n",
               model, cfg->dim, cfg->hidden_dim, cfg->n_layers,
               cfg->vocab_size);
        printf("split        tp %lld x pp %lld, %d OpenMP threads per rank\n",
               (long long)tp, (long long)pp, omp_get_max_threads());
        for (int r = 0; r < size; r++)
            printf("rank %-3d     weights %.1f MiB, VmRSS %.1f MiB\n", r,
                   all[2 * r] / 1048576.0, all[2 * r + 1] / 1048576.0);
        printf("decode       %.2f tokens/s over %lld tokens\n",
               (double)tokens / elapsed, (long long)tokens);
        printf("collectives  %.3f ms per token in the tensor group "
               "(slowest rank)\n",
               coll_max * 1e3 / (double)tokens);
    }
    free(all);
out:
    slm_sampler_destroy(&greedy);
    slm_shard_destroy(&shard);
    if (rc != SLM_OK)
        return fail(world, rc);
    slm_comm_destroy(&world);
    MPI_Finalize();
    return 0;
}
