/*
 * tests/unit/test_safetensors.c - the safetensors reader: F32/F16/BF16 files
 * read back value for value (whole tensors and row/column slices), metadata
 * kept, sharded directories; and every kind of bad file or index refused with
 * a message naming the problem (truncated at every byte, header length out of
 * range, bad JSON, wrong types and values, overlaps, holes, trailing bytes,
 * unknown dtypes, shard names with paths, tensors in two shards). The files
 * are written here; nothing is downloaded or committed.
 */
#include "tests/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "model/safetensors.h"

/* A file: the 8-byte little-endian header length, `header`, then data(dlen)
 * (zeros when data is NULL). The caller frees it. */
static uint8_t *make_file(const char *header, const void *data, size_t dlen,
                          size_t *len)
{
    const size_t n = strlen(header);
    *len = 8 + n + dlen;
    uint8_t *f = calloc(1, *len ? *len : 1);
    assert_non_null(f);
    for (int i = 0; i < 8; i++)
        f[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(f + 8, header, n);
    if (data)
        memcpy(f + 8 + n, data, dlen);
    return f;
}

static void write_at(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void make_dir(char *buf, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, cap, "%s/slmstXXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(buf));
}

static void write_in(const char *dir, const char *name, const void *data,
                     size_t len)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_at(p, data, len);
}

static void remove_in(const char *dir, const char *name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
}

/* Parses header + dlen zero bytes as `what`; expects rc and `want` in the
 * message. */
static void expect_refused(const char *what, const char *header, size_t dlen,
                           slm_status rc, const char *want)
{
    size_t len = 0;
    uint8_t *f = make_file(header, NULL, dlen, &len);
    slm_safetensors_t *st = (slm_safetensors_t *)(uintptr_t)0x1;
    slm_error_clear();
    const slm_status got = slm_safetensors_parse(f, len, what, &st);
    if (got != rc || !strstr(slm_error_message(), want))
        fprintf(stderr, "header %s\n  want %d '%s'\n  got  %d '%s'\n", header,
                rc, want, got, slm_error_message());
    assert_int_equal(got, rc);
    assert_non_null(strstr(slm_error_message(), want));
    assert_non_null(strstr(slm_error_message(), what));
    assert_ptr_equal(st, (slm_safetensors_t *)(uintptr_t)0x1); /* untouched */
    free(f);
}

/* ---- a valid file with every dtype ------------------------------------ */

/* The tensors of the sample file, in file order:
 *   b (4, 3) F16 @ [0, 24), c (2, 6) BF16 @ [24, 48), a (3, 5) F32
 *   @ [48, 108), d (7) F32 @ [108, 136), s () F32 @ [136, 140),
 *   z (0, 4) F16 @ [140, 140), r (2, 1, 2) F32 @ [140, 156).
 * The header lists them in another order, and its length is odd, so the
 * data is unaligned. Values are exact in their dtype. */
static float val_a(size_t i)
{
    return (float)i * 0.25f - 1.0f;
}
static float val_b(size_t i)
{
    return ((float)i - 6.0f) * 0.5f;
}
static float val_c(size_t i)
{
    return (float)(i + 1) * 1.5f;
}

static uint8_t *sample_file(size_t *len)
{
    uint8_t data[156];
    float f[15];
    uint16_t h[12];
    for (size_t i = 0; i < 12; i++)
        f[i] = val_b(i);
    slm_cpu_f32_to_f16(h, f, 12);
    memcpy(data, h, 24);
    for (size_t i = 0; i < 12; i++)
        f[i] = val_c(i);
    slm_cpu_f32_to_bf16(h, f, 12);
    memcpy(data + 24, h, 24);
    for (size_t i = 0; i < 15; i++)
        f[i] = val_a(i);
    memcpy(data + 48, f, 60);
    for (size_t i = 0; i < 7; i++)
        f[i] = (float)i + 100.0f;
    memcpy(data + 108, f, 28);
    f[0] = 42.0f;
    memcpy(data + 136, f, 4);
    for (size_t i = 0; i < 4; i++)
        f[i] = -(float)i;
    memcpy(data + 140, f, 16);
    char header[1024];
    int n = snprintf(
        header, sizeof header,
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[48,108]},"
        "\"__metadata__\":{\"format\":\"pt\",\"note\":\"x\"},"
        "\"c\":{\"shape\":[2,6],\"dtype\":\"BF16\",\"data_offsets\":[24,48]},"
        "\"b\":{\"dtype\":\"F16\",\"shape\":[4,3],\"data_offsets\":[0,24]},"
        "\"d\":{\"dtype\":\"F32\",\"shape\":[7],\"data_offsets\":[108,136]},"
        "\"r\":{\"dtype\":\"F32\",\"shape\":[2,1,2],"
        "\"data_offsets\":[140,156]},"
        "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[136,140]},"
        "\"z\":{\"dtype\":\"F16\",\"shape\":[0,4],\"data_offsets\":[140,140]}"
        "}");
    /* pad with spaces, as writers do, to an odd length */
    while (n % 4 != 1)
        header[n++] = ' ';
    header[n] = '\0';
    return make_file(header, data, sizeof data, len);
}

