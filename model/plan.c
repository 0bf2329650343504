/*
 * model/plan.c - the partition plan; the rules are described in plan.h.
 *
 * Every rule is checked here, once, before any slice is computed, so the
 * shard code can trust a plan without re-checking divisibility. A refusal
 * names the broken rule and lists the sizes that would work for this model,
 * so the user can fix the command line without reading this file.
 */
#include "model/plan.h"

#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/checked.h"

struct slm_plan {
    int32_t tp;
    int32_t pp;
    slm_shard_slice slices[]; /* (tp * pp) indexed by shard */
};

/* Appends a formatted string at buf + *used, never past cap - 1, and keeps
 * buf NUL-terminated. Once the buffer is full further text is dropped. */
__attribute__((format(printf, 4, 5))) static void
append(char *buf, size_t cap, size_t *used, const char *fmt, ...)
{
    if (cap == 0 || *used >= cap - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *used, cap - *used, fmt, ap);
    va_end(ap);
    if (n < 0) {
        buf[*used] = '\0'; /* an encoding error; keep what we had */
        return;
    }
    size_t room = cap - 1 - *used;
    *used += (size_t)n < room ? (size_t)n : room;
}

/* Part i of n split into `parts` contiguous runs whose sizes differ by at
 * most one, the larger first. Requires 1 <= parts and 0 <= i < parts. */
static slm_range split(int32_t n, int32_t parts, int32_t i)
{
    const int32_t base = n / parts, rem = n % parts;
    slm_range r;
    r.begin = i * base + (i < rem ? i : rem);
    r.count = base + (i < rem ? 1 : 0);
    return r;
}

/* The tp rules of plan.h, in the order they are checked. */
typedef enum {
    TP_OK,
    TP_RANGE,  /* outside [1, SLM_PLAN_MAX_TP] */
    TP_HEADS,  /* does not divide n_heads */
    TP_KV,     /* neither divides nor is a multiple of n_kv_heads */
    TP_HIDDEN, /* more ranks than MLP columns */
    TP_VOCAB,  /* more ranks than vocabulary rows */
} tp_rule;

/* Which rule tp breaks for cfg, or TP_OK. The range check comes first so
 * that the divisibility checks see a positive tp. */
static tp_rule tp_problem(const slm_model_config *cfg, int32_t tp)
{
    if (tp < 1 || tp > SLM_PLAN_MAX_TP)
        return TP_RANGE;
    if (cfg->n_heads % tp != 0)
        return TP_HEADS;
    if (cfg->n_kv_heads % tp != 0 && tp % cfg->n_kv_heads != 0)
        return TP_KV;
    if (tp > cfg->hidden_dim)
        return TP_HIDDEN;
    if (tp > cfg->vocab_size)
        return TP_VOCAB;
    return TP_OK;
}

/* "1, 2, 4, 8": every tp the model accepts. tp = 1 always works, and no tp
 * above n_heads can divide it, so the search is short and never empty. */
static void working_tp(const slm_model_config *cfg, char *buf, size_t cap)
{
    const int32_t hi =
        cfg->n_heads < SLM_PLAN_MAX_TP ? cfg->n_heads : SLM_PLAN_MAX_TP;
    size_t used = 0;
    buf[0] = '\0';
    for (int32_t tp = 1; tp <= hi; tp++)
        if (tp_problem(cfg, tp) == TP_OK)
            append(buf, cap, &used, "%s%d", used ? ", " : "", tp);
}

/* "1..5" (or "1" for a one-layer model): every pp the model accepts. */
static void working_pp(const slm_model_config *cfg, char *buf, size_t cap)
{
    const int32_t hi =
        cfg->n_layers < SLM_PLAN_MAX_PP ? cfg->n_layers : SLM_PLAN_MAX_PP;
    size_t used = 0;
    buf[0] = '\0';
    if (hi == 1)
        append(buf, cap, &used, "1");
    else
        append(buf, cap, &used, "1..%d", hi);
}

