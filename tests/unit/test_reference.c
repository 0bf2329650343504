/*
 * tests/unit/test_reference.c - the forward pass against an independent
 * reference: a plain double-precision Llama forward pass written here from
 * the model's equations, on random models this file writes itself.
 *
 * Why: the other logit checks compare the engine with llama2.c's run.c on
 * stories260K, whose classifier is its embedding, and cluster_run.sh
 * compares `run` with `generate` of the same binary. Neither can see a
 * separate classifier (llama2.c's negative vocab_size, wcls at the end of
 * the file) computed wrongly, since both sides would share the mistake.
 *
 * Independence: the reference parses the file's bytes itself, from the
 * format's definition (llama2.c's export layout, restated below), and uses
 * nothing of model/ or shard/; the engine is driven only through its
 * public API (checkpoint, shard weights, transformer), as
 * test_transformer.c does.
 *
 * The file, little-endian:
 *   7 x int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size
 *              (negative: a separate classifier follows), seq_len
 *   float32: token_embedding (vocab, dim), rms_att (L, dim),
 *            wq (L, dim, dim), wk (L, kv_dim, dim), wv (L, kv_dim, dim),
 *            wo (L, dim, dim), rms_ffn (L, dim), w1 (L, hidden, dim),
 *            w2 (L, dim, hidden), w3 (L, hidden, dim), rms_final (dim),
 *            freq_cis_real, freq_cis_imag (seq_len, head_size / 2), and
 *            wcls (vocab, dim) when vocab_size was negative.
 */
#include "tests/testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collectives/comm_impl.h"
#include "model/checkpoint.h"
#include "model/plan.h"
#include "shard/transformer.h"
#include "shard/weights.h"

/* GQA with four query heads per kv head, head_size 8, and a vocabulary
 * that splits unevenly over two ranks (159 + 158 rows). */
enum {
    DIM = 64,
    HIDDEN = 172,
    LAYERS = 3,
    HEADS = 8,
    KV_HEADS = 2,
    VOCAB = 317,
    SEQ_LEN = 32,
    POSITIONS = 24, /* tokens fed, one logits row each */
    HEADER_BYTES = 28,
    MAX_FILE_BYTES = 16 << 20, /* the reference's bound on what it reads */
};

/*
 * The bound on ||ours - ref||_2 / ||ref||_2 per row. The engine computes in
 * float32 (unit roundoff u = 2^-24 ~ 6e-8); the reference in double, so its
 * own error is negligible. A dot product of n terms in float is off by
 * about sqrt(n) u relative to the sum of |terms| (n <= 172 here: ~1e-6 in
 * the worst row, ~1e-7 typically), and RoPE rounds the angle pos * freq to
 * float (at most 24 * 2^-24 ~ 1.4e-6 rad, which the rotation carries into q
 * and k). Three layers of such products, softmaxes and norms stay within a
 * few times that; the measured worst rows are about 1e-6 (printed by each
 * case). 1e-5 leaves that headroom, while every real mistake (a wrong or
 * transposed tensor, the embedding used as classifier, a wrong kv head for
 * a query head, another RoPE pairing, a missing norm weight) moves the
 * logits by 10% or more.
 */
#define REL_BOUND 1e-5
/* The reference logits with wcls must differ from those with the
 * embedding by at least this, or the test could not tell them apart. */
#define DISTINCT_BOUND 0.5

/* --- the model file, written from the format's definition --- */

static void put_u32(uint8_t *b, uint32_t u)
{
    b[0] = (uint8_t)u;
    b[1] = (uint8_t)(u >> 8);
    b[2] = (uint8_t)(u >> 16);
    b[3] = (uint8_t)(u >> 24);
}

static uint32_t get_u32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
           (uint32_t)b[3] << 24;
}

static size_t mul(size_t a, size_t b)
{
    size_t r = 0;
    assert_false(__builtin_mul_overflow(a, b, &r));
    return r;
}

static size_t add(size_t a, size_t b)
{
    size_t r = 0;
    assert_false(__builtin_add_overflow(a, b, &r));
    return r;
}

typedef struct {
    uint8_t *at;   /* next float's bytes */
    uint8_t *end;  /* of the buffer */
    uint64_t *rng; /* slm_test_rand_u64 state */
} writer;

