/*
 * tests/fuzz/fuzz_checkpoint.c - libFuzzer target for the llama2.c checkpoint
 * parser: header validation and the tensor table.
 *
 * Input: the whole checkpoint file. It goes through exactly the call the
 * loader makes on a mapped file, slm_checkpoint_parse_header(data, size,
 * size, ...), so the fuzzed code is the loading code. A refusal must say why
 * and leave the config untouched. The verdict is compared with the format's
 * rules restated here (field limits, divisibility, even head size, and the
 * file size the fields imply): the parse must accept exactly the files they
 * allow. A mutated file rarely has exactly the size its header implies, so
 * a header with positive fields is also parsed against the size it implies
 * (the parse reads only the header; the size is an argument): refused if the
 * rules forbid it, else accepted for that size and not one byte either side,
 * and then put through every check below that needs no weights. So missing
 * range, divisibility or parity checks show up, and the plans see many
 * configs, though most inputs are short. A file that is accepted must
 * satisfy what the loader and the shards rely on:
 *   - every config field within its limit, the derived fields consistent,
 *     and the header round-trips through slm_checkpoint_encode_header;
 *   - the optional tensors of other formats (q/k/v biases, q/k norms) are
 *     absent (no layers), and the config claims none;
 *   - the tensor table describes exactly the file: slm_checkpoint_file_size
 *     is the input size, the tensors are laid out back to back in file order
 *     from byte 28 to the end, and wcls aliases the embedding iff the
 *     classifier is shared;
 *   - the first and last float of every (rows, cols) matrix of every layer is
 *     read from the input buffer, so ASan checks the table's bounds;
 *   - the same bytes, written to a memfd and opened by path with
 *     slm_checkpoint_open (mapped, then resident), give the same config and
 *     table, and slm_checkpoint_tensor points at the same bytes, inside
 *     slm_checkpoint_bytes, for every layer;
 *   - the partition plan of the config, for tp in 1..4 and pp in
 *     1..min(n_layers, 4) + 1: accepted exactly when plan.h's rules allow,
 *     and then every slice is in range, the slices tile layers, heads,
 *     hidden columns and vocabulary rows, and every query head's kv head is
 *     on the same rank; slm_plan_describe never overruns a small buffer.
 * Opening costs a memfd, a file mapping per mode and a huge-page copy, so
 * only accepted inputs take that path; refused ones stop at the parse, where
 * the loader stops too.
 *
 * Build (bash): clang -g -fsanitize=fuzzer,address,undefined -I. \
 *   tests/fuzz/fuzz_checkpoint.c model/{checkpoint,plan}.c \
 *   common/{status,reader,file,hugemem}.c -o fuzz_checkpoint
 * Seeds: tests/fuzz/corpus/checkpoint/ (tiny valid checkpoints, shared and
 * separate classifier, MHA/GQA/MQA; truncated and padded files; headers with
 * extreme fields).
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "model/plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant: say which (and the library's last message, if any),
 * then crash so that libFuzzer keeps the input. */
static void fail(const char *why)
{
    fprintf(stderr, "fuzz_checkpoint: %s (last error: %s)\n", why,
            slm_error_message());
    abort();
}

static void check(int ok, const char *why)
{
    if (!ok)
        fail(why);
}

/* Bytes of one (rows, cols) float matrix; cannot overflow once the table was
 * accepted for a buffer of `size` bytes (checked again by the caller). */
static uint64_t matrix_bytes(const slm_tensor_info *t)
{
    return t->rows * t->cols * 4;
}

/* Reads the first and last float of every layer's matrix of every tensor
 * from the input buffer, so ASan checks each range. */