static slm_status refuse_tp(const slm_model_config *cfg, int32_t tp)
{
    /* At most 32 divisors of n_heads <= SLM_MAX_HEADS lie below 256, each
     * "ddd, ": far less than this. */
    char ok[512];
    working_tp(cfg, ok, sizeof ok);
    switch (tp_problem(cfg, tp)) {
    case TP_RANGE:
        return slm_fail(SLM_ERR_INVALID,
                        "tp = %d is out of range [1, %d]; tp that work for "
                        "this model: %s",
                        tp, SLM_PLAN_MAX_TP, ok);
    case TP_HEADS:
        return slm_fail(SLM_ERR_INVALID,
                        "cannot split n_heads = %d over tp = %d: tensor "
                        "parallelism needs tp to divide n_heads; tp that work "
                        "for this model: %s",
                        cfg->n_heads, tp, ok);
    case TP_KV:
        return slm_fail(SLM_ERR_INVALID,
                        "cannot split n_kv_heads = %d over tp = %d: tp must "
                        "divide n_kv_heads (to split them) or be a multiple "
                        "of it (to replicate them); tp that work for this "
                        "model: %s",
                        cfg->n_kv_heads, tp, ok);
    case TP_HIDDEN:
        return slm_fail(SLM_ERR_INVALID,
                        "cannot split hidden_dim = %d over tp = %d: every "
                        "rank needs at least one MLP column; tp that work for "
                        "this model: %s",
                        cfg->hidden_dim, tp, ok);
    case TP_VOCAB:
        return slm_fail(SLM_ERR_INVALID,
                        "cannot split vocab_size = %d over tp = %d: every "
                        "rank needs at least one vocabulary row; tp that work "
                        "for this model: %s",
                        cfg->vocab_size, tp, ok);
    case TP_OK:
        break;
    }
    /* Only called on a refusal. */
    return slm_fail(SLM_ERR_INTERNAL, "plan: tp = %d refused for no reason",
                    tp);
}

static slm_status refuse_pp(const slm_model_config *cfg, int32_t pp)
{
    char ok[32];
    working_pp(cfg, ok, sizeof ok);
    if (pp < 1 || pp > SLM_PLAN_MAX_PP)
        return slm_fail(SLM_ERR_INVALID,
                        "pp = %d is out of range [1, %d]; pp that work: %s", pp,
                        SLM_PLAN_MAX_PP, ok);
    return slm_fail(SLM_ERR_INVALID,
                    "pp = %d exceeds n_layers = %d: each pipeline stage needs "
                    "at least one layer; pp that work: %s",
                    pp, cfg->n_layers, ok);
}

/* The plan trusts a validated config, but the fields it divides by are
 * cheap to re-check, and a status beats a division by zero. */
static slm_status check_config(const slm_model_config *cfg)
{
    if (cfg->n_layers < 1 || cfg->n_heads < 1 || cfg->n_kv_heads < 1 ||
        cfg->n_kv_heads > cfg->n_heads || cfg->n_heads % cfg->n_kv_heads != 0 ||
        cfg->hidden_dim < 1 || cfg->vocab_size < 1)
        return slm_fail(SLM_ERR_INVALID,
                        "plan: config is not validated (n_layers = %d, "
                        "n_heads = %d, n_kv_heads = %d, hidden_dim = %d, "
                        "vocab_size = %d)",
                        cfg->n_layers, cfg->n_heads, cfg->n_kv_heads,
                        cfg->hidden_dim, cfg->vocab_size);
    return SLM_OK;
}