/* n floats uniform in [lo, hi). */
static void put_floats(writer *w, size_t n, float lo, float hi)
{
    assert_true(n <= (size_t)(w->end - w->at) / 4);
    for (size_t i = 0; i < n; i++) {
        float f = slm_test_rand_float(w->rng, lo, hi);
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        put_u32(w->at, u);
        w->at += 4;
    }
}

/* Writes a random model to a new temporary file (path in buf; the caller
 * unlinks it). Norm weights are random too, so a norm that ignored its
 * weight would show; the legacy RoPE tables are noise, which no reader may
 * use. Scales keep activations near unit size, with q and k a little
 * larger so the softmaxes are far from uniform. */
static void write_model(bool separate, uint64_t seed, char *buf, size_t cap)
{
    const size_t hs = DIM / HEADS, kv_dim = hs * KV_HEADS, L = LAYERS;
    size_t floats = mul(VOCAB, DIM);
    floats = add(floats, mul(L, DIM));                    /* rms_att */
    floats = add(floats, mul(L, mul(DIM, DIM)));          /* wq */
    floats = add(floats, mul(2 * L, mul(kv_dim, DIM)));   /* wk, wv */
    floats = add(floats, mul(L, mul(DIM, DIM)));          /* wo */
    floats = add(floats, mul(L, DIM));                    /* rms_ffn */
    floats = add(floats, mul(3 * L, mul(HIDDEN, DIM)));   /* w1, w2, w3 */
    floats = add(floats, DIM);                            /* rms_final */
    floats = add(floats, mul(2, mul(SEQ_LEN, hs / 2)));   /* freq_cis */
    floats = add(floats, separate ? mul(VOCAB, DIM) : 0); /* wcls */
    const size_t bytes = add(HEADER_BYTES, mul(floats, 4));
    uint8_t *file = malloc(bytes);
    assert_non_null(file);
    const int32_t header[7] = {DIM,    HIDDEN,   LAYERS,
                               HEADS,  KV_HEADS, separate ? -VOCAB : VOCAB,
                               SEQ_LEN};
    for (int i = 0; i < 7; i++)
        put_u32(file + 4 * i, (uint32_t)header[i]);
    uint64_t rng = seed;
    writer w = {file + HEADER_BYTES, file + bytes, &rng};
    const float a_dim = sqrtf(3.0f / DIM), a_hid = sqrtf(3.0f / HIDDEN);
    put_floats(&w, mul(VOCAB, DIM), -0.5f, 0.5f);
    put_floats(&w, mul(L, DIM), 0.5f, 1.5f);
    put_floats(&w, mul(L, mul(DIM, DIM)), -1.5f * a_dim, 1.5f * a_dim);
    put_floats(&w, mul(L, mul(kv_dim, DIM)), -1.5f * a_dim, 1.5f * a_dim);
    put_floats(&w, mul(L, mul(kv_dim, DIM)), -a_dim, a_dim);
    put_floats(&w, mul(L, mul(DIM, DIM)), -a_dim, a_dim);
    put_floats(&w, mul(L, DIM), 0.5f, 1.5f);
    put_floats(&w, mul(L, mul(HIDDEN, DIM)), -a_dim, a_dim);
    put_floats(&w, mul(L, mul(DIM, HIDDEN)), -a_hid, a_hid);
    put_floats(&w, mul(L, mul(HIDDEN, DIM)), -a_dim, a_dim);
    put_floats(&w, DIM, 0.5f, 1.5f);
    put_floats(&w, mul(2, mul(SEQ_LEN, hs / 2)), -1.0f, 1.0f);
    if (separate)
        put_floats(&w, mul(VOCAB, DIM), -0.5f, 0.5f);
    assert_ptr_equal(w.at, w.end);
    slm_test_write_temp(file, bytes, buf, cap);
    free(file);
}

/* --- the reference: its own reader and a double forward pass --- */

typedef struct {
    int dim, hidden, layers, heads, kv_heads, vocab, seq_len;
    int head_size, kv_dim;
    bool separate;
    double *all;             /* every float of the file, in order */
    const double *emb;       /* (vocab, dim) */
    const double *rms_att;   /* (layers, dim) */
    const double *wq;        /* (layers, dim, dim) */
    const double *wk;        /* (layers, kv_dim, dim) */
    const double *wv;        /* (layers, kv_dim, dim) */
    const double *wo;        /* (layers, dim, dim) */
    const double *rms_ffn;   /* (layers, dim) */
    const double *w1;        /* (layers, hidden, dim) */
    const double *w2;        /* (layers, dim, hidden) */
    const double *w3;        /* (layers, hidden, dim) */
    const double *rms_final; /* (dim) */
    const double *cls;       /* (vocab, dim): wcls, or emb when shared */
} ref_model;

