/*
 * bench/bench_accuracy.c - what int8 weights cost in accuracy, against the
 * float32 pass on the same model.
 *
 * Two measures, both on one sequence from BOS:
 *   - logit error: the float32 pass's greedy tokens are fed to both passes
 *     (teacher forcing), and at every position the int8 logits are compared
 *     with the float32 ones: max |int8 - f32| / max |f32| per position
 *     (median and worst), and how often the two argmaxes agree;
 *   - greedy text: each pass generates greedily on its own; the tokens
 *     before the first difference, out of the positions run.
 *
 *   bench_accuracy --model M [--positions N] [--threads N]
 */
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/cli.h"
#include "kernels/kernels.h"
#include "model/checkpoint.h"
#include "shard/transformer.h"

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"positions", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    const char *model = NULL;
    int64_t positions = 256, threads = 2;
    slm_status rc = SLM_OK;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm')
            model = optarg;
        else if (c == 'n')
            rc = slm_cli_int("--positions", optarg, 2, 1 << 20, &positions);
        else if (c == 't')
            rc = slm_cli_int("--threads", optarg, 1, 256, &threads);
        else
            return 2;
        if (rc != SLM_OK) {
            fprintf(stderr, "bench_accuracy: %s\n", slm_error_message());
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "usage: bench_accuracy --model M [--positions N] "
                        "[--threads N]\n");
        return 2;
    }
    omp_set_num_threads((int)threads);
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *wf = NULL, *wq = NULL;
    slm_transformer_t *tf = NULL, *tq = NULL;
    float *lf = NULL;
    double *err = NULL;
    SLM_CHECK_GOTO(slm_checkpoint_open(model, SLM_WEIGHTS_MAPPED, &ck), rc,
                   fail);
    const slm_model_config *cfg = slm_checkpoint_config(ck);
    if (positions > cfg->seq_len)
        positions = cfg->seq_len;
    SLM_CHECK_GOTO(slm_shard_weights_whole(ck, &wf), rc, fail);
    SLM_CHECK_GOTO(slm_shard_weights_whole(ck, &wq), rc, fail);
    SLM_CHECK_GOTO(slm_shard_weights_quantize(wq), rc, fail);
    SLM_CHECK_GOTO(slm_transformer_create(wf, NULL, &tf), rc, fail);
    SLM_CHECK_GOTO(slm_transformer_create(wq, NULL, &tq), rc, fail);
    const size_t vocab = (size_t)cfg->vocab_size;
    lf = malloc(vocab * sizeof *lf);
    err = malloc((size_t)positions * sizeof *err);
    if (!lf || !err) {
        rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* Teacher forcing on the float32 greedy sequence. */
    int32_t token = 1;
    int64_t agree = 0;
    for (int64_t p = 0; p < positions; p++) {
        const float *a = NULL, *b = NULL;
        SLM_CHECK_GOTO(slm_transformer_forward(tf, token, (int32_t)p, &a), rc,
                       fail);
        memcpy(lf, a, vocab * sizeof *lf);
        SLM_CHECK_GOTO(slm_transformer_forward(tq, token, (int32_t)p, &b), rc,
                       fail);
        double max_abs = 0.0, max_err = 0.0;
        for (size_t i = 0; i < vocab; i++) {
            max_abs = fmax(max_abs, fabs((double)lf[i]));
            max_err = fmax(max_err, fabs((double)b[i] - (double)lf[i]));
        }
        err[p] = max_abs > 0 ? max_err / max_abs : max_err;
        const int32_t fa = slm_cpu_argmax(lf, vocab);
        agree += fa == slm_cpu_argmax(b, vocab);
        token = fa;
    }
    qsort(err, (size_t)positions, sizeof *err, cmp_double);
    /* Free-running greedy text. */
    int32_t a_tok = 1, b_tok = 1;
    int64_t same = 0;
    for (int64_t p = 0; p < positions; p++) {
        const float *a = NULL, *b = NULL;
        SLM_CHECK_GOTO(slm_transformer_forward(tf, a_tok, (int32_t)p, &a), rc,
                       fail);
        a_tok = slm_cpu_argmax(a, vocab);
        SLM_CHECK_GOTO(slm_transformer_forward(tq, b_tok, (int32_t)p, &b), rc,
                       fail);
        b_tok = slm_cpu_argmax(b, vocab);
        if (a_tok != b_tok)
            break;
        same++;
    }
    printf("model            %s (dim %d, layers %d, vocab %d)\n", model,
           cfg->dim, cfg->n_layers, cfg->vocab_size);
    printf("logit error      median %.4f, worst %.4f (max |int8 - f32| / max "
           "|f32| per position, %lld positions)\n",
           err[positions / 2], err[positions - 1], (long long)positions);
    printf("argmax agreement %lld of %lld positions (%.1f%%)\n",
           (long long)agree, (long long)positions,
           100.0 * (double)agree / (double)positions);
    printf("greedy text      identical for %lld of %lld tokens\n",
           (long long)same, (long long)positions);
fail:
    if (rc != SLM_OK)
        fprintf(stderr, "bench_accuracy: %s\n", slm_error_message());
    free(lf);
    free(err);
    slm_transformer_destroy(&tf);
    slm_transformer_destroy(&tq);
    slm_shard_weights_destroy(&wf);
    slm_shard_weights_destroy(&wq);
    slm_checkpoint_destroy(&ck);
    return rc == SLM_OK ? 0 : 1;
}