slm_status slm_plan_create(const slm_model_config *cfg, int32_t tp, int32_t pp,
                           slm_plan_t **out)
{
    if (!cfg || !out)
        return slm_fail(SLM_ERR_INVALID, "plan: cfg and out must not be NULL");
    SLM_CHECK(check_config(cfg));
    if (tp_problem(cfg, tp) != TP_OK)
        return refuse_tp(cfg, tp);
    if (pp < 1 || pp > SLM_PLAN_MAX_PP || pp > cfg->n_layers)
        return refuse_pp(cfg, pp);

    /* Both factors are at most 256, so neither product can overflow; the
     * checked helpers keep that proof local. */
    const int32_t shards = tp * pp;
    size_t bytes;
    if (!slm_size_mul((size_t)shards, sizeof(slm_shard_slice), &bytes) ||
        !slm_size_add(bytes, sizeof(struct slm_plan), &bytes))
        return slm_fail(SLM_ERR_RANGE, "plan: tp = %d x pp = %d overflows", tp,
                        pp);
    slm_plan_t *p = calloc(1, bytes);
    if (!p)
        return slm_fail(SLM_ERR_NOMEM, "plan: out of memory for %d shards",
                        shards);
    p->tp = tp;
    p->pp = pp;

    const int32_t heads = cfg->n_heads / tp;
    /* Split when tp divides n_kv_heads; otherwise tp_problem proved that
     * n_kv_heads divides tp, and each kv head sits on `replicas` consecutive
     * ranks. Query head q reads kv head q / (n_heads / n_kv_heads), which
     * then always lies in the rank's kv range (tests assert it). */
    const bool kv_split = cfg->n_kv_heads % tp == 0;
    const int32_t replicas = kv_split ? 1 : tp / cfg->n_kv_heads;
    for (int32_t s = 0; s < shards; s++) {
        slm_shard_slice *sl = &p->slices[s];
        const int32_t r = s % tp;
        sl->stage = s / tp;
        sl->tp_rank = r;
        sl->layers = split(cfg->n_layers, pp, sl->stage);
        sl->heads.begin = r * heads;
        sl->heads.count = heads;
        if (kv_split) {
            sl->kv_heads = split(cfg->n_kv_heads, tp, r);
        } else {
            sl->kv_heads.begin = r / replicas;
            sl->kv_heads.count = 1;
        }
        sl->kv_replicas = replicas;
        sl->hidden = split(cfg->hidden_dim, tp, r);
        sl->vocab = split(cfg->vocab_size, tp, r);
    }
    *out = p;
    return SLM_OK;
}

void slm_plan_destroy(slm_plan_t **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

int32_t slm_plan_tp(const slm_plan_t *p)
{
    return p->tp;
}

int32_t slm_plan_pp(const slm_plan_t *p)
{
    return p->pp;
}

int32_t slm_plan_shards(const slm_plan_t *p)
{
    return p->tp * p->pp;
}

const slm_shard_slice *slm_plan_slice(const slm_plan_t *p, int32_t shard)
{
    assert(shard >= 0 && shard < p->tp * p->pp); /* the caller's bug */
    return &p->slices[shard];
}

void slm_plan_describe(const slm_plan_t *p, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return; /* nowhere to put even the terminator */
    size_t used = 0;
    buf[0] = '\0';
    const int32_t shards = p->tp * p->pp;
    for (int32_t s = 0; s < shards; s++) {
        const slm_shard_slice *sl = &p->slices[s];
        append(buf, cap, &used,
               "shard %d: stage %d tp %d layers [%d,%d) heads [%d,%d) "
               "kv [%d,%d) hidden [%d,%d) vocab [%d,%d)",
               s, sl->stage, sl->tp_rank, sl->layers.begin,
               sl->layers.begin + sl->layers.count, sl->heads.begin,
               sl->heads.begin + sl->heads.count, sl->kv_heads.begin,
               sl->kv_heads.begin + sl->kv_heads.count, sl->hidden.begin,
               sl->hidden.begin + sl->hidden.count, sl->vocab.begin,
               sl->vocab.begin + sl->vocab.count);
        if (sl->kv_replicas > 1)
            append(buf, cap, &used, " kv x%d replicated", sl->kv_replicas);
        append(buf, cap, &used, "\n");
    }
}