/* The next n doubles of the model, checked against the count read. */
static const double *take(const ref_model *m, size_t *at, size_t total,
                          size_t n)
{
    assert_true(n <= total - *at);
    const double *p = m->all + *at;
    *at += n;
    return p;
}

static int32_t header_field(const uint8_t *b, int i, int32_t lo, int32_t hi)
{
    uint32_t u = get_u32(b + 4 * i);
    int32_t v;
    memcpy(&v, &u, sizeof v);
    assert_true(v >= lo && v <= hi);
    return v;
}

/* Reads the model at path: the header checked against small limits and
 * the file's size, then every float widened to double. */
static void ref_load(const char *path, ref_model *m)
{
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    const long len = ftell(f);
    assert_true(len >= HEADER_BYTES && len <= MAX_FILE_BYTES);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    uint8_t *b = malloc((size_t)len);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    assert_int_equal(fclose(f), 0);

    m->dim = header_field(b, 0, 2, 4096);
    m->hidden = header_field(b, 1, 1, 16384);
    m->layers = header_field(b, 2, 1, 64);
    m->heads = header_field(b, 3, 1, 256);
    m->kv_heads = header_field(b, 4, 1, m->heads);
    const int32_t v = header_field(b, 5, -(1 << 20), 1 << 20);
    m->separate = v < 0;
    m->vocab = v < 0 ? -v : v;
    m->seq_len = header_field(b, 6, 1, 4096);
    assert_true(m->vocab >= 1);
    assert_int_equal(m->dim % m->heads, 0);
    assert_int_equal(m->heads % m->kv_heads, 0);
    m->head_size = m->dim / m->heads;
    assert_int_equal(m->head_size % 2, 0);
    m->kv_dim = m->head_size * m->kv_heads;

    const size_t D = (size_t)m->dim, H = (size_t)m->hidden;
    const size_t L = (size_t)m->layers, V = (size_t)m->vocab;
    const size_t KV = (size_t)m->kv_dim;
    const size_t total = ((size_t)len - HEADER_BYTES) / 4;
    assert_int_equal(((size_t)len - HEADER_BYTES) % 4, 0);
    m->all = malloc(mul(total, sizeof(double)));
    assert_non_null(m->all);
    for (size_t i = 0; i < total; i++) {
        uint32_t u = get_u32(b + HEADER_BYTES + 4 * i);
        float x;
        memcpy(&x, &u, sizeof x);
        m->all[i] = (double)x;
    }
    free(b);
    size_t at = 0;
    m->emb = take(m, &at, total, mul(V, D));
    m->rms_att = take(m, &at, total, mul(L, D));
    m->wq = take(m, &at, total, mul(L, mul(D, D)));
    m->wk = take(m, &at, total, mul(L, mul(KV, D)));
    m->wv = take(m, &at, total, mul(L, mul(KV, D)));
    m->wo = take(m, &at, total, mul(L, mul(D, D)));
    m->rms_ffn = take(m, &at, total, mul(L, D));
    m->w1 = take(m, &at, total, mul(L, mul(H, D)));
    m->w2 = take(m, &at, total, mul(L, mul(D, H)));
    m->w3 = take(m, &at, total, mul(L, mul(H, D)));
    m->rms_final = take(m, &at, total, D);
    (void)take(m, &at, total,
               mul(2, mul((size_t)m->seq_len, (size_t)m->head_size / 2)));
    m->cls = m->separate ? take(m, &at, total, mul(V, D)) : m->emb;
    assert_int_equal(at, total); /* the file ends where the last tensor does */
}

static void ref_free(ref_model *m)
{
    free(m->all);
    m->all = NULL;
}

/* out = weight * x / sqrt(mean(x^2) + eps), eps = 1e-5: llama2.c's
 * constant, which its header has no room to change. */
static void rmsnorm(double *out, const double *x, const double *weight, int n)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    const double s = 1.0 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++)
        out[i] = weight[i] * (s * x[i]);
}

