/*
 * bench/bench_decode.c - batch-1 decode throughput against this machine's
 * memory-bandwidth limit, measured in the same run.
 *
 * Decode of one token reads every weight matrix once, so tokens/s can never
 * exceed (read bandwidth) / (weight bytes per token). The probe runs before
 * and after the decode and the better figure is the reference, so a noisy
 * neighbour during one probe does not flatter the ratio.
 *
 * With --weights int8 every matrix is read as int8 (a quarter of the
 * bytes), with bf16 or f16 in 16 bits (half; also the default for a
 * 16-bit Hugging Face model). With --prefill P it also times the prefill of a
 * P-token prompt in one batched step (every weight read once for all P tokens;
 * compute-bound, so reported in tokens/s and GFLOP/s, best of 3).
 *
 *   bench_decode --model M [--threads N] [--tokens N] [--warmup N]
 *                [--probe-mib N]
 *                [--weights resident|mapped|f32|bf16|f16|int8]
 *                [--prefill P]
 */
#include <getopt.h>
#include <stdbool.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench/membw.h"
#include "common/clock.h"
#include "coordinator/cli.h"
#include "coordinator/sampler.h"
#include "kernels/kernels.h"
#include "model/checkpoint.h"
#include "shard/transformer.h"

/* Bytes of weights one decode step reads: every matrix and norm, the
 * classifier, and one embedding row. */
static double weight_bytes_per_token(const slm_model_config *c,
                                     slm_weight_format f)
{
    double d = c->dim, h = c->hidden_dim, kv = c->kv_dim, v = c->vocab_size;
    double matrices =
        c->n_layers * (d * d * 2 + kv * d * 2 + h * d * 3) + v * d;
    double rows = c->n_layers * (d * 2 + kv * 2 + h * 2 + d) + v; /* scales */
    double floats = c->n_layers * d * 2 + d;                      /* norms */
    switch (f) {
    case SLM_WFORMAT_INT8: /* and a float embedding row */
        return matrices + 4.0 * (rows + floats + d);
    case SLM_WFORMAT_BF16:
    case SLM_WFORMAT_F16: /* and a 16-bit embedding row */
        return 2.0 * (matrices + d) + 4.0 * floats;
    default:
        return 4.0 * (matrices + floats + d);
    }
}

/* Multiply-adds of one token through every matrix (attention's own
 * products are left out: a few percent at 128 positions). */