static void check_sample(const slm_safetensors_t *st, const char *file)
{
    assert_int_equal(slm_safetensors_count(st), 7);
    assert_int_equal(slm_safetensors_file_count(st), 1);
    assert_string_equal(slm_safetensors_file_name(st, 0), file);
    /* in name order */
    const char *names = "abcdrsz";
    for (size_t i = 0; i < 7; i++) {
        const slm_st_tensor *t = slm_safetensors_at(st, i);
        assert_int_equal(t->name[0], names[i]);
        assert_int_equal(t->name[1], '\0');
        assert_ptr_equal(slm_safetensors_find(st, t->name), t);
        assert_int_equal(t->file, 0);
    }
    assert_null(slm_safetensors_find(st, "missing"));
    assert_null(slm_safetensors_find(st, ""));
    assert_string_equal(slm_safetensors_metadata(st, 0, "format"), "pt");
    assert_string_equal(slm_safetensors_metadata(st, 0, "note"), "x");
    assert_null(slm_safetensors_metadata(st, 0, "absent"));

    const slm_st_tensor *a = slm_safetensors_find(st, "a");
    assert_int_equal(a->dtype, SLM_ST_F32);
    assert_int_equal(a->rank, 2);
    assert_int_equal(a->shape[0], 3);
    assert_int_equal(a->shape[1], 5);
    assert_int_equal(a->shape[2], 0);
    assert_int_equal(a->n_elements, 15);
    assert_int_equal(a->nbytes, 60);
    const slm_st_tensor *b = slm_safetensors_find(st, "b");
    assert_int_equal(b->dtype, SLM_ST_F16);
    const size_t base = (size_t)b->offset; /* b is first in the file */
    assert_int_equal(base % 4, 1);         /* unaligned on purpose */
    assert_int_equal(a->offset, base + 48);
    assert_ptr_equal((const uint8_t *)a->data - 48, b->data);

    float out[15];
    assert_int_equal(slm_safetensors_read_f32(a, 0, 3, 0, 5, out), SLM_OK);
    for (size_t i = 0; i < 15; i++)
        assert_true(out[i] == val_a(i));
    assert_int_equal(slm_safetensors_read_f32(b, 0, 4, 0, 3, out), SLM_OK);
    for (size_t i = 0; i < 12; i++)
        assert_true(out[i] == val_b(i));
    const slm_st_tensor *c = slm_safetensors_find(st, "c");
    assert_int_equal(c->dtype, SLM_ST_BF16);
    assert_int_equal(slm_safetensors_read_f32(c, 0, 2, 0, 6, out), SLM_OK);
    for (size_t i = 0; i < 12; i++)
        assert_true(out[i] == val_c(i));

    /* slices: rows 1..2, columns 2..4 of a; row 1, columns 3..5 of c;
     * rows 2..3, column 1 of b */
    assert_int_equal(slm_safetensors_read_f32(a, 1, 2, 2, 3, out), SLM_OK);
    for (size_t r = 0; r < 2; r++)
        for (size_t k = 0; k < 3; k++)
            assert_true(out[r * 3 + k] == val_a((1 + r) * 5 + 2 + k));
    assert_int_equal(slm_safetensors_read_f32(c, 1, 1, 3, 3, out), SLM_OK);
    for (size_t k = 0; k < 3; k++)
        assert_true(out[k] == val_c(6 + 3 + k));
    assert_int_equal(slm_safetensors_read_f32(b, 2, 2, 1, 1, out), SLM_OK);
    assert_true(out[0] == val_b(7) && out[1] == val_b(10));
    /* 1-D is one row, a scalar (1, 1) */
    const slm_st_tensor *d = slm_safetensors_find(st, "d");
    assert_int_equal(slm_safetensors_read_f32(d, 0, 1, 2, 4, out), SLM_OK);
    for (size_t k = 0; k < 4; k++)
        assert_true(out[k] == (float)(k + 2) + 100.0f);
    const slm_st_tensor *s = slm_safetensors_find(st, "s");
    assert_int_equal(s->rank, 0);
    assert_int_equal(s->n_elements, 1);
    assert_int_equal(slm_safetensors_read_f32(s, 0, 1, 0, 1, out), SLM_OK);
    assert_true(out[0] == 42.0f);
    const slm_st_tensor *z = slm_safetensors_find(st, "z");
    assert_int_equal(z->n_elements, 0);
    assert_int_equal(z->nbytes, 0);
    assert_int_equal(slm_safetensors_read_f32(z, 0, 0, 0, 4, NULL), SLM_OK);

    /* out of range, and a rank the reader does not take */
    out[0] = 7.0f;
    const struct {
        size_t r0, nr, c0, nc;
    } bad[] = {{0, 4, 0, 5}, {3, 1, 0, 1},        {0, 1, 5, 1},
               {0, 1, 4, 2}, {1, SIZE_MAX, 0, 1}, {0, 1, 1, SIZE_MAX}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(slm_safetensors_read_f32(a, bad[i].r0, bad[i].nr,
                                                  bad[i].c0, bad[i].nc, out),
                         SLM_ERR_RANGE);
        assert_non_null(strstr(slm_error_message(), "tensor 'a'"));
        assert_non_null(strstr(slm_error_message(), "outside its (3, 5)"));
    }
    assert_true(out[0] == 7.0f);
    const slm_st_tensor *r = slm_safetensors_find(st, "r");
    assert_int_equal(r->rank, 3);
    assert_int_equal(slm_safetensors_read_f32(r, 0, 1, 0, 1, out),
                     SLM_ERR_INVALID);
    assert_non_null(strstr(slm_error_message(), "shape [2, 1, 2] has rank 3"));
}