/* out(rows) = W(rows, cols) x(cols) */
static void matvec(double *out, const double *w, const double *x, int rows,
                   int cols)
{
    for (int r = 0; r < rows; r++) {
        double s = 0.0;
        for (int c = 0; c < cols; c++)
            s += w[(size_t)r * cols + c] * x[c];
        out[r] = s;
    }
}

/* RoPE as llama2.c applies it: within each head of vec(n), the adjacent
 * pair (2i, 2i+1) turns by pos * 10000^(-2i / head_size). */
static void rope(double *vec, int n, int head_size, int pos)
{
    for (int j = 0; j < n; j += 2) {
        const int i2 = j % head_size; /* 2i */
        const double angle = pos * pow(10000.0, -(double)i2 / head_size);
        const double c = cos(angle), s = sin(angle);
        const double a = vec[j], b = vec[j + 1];
        vec[j] = a * c - b * s;
        vec[j + 1] = a * s + b * c;
    }
}

/* Feeds tokens(n) at positions 0..n-1; row p of logits(n, vocab) is what
 * follows token p with the model's classifier, and of emb_logits the same
 * with the embedding in its place (equal when they are shared). */
static void ref_forward(const ref_model *m, const int32_t *tokens, int n,
                        double *logits, double *emb_logits)
{
    const int D = m->dim, H = m->hidden, KV = m->kv_dim, hs = m->head_size;
    const int group = m->heads / m->kv_heads; /* query heads per kv head */
    const size_t cache = mul((size_t)m->layers, mul((size_t)n, (size_t)KV));
    double *x = calloc((size_t)D, sizeof *x);
    double *xb = calloc((size_t)D, sizeof *xb);
    double *q = calloc((size_t)D, sizeof *q);
    double *att_out = calloc((size_t)D, sizeof *att_out);
    double *delta = calloc((size_t)D, sizeof *delta);
    double *h1 = calloc((size_t)H, sizeof *h1);
    double *h3 = calloc((size_t)H, sizeof *h3);
    double *att = calloc((size_t)n, sizeof *att);
    double *keys = calloc(cache, sizeof *keys); /* (layers, n, kv_dim) */
    double *vals = calloc(cache, sizeof *vals); /* (layers, n, kv_dim) */
    assert_true(x && xb && q && att_out && delta && h1 && h3 && att && keys &&
                vals);
    for (int pos = 0; pos < n; pos++) {
        assert_true(tokens[pos] >= 0 && tokens[pos] < m->vocab);
        memcpy(x, m->emb + (size_t)tokens[pos] * D, (size_t)D * sizeof *x);
        for (int l = 0; l < m->layers; l++) {
            /* attention: x += wo attn(rope(wq xb), rope(wk xb), wv xb) */
            rmsnorm(xb, x, m->rms_att + (size_t)l * D, D);
            double *k = keys + ((size_t)l * n + pos) * KV;
            double *v = vals + ((size_t)l * n + pos) * KV;
            matvec(q, m->wq + (size_t)l * D * D, xb, D, D);
            matvec(k, m->wk + (size_t)l * KV * D, xb, KV, D);
            matvec(v, m->wv + (size_t)l * KV * D, xb, KV, D);
            rope(q, D, hs, pos);
            rope(k, KV, hs, pos);
            for (int h = 0; h < m->heads; h++) {
                const double *qh = q + h * hs;
                const int kvh = h / group;
                double top = -INFINITY;
                for (int t = 0; t <= pos; t++) { /* causal: up to pos */
                    const double *kt =
                        keys + ((size_t)l * n + t) * KV + kvh * hs;
                    double s = 0.0;
                    for (int i = 0; i < hs; i++)
                        s += qh[i] * kt[i];
                    att[t] = s / sqrt((double)hs);
                    top = fmax(top, att[t]);
                }
                double sum = 0.0;
                for (int t = 0; t <= pos; t++) {
                    att[t] = exp(att[t] - top);
                    sum += att[t];
                }
                double *oh = att_out + h * hs;
                for (int i = 0; i < hs; i++)
                    oh[i] = 0.0;
                for (int t = 0; t <= pos; t++) {
                    const double *vt =
                        vals + ((size_t)l * n + t) * KV + kvh * hs;
                    for (int i = 0; i < hs; i++)
                        oh[i] += att[t] / sum * vt[i];
                }
            }
            matvec(delta, m->wo + (size_t)l * D * D, att_out, D, D);
            for (int i = 0; i < D; i++)
                x[i] += delta[i];

            /* SwiGLU: x += w2 (silu(w1 xb) * w3 xb) */
            rmsnorm(xb, x, m->rms_ffn + (size_t)l * D, D);
            matvec(h1, m->w1 + (size_t)l * H * D, xb, H, D);
            matvec(h3, m->w3 + (size_t)l * H * D, xb, H, D);
            for (int i = 0; i < H; i++)
                h1[i] = h1[i] / (1.0 + exp(-h1[i])) * h3[i];
            matvec(delta, m->w2 + (size_t)l * D * H, h1, D, H);
            for (int i = 0; i < D; i++)
                x[i] += delta[i];
        }
        rmsnorm(xb, x, m->rms_final, D);
        matvec(logits + (size_t)pos * m->vocab, m->cls, xb, m->vocab, D);
        matvec(emb_logits + (size_t)pos * m->vocab, m->emb, xb, m->vocab, D);
    }
    free(x);
    free(xb);
    free(q);
    free(att_out);
    free(delta);
    free(h1);
    free(h3);
    free(att);
    free(keys);
    free(vals);
}

