/*
 * tests/fuzz/fuzz_safetensors.c - libFuzzer target for the safetensors
 * parser: the header, the tensor table and the tiling of the data section.
 *
 * Input: a whole .safetensors file. It goes through the call the loader makes
 * on every mapped file, slm_safetensors_parse(data, size, ...). The verdict is
 * compared with safetensors.h's rules restated here (header length, '{',
 * exactly three keys per entry, dtypes, rank and dim limits, offsets that are
 * non-negative integers, sizes in 128-bit arithmetic, exact tiling of the data
 * section, __metadata__ of strings): the parse must accept exactly the files
 * they allow. Only the JSON decoding is shared (jansson, with duplicates
 * refused), since the rules are about the decoded values. A refusal must say
 * why and leave *out alone. An accepted file must also satisfy what the
 * shards rely on:
 *   - the table is in strict name order, find() returns each entry, and each
 *     entry's dtype, shape, element count, size and offset are the header's;
 *   - every tensor lies inside the input (its first and last byte are read,
 *     so ASan checks the bounds) and together they tile the data section;
 *   - the metadata reads back as the header has it;
 *   - slm_safetensors_read_f32 of a corner of every 0-, 1- and 2-D tensor
 *     gives the values of an independent F16/BF16 decoding, and a slice one
 *     past the edge is refused;
 *   - the file one byte shorter and one byte longer is refused (the tiling
 *     is exact, so neither can be valid).
 *
 * Build (bash): clang -g -fsanitize=fuzzer,address,undefined -I. \
 *   tests/fuzz/fuzz_safetensors.c model/safetensors.c kernels/cpu/half.c \
 *   common/{status,file}.c -ljansson -lm -o fuzz_safetensors
 * Seeds: tests/fuzz/corpus/safetensors/ (small valid files of each dtype,
 * with metadata, zero-size and scalar tensors, rank 8; and near-valid ones:
 * overlaps, holes, a trailing byte, truncation, unknown dtypes and keys,
 * duplicates, real and negative offsets, a huge header length).
 */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef unsigned __int128 u128;

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_safetensors: %s (last error: %s)\n", why,
            slm_error_message());
    abort();
}

static void check(int ok, const char *why)
{
    if (!ok)
        fail(why);
}

/* One tensor as the rules see it. */
typedef struct {
    const char *name;
    int dtype; /* slm_st_dtype */
    size_t rank;
    uint64_t shape[SLM_ST_MAX_RANK];
    uint64_t begin, end;
} rule_tensor;

typedef struct {
    bool valid;
    json_t *root; /* the decoded header when it is an object, else NULL */
    size_t base;  /* 8 + N */
    rule_tensor *t;
    size_t n;
} rules;