static void test_valid_file_round_trip(void **state)
{
    (void)state;
    size_t len = 0;
    uint8_t *f = sample_file(&len);
    slm_safetensors_t *st = NULL;
    assert_int_equal(slm_safetensors_parse(f, len, "buf", &st), SLM_OK);
    check_sample(st, "buf");
    slm_safetensors_destroy(&st);
    assert_null(st);
    slm_safetensors_destroy(&st); /* NULL is fine */
    slm_safetensors_destroy(NULL);

    /* the same file opened by path, and as model.safetensors in a
     * directory */
    char dir[512], path[1024];
    make_dir(dir, sizeof dir);
    write_in(dir, "model.safetensors", f, len);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(slm_safetensors_open(path, &st), SLM_OK);
    check_sample(st, path);
    slm_safetensors_destroy(&st);
    assert_int_equal(slm_safetensors_open(dir, &st), SLM_OK);
    check_sample(st, path);
    slm_safetensors_destroy(&st);
    /* model.safetensors wins over an index, as in transformers */
    write_in(dir, "model.safetensors.index.json", "{}", 2);
    assert_int_equal(slm_safetensors_open(dir, &st), SLM_OK);
    check_sample(st, path);
    slm_safetensors_destroy(&st);
    remove_in(dir, "model.safetensors.index.json");
    remove_in(dir, "model.safetensors");
    rmdir(dir);
    free(f);
}

static void test_small_valid_files(void **state)
{
    (void)state;
    const char *headers[] = {
        "{}",
        "{}      ",
        "{\"__metadata__\":{}}",
        "{\"__metadata__\":{\"format\":\"pt\"}}",
        "{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        size_t len = 0;
        uint8_t *f = make_file(headers[i], NULL, 0, &len);
        slm_safetensors_t *st = NULL;
        assert_int_equal(slm_safetensors_parse(f, len, "t", &st), SLM_OK);
        assert_int_equal(slm_safetensors_count(st), i == 4 ? 1 : 0);
        slm_safetensors_destroy(&st);
        free(f);
    }
}

/* ---- bad files --------------------------------------------------------- */