/* --- comparison --- */

/* ||a - b||_2 / ||b||_2 over n values. */
static double rel_l2(const float *a, const double *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)a[i] - b[i];
        num += e * e;
        den += b[i] * b[i];
    }
    return sqrt(num) / sqrt(den);
}

static double rel_l2_d(const double *a, const double *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num) / sqrt(den);
}

/* Every row of got(POSITIONS, VOCAB) within REL_BOUND of want. Where the
 * reference's top two logits are more than 2 * REL_BOUND * ||want||_2
 * apart, the bound itself implies the same argmax (no logit moves by more
 * than ||error||_2), so it is asserted there; most rows must be such rows,
 * or the argmax check would be empty. Returns the worst row's error. */
static double expect_rows_close(const char *what, const float *got,
                                const double *want)
{
    double worst = 0.0;
    int clear = 0;
    for (int p = 0; p < POSITIONS; p++) {
        const float *g = got + (size_t)p * VOCAB;
        const double *w = want + (size_t)p * VOCAB;
        const double rel = rel_l2(g, w, VOCAB);
        if (!(rel < REL_BOUND))
            fail_msg("%s: row %d: relative error %.3g (bound %.0e)", what, p,
                     rel, REL_BOUND);
        worst = fmax(worst, rel);
        int best = 0, second = -1, ours = 0;
        double norm = 0.0;
        for (int i = 0; i < VOCAB; i++) {
            norm += w[i] * w[i];
            if (g[i] > g[ours])
                ours = i;
            if (w[i] > w[best]) {
                second = best;
                best = i;
            } else if (i != best && (second < 0 || w[i] > w[second])) {
                second = i;
            }
        }
        if (w[best] - w[second] > 2.0 * REL_BOUND * sqrt(norm)) {
            clear++;
            assert_int_equal(ours, best);
        }
    }
    assert_true(clear >= POSITIONS / 2);
    print_message("%s: worst row relative error %.3g, argmax checked on %d "
                  "of %d rows\n",
                  what, worst, clear, POSITIONS);
    return worst;
}

/* --- the engine, one process --- */

static void tokens_for(uint64_t seed, int32_t *tokens)
{
    uint64_t rng = seed;
    tokens[0] = 1;
    for (int p = 1; p < POSITIONS; p++)
        tokens[p] = (int32_t)(slm_test_rand_u64(&rng) % VOCAB);
}

/* Our logits for tokens, the whole model in this process: borrowed from
 * the mapping (what `generate` runs) or copied into panels (what a CPU
 * shard runs). */