static bool nonneg_int(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static int dtype_of(const char *s)
{
    if (strcmp(s, "F32") == 0)
        return SLM_ST_F32;
    if (strcmp(s, "F16") == 0)
        return SLM_ST_F16;
    if (strcmp(s, "BF16") == 0)
        return SLM_ST_BF16;
    return -1;
}

static bool entry_ok(const char *name, const json_t *v, size_t dsize,
                     rule_tensor *t)
{
    if (strlen(name) > SLM_ST_MAX_NAME || !json_is_object(v) ||
        json_object_size(v) != 3)
        return false;
    const json_t *dt = json_object_get(v, "dtype");
    const json_t *sh = json_object_get(v, "shape");
    const json_t *of = json_object_get(v, "data_offsets");
    if (!dt || !sh || !of || !json_is_string(dt) ||
        (t->dtype = dtype_of(json_string_value(dt))) < 0)
        return false;
    if (!json_is_array(sh) || json_array_size(sh) > SLM_ST_MAX_RANK)
        return false;
    t->name = name;
    t->rank = json_array_size(sh);
    u128 nonzero = 1, elems = 1;
    for (size_t i = 0; i < t->rank; i++) {
        if (!nonneg_int(json_array_get(sh, i), &t->shape[i]) ||
            t->shape[i] > SLM_ST_MAX_DIM)
            return false;
        /* Cannot wrap: checked below 2^64 at every step, dims < 2^31. */
        elems *= t->shape[i];
        if (t->shape[i])
            nonzero *= t->shape[i];
        if (nonzero > SIZE_MAX)
            return false;
    }
    const u128 bytes = elems * (t->dtype == SLM_ST_F32 ? 4 : 2);
    if (bytes > SIZE_MAX)
        return false;
    if (!json_is_array(of) || json_array_size(of) != 2 ||
        !nonneg_int(json_array_get(of, 0), &t->begin) ||
        !nonneg_int(json_array_get(of, 1), &t->end))
        return false;
    return t->begin <= t->end && t->end <= dsize &&
           t->end - t->begin == (uint64_t)bytes;
}

static int by_range(const void *pa, const void *pb)
{
    const rule_tensor *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    return a->end < b->end ? -1 : a->end > b->end;
}

/* safetensors.h's rules, restated. */
static rules apply_rules(const uint8_t *data, size_t size)
{
    rules r = {false, NULL, 0, NULL, 0};
    if (size < 8)
        return r;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | data[i];
    if (n > SLM_ST_MAX_HEADER_BYTES || n > size - 8 || n == 0 || data[8] != '{')
        return r;
    r.base = 8 + (size_t)n;
    const size_t dsize = size - r.base;
    json_error_t je;
    json_t *root = json_loadb((const char *)data + 8, (size_t)n,
                              JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return r;
    if (!json_is_object(root)) {
        json_decref(root);
        return r;
    }
    r.root = root;
    r.t = calloc(json_object_size(root) + 1, sizeof *r.t);
    check(r.t != NULL, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v))
                return r;
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
            {
                if (!json_is_string(mv))
                    return r;
            }
            continue;
        }
        if (!entry_ok(key, v, dsize, &r.t[r.n]))
            return r;
        r.n++;
    }
    rule_tensor *sorted = malloc((r.n + 1) * sizeof *sorted);
    check(sorted != NULL, "out of memory");
    memcpy(sorted, r.t, r.n * sizeof *sorted);
    qsort(sorted, r.n, sizeof *sorted, by_range);
    uint64_t pos = 0;
    bool tiled = true;
    for (size_t i = 0; i < r.n; i++) {
        tiled = tiled && sorted[i].begin == pos;
        pos = sorted[i].end;
    }
    free(sorted);
    r.valid = tiled && pos == dsize;
    return r;
}

static void free_rules(rules *r)
{
    json_decref(r->root);
    free(r->t);
}

/* Independent decodings of the half formats. */
static float f16_value(uint16_t h)
{
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const float s = (h & 0x8000) ? -1.0f : 1.0f;
    if (e == 0x1f)
        return m ? NAN : s * INFINITY;
    if (e == 0)
        return s * ldexpf((float)m, -24);
    return s * ldexpf((float)(m + 1024), e - 25);
}

