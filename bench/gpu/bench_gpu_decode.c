/*
 * bench/gpu/bench_gpu_decode.c - the GPU decode step (shard/cuda/forward.c)
 * at a given batch, against the device's copy bandwidth.
 *
 * A decode step reads every weight of the model once (whatever the batch)
 * and each sequence's KV cache up to its position, so a step can take no
 * less than (weight bytes + KV bytes) / bandwidth. The achieved figure is
 * those bytes over the measured step time; --membw-gbps (from membw_cuda)
 * turns it into a fraction of the ceiling. Every sequence starts at position
 * 0 and steps together; the time covers the host copies of tokens,
 * positions and logits, as generation pays them.
 *
 *   bench_gpu_decode --model M [--batch B] [--steps N] [--warmup N]
 *                    [--membw-gbps X] [--graphs 0|1]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/clock.h"
#include "coordinator/cli.h"
#include "model/checkpoint.h"
#include "shard/device.h"
#include "shard/weights.h"

static int fail_exit(slm_status rc)
{
    fprintf(stderr, "bench_gpu_decode: %s (%s)\n", slm_error_message(),
            slm_status_str(rc));
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"batch", required_argument, NULL, 'b'},
        {"steps", required_argument, NULL, 's'},
        {"warmup", required_argument, NULL, 'w'},
        {"membw-gbps", required_argument, NULL, 'g'},
        {"graphs", required_argument, NULL, 'G'},
        {NULL, 0, NULL, 0},
    };
    const char *model = NULL;
    int64_t batch = 1, steps = 64, warmup = 8, graphs = 1;
    double membw = 0.0;
    slm_status rc = SLM_OK;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'b':
            rc = slm_cli_int("--batch", optarg, 1, 4096, &batch);
            break;
        case 's':
            rc = slm_cli_int("--steps", optarg, 1, 1 << 16, &steps);
            break;
        case 'w':
            rc = slm_cli_int("--warmup", optarg, 0, 1 << 16, &warmup);
            break;
        case 'g':
            membw = strtod(optarg, NULL);
            break;
        case 'G':
            rc = slm_cli_int("--graphs", optarg, 0, 1, &graphs);
            break;
        default:
            fprintf(stderr, "usage: bench_gpu_decode --model M [--batch B] "
                            "[--steps N] [--warmup N] [--membw-gbps X] "
                            "[--graphs 0|1]\n");
            return 2;
        }
        if (rc != SLM_OK)
            return fail_exit(rc);
    }
    if (!model) {
        fprintf(stderr, "bench_gpu_decode: --model is required\n");
        return 2;
    }
    slm_device_kind kind;
    if ((rc = slm_device_resolve(SLM_DEVICE_CUDA, &kind)) != SLM_OK)
        return fail_exit(rc);

    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_cuda_transformer_t *t = NULL;
    int32_t *tokens = NULL, *pos = NULL;
    SLM_CHECK_GOTO(slm_checkpoint_open(model, SLM_WEIGHTS_MAPPED, &ck), rc,
                   done);
    const slm_model_config cfg = *slm_checkpoint_config(ck);
    SLM_CHECK_GOTO(slm_shard_weights_whole(ck, &w), rc, done);
    slm_cuda_options opt = slm_cuda_options_default();
    opt.batch = (size_t)batch;
    opt.max_seq = (size_t)(steps + warmup);
    opt.graphs = graphs != 0;
    double t0 = slm_now_seconds();
    SLM_CHECK_GOTO(slm_cuda_transformer_create(w, NULL, 0, &opt, &t), rc, done);
    fprintf(stderr, "bench_gpu_decode: weights on the GPU in %.1f s\n",
            slm_now_seconds() - t0);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
    tokens = calloc((size_t)batch, sizeof *tokens);
    pos = calloc((size_t)batch, sizeof *pos);
    if (!tokens || !pos) {
        rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
        goto done;
    }
    const float *logits = NULL;
    double start = 0.0;
    for (int64_t i = 0; i < warmup + steps; i++) {
        if (i == warmup)
            start = slm_now_seconds();
        for (int64_t r = 0; r < batch; r++) {
            tokens[r] = (int32_t)((i * 31 + r * 7 + 1) % cfg.vocab_size);
            pos[r] = (int32_t)i;
        }
        SLM_CHECK_GOTO(
            slm_cuda_transformer_forward_batch(t, tokens, pos, &logits), rc,
            done);
    }
    const double secs = (slm_now_seconds() - start) / (double)steps;
    /* KV bytes read per step: positions 0..p of every layer, k and v, at
     * the middle of the timed steps, in half precision. */
    const double mid = (double)warmup + (double)steps / 2.0 + 1.0;
    const double kv_bytes = 2.0 * 2.0 * (double)cfg.n_layers * mid *
                            (double)cfg.kv_dim * (double)batch;
    const double wbytes = (double)slm_cuda_transformer_weight_bytes(t);
    const double gbps = (wbytes + kv_bytes) / secs / 1e9;
    printf("bench_gpu_decode: batch %lld: %.3f ms/step, %.1f tokens/s, "
           "%.2f GB weights + %.3f GB KV per step = %.1f GB/s",
           (long long)batch, secs * 1e3, (double)batch / secs, wbytes / 1e9,
           kv_bytes / 1e9, gbps);
    if (membw > 0)
        printf(" (%.0f%% of %.1f GB/s copy bandwidth)", 100.0 * gbps / membw,
               membw);
    printf("%s\n", graphs ? ", graphs" : ", no graphs");
done:
    free(tokens);
    free(pos);
    slm_cuda_transformer_destroy(&t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
    return rc == SLM_OK ? 0 : fail_exit(rc);
}