static void engine_logits(const char *path, bool panels, const int32_t *tokens,
                          float *out)
{
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL;
    assert_int_equal(slm_checkpoint_open(path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    const slm_model_config *cfg = slm_checkpoint_config(ck);
    assert_int_equal(cfg->vocab_size, VOCAB);
    if (panels) {
        const slm_shard_slice whole = slm_shard_slice_whole(cfg);
        assert_int_equal(slm_shard_weights_load(ck, &whole, true, true,
                                                SLM_SLICE_PANELS, &w),
                         SLM_OK);
    } else {
        assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
    }
    assert_int_equal(slm_transformer_create(w, NULL, &t), SLM_OK);
    for (int p = 0; p < POSITIONS; p++) {
        const float *logits = NULL;
        assert_int_equal(slm_transformer_forward(t, tokens[p], p, &logits),
                         SLM_OK);
        memcpy(out + (size_t)p * VOCAB, logits, VOCAB * sizeof *out);
    }
    slm_transformer_destroy(&t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
}

/* Writes the model, checks its classifier is what the case says, and
 * compares the engine (borrowed and panels) with the reference. *ref and
 * *emb_ref (POSITIONS, VOCAB) are the reference's logits with the model's
 * classifier and with the embedding; the caller frees them. */
static void check_model(bool separate, uint64_t seed, const int32_t *tokens,
                        char *path, size_t cap, double **ref, double **emb_ref)
{
    write_model(separate, seed, path, cap);
    ref_model m;
    ref_load(path, &m);
    assert_int_equal(m.separate, separate);
    const size_t n = mul(POSITIONS, VOCAB);
    *ref = malloc(mul(n, sizeof **ref));
    *emb_ref = malloc(mul(n, sizeof **emb_ref));
    float *got = malloc(mul(n, sizeof *got));
    assert_true(*ref && *emb_ref && got);
    ref_forward(&m, tokens, POSITIONS, *ref, *emb_ref);
    ref_free(&m);

    slm_checkpoint_t *ck = NULL;
    assert_int_equal(slm_checkpoint_open(path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    assert_int_equal(slm_checkpoint_config(ck)->shared_classifier, !separate);
    slm_checkpoint_destroy(&ck);

    engine_logits(path, false, tokens, got);
    expect_rows_close(separate ? "separate, borrowed" : "tied, borrowed", got,
                      *ref);
    engine_logits(path, true, tokens, got);
    expect_rows_close(separate ? "separate, panels" : "tied, panels", got,
                      *ref);
    free(got);
}

static void test_separate_classifier_matches_reference(void **state)
{
    (void)state;
    int32_t tokens[POSITIONS];
    tokens_for(11, tokens);
    char path[4096];
    double *ref = NULL, *emb_ref = NULL;
    check_model(true, 0x5eed, tokens, path, sizeof path, &ref, &emb_ref);
    /* The case must tell the classifiers apart: were the engine to use
     * the embedding, it would land here, far outside REL_BOUND. */
    double closest = INFINITY;
    for (int p = 0; p < POSITIONS; p++)
        closest = fmin(closest, rel_l2_d(emb_ref + (size_t)p * VOCAB,
                                         ref + (size_t)p * VOCAB, VOCAB));
    print_message("embedding instead of wcls: relative distance >= %.3g\n",
                  closest);
    assert_true(closest > DISTINCT_BOUND);
    free(ref);
    free(emb_ref);
    assert_int_equal(unlink(path), 0);
}

/* The control: a shared classifier, where the embedding is right. */
static void test_tied_classifier_matches_reference(void **state)
{
    (void)state;
    int32_t tokens[POSITIONS];
    tokens_for(12, tokens);
    char path[4096];
    double *ref = NULL, *emb_ref = NULL;
    check_model(false, 0x7ead, tokens, path, sizeof path, &ref, &emb_ref);
    assert_memory_equal(ref, emb_ref, mul(POSITIONS * VOCAB, sizeof *ref));
    free(ref);
    free(emb_ref);
    assert_int_equal(unlink(path), 0);
}

/* --- the engine, two tensor ranks in one process ---
 *
 * A communicator for two threads (the backend interface of comm_impl.h):
 * all-reduce (f32 sum) and the uneven all-gather are all the forward pass
 * of one stage calls; the rest are refused. Each rank publishes its send
 * buffer, waits for the other, reads both, and waits again before either
 * buffer may change. Both ranks run the same steps, so a failure the
 * transformer checks for happens on both before any collective; a rank
 * failing alone would leave its peer waiting (ctest's timeout reports it).
 */

typedef struct {
    pthread_barrier_t barrier;
    const void *send[2];
} pair_shared;

typedef struct {
    struct slm_comm base; /* first: comm.c reads it */
    pair_shared *sh;      /* borrowed from the test */
} pair_comm;

static slm_status pair_all_reduce(slm_comm_t *comm, const void *send,
                                  void *recv, size_t count, slm_dtype dt,
                                  slm_redop op, void *stream)
{
    (void)stream;
    pair_shared *sh = ((pair_comm *)comm)->sh;
    if (dt != SLM_DTYPE_F32 || op != SLM_REDOP_SUM)
        return slm_fail(SLM_ERR_INVALID, "pair comm: f32 sum only");
    float *sum = malloc(count * sizeof *sum); /* count <= max_count */
    sh->send[comm->rank] = send;
    pthread_barrier_wait(&sh->barrier);
    if (sum) {
        const float *a = sh->send[0], *b = sh->send[1];
        for (size_t i = 0; i < count; i++)
            sum[i] = a[i] + b[i];
    }
    pthread_barrier_wait(&sh->barrier);
    if (!sum)
        return slm_fail(SLM_ERR_NOMEM, "pair comm: out of memory");
    memcpy(recv, sum, count * sizeof *sum);
    free(sum);
    return SLM_OK;
}

static slm_status pair_all_gather_v(slm_comm_t *comm, const void *send,
                                    void *recv, const size_t *counts,
                                    slm_dtype dt, bool in_place, void *stream)
{
    (void)dt; /* both dtypes are 4 bytes */
    (void)stream;
    pair_shared *sh = ((pair_comm *)comm)->sh;
    sh->send[comm->rank] = send;
    pthread_barrier_wait(&sh->barrier);
    size_t at = 0;
    for (int r = 0; r < 2; r++) {
        if (counts[r] && !(r == comm->rank && in_place))
            memcpy((char *)recv + at * 4, sh->send[r], counts[r] * 4);
        at += counts[r];
    }
    pthread_barrier_wait(&sh->barrier);
    return SLM_OK;
}

static slm_status pair_refuse(void)
{
    return slm_fail(SLM_ERR_INVALID, "pair comm: not a one-stage collective");
}

static slm_status pair_all_gather(slm_comm_t *c, const void *s, void *r,
                                  size_t n, slm_dtype dt, bool ip, void *st)
{
    (void)c, (void)s, (void)r, (void)n, (void)dt, (void)ip, (void)st;
    return pair_refuse();
}

static slm_status pair_broadcast(slm_comm_t *c, const void *s, void *r,
                                 size_t n, slm_dtype dt, int root, void *st)
{
    (void)c, (void)s, (void)r, (void)n, (void)dt, (void)root, (void)st;
    return pair_refuse();
}

static slm_status pair_send(slm_comm_t *c, const void *b, size_t n,
                            slm_dtype dt, int peer, void *st)
{
    (void)c, (void)b, (void)n, (void)dt, (void)peer, (void)st;
    return pair_refuse();
}

static slm_status pair_recv(slm_comm_t *c, void *b, size_t n, slm_dtype dt,
                            int peer, void *st)
{
    (void)c, (void)b, (void)n, (void)dt, (void)peer, (void)st;
    return pair_refuse();
}

static slm_status pair_split(slm_comm_t *c, int color, int key,
                             slm_comm_t **out)
{
    (void)c, (void)color, (void)key, (void)out;
    return pair_refuse();
}

static void pair_destroy(slm_comm_t *comm)
{
    free(comm);
}

static void pair_abort(slm_comm_t *comm, const char *why)
{
    (void)comm, (void)why;
}

static const slm_comm_ops pair_ops = {
    .name = "pair",
    .all_reduce = pair_all_reduce,
    .all_gather = pair_all_gather,
    .all_gather_v = pair_all_gather_v,
    .broadcast = pair_broadcast,
    .send = pair_send,
    .recv = pair_recv,
    .split = pair_split,
    .destroy = pair_destroy,
    .abort = pair_abort,
};

typedef struct {
    const slm_shard_weights_t *w; /* this rank's slice */
    const slm_plan_t *plan;
    slm_comm_t *comm;
    const int32_t *tokens; /* (POSITIONS) */
    float *out;            /* (POSITIONS, VOCAB) */
    slm_status rc;
    char why[256]; /* the message when rc fails (cmocka asserts only on
                      the main thread) */
} rank_job;

static void *run_rank(void *arg)
{
    rank_job *j = arg;
    const slm_shard_links links = {j->plan, j->comm, NULL};
    slm_transformer_t *t = NULL;
    j->rc = slm_transformer_create(j->w, &links, &t);
    for (int p = 0; p < POSITIONS && j->rc == SLM_OK; p++) {
        const float *logits = NULL;
        j->rc = slm_transformer_forward(t, j->tokens[p], p, &logits);
        if (j->rc == SLM_OK)
            memcpy(j->out + (size_t)p * VOCAB, logits, VOCAB * sizeof *j->out);
    }
    if (j->rc != SLM_OK)
        snprintf(j->why, sizeof j->why, "%s", slm_error_message());
    slm_transformer_destroy(&t);
    return NULL;
}

/* TP = 2, as a cluster's two shards load and run it (panels, copied
 * slices: each rank holds half the heads, hidden units and classifier
 * rows, 159 and 158 of them): every rank's gathered logits are the
 * reference's. */
static void test_separate_classifier_tp2_matches_reference(void **state)
{
    (void)state;
    int32_t tokens[POSITIONS];
    tokens_for(13, tokens);
    char path[4096];
    write_model(true, 0x2a2a, path, sizeof path);
    ref_model m;
    ref_load(path, &m);
    const size_t n = mul(POSITIONS, VOCAB);
    double *ref = malloc(mul(n, sizeof *ref));
    double *emb_ref = malloc(mul(n, sizeof *emb_ref));
    float *got[2] = {malloc(mul(n, sizeof(float))),
                     malloc(mul(n, sizeof(float)))};
    assert_true(ref && emb_ref && got[0] && got[1]);
    ref_forward(&m, tokens, POSITIONS, ref, emb_ref);
    ref_free(&m);

    slm_checkpoint_t *ck = NULL;
    slm_plan_t *plan = NULL;
    assert_int_equal(slm_checkpoint_open(path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    assert_false(slm_checkpoint_config(ck)->shared_classifier);
    assert_int_equal(slm_plan_create(slm_checkpoint_config(ck), 2, 1, &plan),
                     SLM_OK);
    pair_shared sh = {0};
    assert_int_equal(pthread_barrier_init(&sh.barrier, NULL, 2), 0);
    slm_shard_weights_t *w[2] = {NULL, NULL};
    slm_comm_t *comm[2] = {NULL, NULL};
    rank_job jobs[2];
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        const slm_shard_slice *slice = slm_plan_slice(plan, r);
        assert_int_equal(slice->vocab.count, r == 0 ? 159 : 158);
        assert_int_equal(slm_shard_weights_load(ck, slice, true, true,
                                                SLM_SLICE_PANELS, &w[r]),
                         SLM_OK);
        pair_comm *pc = calloc(1, sizeof *pc);
        assert_non_null(pc);
        slm__comm_init(&pc->base, &pair_ops, r, 2, (size_t)1 << 30);
        pc->sh = &sh;
        comm[r] = &pc->base;
        jobs[r] = (rank_job){w[r], plan, comm[r], tokens, got[r], SLM_OK, ""};
    }
    for (int r = 0; r < 2; r++)
        assert_int_equal(pthread_create(&th[r], NULL, run_rank, &jobs[r]), 0);
    for (int r = 0; r < 2; r++)
        assert_int_equal(pthread_join(th[r], NULL), 0);
    for (int r = 0; r < 2; r++)
        if (jobs[r].rc != SLM_OK)
            fail_msg("rank %d: %s", r, jobs[r].why);
    expect_rows_close("separate, tp=2", got[0], ref);
    assert_memory_equal(got[0], got[1], mul(n, sizeof(float)));

    for (int r = 0; r < 2; r++) {
        slm_comm_destroy(&comm[r]);
        slm_shard_weights_destroy(&w[r]);
        free(got[r]);
    }
    assert_int_equal(pthread_barrier_destroy(&sh.barrier), 0);
    slm_plan_destroy(&plan);
    slm_checkpoint_destroy(&ck);
    free(ref);
    free(emb_ref);
    assert_int_equal(unlink(path), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_separate_classifier_matches_reference),
        cmocka_unit_test(test_tied_classifier_matches_reference),
        cmocka_unit_test(test_separate_classifier_tp2_matches_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