static void test_truncated_everywhere(void **state)
{
    (void)state;
    size_t len = 0;
    uint8_t *f = sample_file(&len);
    const size_t header_end = 8 + (size_t)(f[0] | f[1] << 8);
    for (size_t cut = 0; cut < len; cut++) {
        /* a heap copy of exactly cut bytes, so ASan sees an over-read */
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, f, cut);
        slm_safetensors_t *st = NULL;
        slm_error_clear();
        assert_int_equal(slm_safetensors_parse(p, cut, "t.safetensors", &st),
                         SLM_ERR_FORMAT);
        assert_null(st);
        assert_non_null(strstr(slm_error_message(), "t.safetensors"));
        if (cut < 8)
            assert_non_null(strstr(slm_error_message(), "too short"));
        else if (cut < header_end)
            assert_non_null(strstr(slm_error_message(), "runs past the end"));
        else
            assert_non_null(strstr(slm_error_message(), "truncated?"));
        free(p);
    }
    /* and real files through the mapping, at a spread of offsets */
    const size_t cuts[] = {0, 7, 8, 20, header_end, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char tp[512];
        slm_test_write_temp(f, cuts[i], tp, sizeof tp);
        slm_safetensors_t *st = NULL;
        assert_int_equal(slm_safetensors_open(tp, &st), SLM_ERR_FORMAT);
        assert_null(st);
        assert_non_null(strstr(slm_error_message(), tp));
        unlink(tp);
    }
    free(f);
}