static void touch_tensors(const uint8_t *data, size_t size,
                          const slm_tensor_info table[SLM_TENSOR_COUNT])
{
    volatile float sink = 0;
    for (int id = 0; id < SLM_TENSOR_COUNT; id++) {
        const slm_tensor_info *t = &table[id];
        if (id >= SLM_TENSOR_BQ) {
            /* The optional tensors (biases, q/k norms) of other formats: a
             * llama2.c file has none, so the table must say so. */
            check(t->name != NULL && t->layers == 0,
                  "a llama2.c table has an optional tensor");
            continue;
        }
        check(t->name != NULL && t->layers >= 1 && t->rows >= 1 && t->cols >= 1,
              "empty tensor in an accepted table");
        uint64_t n = 0, bytes = 0, end = 0;
        check(!__builtin_mul_overflow(t->layers, t->rows, &n) &&
                  !__builtin_mul_overflow(n, t->cols, &n) &&
                  !__builtin_mul_overflow(n, 4, &bytes) &&
                  !__builtin_add_overflow(t->offset, bytes, &end) &&
                  t->offset >= SLM_CHECKPOINT_HEADER_BYTES && end <= size,
              "tensor outside the file");
        for (uint64_t l = 0; l < t->layers; l++) {
            const uint8_t *m = data + t->offset + l * matrix_bytes(t);
            float v;
            memcpy(&v, m, sizeof v);
            sink += v;
            memcpy(&v, m + matrix_bytes(t) - sizeof v, sizeof v);
            sink += v;
        }
    }
    (void)sink;
}

/* The table must be the file's tensors back to back, in file order. */
static void check_layout(const slm_model_config *c, uint64_t size,
                         const slm_tensor_info table[SLM_TENSOR_COUNT])
{
    static const slm_tensor_id order[] = {
        SLM_TENSOR_TOKEN_EMBEDDING,
        SLM_TENSOR_RMS_ATT,
        SLM_TENSOR_WQ,
        SLM_TENSOR_WK,
        SLM_TENSOR_WV,
        SLM_TENSOR_WO,
        SLM_TENSOR_RMS_FFN,
        SLM_TENSOR_W1,
        SLM_TENSOR_W2,
        SLM_TENSOR_W3,
        SLM_TENSOR_RMS_FINAL,
        SLM_TENSOR_FREQ_CIS_REAL,
        SLM_TENSOR_FREQ_CIS_IMAG,
        SLM_TENSOR_WCLS,
    };
    uint64_t off = SLM_CHECKPOINT_HEADER_BYTES;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const slm_tensor_info *t = &table[order[i]];
        if (order[i] == SLM_TENSOR_WCLS && c->shared_classifier) {
            check(t->offset == table[SLM_TENSOR_TOKEN_EMBEDDING].offset,
                  "shared wcls does not alias the embedding");
            continue;
        }
        check(t->offset == off, "tensors are not back to back");
        /* Cannot wrap: within the header limits every tensor is < 2^47. */
        off += t->layers * matrix_bytes(t);
    }
    check(off == size, "the table does not end at the end of the file");
    const slm_tensor_info *e = &table[SLM_TENSOR_TOKEN_EMBEDDING];
    const slm_tensor_info *wk = &table[SLM_TENSOR_WK];
    const slm_tensor_info *w2 = &table[SLM_TENSOR_W2];
    check(e->rows == (uint64_t)c->vocab_size && e->cols == (uint64_t)c->dim &&
              wk->layers == (uint64_t)c->n_layers &&
              wk->rows == (uint64_t)c->kv_dim && w2->rows == (uint64_t)c->dim &&
              w2->cols == (uint64_t)c->hidden_dim,
          "tensor shapes do not match the config");
}

static void check_config(const slm_model_config *c, const uint8_t *data)
{
    check(c->dim >= 1 && c->dim <= SLM_MAX_DIM && c->hidden_dim >= 1 &&
              c->hidden_dim <= SLM_MAX_HIDDEN && c->n_layers >= 1 &&
              c->n_layers <= SLM_MAX_LAYERS && c->n_heads >= 1 &&
              c->n_heads <= SLM_MAX_HEADS && c->n_kv_heads >= 1 &&
              c->n_kv_heads <= c->n_heads && c->vocab_size >= 3 &&
              c->vocab_size <= SLM_MAX_VOCAB && c->seq_len >= 1 &&
              c->seq_len <= SLM_MAX_SEQ_LEN,
          "accepted config field out of range");
    check(c->dim % c->n_heads == 0 && c->n_heads % c->n_kv_heads == 0 &&
              c->head_size == c->dim / c->n_heads && c->head_size % 2 == 0 &&
              c->kv_dim == c->head_size * c->n_kv_heads,
          "accepted config has inconsistent derived fields");
    check(!c->qkv_bias && !c->qk_norm,
          "a llama2.c config claims biases or q/k norms");
    uint8_t header[SLM_CHECKPOINT_HEADER_BYTES];
    slm_checkpoint_encode_header(c, header);
    check(memcmp(header, data, sizeof header) == 0,
          "the header does not round-trip");
}

