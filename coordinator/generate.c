/* coordinator/generate.c - see generate.h. */
#include "coordinator/generate.h"
#include "common/clock.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool slm_piece_printable(const char *piece, size_t len)
{
    if (len != 1)
        return len > 0;
    unsigned char c = (unsigned char)piece[0];
    if (c == '\n' || c == '\t' || c == '\r' || c == ' ')
        return true;
    return c >= 0x20 && c != 0x7f;
}

static slm_status local_forward(void *ctx, int32_t token, int32_t pos,
                                const float **logits)
{
    return slm_transformer_forward(ctx, token, pos, logits);
}

static slm_status local_step(void *ctx, const slm_step *step, slm_step_out *out)
{
    *out = (slm_step_out){0};
    return slm_transformer_step(ctx, step, &out->logits, &out->rows);
}

slm_model_runner slm_runner_local(slm_transformer_t *t)
{
    slm_model_runner r = {local_forward,
                          local_step,
                          t,
                          slm_transformer_config(t)->seq_len,
                          slm_transformer_kv(t),
                          slm_transformer_config(t)};
    return r;
}

slm_status slm_generate(const slm_model_runner *m, const slm_tokenizer_t *tok,
                        slm_sampler_t *sampler, const char *prompt,
                        int32_t steps, slm_piece_fn fn, void *user,
                        slm_generate_stats *stats)
{
    if (steps <= 0 || steps > m->seq_len)
        steps = m->seq_len;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    SLM_CHECK(slm_tokenizer_encode(tok, prompt, strlen(prompt), true, false,
                                   &ids, &n_ids));
    slm_status rc = SLM_OK;
    if (n_ids == 0) {
        /* a tokenizer that adds no BOS (Qwen's), and no text */
        rc = slm_fail(SLM_ERR_INVALID,
                      "the prompt is empty and this tokenizer adds no BOS: "
                      "there is no first token to start from");
        goto done;
    }
    if (n_ids > (size_t)steps) {
        rc = slm_fail(SLM_ERR_RANGE,
                      "the prompt is %zu tokens but only %d positions are "
                      "allowed (-n, at most the model's seq_len %d)",
                      n_ids, steps, m->seq_len);
        goto done;
    }
    /* Position p yields the token of position p + 1, so the history grows
     * to steps + 1 ids: BOS, the prompt, then sampled tokens. */
    int32_t *history = realloc(ids, ((size_t)steps + 1) * sizeof *ids);
    if (!history) {
        rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
        goto done;
    }
    ids = history;

    slm_generate_stats st = {n_ids, 0, 0.0, 0.0, false};
    double t0 = slm_now_seconds(), t_prompt_end = t0;
    size_t n = n_ids;
    int32_t token = ids[0];
    if (token != slm_tokenizer_bos_id(tok)) {
        /* no BOS (Qwen's tokenizer): the first token is text too */
        size_t len = 0;
        const char *piece = slm_tokenizer_decode(tok, -1, token, &len);
        if (slm_piece_printable(piece, len))
            SLM_CHECK_GOTO(fn(user, piece, len, token), rc, done);
    }
    for (int32_t pos = 0; pos < steps; pos++) {
        const float *logits_ro = NULL;
        SLM_CHECK_GOTO(m->forward(m->ctx, token, pos, &logits_ro), rc, done);
        int32_t next;
        if ((size_t)pos + 1 < n_ids) {
            next = ids[pos + 1]; /* still inside the prompt */
        } else {
            if ((size_t)pos + 1 == n_ids)
                t_prompt_end = slm_now_seconds();
            /* The sampler may rewrite logits (penalty, temperature); the
             * transformer's buffer is rewritten by the next step anyway. */
            next = slm_sampler_sample(sampler, (float *)logits_ro, ids, n);
            if (slm_model_config_is_stop(m->cfg, next)) {
                st.stopped = true;
                break;
            }
            ids[n++] = next;
            st.generated_tokens++;
        }
        size_t len = 0;
        const char *piece = slm_tokenizer_decode(tok, token, next, &len);
        if (slm_piece_printable(piece, len))
            SLM_CHECK_GOTO(fn(user, piece, len, next), rc, done);
        token = next;
    }
    double t_end = slm_now_seconds();
    st.prompt_seconds = t_prompt_end - t0;
    st.decode_seconds = t_end - t_prompt_end;
    if (stats)
        *stats = st;
done:
    free(ids);
    return rc;
}