static void test_header_length(void **state)
{
    (void)state;
    const struct {
        uint64_t n;
        size_t len;
        const char *want;
    } cases[] = {
        {UINT64_MAX, 64, "header length 18446744073709551615 exceeds"},
        {1ull << 63, 64, "exceeds the limit of 100000000"},
        {100000001, 64, "header length 100000001 exceeds"},
        {57, 64, "header length 57 runs past the end of the file (56 bytes"},
        {0, 64, "does not start with '{'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t f[64];
        memset(f, ' ', sizeof f);
        for (int b = 0; b < 8; b++)
            f[b] = (uint8_t)(cases[i].n >> (8 * b));
        f[8] = '{';
        slm_safetensors_t *st = NULL;
        assert_int_equal(slm_safetensors_parse(f, cases[i].len, "t", &st),
                         SLM_ERR_FORMAT);
        assert_non_null(strstr(slm_error_message(), cases[i].want));
    }
}

#define ENTRY(dtype, shape, offsets)                                           \
    "{\"dtype\":" dtype ",\"shape\":" shape ",\"data_offsets\":" offsets "}"
#define ONE(dtype, shape, offsets) "{\"T\":" ENTRY(dtype, shape, offsets) "}"

static void test_bad_headers(void **state)
{
    (void)state;
    const slm_status F = SLM_ERR_FORMAT, U = SLM_ERR_UNSUPPORTED;
    const struct {
        const char *header;
        size_t dlen;
        slm_status rc;
        const char *want;
    } cases[] = {
        /* not JSON, not an object */
        {"{not json", 0, F, "not valid JSON"},
        {"{\"T\":1} x", 0, F, "not valid JSON: end of file expected"},
        {" {}", 0, F, "does not start with '{'"},
        {"[1, 2]", 0, F, "does not start with '{'"},
        {"\"x\"", 0, F, "does not start with '{'"},
        {"{\"T\":\"\xff\"}", 0, F, "not valid JSON"}, /* not UTF-8 */
        {"{\"T\":\"\\u0000\"}", 0, F, "not valid JSON"},
        {"{\"T\\u0000\":1}", 0, F, "not valid JSON"},
        /* duplicate names */
        {"{\"T\":" ENTRY("\"F32\"", "[1]", "[0,4]") ",\"T\":" ENTRY(
             "\"F32\"", "[1]", "[4,8]") "}",
         8, F, "duplicate object key near '\"T\"'"},
        /* missing fields, unknown fields */
        {"{\"T\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, F,
         "tensor 'T': no dtype"},
        {"{\"T\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, F,
         "tensor 'T': no shape"},
        {"{\"T\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, F,
         "tensor 'T': no data_offsets"},
        {"{\"T\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
         "\"offset\":0}}",
         4, F, "tensor 'T': unknown key 'offset'"},
        /* wrong types */
        {"{\"T\":3}", 0, F, "tensor 'T': entry is 3, not an object"},
        {"{\"T\":[]}", 0, F, "entry is an array, not an object"},
        {ONE("5", "[1]", "[0,4]"), 4, F, "dtype is 5, not a string"},
        {ONE("null", "[1]", "[0,4]"), 4, F, "dtype is null, not a string"},
        {ONE("\"F32\"", "\"x\"", "[0,4]"), 4, F, "shape is 'x', not an array"},
        {ONE("\"F32\"", "{}", "[0,4]"), 4, F, "shape is an object"},
        {ONE("\"F32\"", "[1.5]", "[0,4]"), 4, F,
         "shape[0] = 1.5 is not an integer"},
        {ONE("\"F32\"", "[1,true]", "[0,4]"), 4, F,
         "shape[1] = true is not an integer"},
        {ONE("\"F32\"", "[-1]", "[0,4]"), 4, F, "shape[0] = -1 is negative"},
        {ONE("\"F32\"", "[1]", "[0]"), 4, F,
         "data_offsets is an array of another length"},
        {ONE("\"F32\"", "[1]", "[0,4,8]"), 4, F,
         "data_offsets is an array of another length"},
        {ONE("\"F32\"", "[1]", "\"0-4\""), 4, F,
         "data_offsets is '0-4', not an array"},
        {ONE("\"F32\"", "[1]", "[0.0,4]"), 4, F,
         "data_offsets[0] = 0.0 is not an integer"},
        {ONE("\"F32\"", "[1]", "[0,4e0]"), 4, F,
         "data_offsets[1] = 4.0 is not an integer"},
        {ONE("\"F32\"", "[1]", "[0,\"4\"]"), 4, F,
         "data_offsets[1] = '4' is not an integer"},
        {ONE("\"F32\"", "[1]", "[-4,0]"), 4, F,
         "data_offsets[0] = -4 is negative"},
        {ONE("\"F32\"", "[1]", "[0,99999999999999999999]"), 4, F,
         "too big integer"},
        {"{\"__metadata__\":[]}", 0, F, "__metadata__ is an array"},
        {"{\"__metadata__\":{\"a\":1}}", 0, F,
         "__metadata__ 'a' is 1, not a string"},
        /* values */
        {ONE("\"F32\"", "[1]", "[8,4]"), 8, F,
         "data_offsets [8, 4] begin after they end"},
        {ONE("\"F32\"", "[2]", "[0,4]"), 4, F,
         "data_offsets [0, 4] hold 4 bytes, but shape [2] of F32 needs 8"},
        {ONE("\"F16\"", "[]", "[0,4]"), 4, F,
         "hold 4 bytes, but shape [] of F16 needs 2"},
        {ONE("\"F32\"", "[4]", "[0,16]"), 8, F,
         "data_offsets [0, 16] run past the end of the data section (8 "
         "bytes)"},
        {ONE("\"F32\"", "[1]", "[0,4]"), 12, F,
         "the data section is 12 bytes but the tensors end at 4: 8 trailing "
         "bytes"},
        {"{}", 3, F, "no tensors, but a data section of 3 bytes"},
        {"{\"A\":" ENTRY("\"F32\"", "[4]", "[0,16]") ",\"B\":" ENTRY(
             "\"F32\"", "[4]", "[8,24]") "}",
         24, F,
         "tensor 'B' at data_offsets [8, 24] overlaps tensor 'A' at [0, "
         "16]"},
        {"{\"A\":" ENTRY("\"F32\"", "[4]", "[0,16]") ",\"B\":" ENTRY(
             "\"F32\"", "[4]", "[0,16]") "}",
         16, F, "overlaps tensor 'A' at [0, 16]"},
        {"{\"A\":" ENTRY("\"F32\"", "[4]", "[0,16]") ",\"Z\":" ENTRY(
             "\"F32\"", "[0]", "[8,8]") "}",
         16, F, "tensor 'Z' at data_offsets [8, 8] overlaps tensor 'A'"},
        {"{\"A\":" ENTRY("\"F32\"", "[2]", "[0,8]") ",\"B\":" ENTRY(
             "\"F32\"", "[2]", "[16,24]") "}",
         24, F,
         "bytes [8, 16) of the data section belong to no tensor (a hole "
         "before tensor 'B')"},
        {ONE("\"F32\"", "[1]", "[4,8]"), 8, F,
         "bytes [0, 4) of the data section belong to no tensor"},
        /* dtypes */
        {ONE("\"I8\"", "[1]", "[0,1]"), 1, U,
         "tensor 'T': dtype 'I8' is not supported (F32, F16 and BF16 are)"},
        {ONE("\"F64\"", "[1]", "[0,8]"), 8, U, "dtype 'F64' is not supported"},
        {ONE("\"F8_E4M3\"", "[1]", "[0,1]"), 1, U,
         "dtype 'F8_E4M3' is not supported"},
        {ONE("\"BOOL\"", "[1]", "[0,1]"), 1, U,
         "dtype 'BOOL' is not supported"},
        {ONE("\"f32\"", "[1]", "[0,4]"), 4, U, "dtype 'f32' is not supported"},
        {ONE("\"F32\\n\"", "[1]", "[0,4]"), 4, U,
         "dtype 'F32?' is not supported"},
        /* limits */
        {ONE("\"F32\"", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4, F,
         "shape has 9 dimensions (at most 8)"},
        {ONE("\"F32\"", "[2147483648]", "[0,4]"), 4, F,
         "shape[0] = 2147483648 exceeds the limit of 2147483647"},
        {ONE("\"F32\"",
             "[0,2147483647,2147483647,2147483647,2147483647,2147483647]",
             "[0,0]"),
         0, F, "more elements than size_t can count"},
        {ONE("\"F32\"", "[2147483647,2147483647,2147483647]", "[0,4]"), 4, F,
         "more elements than size_t can count"},
        {ONE("\"F32\"", "[2147483647,2147483647,4]", "[0,4]"), 4, F,
         "of F32 overflows size_t bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused("t.safetensors", cases[i].header, cases[i].dlen,
                       cases[i].rc, cases[i].want);
}

/* The message the issue asks for, word for word. */
static void test_size_mismatch_message(void **state)
{
    (void)state;
    size_t len = 0;
    uint8_t *f = make_file("{\"model.embed_tokens.weight\":{\"dtype\":\"BF16\","
                           "\"shape\":[10,4],\"data_offsets\":[0,100]}}",
                           NULL, 100, &len);
    slm_safetensors_t *st = NULL;
    assert_int_equal(slm_safetensors_parse(f, len, "model.safetensors", &st),
                     SLM_ERR_FORMAT);
    assert_string_equal(slm_error_message(),
                        "model.safetensors: tensor "
                        "'model.embed_tokens.weight': data_offsets [0, 100] "
                        "hold 100 bytes, but shape [10, 4] of BF16 needs 80");
    free(f);
}

static void test_long_and_hostile_names(void **state)
{
    (void)state;
    char header[2048], name[SLM_ST_MAX_NAME + 2];
    memset(name, 'n', sizeof name);
    name[SLM_ST_MAX_NAME + 1] = '\0'; /* one too long */
    snprintf(header, sizeof header, "{\"%s\":%s}", name,
             ENTRY("\"F32\"", "[1]", "[0,4]"));
    expect_refused("t", header, 4, SLM_ERR_FORMAT, "is 1025 bytes (at most");
    /* the limit itself is fine */
    name[SLM_ST_MAX_NAME] = '\0';
    snprintf(header, sizeof header, "{\"%s\":%s}", name,
             ENTRY("\"F32\"", "[1]", "[0,4]"));
    size_t len = 0;
    uint8_t *f = make_file(header, NULL, 4, &len);
    slm_safetensors_t *st = NULL;
    assert_int_equal(slm_safetensors_parse(f, len, "t", &st), SLM_OK);
    assert_non_null(slm_safetensors_find(st, name));
    slm_safetensors_destroy(&st);
    free(f);
    /* control characters in a name are not echoed into the message */
    expect_refused("t",
                   "{\"a\\u001b[2Jb\":" ENTRY("\"I8\"", "[1]", "[0,1]") "}", 1,
                   SLM_ERR_UNSUPPORTED, "tensor 'a?[2Jb'");
}

/* ---- sharded checkpoints ------------------------------------------------ */

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

/* shard 1: a.w (2, 2) F32, b.w (4) BF16; shard 2: c.w (3) F16 */
static void write_shards(const char *dir)
{
    const float a[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    const float b[4] = {-1.0f, 0.5f, 8.0f, 0.0f};
    const float c[3] = {0.25f, -2.0f, 1024.0f};
    uint8_t d1[24];
    uint16_t h[4];
    memcpy(d1, a, 16);
    slm_cpu_f32_to_bf16(h, b, 4);
    memcpy(d1 + 16, h, 8);
    size_t len = 0;
    uint8_t *f = make_file(
        "{\"a.w\":" ENTRY("\"F32\"", "[2,2]",
                          "[0,16]") ","
                                    "\"b.w\":" ENTRY("\"BF16\"", "[4]",
                                                     "[16,24]") "}",
        d1, sizeof d1, &len);
    write_in(dir, SHARD1, f, len);
    free(f);
    slm_cpu_f32_to_f16(h, c, 3);
    f = make_file("{\"__metadata__\":{\"format\":\"pt\"},"
                  "\"c.w\":" ENTRY("\"F16\"", "[3]", "[0,6]") "}",
                  h, 6, &len);
    write_in(dir, SHARD2, f, len);
    free(f);
}

static void write_index(const char *dir, const char *text)
{
    write_in(dir, "model.safetensors.index.json", text, strlen(text));
}

#define GOOD_MAP                                                               \
    "\"a.w\":\"" SHARD1 "\",\"b.w\":\"" SHARD1 "\",\"c.w\":\"" SHARD2 "\""

static void test_sharded(void **state)
{
    (void)state;
    char dir[512], path[1024];
    make_dir(dir, sizeof dir);
    write_shards(dir);
    write_index(dir, "{\"metadata\":{\"total_size\":30},"
                     "\"weight_map\":{" GOOD_MAP "}}");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    for (int by_index = 0; by_index < 2; by_index++) {
        slm_safetensors_t *st = NULL;
        assert_int_equal(slm_safetensors_open(by_index ? path : dir, &st),
                         SLM_OK);
        assert_int_equal(slm_safetensors_count(st), 3);
        assert_int_equal(slm_safetensors_file_count(st), 2);
        char want[1024];
        snprintf(want, sizeof want, "%s/%s", dir, SHARD1);
        assert_string_equal(slm_safetensors_file_name(st, 0), want);
        snprintf(want, sizeof want, "%s/%s", dir, SHARD2);
        assert_string_equal(slm_safetensors_file_name(st, 1), want);
        assert_null(slm_safetensors_metadata(st, 0, "format"));
        assert_string_equal(slm_safetensors_metadata(st, 1, "format"), "pt");
        const slm_st_tensor *a = slm_safetensors_find(st, "a.w");
        const slm_st_tensor *b = slm_safetensors_find(st, "b.w");
        const slm_st_tensor *c = slm_safetensors_find(st, "c.w");
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(c);
        assert_int_equal(a->file, 0);
        assert_int_equal(b->file, 0);
        assert_int_equal(c->file, 1);
        float out[4];
        assert_int_equal(slm_safetensors_read_f32(a, 1, 1, 0, 2, out), SLM_OK);
        assert_true(out[0] == 3.0f && out[1] == 4.0f);
        assert_int_equal(slm_safetensors_read_f32(b, 0, 1, 0, 4, out), SLM_OK);
        assert_true(out[0] == -1.0f && out[1] == 0.5f && out[2] == 8.0f &&
                    out[3] == 0.0f);
        assert_int_equal(slm_safetensors_read_f32(c, 0, 1, 1, 2, out), SLM_OK);
        assert_true(out[0] == -2.0f && out[1] == 1024.0f);
        slm_safetensors_destroy(&st);
    }

    /* a third shard for the cases that need one: it holds d.w and also a.w,
     * which shard 1 has too */
    size_t len = 0;
    uint8_t *f =
        make_file("{\"a.w\":" ENTRY("\"F32\"", "[1]",
                                    "[0,4]") ","
                                             "\"d.w\":" ENTRY("\"F32\"", "[1]",
                                                              "[4,8]") "}",
                  NULL, 8, &len);
    write_in(dir, "extra.safetensors", f, len);
    free(f);

    const slm_status F = SLM_ERR_FORMAT;
    const struct {
        const char *index;
        slm_status rc;
        const char *want;
    } cases[] = {
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":\"missing.safetensors\"}}",
         SLM_ERR_IO, "missing.safetensors: cannot open"},
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":\"../x.safetensors\"}}", F,
         "weight_map['q.w'] = '../x.safetensors' is not the plain name"},
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":\"sub/x.safetensors\"}}", F,
         "'sub/x.safetensors' is not the plain name"},
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":\"/etc/passwd\"}}", F,
         "'/etc/passwd' is not the plain name"},
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":\"..\"}}", F,
         "'..' is not the plain name"},
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":\".\"}}", F,
         "'.' is not the plain name"},
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":\"\"}}", F,
         "'' is not the plain name"},
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":\"a\\\\b\"}}", F,
         "'a\\b' is not the plain name"},
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":\"a\\nb\"}}", F,
         "'a?b' is not the plain name"},
        {"{\"weight_map\":{" GOOD_MAP ",\"q.w\":3}}", F,
         "weight_map['q.w'] = 3 is not the plain name"},
        {"{\"weight_map\":{" GOOD_MAP ",\"d.w\":\"extra.safetensors\"}}", F,
         "tensor 'a.w' is in both"},
        {"{\"weight_map\":{\"a.w\":\"" SHARD1 "\",\"c.w\":\"" SHARD2 "\"}}", F,
         SHARD1 ": holds tensor 'b.w', which the index"},
        {"{\"weight_map\":{\"a.w\":\"" SHARD1 "\",\"b.w\":\"" SHARD2
         "\",\"c.w\":\"" SHARD2 "\"}}",
         F, "holds tensor 'b.w', which the index"},
        {"{\"weight_map\":{" GOOD_MAP ",\"z.w\":\"" SHARD2 "\"}}", F,
         "places tensor 'z.w' in '" SHARD2 "', which has no such tensor"},
        {"{\"weight_map\":{" GOOD_MAP ",\"a.w\":\"" SHARD1 "\"}}", F,
         "not valid JSON: duplicate object key"},
        {"{\"weight_map\":{}}", F, "weight_map is empty"},
        {"{\"weight_map\":[]}", F, "no \"weight_map\" object"},
        {"{\"metadata\":{}}", F, "no \"weight_map\" object"},
        {"[]", F, "no \"weight_map\" object"},
        {"{\"weight_map\":", F, "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_index(dir, cases[i].index);
        slm_safetensors_t *st = NULL;
        const slm_status rc = slm_safetensors_open(dir, &st);
        if (rc != cases[i].rc || !strstr(slm_error_message(), cases[i].want))
            fprintf(stderr, "index %s\n  want %d '%s'\n  got  %d '%s'\n",
                    cases[i].index, cases[i].rc, cases[i].want, rc,
                    slm_error_message());
        assert_int_equal(rc, cases[i].rc);
        assert_non_null(strstr(slm_error_message(), cases[i].want));
        assert_null(st);
    }
    /* the "placed elsewhere" message names where */
    write_index(dir, "{\"weight_map\":{\"a.w\":\"" SHARD1 "\",\"b.w\":\"" SHARD2
                     "\",\"c.w\":\"" SHARD2 "\"}}");
    slm_safetensors_t *st = NULL;
    assert_int_equal(slm_safetensors_open(dir, &st), F);
    assert_non_null(strstr(slm_error_message(), "places in '" SHARD2 "'"));

    /* a broken shard is named */
    write_index(dir, "{\"weight_map\":{" GOOD_MAP "}}");
    write_in(dir, SHARD2, "\x02\0\0\0\0\0\0\0{}x", 11);
    assert_int_equal(slm_safetensors_open(dir, &st), F);
    assert_non_null(
        strstr(slm_error_message(), SHARD2 ": no tensors, but a data section"));

    remove_in(dir, SHARD1);
    remove_in(dir, SHARD2);
    remove_in(dir, "extra.safetensors");
    remove_in(dir, "model.safetensors.index.json");
    /* neither file */
    assert_int_equal(slm_safetensors_open(dir, &st), SLM_ERR_IO);
    assert_non_null(strstr(slm_error_message(), "a directory without"));
    rmdir(dir);
    assert_int_equal(slm_safetensors_open(dir, &st), SLM_ERR_IO);
    assert_non_null(strstr(slm_error_message(), "cannot open"));
    assert_null(st);
}