static float element(const slm_st_tensor *t, size_t i)
{
    const uint8_t *p = (const uint8_t *)t->data;
    if (t->dtype == SLM_ST_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    const uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
    if (t->dtype == SLM_ST_F16)
        return f16_value(h);
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static bool same(float a, float b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

/* A corner of up to 3 x 5 of a 0-, 1- or 2-D tensor, and a slice one
 * past its edge. */
static void check_read(const slm_st_tensor *t)
{
    if (t->rank > 2) {
        float x;
        check(slm_safetensors_read_f32(t, 0, 1, 0, 1, &x) == SLM_ERR_INVALID,
              "read_f32 took a tensor of rank > 2");
        return;
    }
    const size_t rows = t->rank == 2 ? t->shape[0] : 1;
    const size_t cols = t->rank >= 1 ? t->shape[t->rank - 1] : 1;
    const size_t nr = rows < 3 ? rows : 3, nc = cols < 5 ? cols : 5;
    const size_t r0 = rows - nr, c0 = cols - nc; /* the far corner */
    float out[15];
    check(slm_safetensors_read_f32(t, r0, nr, c0, nc, out) == SLM_OK,
          "read_f32 refused a slice inside the tensor");
    for (size_t r = 0; r < nr; r++)
        for (size_t c = 0; c < nc; c++)
            check(same(out[r * nc + c], element(t, (r0 + r) * cols + c0 + c)),
                  "read_f32 gave another value than the bytes hold");
    check(slm_safetensors_read_f32(t, r0, nr + 1, 0, 1, out) == SLM_ERR_RANGE &&
              slm_safetensors_read_f32(t, 0, 1, c0, nc + 1, out) ==
                  SLM_ERR_RANGE,
          "read_f32 read past the tensor");
}

static void check_table(const slm_safetensors_t *st, const rules *r,
                        const uint8_t *data, size_t size)
{
    check(slm_safetensors_count(st) == r->n, "wrong tensor count");
    check(slm_safetensors_file_count(st) == 1, "one buffer is one file");
    volatile uint8_t sink = 0;
    size_t covered = 0;
    for (size_t i = 0; i < r->n; i++) {
        const slm_st_tensor *t = slm_safetensors_at(st, i);
        check(i == 0 ||
                  strcmp(slm_safetensors_at(st, i - 1)->name, t->name) < 0,
              "the table is not in strict name order");
        check(slm_safetensors_find(st, t->name) == t, "find misses a tensor");
        const rule_tensor *w = NULL;
        for (size_t k = 0; k < r->n && !w; k++)
            if (strcmp(r->t[k].name, t->name) == 0)
                w = &r->t[k];
        check(w != NULL, "a tensor the header does not have");
        check((int)t->dtype == w->dtype && t->rank == w->rank && t->file == 0,
              "dtype or rank differs from the header");
        u128 elems = 1;
        for (size_t d = 0; d < SLM_ST_MAX_RANK; d++) {
            check(t->shape[d] == (d < w->rank ? w->shape[d] : 0),
                  "shape differs from the header");
            if (d < w->rank)
                elems *= w->shape[d];
        }
        check(t->n_elements == (size_t)elems &&
                  t->nbytes == w->end - w->begin &&
                  t->offset == r->base + w->begin &&
                  t->nbytes ==
                      t->n_elements * slm_safetensors_dtype_size(t->dtype),
              "sizes or offset differ from the header");
        check(t->offset <= size && t->nbytes <= size - t->offset &&
                  (const uint8_t *)t->data == data + t->offset,
              "tensor outside the input");
        if (t->nbytes) {
            sink ^= ((const uint8_t *)t->data)[0];
            sink ^= ((const uint8_t *)t->data)[t->nbytes - 1];
        }
        covered += t->nbytes;
        check_read(t);
    }
    (void)sink;
    check(covered == size - r->base, "the tensors do not cover the data");
    const json_t *meta = json_object_get(r->root, "__metadata__");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)meta, key, v)
    {
        const char *got = slm_safetensors_metadata(st, 0, key);
        check(got && strcmp(got, json_string_value(v)) == 0,
              "metadata differs from the header");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rules r = apply_rules(data, size);
    slm_safetensors_t *const poison = (slm_safetensors_t *)(uintptr_t)0x10;
    slm_safetensors_t *st = poison;
    slm_error_clear();
    if (slm_safetensors_parse(data, size, "fuzz", &st) != SLM_OK) {
        check(st == poison, "a refusal wrote *out");
        check(slm_error_message()[0] != '\0', "a refusal must say why");
        check(!r.valid, "refused a valid file");
        free_rules(&r);
        return 0;
    }
    check(r.valid, "accepted a file the format does not allow");
    check_table(st, &r, data, size);
    slm_safetensors_destroy(&st);
    check(st == NULL, "destroy did not clear the handle");
    /* one byte shorter, one byte longer: both must be refused */
    uint8_t *copy = malloc(size + 1);
    check(copy != NULL, "out of memory");
    memcpy(copy, data, size);
    copy[size] = 0;
    check(slm_safetensors_parse(copy, size - 1, "fuzz", &st) != SLM_OK &&
              slm_safetensors_parse(copy, size + 1, "fuzz", &st) != SLM_OK,
          "accepted the file truncated or extended by a byte");
    free(copy);
    free_rules(&r);
    return 0;
}