static double flops_per_token(const slm_model_config *c)
{
    double d = c->dim, h = c->hidden_dim, kv = c->kv_dim, v = c->vocab_size;
    return 2.0 * (c->n_layers * (d * d * 2 + kv * d * 2 + h * d * 3) + v * d);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"threads", required_argument, NULL, 't'},
        {"tokens", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, 'w'},
        {"probe-mib", required_argument, NULL, 'p'},
        {"weights", required_argument, NULL, 'W'},
        {"prefill", required_argument, NULL, 'P'},
        {NULL, 0, NULL, 0},
    };
    const char *model = NULL;
    slm_weights_mode wmode = SLM_WEIGHTS_RESIDENT;
    int64_t threads = 2, tokens = 32, warmup = 4, probe_mib = 1024;
    int64_t prefill = 0;
    slm_weight_format format = SLM_WFORMAT_AUTO;
    slm_status rc = SLM_OK;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 't':
            rc = slm_cli_int("--threads", optarg, 1, 256, &threads);
            break;
        case 'n':
            rc = slm_cli_int("--tokens", optarg, 1, 100000, &tokens);
            break;
        case 'w':
            rc = slm_cli_int("--warmup", optarg, 0, 100000, &warmup);
            break;
        case 'p':
            rc = slm_cli_int("--probe-mib", optarg, 64, 65536, &probe_mib);
            break;
        case 'W':
            rc = slm_cli_weights_mode(optarg, &wmode, &format);
            break;
        case 'P':
            rc = slm_cli_int("--prefill", optarg, 1, 65536, &prefill);
            break;
        default:
            fprintf(stderr, "usage: bench_decode --model M [--threads N] "
                            "[--tokens N] [--warmup N] [--probe-mib N] "
                            "[--weights resident|mapped|f32|bf16|f16|int8] "
                            "[--prefill P]\n");
            return 2;
        }
        if (rc != SLM_OK)
            goto fail;
    }
    if (!model) {
        fprintf(stderr, "bench_decode: --model is required\n");
        return 2;
    }
    omp_set_num_threads((int)threads);

    double bw_before = 0.0, bw_after = 0.0;
    size_t probe_bytes = (size_t)probe_mib << 20;
    SLM_CHECK_GOTO(
        slm_bench_read_bandwidth(probe_bytes, (int)threads, 10, &bw_before), rc,
        fail);

    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL;
    slm_sampler_t *greedy = NULL;
    const slm_sampling_params sp = {0.0f, 0, 1.0f, 1.0f, 0};
    SLM_CHECK_GOTO(slm_checkpoint_open(model, wmode, &ck), rc, fail);
    const slm_model_config *cfg = slm_checkpoint_config(ck);
    format = slm_weight_format_resolve(format, ck);
    SLM_CHECK_GOTO(slm_shard_weights_whole_as(ck, format, &w), rc, fail_model);
    const slm_kv_config kv = {.max_seqs = 1,
                              .max_tokens = prefill > 1 ? (size_t)prefill : 1};
    SLM_CHECK_GOTO(slm_transformer_create_ex(w, NULL, &kv, &t), rc, fail_model);
    SLM_CHECK_GOTO(slm_sampler_create(cfg->vocab_size, &sp, &greedy), rc,
                   fail_model);
    if (warmup + tokens > cfg->seq_len) {
        rc = slm_fail(SLM_ERR_INVALID,
                      "warmup + tokens = %lld exceeds seq_len %d",
                      (long long)(warmup + tokens), cfg->seq_len);
        goto fail_model;
    }
    /* Warm-up steps fault the mapped weights into memory and fill caches. */
    int token = 1, pos = 0;
    const float *logits = NULL;
    for (; pos < warmup; pos++) {
        SLM_CHECK_GOTO(slm_transformer_forward(t, token, pos, &logits), rc,
                       fail_model);
        token = slm_sampler_sample(greedy, (float *)logits, NULL, 0);
    }
    double best_step = 1e30, t0 = slm_now_seconds();
    for (int i = 0; i < tokens; i++, pos++) {
        double s0 = slm_now_seconds();
        SLM_CHECK_GOTO(slm_transformer_forward(t, token, pos, &logits), rc,
                       fail_model);
        token = slm_sampler_sample(greedy, (float *)logits, NULL, 0);
        double dt = slm_now_seconds() - s0;
        if (dt < best_step)
            best_step = dt;
    }
    double elapsed = slm_now_seconds() - t0;
    SLM_CHECK_GOTO(
        slm_bench_read_bandwidth(probe_bytes, (int)threads, 10, &bw_after), rc,
        fail_model);

    /* Prefill: the prompt in one step (block 0 onwards, after the decode's
     * blocks were freed), best of 3. */
    double prefill_best = 0.0;
    if (prefill > 0) {
        if (prefill > cfg->seq_len) {
            rc = slm_fail(SLM_ERR_INVALID, "--prefill %lld exceeds seq_len %d",
                          (long long)prefill, cfg->seq_len);
            goto fail_model;
        }
        int32_t *ids = malloc((size_t)prefill * sizeof *ids);
        const size_t bs = slm_transformer_kv(t)->block_size;
        const size_t nb = ((size_t)prefill + bs - 1) / bs;
        uint32_t *blocks = malloc(nb * sizeof *blocks);
        if (!ids || !blocks) {
            free(ids);
            free(blocks);
            rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
            goto fail_model;
        }
        for (int64_t i = 0; i < prefill; i++)
            ids[i] = (int32_t)(3 + (i * 7919) % (cfg->vocab_size - 3));
        for (size_t i = 0; i < nb; i++)
            blocks[i] = (uint32_t)i;
        for (int round = 0; round < 3 && rc == SLM_OK; round++) {
            const slm_step_seq q = {.tokens = ids,
                                    .n_tokens = (size_t)prefill,
                                    .blocks = blocks,
                                    .n_blocks = nb,
                                    .want_logits = true};
            const slm_step st = {&q, 1, blocks, nb};
            size_t rows = 0;
            const double s0 = slm_now_seconds();
            rc = slm_transformer_step(t, &st, &logits, &rows);
            const double tps_p = (double)prefill / (slm_now_seconds() - s0);
            if (tps_p > prefill_best)
                prefill_best = tps_p;
        }
        free(ids);
        free(blocks);
        if (rc != SLM_OK)
            goto fail_model;
    }

    double bytes = weight_bytes_per_token(cfg, format);
    double bw = bw_before > bw_after ? bw_before : bw_after;
    double tps = (double)tokens / elapsed;
    double limit = bw * 1e9 / bytes;
    printf("model        %s (dim %d, hidden %d, layers %d, heads %d/%d, vocab "
           "%d)\n",
           model, cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->n_heads,
           cfg->n_kv_heads, cfg->vocab_size);
    printf("threads      %lld (isa %s), weights %s, %s\n", (long long)threads,
           slm_cpu_isa(), slm_weight_format_name(format),
           wmode == SLM_WEIGHTS_RESIDENT ? "resident" : "mapped");
    printf("weights/tok  %.3f GB\n", bytes / 1e9);
    printf("probe        %.1f GB/s before, %.1f GB/s after (best %.1f)\n",
           bw_before, bw_after, bw);
    printf("decode       %.2f tokens/s over %lld tokens (best step %.2f "
           "tokens/s)\n",
           tps, (long long)tokens, 1.0 / best_step);
    printf("achieved     %.1f GB/s of weights\n", tps * bytes / 1e9);
    printf("limit        %.2f tokens/s (bandwidth / weight bytes)\n", limit);
    printf("ratio        %.3f of the bandwidth limit\n", tps / limit);
    if (prefill > 0)
        printf("prefill      %.2f tokens/s for a %lld-token prompt in one "
               "step (%.1f GFLOP/s, best of 3)\n",
               prefill_best, (long long)prefill,
               prefill_best * flops_per_token(cfg) / 1e9);
    slm_sampler_destroy(&greedy);
    slm_transformer_destroy(&t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
    return 0;
fail_model:
    slm_sampler_destroy(&greedy);
    slm_transformer_destroy(&t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
fail:
    fprintf(stderr, "bench_decode: %s (%s)\n", slm_error_message(),
            slm_status_str(rc));
    return 1;
}