/* ---- hostile bytes ------------------------------------------------------ */

/* Whatever the bytes, the parse must not crash, and what it accepts must lie
 * inside the buffer and tile the data section. */
static void try_parse(const uint8_t *buf, size_t len)
{
    slm_safetensors_t *st = NULL;
    slm_error_clear();
    if (slm_safetensors_parse(buf, len, "h", &st) != SLM_OK) {
        assert_null(st);
        assert_true(slm_error_message()[0] != '\0');
        return;
    }
    size_t covered = 0;
    for (size_t i = 0; i < slm_safetensors_count(st); i++) {
        const slm_st_tensor *t = slm_safetensors_at(st, i);
        assert_true(t->offset <= len && t->nbytes <= len - t->offset);
        assert_ptr_equal(t->data, buf + t->offset);
        covered += t->nbytes;
    }
    if (len >= 8)
        assert_int_equal(covered, len - 8 - (size_t)(buf[0] | buf[1] << 8));
    slm_safetensors_destroy(&st);
}

static void test_hostile_bytes(void **state)
{
    (void)state;
    size_t lens[3];
    uint8_t *valid[3];
    valid[0] = sample_file(&lens[0]);
    valid[1] = make_file(ONE("\"F32\"", "[1]", "[0,4]"), NULL, 4, &lens[1]);
    valid[2] = make_file("{\"__metadata__\":{\"k\":\"v\"}}", NULL, 0, &lens[2]);
    slm_test_hostile_bytes(valid, lens, 3, 2000, 4000, 12, try_parse);
    for (int i = 0; i < 3; i++)
        free(valid[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file_round_trip),
        cmocka_unit_test(test_small_valid_files),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_size_mismatch_message),
        cmocka_unit_test(test_long_and_hostile_names),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_hostile_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