static int same_config(const slm_model_config *a, const slm_model_config *b)
{
    /* Field by field: the struct has padding after shared_classifier. */
    return a->dim == b->dim && a->hidden_dim == b->hidden_dim &&
           a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->vocab_size == b->vocab_size &&
           a->seq_len == b->seq_len &&
           a->shared_classifier == b->shared_classifier &&
           a->head_size == b->head_size && a->kv_dim == b->kv_dim;
}

/* Opens the same bytes the way a shard does, through a path, and checks
 * that the loader agrees with the parse and that slm_checkpoint_tensor
 * points at the bytes the table names. */
static void check_open(const uint8_t *data, size_t size,
                       const slm_model_config *cfg,
                       const slm_tensor_info table[SLM_TENSOR_COUNT])
{
    int fd = memfd_create("fuzz_checkpoint", MFD_CLOEXEC);
    check(fd >= 0, "memfd_create failed");
    for (size_t done = 0; done < size;) {
        ssize_t n = write(fd, data + done, size - done);
        check(n > 0, "write to the memfd failed");
        done += (size_t)n;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    for (int mode = 0; mode < 2; mode++) {
        slm_checkpoint_t *ck = NULL;
        check(slm_checkpoint_open(
                  path, mode ? SLM_WEIGHTS_RESIDENT : SLM_WEIGHTS_MAPPED,
                  &ck) == SLM_OK,
              "open refused a file the parse accepted");
        check(slm_checkpoint_bytes(ck) == size, "open: wrong size");
        check(same_config(slm_checkpoint_config(ck), cfg),
              "open: config differs from the parse");
        const uint8_t *base = NULL;
        for (int id = 0; id < SLM_TENSOR_COUNT; id++) {
            const slm_tensor_info *t = slm_checkpoint_tensor_info(ck, id);
            check(t->offset == table[id].offset &&
                      t->layers == table[id].layers &&
                      t->rows == table[id].rows && t->cols == table[id].cols,
                  "open: tensor table differs from the parse");
            if (id == SLM_TENSOR_TOKEN_EMBEDDING)
                base = (const uint8_t *)slm_checkpoint_tensor(ck, id, 0) -
                       t->offset;
            for (uint64_t l = 0; l < t->layers; l++) {
                const uint8_t *m =
                    (const uint8_t *)slm_checkpoint_tensor(ck, id, l);
                const uint64_t off = t->offset + l * matrix_bytes(t);
                check(m == base + off && off + matrix_bytes(t) <= size,
                      "open: tensor pointer outside its matrix");
                const size_t last = matrix_bytes(t) - 4;
                check(memcmp(m, data + off, 4) == 0 &&
                          memcmp(m + last, data + off + last, 4) == 0,
                      "open: tensor bytes differ from the file");
            }
        }
        slm_checkpoint_destroy(&ck);
        check(ck == NULL, "destroy did not clear the handle");
    }
    close(fd);
}

static void check_tiling(slm_range r, int32_t *next, int32_t total)
{
    check(r.count >= 1 && r.begin == *next && r.count <= total - r.begin,
          "plan: slices do not tile");
    *next = r.begin + r.count;
}

/* plan.h's rules, restated, for the tp and pp the harness tries. */
static int plan_allowed(const slm_model_config *c, int32_t tp, int32_t pp)
{
    return c->n_heads % tp == 0 &&
           (c->n_kv_heads % tp == 0 || tp % c->n_kv_heads == 0) &&
           tp <= c->hidden_dim && tp <= c->vocab_size && pp <= c->n_layers;
}

static void check_plan(const slm_model_config *c, int32_t tp, int32_t pp)
{
    slm_plan_t *p = NULL;
    slm_error_clear();
    if (slm_plan_create(c, tp, pp, &p) != SLM_OK) {
        check(p == NULL && slm_error_message()[0] != '\0',
              "plan: a refusal must leave no plan and say why");
        check(!plan_allowed(c, tp, pp), "plan: refused an allowed split");
        return;
    }
    check(plan_allowed(c, tp, pp), "plan: accepted a forbidden split");
    check(slm_plan_tp(p) == tp && slm_plan_pp(p) == pp &&
              slm_plan_shards(p) == tp * pp,
          "plan: wrong shape");
    const int32_t group = c->n_heads / c->n_kv_heads; /* q heads per kv */
    int32_t next_layer = 0;
    for (int32_t stage = 0; stage < pp; stage++) {
        int32_t next_head = 0, next_hidden = 0, next_vocab = 0;
        for (int32_t r = 0; r < tp; r++) {
            const slm_shard_slice *s = slm_plan_slice(p, stage * tp + r);
            check(s->stage == stage && s->tp_rank == r, "plan: wrong index");
            if (r == 0)
                check_tiling(s->layers, &next_layer, c->n_layers);
            else
                check(s->layers.begin ==
                              slm_plan_slice(p, stage * tp)->layers.begin &&
                          s->layers.count ==
                              slm_plan_slice(p, stage * tp)->layers.count,
                      "plan: a stage's ranks disagree on its layers");
            check_tiling(s->heads, &next_head, c->n_heads);
            check_tiling(s->hidden, &next_hidden, c->hidden_dim);
            check_tiling(s->vocab, &next_vocab, c->vocab_size);
            check(s->kv_heads.count >= 1 && s->kv_heads.begin >= 0 &&
                      s->kv_heads.count <= c->n_kv_heads - s->kv_heads.begin &&
                      s->kv_replicas >= 1,
                  "plan: kv range out of bounds");
            const int32_t first = s->heads.begin / group;
            const int32_t last = (s->heads.begin + s->heads.count - 1) / group;
            check(first >= s->kv_heads.begin &&
                      last < s->kv_heads.begin + s->kv_heads.count,
                  "plan: a query head's kv head is on another rank");
        }
        check(next_head == c->n_heads && next_hidden == c->hidden_dim &&
                  next_vocab == c->vocab_size,
              "plan: a stage does not cover the model");
    }
    check(next_layer == c->n_layers, "plan: the stages miss layers");
    char small[48], big[4096];
    memset(small, 'x', sizeof small);
    slm_plan_describe(p, small, sizeof small);
    check(memchr(small, '\0', sizeof small) != NULL,
          "plan: describe left no terminator");
    slm_plan_describe(p, big, sizeof big);
    check(memchr(big, '\0', sizeof big) != NULL,
          "plan: describe left no terminator");
    slm_plan_destroy(&p);
    check(p == NULL, "plan: destroy did not clear the handle");
}

/* checkpoint.h's header rules and layout, restated independently of
 * checkpoint.c. `valid`: the 7 fields are acceptable. `sized`: the fields
 * are all positive (the vocabulary's sign aside), so the file size that the
 * layout would give them, acceptable or not, is computable; it is `size`
 * when it fits 64 bits. */
typedef struct {
    bool valid;
    bool sized;
    uint64_t size;
} header_rules;

static header_rules apply_rules(const uint8_t *data, size_t size)
{
    header_rules r = {false, false, 0};
    int32_t f[7];
    if (size < SLM_CHECKPOINT_HEADER_BYTES)
        return r;
    memcpy(f, data, sizeof f);
    const int64_t dim = f[0], hidden = f[1], layers = f[2], heads = f[3];
    const int64_t kv = f[4], seq = f[6];
    const int64_t vocab = f[5] < 0 ? -(int64_t)f[5] : f[5];
    r.valid = dim >= 1 && dim <= SLM_MAX_DIM && hidden >= 1 &&
              hidden <= SLM_MAX_HIDDEN && layers >= 1 &&
              layers <= SLM_MAX_LAYERS && heads >= 1 &&
              heads <= SLM_MAX_HEADS && kv >= 1 && kv <= heads && vocab >= 3 &&
              vocab <= SLM_MAX_VOCAB && seq >= 1 && seq <= SLM_MAX_SEQ_LEN &&
              dim % heads == 0 && heads % kv == 0 && (dim / heads) % 2 == 0;
    if (dim < 1 || hidden < 1 || layers < 1 || heads < 1 || kv < 1 ||
        vocab < 1 || seq < 1)
        return r;
    /* 128 bits: fields up to 2^31 make products up to 2^93. */
    typedef unsigned __int128 u128;
    const u128 D = (u128)dim, H = (u128)hidden, L = (u128)layers;
    const u128 V = (u128)vocab, S = (u128)seq;
    const u128 head_size = D / (u128)heads, kv_dim = head_size * (u128)kv;
    const u128 per_layer = D + D * D + 2 * kv_dim * D + D * D + D + 3 * H * D;
    const u128 floats = V * D * (f[5] > 0 ? 1 : 2) + L * per_layer + D +
                        2 * S * (head_size / 2);
    const u128 bytes = SLM_CHECKPOINT_HEADER_BYTES + 4 * floats;
    if (bytes <= UINT64_MAX) {
        r.sized = true;
        r.size = (uint64_t)bytes;
    }
    return r;
}

/* Every tp in 1..4 and pp in 1..min(n_layers + 1, 5): a model of under 5
 * layers also gets a pp it must refuse. */
static void check_plans(const slm_model_config *c)
{
    const int32_t pp_hi = c->n_layers < 4 ? c->n_layers + 1 : 5;
    for (int32_t tp = 1; tp <= 4; tp++)
        for (int32_t pp = 1; pp <= pp_hi; pp++)
            check_plan(c, tp, pp);
}

/* A header in a file of another size than the one its fields imply: parse
 * it again against that size. An acceptable header must be accepted for
 * exactly that size (and then pass every check that needs no weights); any
 * other header must be refused even there, so a missing range, divisibility
 * or parity check shows although the input is only a header. */
static void check_header_at(const uint8_t *data, size_t size, header_rules r)
{
    slm_model_config cfg;
    slm_tensor_info table[SLM_TENSOR_COUNT];
    slm_error_clear();
    const slm_status rc =
        slm_checkpoint_parse_header(data, size, r.size, "fuzz", &cfg, table);
    if (!r.valid) {
        check(rc != SLM_OK && slm_error_message()[0] != '\0',
              "accepted a header the format does not allow");
        return;
    }
    check(rc == SLM_OK, "refused a valid header for the size it implies");
    check_config(&cfg, data);
    check_layout(&cfg, r.size, table);
    check(slm_checkpoint_file_size(&cfg) == r.size, "file_size disagrees");
    check_plans(&cfg);
    check(slm_checkpoint_parse_header(data, size, r.size - 1, "fuzz", &cfg,
                                      table) != SLM_OK &&
              slm_checkpoint_parse_header(data, size, r.size + 1, "fuzz", &cfg,
                                          table) != SLM_OK,
          "accepted a header for the wrong file size");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    slm_model_config cfg, poison;
    slm_tensor_info table[SLM_TENSOR_COUNT];
    memset(&cfg, 0xa5, sizeof cfg); /* must stay untouched on refusal */
    memcpy(&poison, &cfg, sizeof cfg);
    const header_rules rules = apply_rules(data, size);
    const bool allowed = rules.valid && rules.size == size;
    if (rules.sized && rules.size != size)
        check_header_at(data, size, rules);
    slm_error_clear();
    if (slm_checkpoint_parse_header(data, size, size, "fuzz", &cfg, table) !=
        SLM_OK) {
        check(slm_error_message()[0] != '\0', "a refusal must say why");
        check(memcmp(&cfg, &poison, sizeof cfg) == 0,
              "a refusal wrote the config");
        check(!allowed, "refused a valid file");
        return 0;
    }
    check(allowed, "accepted a file the format does not allow");
    check_config(&cfg, data);
    touch_tensors(data, size, table);
    check_layout(&cfg, size, table);
    check(slm_checkpoint_file_size(&cfg) == size, "file_size disagrees");
    check_open(data, size, &cfg, table);
    check_plans(&cfg);
    return 0;
}
