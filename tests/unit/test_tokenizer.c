/*
 * tests/unit/test_tokenizer.c - model/tokenizer.c: golden encodings, decode
 * round trips, byte fallback, the heap merge against a literal O(n^2) port of
 * llama2.c run.c's encode(), and malformed files.
 *
 * Two groups. The synthetic group builds its vocabularies in memory and always
 * runs. The model group needs ../shared/models (tok512.bin, tokenizer.bin) and
 * ../shared/golden. When those are missing, main runs the synthetic group and
 * exits 77 if it passed, so ctest reports "skipped" rather than a pass that
 * never looked at the real vocabularies (a cmocka skip() would count as a
 * pass).
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/file.h"
#include "model/tokenizer.h"
#include "tests/testutil.h"

/* ------------------------------------------------------------------------ */
/* Building tokenizer files in memory                                        */

typedef struct {
    uint8_t *d;
    size_t n, cap;
} buf_t;

static void buf_put(buf_t *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->d = realloc(b->d, cap);
        assert_non_null(b->d);
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void buf_i32(buf_t *b, int32_t v)
{
    buf_put(b, &v, sizeof v);
}
static void buf_f32(buf_t *b, float v)
{
    buf_put(b, &v, sizeof v);
}

static void buf_piece(buf_t *b, float score, const char *s, size_t n)
{
    buf_f32(b, score);
    buf_i32(b, (int32_t)n);
    buf_put(b, s, n);
}

static void buf_free(buf_t *b)
{
    free(b->d);
    b->d = NULL;
    b->n = b->cap = 0;
}

typedef struct {
    const char *s;
    float score;
} vocab_entry;

static void build_vocab(buf_t *b, int32_t max_len, const vocab_entry *v,
                        size_t n)
{
    b->n = 0;
    buf_i32(b, max_len);
    for (size_t i = 0; i < n; i++)
        buf_piece(b, v[i].score, v[i].s, strlen(v[i].s));
}

/* Offset of entry `index` (its score) in a valid file. */
static size_t entry_offset(const uint8_t *d, size_t len, int32_t index)
{
    size_t off = 4;
    for (int32_t i = 0; i < index; i++) {
        int32_t n;
        assert_true(off + 8 <= len);
        memcpy(&n, d + off + 4, 4);
        off += 8 + (size_t)n;
    }
    assert_true(off <= len);
    return off;
}

/* ------------------------------------------------------------------------ */
/* The reference: a literal port of run.c's encode(), O(n^2) merges          */

typedef struct {
    const char *s;
    size_t len;
    int32_t id;
} ref_entry;

typedef struct {
    int32_t vocab_size, max_len;
    char **piece;      /* (vocab_size), NUL-terminated copies */
    size_t *plen;      /* (vocab_size) */
    float *score;      /* (vocab_size) */
    ref_entry *sorted; /* (vocab_size) */
    int32_t byte_id[256];
} ref_tok;

static int ref_cmp_bytes(const char *a, size_t al, const char *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

static int ref_cmp(const void *pa, const void *pb)
{
    const ref_entry *a = pa, *b = pb;
    int c = ref_cmp_bytes(a->s, a->len, b->s, b->len);
    return c ? c : (a->id < b->id ? -1 : a->id > b->id);
}

/* run.c's str_lookup(). Duplicate pieces (only in synthetic vocabularies)
 * resolve to the lowest id, the rule the tokenizer documents. */
static int32_t ref_lookup(const ref_tok *r, const char *s, size_t n)
{
    size_t lo = 0, hi = (size_t)r->vocab_size;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ref_cmp_bytes(r->sorted[mid].s, r->sorted[mid].len, s, n) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < (size_t)r->vocab_size &&
        ref_cmp_bytes(r->sorted[lo].s, r->sorted[lo].len, s, n) == 0)
        return r->sorted[lo].id;
    return -1;
}

/* Trusts the file: only for inputs the tokenizer accepted. */
static void ref_build(ref_tok *r, const uint8_t *d, size_t len, int32_t vocab)
{
    memset(r, 0, sizeof *r);
    r->vocab_size = vocab;
    memcpy(&r->max_len, d, 4);
    r->piece = calloc((size_t)vocab, sizeof *r->piece);
    r->plen = calloc((size_t)vocab, sizeof *r->plen);
    r->score = calloc((size_t)vocab, sizeof *r->score);
    r->sorted = calloc((size_t)vocab, sizeof *r->sorted);
    assert_true(r->piece && r->plen && r->score && r->sorted);
    size_t off = 4;
    for (int32_t i = 0; i < vocab; i++) {
        int32_t n;
        assert_true(off + 8 <= len);
        memcpy(&r->score[i], d + off, 4);
        memcpy(&n, d + off + 4, 4);
        off += 8;
        assert_true(n >= 0 && off + (size_t)n <= len);
        r->piece[i] = malloc((size_t)n + 1);
        assert_non_null(r->piece[i]);
        memcpy(r->piece[i], d + off, (size_t)n);
        r->piece[i][n] = '\0';
        r->plen[i] = (size_t)n;
        r->sorted[i] = (ref_entry){r->piece[i], (size_t)n, i};
        off += (size_t)n;
    }
    qsort(r->sorted, (size_t)vocab, sizeof *r->sorted, ref_cmp);
    for (int b = 0; b < 256; b++) {
        char name[16];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t id = ref_lookup(r, name, strlen(name));
        r->byte_id[b] = id >= 0 ? id : SLM_TOKEN_UNK;
    }
}

static void ref_free(ref_tok *r)
{
    for (int32_t i = 0; r->piece && i < r->vocab_size; i++)
        free(r->piece[i]);
    free(r->piece);
    free(r->plen);
    free(r->score);
    free(r->sorted);
    memset(r, 0, sizeof *r);
}

static int32_t *ref_encode(const ref_tok *r, const char *text, size_t len,
                           bool bos, bool eos, size_t *n_out)
{
    int32_t *tokens = malloc((len + 3) * sizeof *tokens);
    char *buf = malloc(2 * (size_t)r->max_len + 3);
    assert_true(tokens && buf);
    const unsigned char *s = (const unsigned char *)text;
    size_t n = 0;
    if (bos)
        tokens[n++] = 1;
    if (len > 0) {
        int32_t dummy = ref_lookup(r, " ", 1);
        if (dummy != -1)
            tokens[n++] = dummy;
    }
    size_t str_len = 0;
    for (size_t c = 0; c < len; c++) {
        if ((s[c] & 0xC0) != 0x80)
            str_len = 0;
        buf[str_len++] = (char)s[c];
        if (c + 1 < len && (s[c + 1] & 0xC0) == 0x80 && str_len < 4)
            continue;
        int32_t id = ref_lookup(r, buf, str_len);
        if (id != -1) {
            tokens[n++] = id;
        } else {
            for (size_t i = 0; i < str_len; i++)
                tokens[n++] = r->byte_id[(unsigned char)buf[i]];
        }
        str_len = 0;
    }
    for (;;) {
        float best_score = -1e10f;
        int32_t best_id = -1;
        size_t best_idx = SIZE_MAX;
        for (size_t i = 0; i + 1 < n; i++) {
            size_t la = r->plen[tokens[i]], lb = r->plen[tokens[i + 1]];
            memcpy(buf, r->piece[tokens[i]], la);
            memcpy(buf + la, r->piece[tokens[i + 1]], lb);
            int32_t id = ref_lookup(r, buf, la + lb);
            if (id != -1 && r->score[id] > best_score) {
                best_score = r->score[id];
                best_id = id;
                best_idx = i;
            }
        }
        if (best_idx == SIZE_MAX)
            break;
        tokens[best_idx] = best_id;
        memmove(tokens + best_idx + 1, tokens + best_idx + 2,
                (n - best_idx - 2) * sizeof *tokens);
        n--;
    }
    if (eos)
        tokens[n++] = 2;
    free(buf);
    *n_out = n;
    return tokens;
}

/* ------------------------------------------------------------------------ */
/* Shared checks                                                             */

static void print_case(const char *text, size_t len, const int32_t *a,
                       size_t na, const int32_t *b, size_t nb)
{
    print_message("text (%zu bytes):", len);
    for (size_t i = 0; i < len; i++)
        print_message(" %02x", (unsigned char)text[i]);
    print_message("\ntokenizer (%zu):", na);
    for (size_t i = 0; i < na; i++)
        print_message(" %d", a[i]);
    print_message("\nreference (%zu):", nb);
    for (size_t i = 0; i < nb; i++)
        print_message(" %d", b[i]);
    print_message("\n");
}

/* Encodes with both and requires identical ids. */
static void check_same(const slm_tokenizer_t *t, const ref_tok *r,
                       const char *text, size_t len, bool bos, bool eos)
{
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(slm_tokenizer_encode(t, text, len, bos, eos, &ids, &n),
                     SLM_OK);
    size_t nr = 0;
    int32_t *want = ref_encode(r, text, len, bos, eos, &nr);
    if (n != nr || (n > 0 && memcmp(ids, want, n * sizeof *ids) != 0)) {
        print_case(text, len, ids, n, want, nr);
        fail_msg("heap merge and reference merge differ");
    }
    free(ids);
    free(want);
}

static void expect_ids(const slm_tokenizer_t *t, const char *text, bool bos,
                       bool eos, const int32_t *want, size_t n_want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(
        slm_tokenizer_encode(t, text, strlen(text), bos, eos, &ids, &n),
        SLM_OK);
    if (n != n_want || (n > 0 && memcmp(ids, want, n * sizeof *ids) != 0)) {
        print_case(text, strlen(text), ids, n, want, n_want);
        fail_msg("unexpected encoding");
    }
    free(ids);
}

/* Concatenates decode(prev, id) over ids[1..n) (ids[0] is BOS). */
static char *decode_all(const slm_tokenizer_t *t, const int32_t *ids, size_t n,
                        size_t *out_len)
{
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    for (size_t i = 1; i < n; i++) {
        size_t pl = 0;
        const char *p = slm_tokenizer_decode(t, ids[i - 1], ids[i], &pl);
        assert_non_null(p);
        while (len + pl + 1 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        memcpy(out + len, p, pl);
        len += pl;
    }
    out[len] = '\0';
    *out_len = len;
    return out;
}

/* Encodes with BOS, decodes, and requires the original bytes back. Holds
 * whenever every byte has a "<0xNN>" token: the dummy-prefix space leads the
 * first piece after BOS, and decode drops exactly that space. */
static void check_round_trip(const slm_tokenizer_t *t, const char *text,
                             size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(slm_tokenizer_encode(t, text, len, true, false, &ids, &n),
                     SLM_OK);
    assert_true(n >= 1);
    assert_int_equal(ids[0], SLM_TOKEN_BOS);
    size_t got_len = 0;
    char *got = decode_all(t, ids, n, &got_len);
    if (got_len != len || (len > 0 && memcmp(got, text, len) != 0)) {
        print_case(text, len, ids, n, NULL, 0);
        fail_msg("decode(encode(text)) != text (%zu vs %zu bytes)", got_len,
                 len);
    }
    free(got);
    free(ids);
}

static void expect_fail(const uint8_t *d, size_t len, int32_t vocab,
                        slm_status want, const char *needle1,
                        const char *needle2)
{
    slm_tokenizer_t *t = NULL;
    slm_error_clear();
    slm_status rc = slm_tokenizer_parse(d, len, vocab, "tok.bin", &t);
    if (rc != want || t != NULL) {
        print_message("parse(len=%zu, vocab=%d) = %d (%s): %s\n", len, vocab,
                      rc, slm_status_str(rc), slm_error_message());
        fail_msg("expected status %d", want);
    }
    const char *msg = slm_error_message();
    assert_true(msg[0] != '\0');
    if ((needle1 && !strstr(msg, needle1)) ||
        (needle2 && !strstr(msg, needle2)))
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", msg,
                 needle1 ? needle1 : "", needle2 ? needle2 : "");
}

/* Every way we know to break a valid file `d` of `vocab` entries, whose
 * max_token_length is max_len; `index` names an entry to damage. */
static void check_bad_files(const uint8_t *d, size_t len, int32_t vocab,
                            int32_t max_len, int32_t index, uint64_t seed)
{
    char want1[128], want2[128];
    uint8_t *copy = malloc(len + 64);
    assert_non_null(copy);
    const size_t at = entry_offset(d, len, index);
    int32_t v32;
    float f32;

    /* The valid file parses. */
    slm_tokenizer_t *t = NULL;
    assert_int_equal(slm_tokenizer_parse(d, len, vocab, "tok.bin", &t), SLM_OK);
    assert_int_equal(slm_tokenizer_vocab_size(t), vocab);
    slm_tokenizer_destroy(&t);
    assert_null(t);

    /* Piece lengths: negative, one past max_token_length, huge. */
    const int32_t bad_lens[] = {-5, max_len + 1, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_lens / sizeof bad_lens[0]; i++) {
        memcpy(copy, d, len);
        v32 = bad_lens[i];
        memcpy(copy + at + 4, &v32, 4);
        snprintf(want1, sizeof want1,
                 "token %d: piece length %d out of range [0, %d]", index,
                 bad_lens[i], max_len);
        expect_fail(copy, len, vocab, SLM_ERR_FORMAT, "tok.bin: ", want1);
    }

    /* max_token_length: 0, negative, past the limit, huge. */
    const int32_t bad_max[] = {0, -1, SLM_TOKENIZER_MAX_PIECE + 1, INT32_MAX,
                               INT32_MIN};
    for (size_t i = 0; i < sizeof bad_max / sizeof bad_max[0]; i++) {
        memcpy(copy, d, len);
        memcpy(copy, &bad_max[i], 4);
        snprintf(want1, sizeof want1,
                 "max_token_length %d out of range [1, %d]", bad_max[i],
                 SLM_TOKENIZER_MAX_PIECE);
        expect_fail(copy, len, vocab, SLM_ERR_FORMAT, want1, NULL);
    }
    /* A smaller max_token_length than the longest piece. */
    if (max_len > 1) {
        memcpy(copy, d, len);
        v32 = 1;
        memcpy(copy, &v32, 4);
        expect_fail(copy, len, vocab, SLM_ERR_FORMAT, "piece length",
                    "out of range [0, 1]");
    }

    /* Non-finite scores. */
    const float bad_scores[] = {NAN, INFINITY, -INFINITY};
    const char *const score_text[] = {"score nan", "score inf", "score -inf"};
    for (size_t i = 0; i < 3; i++) {
        memcpy(copy, d, len);
        f32 = bad_scores[i];
        memcpy(copy + at, &f32, 4);
        snprintf(want1, sizeof want1, "token %d: %s is not finite", index,
                 score_text[i]);
        expect_fail(copy, len, vocab, SLM_ERR_FORMAT, want1, NULL);
    }

    /* vocab_size argument out of range. */
    const int32_t bad_vocab[] = {
        0, -1, 2, INT32_MIN, INT32_MAX, SLM_TOKENIZER_MAX_VOCAB + 1};
    for (size_t i = 0; i < sizeof bad_vocab / sizeof bad_vocab[0]; i++) {
        snprintf(want1, sizeof want1, "vocab_size = %d is out of range",
                 bad_vocab[i]);
        expect_fail(d, len, bad_vocab[i], SLM_ERR_INVALID, want1, NULL);
    }

    /* Vocabulary mismatch: more entries than the model's vocab_size... */
    if (vocab > 3) {
        size_t extra = len - entry_offset(d, len, vocab - 1);
        snprintf(want1, sizeof want1, "%zu trailing bytes", extra);
        snprintf(want2, sizeof want2,
                 "more tokens than the model's vocab_size %d", vocab - 1);
        expect_fail(d, len, vocab - 1, SLM_ERR_FORMAT, want1, want2);
    }
    /* ...stray bytes after the last entry... */
    memcpy(copy, d, len);
    memset(copy + len, 0x5a, 5);
    snprintf(want2, sizeof want2, "vocab_size %d", vocab);
    expect_fail(copy, len + 5, vocab, SLM_ERR_FORMAT, "5 trailing bytes",
                want2);
    /* ...and fewer. */
    snprintf(want1, sizeof want1, "ends after %d of the model's vocab_size %d",
             vocab, vocab + 1);
    expect_fail(d, len, vocab + 1, SLM_ERR_FORMAT, "truncated", want1);

    /* Truncated at every offset of the first 2000 bytes, then 50 random. */
    uint64_t rng = seed;
    for (size_t k = 0; k < len; k++) {
        if (k >= 2000) {
            if (k > 2050)
                break;
            size_t cut =
                2000 + (size_t)(slm_test_rand_u64(&rng) % (len - 2000));
            expect_fail(d, cut, vocab, SLM_ERR_FORMAT, "truncated", "offset");
            continue;
        }
        expect_fail(d, k, vocab, SLM_ERR_FORMAT, "truncated", "offset");
    }
    /* The message names the offset and the token being read. */
    snprintf(want1, sizeof want1, "token %d: truncated at offset %zu", index,
             at + 4);
    expect_fail(d, at + 5, vocab, SLM_ERR_FORMAT, want1, "piece length");

    free(copy);
}

/* Random bytes: must never crash; if one happens to parse, use it. */
static void check_random_buffers(uint64_t seed, int count)
{
    uint64_t rng = seed;
    uint8_t buf[4096];
    for (int i = 0; i < count; i++) {
        size_t len = (size_t)(slm_test_rand_u64(&rng) % sizeof buf);
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)slm_test_rand_u64(&rng);
        if (len >= 4 && i % 2 == 0) { /* a plausible header, to go deeper */
            int32_t m = 1 + (int32_t)(slm_test_rand_u64(&rng) % 8);
            memcpy(buf, &m, 4);
        }
        int32_t vocab = 3 + (int32_t)(slm_test_rand_u64(&rng) % 600);
        slm_tokenizer_t *t = NULL;
        slm_error_clear();
        slm_status rc = slm_tokenizer_parse(buf, len, vocab, "random", &t);
        if (rc != SLM_OK) {
            assert_null(t);
            assert_true(slm_error_message()[0] != '\0');
            continue;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(slm_tokenizer_encode(t, (const char *)buf,
                                              len < 64 ? len : 64, true, true,
                                              &ids, &n),
                         SLM_OK);
        for (size_t k = 0; k < n; k++) {
            size_t pl;
            (void)slm_tokenizer_decode(t, k ? ids[k - 1] : 1, ids[k], &pl);
        }
        free(ids);
        slm_tokenizer_destroy(&t);
    }
}

/* A few bad files through slm_tokenizer_load and a temporary file. */
static void check_load_files(const uint8_t *d, size_t len, int32_t vocab,
                             int32_t index)
{
    char path[512];
    slm_tokenizer_t *t = NULL;

    slm_test_write_temp(d, len, path, sizeof path);
    assert_int_equal(slm_tokenizer_load(path, vocab, &t), SLM_OK);
    assert_int_equal(slm_tokenizer_vocab_size(t), vocab);
    slm_tokenizer_destroy(&t);
    assert_int_equal(slm_tokenizer_load(path, vocab + 1, &t), SLM_ERR_FORMAT);
    assert_non_null(strstr(slm_error_message(), path));
    assert_null(t);
    unlink(path);

    const size_t cuts[] = {0, 1, 3, 4, 7, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        slm_test_write_temp(d, cuts[i], path, sizeof path);
        assert_int_equal(slm_tokenizer_load(path, vocab, &t), SLM_ERR_FORMAT);
        assert_null(t);
        assert_non_null(strstr(slm_error_message(), "truncated"));
        unlink(path);
    }

    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, d, len);
    int32_t neg = -5;
    memcpy(copy + entry_offset(d, len, index) + 4, &neg, 4);
    slm_test_write_temp(copy, len, path, sizeof path);
    assert_int_equal(slm_tokenizer_load(path, vocab, &t), SLM_ERR_FORMAT);
    assert_non_null(strstr(slm_error_message(), "piece length -5"));
    unlink(path);
    free(copy);

    assert_int_equal(slm_tokenizer_load(path, vocab, &t), SLM_ERR_IO);
    assert_non_null(strstr(slm_error_message(), path));
    assert_null(t);
}

/* ------------------------------------------------------------------------ */
/* Random text                                                               */

static const char *const words[] = {
    "Once",  "upon", "a",    "time",  "there",   "was",   "little", "girl",
    "named", "Lily", "She",  "loved", "to",      "play",  "in",     "the",
    "park",  "with", "her",  "mom",   "One",     "day",   "saw",    "big",
    "red",   "ball", "and",  "said",  "\"Hi!\"", "happy", "went",   "Tim",
    "dog",   "tree", "they", "were",  "friends", "sun",   ".",      ",",
    "!",     "?",    "\n",   "  ",    "Ben",     "car",   "fun",    "ate"};

static size_t rand_words(uint64_t *rng, char *out, size_t cap)
{
    size_t len = 0, want = (size_t)(slm_test_rand_u64(rng) % cap);
    while (len < want) {
        const char *w;
        char tmp[8];
        if (slm_test_rand_u64(rng) % 5 == 0) { /* a made-up word */
            size_t k = 1 + slm_test_rand_u64(rng) % 6;
            for (size_t i = 0; i < k; i++)
                tmp[i] = (char)('a' + slm_test_rand_u64(rng) % 26);
            tmp[k] = '\0';
            w = tmp;
        } else {
            w = words[slm_test_rand_u64(rng) % (sizeof words / sizeof *words)];
        }
        size_t wl = strlen(w);
        if (len + wl + 1 > want)
            break;
        memcpy(out + len, w, wl);
        len += wl;
        if (slm_test_rand_u64(rng) % 4 != 0)
            out[len++] = ' ';
    }
    return len;
}

/* Any bytes: NULs, stray continuation bytes, runs of them longer than four,
 * truncated sequences, 0xF8..0xFF. */
static size_t rand_bytes(uint64_t *rng, char *out, size_t cap)
{
    size_t len = (size_t)(slm_test_rand_u64(rng) % cap);
    for (size_t i = 0; i < len; i++) {
        uint64_t r = slm_test_rand_u64(rng);
        switch (r % 4) {
        case 0:
            out[i] = (char)(0x80 | ((r >> 8) % 64));
            break;
        case 1:
            out[i] = (char)(' ' + (r >> 8) % 95);
            break;
        default:
            out[i] = (char)(r >> 8);
            break;
        }
    }
    return len;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Valid UTF-8 from every plane, mostly common scripts, some ASCII. */
static size_t rand_unicode(uint64_t *rng, char *out, size_t cap)
{
    size_t len = 0, want = (size_t)(slm_test_rand_u64(rng) % cap);
    static const uint32_t ranges[][2] = {
        {0x20, 0x7F},     {0xA0, 0x250},      {0x391, 0x3C9},
        {0x410, 0x44F},   {0x4E00, 0x4F00},   {0x3040, 0x30FF},
        {0xAC00, 0xAD00}, {0x1F600, 0x1F650}, {0x80, 0x800},
        {0x800, 0xD800},  {0xE000, 0x10000},  {0x10000, 0x110000}};
    while (len + 4 <= want) {
        size_t k = slm_test_rand_u64(rng) % (sizeof ranges / sizeof ranges[0]);
        uint32_t lo = ranges[k][0], hi = ranges[k][1];
        uint32_t cp = lo + (uint32_t)(slm_test_rand_u64(rng) % (hi - lo));
        len += put_utf8(out + len, cp);
    }
    return len;
}

/* Runs n random texts of up to max_len bytes through both encoders, and the
 * round trip where every byte has a byte token. */
static void heap_vs_reference(const slm_tokenizer_t *t, const ref_tok *r,
                              uint64_t seed, int n, size_t max_len,
                              bool round_trip)
{
    uint64_t rng = seed;
    char *text = malloc(max_len + 1);
    assert_non_null(text);
    for (int i = 0; i < n; i++) {
        size_t len;
        switch (i % 3) {
        case 0:
            len = rand_words(&rng, text, max_len);
            break;
        case 1:
            len = rand_bytes(&rng, text, max_len);
            break;
        default:
            len = rand_unicode(&rng, text, max_len);
            break;
        }
        uint64_t flags = slm_test_rand_u64(&rng);
        check_same(t, r, text, len, flags & 1, flags & 2);
        if (round_trip)
            check_round_trip(t, text, len);
    }
    free(text);
}

/* ------------------------------------------------------------------------ */
/* Synthetic vocabularies                                                    */

/* max_token_length 7; no byte tokens except 'z' (at an unusual id). */
static const vocab_entry small_vocab[] = {{"<unk>", 0},
                                          {"<s>", 0},
                                          {"</s>", 0},
                                          {" ", -10},
                                          {"a", -10},
                                          {"b", -10},
                                          {"c", -10},
                                          {"ab", -1},
                                          {"ba", -1},
                                          {" a", -2},
                                          {"abc", -0.5f},
                                          {"<0x7A>", 0},
                                          {"\xC3\xA9", -10},
                                          {" <0x42>", -20},
                                          {"<0x4a>", -20},
                                          {"<0x4G>", -20},
                                          {"\xF0\x9F\x99\x82", -10},
                                          {"\xA9\xA9\xA9\xA9", -10}};

static slm_tokenizer_t *parse_vocab(const vocab_entry *v, size_t n,
                                    int32_t max_len, buf_t *file)
{
    build_vocab(file, max_len, v, n);
    slm_tokenizer_t *t = NULL;
    slm_status rc =
        slm_tokenizer_parse(file->d, file->n, (int32_t)n, "synthetic", &t);
    if (rc != SLM_OK)
        fail_msg("parse: %s", slm_error_message());
    return t;
}

static void test_synthetic_encode(void **state)
{
    (void)state;
    buf_t file = {0};
    const size_t nv = sizeof small_vocab / sizeof small_vocab[0];
    slm_tokenizer_t *t = parse_vocab(small_vocab, nv, 7, &file);

    /* ab and ba tie at -1: the leftmost wins, then nothing merges. */
    expect_ids(t, "aba", false, false, (const int32_t[]){3, 7, 4}, 3);
    expect_ids(t, "abab", false, false, (const int32_t[]){3, 7, 7}, 3);
    /* ab (-1) first, then abc (-0.5). */
    expect_ids(t, "abc", false, false, (const int32_t[]){3, 10}, 2);
    /* BOS and EOS around a merged dummy prefix. */
    expect_ids(t, "a", true, true, (const int32_t[]){1, 9, 2}, 3);
    /* Byte fallback through the "<0x7A>" piece at id 11, not 'z' + 3. */
    expect_ids(t, "z", false, false, (const int32_t[]){3, 11}, 2);
    /* No piece and no byte token: <unk>. */
    expect_ids(t, "y", false, false, (const int32_t[]){3, 0}, 2);
    /* Encoding looks up upper-case "<0xNN>" only: "<0x4a>" is not 'J'. */
    expect_ids(t, "J", false, false, (const int32_t[]){3, 0}, 2);
    /* A two-byte code point found whole, and one byte of it alone. */
    expect_ids(t, "\xC3\xA9", false, false, (const int32_t[]){3, 12}, 2);
    expect_ids(t, "\xC3", false, false, (const int32_t[]){3, 0}, 2);
    /* A four-byte code point found whole. */
    expect_ids(t, "\xF0\x9F\x99\x82", false, false, (const int32_t[]){3, 16},
               2);
    /* Stray continuation bytes: first a group of four, then one. */
    expect_ids(t, "\xA9\xA9\xA9\xA9\xA9", false, false,
               (const int32_t[]){3, 17, 0}, 3);
    expect_ids(t, "\xA9\xA9\xA9", false, false, (const int32_t[]){3, 0, 0, 0},
               4);

    /* Empty text: no dummy prefix. */
    int32_t *ids = NULL;
    size_t n = 99;
    assert_int_equal(slm_tokenizer_encode(t, "", 0, false, false, &ids, &n),
                     SLM_OK);
    assert_int_equal(n, 0);
    free(ids);
    assert_int_equal(slm_tokenizer_encode(t, NULL, 0, true, false, &ids, &n),
                     SLM_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], SLM_TOKEN_BOS);
    free(ids);
    assert_int_equal(slm_tokenizer_encode(t, "", 0, true, true, &ids, &n),
                     SLM_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], SLM_TOKEN_EOS);
    free(ids);

    /* Bad arguments. */
    assert_int_equal(slm_tokenizer_encode(t, NULL, 1, false, false, &ids, &n),
                     SLM_ERR_INVALID);
    assert_int_equal(slm_tokenizer_encode(NULL, "a", 1, false, false, &ids, &n),
                     SLM_ERR_INVALID);
    assert_int_equal(slm_tokenizer_encode(t, "a", SLM_TOKENIZER_MAX_TEXT + 1,
                                          false, false, &ids, &n),
                     SLM_ERR_RANGE);
    assert_non_null(strstr(slm_error_message(), "exceeds the limit"));

    slm_tokenizer_destroy(&t);
    assert_null(t);
    slm_tokenizer_destroy(&t); /* NULL is fine */
    slm_tokenizer_destroy(NULL);
    buf_free(&file);
}

static void test_synthetic_decode(void **state)
{
    (void)state;
    buf_t file = {0};
    const size_t nv = sizeof small_vocab / sizeof small_vocab[0];
    slm_tokenizer_t *t = parse_vocab(small_vocab, nv, 7, &file);
    size_t len = 99;
    const char *p;

    p = slm_tokenizer_decode(t, 0, 9, &len); /* " a" */
    assert_int_equal(len, 2);
    assert_memory_equal(p, " a", 2);
    p = slm_tokenizer_decode(t, SLM_TOKEN_BOS, 9, &len); /* space dropped */
    assert_int_equal(len, 1);
    assert_memory_equal(p, "a", 1);
    p = slm_tokenizer_decode(t, SLM_TOKEN_BOS, 3, &len); /* " " -> "" */
    assert_int_equal(len, 0);
    p = slm_tokenizer_decode(t, 5, 11, &len); /* "<0x7A>" */
    assert_int_equal(len, 1);
    assert_int_equal(p[0], 'z');
    p = slm_tokenizer_decode(t, 5, 13, &len); /* " <0x42>", no BOS */
    assert_int_equal(len, 7);
    assert_memory_equal(p, " <0x42>", 7);
    p = slm_tokenizer_decode(t, SLM_TOKEN_BOS, 13, &len); /* after BOS */
    assert_int_equal(len, 1);
    assert_int_equal(p[0], 'B');
    p = slm_tokenizer_decode(t, 5, 14, &len); /* lower-case hex */
    assert_int_equal(len, 1);
    assert_int_equal(p[0], 'J');
    p = slm_tokenizer_decode(t, 5, 15, &len); /* not hex: the piece itself */
    assert_int_equal(len, 6);
    assert_memory_equal(p, "<0x4G>", 6);
    const int32_t out_of_range[] = {-1, (int32_t)nv, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < 4; i++) {
        len = 99;
        p = slm_tokenizer_decode(t, 1, out_of_range[i], &len);
        assert_non_null(p);
        assert_int_equal(len, 0);
    }
    len = 99;
    assert_non_null(slm_tokenizer_decode(NULL, 1, 1, &len));
    assert_int_equal(len, 0);
    assert_int_equal(slm_tokenizer_vocab_size(NULL), 0);

    slm_tokenizer_destroy(&t);
    buf_free(&file);
}

/* run.c's best_score starts at -1e10 and needs '>': a piece scoring -1e10
 * never merges; one scoring just above does. Also: no " " piece, no prefix. */
static void test_synthetic_merge_floor(void **state)
{
    (void)state;
    const vocab_entry v[] = {{"<unk>", 0},   {"<s>", 0}, {"</s>", 0},
                             {"x", 0},       {"y", 0},   {"xy", -1e10f},
                             {"yx", -9.9e9f}};
    buf_t file = {0};
    slm_tokenizer_t *t = parse_vocab(v, sizeof v / sizeof v[0], 6, &file);
    expect_ids(t, "xyx", false, false, (const int32_t[]){3, 6}, 2);
    expect_ids(t, "xy", true, false, (const int32_t[]){1, 3, 4}, 3);
    expect_ids(t, "x", false, false, (const int32_t[]){3}, 1);
    slm_tokenizer_destroy(&t);
    buf_free(&file);
}

/* Random small vocabularies over a tiny alphabet, with many tied scores,
 * duplicate and empty pieces, scores at the merge floor and byte tokens at
 * random ids: the heap merge must match the reference on each. */
static void test_synthetic_heap_vs_reference(void **state)
{
    (void)state;
    uint64_t rng = 0x5eed0001;
    static const char alphabet[] = "ab c";
    static const float scores[] = {0, -1, -2, -3, -1e10f, -2e10f, -0.5f, 7};
    buf_t file = {0};
    char piece[8], text[64];
    for (int round = 0; round < 300; round++) {
        int32_t vocab = 3 + (int32_t)(slm_test_rand_u64(&rng) % 60);
        file.n = 0;
        buf_i32(&file, 6);
        for (int32_t i = 0; i < vocab; i++) {
            uint64_t r = slm_test_rand_u64(&rng);
            size_t len;
            if (i < 3 && r % 4 != 0) {
                static const char *const special[] = {"<unk>", "<s>", "</s>"};
                len = strlen(special[i]);
                memcpy(piece, special[i], len);
            } else if (r % 10 == 0) {
                static const char bytes[] = {'a', 'b', 'd', (char)0xC3};
                len = (size_t)snprintf(piece, sizeof piece, "<0x%02X>",
                                       (unsigned char)bytes[(r >> 8) % 4]);
            } else {
                len = (r >> 8) % 6; /* 0 (empty) to 5 */
                for (size_t k = 0; k < len; k++)
                    piece[k] = alphabet[(r >> (16 + 2 * k)) % 4];
            }
            float score = scores[(r >> 40) % 8];
            buf_piece(&file, score, piece, len);
        }
        slm_tokenizer_t *t = NULL;
        assert_int_equal(
            slm_tokenizer_parse(file.d, file.n, vocab, "random", &t), SLM_OK);
        ref_tok r;
        ref_build(&r, file.d, file.n, vocab);
        for (int k = 0; k < 30; k++) {
            size_t len = (size_t)(slm_test_rand_u64(&rng) % sizeof text);
            for (size_t i = 0; i < len; i++) {
                uint64_t x = slm_test_rand_u64(&rng);
                text[i] = x % 16 == 0   ? (char)0xC3
                          : x % 16 == 1 ? (char)0xA9
                          : x % 16 == 2 ? 'd'
                                        : alphabet[(x >> 8) % 4];
            }
            uint64_t flags = slm_test_rand_u64(&rng);
            check_same(t, &r, text, len, flags & 1, flags & 2);
        }
        ref_free(&r);
        slm_tokenizer_destroy(&t);
    }
    buf_free(&file);
}

static void test_synthetic_bad_files(void **state)
{
    (void)state;
    buf_t file = {0};
    const size_t nv = sizeof small_vocab / sizeof small_vocab[0];
    build_vocab(&file, 7, small_vocab, nv);
    check_bad_files(file.d, file.n, (int32_t)nv, 7, 9, 1);
    check_random_buffers(2, 200);
    check_load_files(file.d, file.n, (int32_t)nv, 9);

    slm_tokenizer_t *t = NULL;
    assert_int_equal(slm_tokenizer_parse(NULL, 0, 3, NULL, &t), SLM_ERR_FORMAT);
    assert_non_null(strstr(slm_error_message(), "tokenizer"));
    assert_int_equal(
        slm_tokenizer_parse(file.d, file.n, (int32_t)nv, "x", NULL),
        SLM_ERR_INVALID);
    assert_int_equal(slm_tokenizer_load(NULL, 3, &t), SLM_ERR_INVALID);
    buf_free(&file);
}

/* ------------------------------------------------------------------------ */
/* The shared vocabularies                                                   */

typedef struct {
    uint8_t *data;
    size_t len;
    int32_t vocab;
    slm_tokenizer_t *tok;
    ref_tok ref;
} model_vocab;

static model_vocab m512, m32k;

static int load_model_vocab(model_vocab *m, const char *name, int32_t vocab)
{
    char path[1024];
    memset(m, 0, sizeof *m);
    if (slm_test_model_path(name, path, sizeof path) != 0)
        return -1;
    if (slm_file_read_all(path, SLM_TOKENIZER_MAX_FILE, &m->data, &m->len) !=
        SLM_OK)
        return -1;
    m->vocab = vocab;
    if (slm_tokenizer_load(path, vocab, &m->tok) != SLM_OK) {
        fprintf(stderr, "%s\n", slm_error_message());
        return -1;
    }
    ref_build(&m->ref, m->data, m->len, vocab);
    return 0;
}

static void free_model_vocab(model_vocab *m)
{
    slm_tokenizer_destroy(&m->tok);
    ref_free(&m->ref);
    free(m->data);
    memset(m, 0, sizeof *m);
}

static int models_setup(void **state)
{
    (void)state;
    if (load_model_vocab(&m512, "tok512.bin", 512) != 0 ||
        load_model_vocab(&m32k, "tokenizer.bin", 32000) != 0)
        return -1;
    return 0;
}

static int models_teardown(void **state)
{
    (void)state;
    free_model_vocab(&m512);
    free_model_vocab(&m32k);
    return 0;
}

static char *read_golden(const char *name, size_t *len)
{
    char path[1024];
    uint8_t *data = NULL;
    assert_int_equal(slm_test_golden_path(name, path, sizeof path), 0);
    assert_int_equal(slm_file_read_all(path, 1 << 20, &data, len), SLM_OK);
    char *text = malloc(*len + 1);
    assert_non_null(text);
    memcpy(text, data, *len);
    text[*len] = '\0';
    free(data);
    return text;
}

static void test_golden_once(void **state)
{
    (void)state;
    /* tokens_once.txt: "prompt_ids 1 403 407 261 378". */
    size_t len;
    char *golden = read_golden("tokens_once.txt", &len);
    const char *line = strstr(golden, "\nprompt_ids ");
    assert_non_null(line);
    int32_t want[64];
    size_t n_want = 0;
    char *p = (char *)line + strlen("\nprompt_ids ");
    while (*p && *p != '\n') {
        char *end;
        long v = strtol(p, &end, 10);
        assert_true(end != p && n_want < 64);
        want[n_want++] = (int32_t)v;
        p = end;
        while (*p == ' ')
            p++;
    }
    free(golden);
    const int32_t expected[] = {1, 403, 407, 261, 378};
    assert_int_equal(n_want, 5);
    assert_memory_equal(want, expected, sizeof expected);
    expect_ids(m512.tok, "Once upon a time", true, false, want, n_want);
    check_same(m512.tok, &m512.ref, "Once upon a time", 16, true, false);
}

static void test_golden_prompts_round_trip(void **state)
{
    (void)state;
    const char *const prompts[] = {"01.prompt", "02.prompt"};
    for (size_t i = 0; i < 2; i++) {
        size_t len;
        char *text = read_golden(prompts[i], &len);
        check_round_trip(m512.tok, text, len);
        check_round_trip(m32k.tok, text, len);
        check_same(m512.tok, &m512.ref, text, len, true, false);
        check_same(m32k.tok, &m32k.ref, text, len, true, true);
        free(text);
    }
    /* 01.prompt is the text of tokens_once.txt. */
    size_t len;
    char *text = read_golden("01.prompt", &len);
    assert_string_equal(text, "Once upon a time");
    free(text);
}

static void test_byte_fallback(void **state)
{
    (void)state;
    /* "ü日本🙂": none of it is a piece of the 512-token vocabulary (which
     * has "é", so that is checked separately). */
    const char *text = "\xC3\xBC\xE6\x97\xA5\xE6\x9C\xAC\xF0\x9F\x99\x82";
    const size_t len = strlen(text);
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(
        slm_tokenizer_encode(m512.tok, text, len, true, false, &ids, &n),
        SLM_OK);
    /* BOS, the dummy prefix, then one byte token per byte. */
    assert_int_equal(n, 2 + len);
    assert_int_equal(ids[0], SLM_TOKEN_BOS);
    for (size_t i = 0; i < len; i++) {
        size_t pl = 0;
        const char *p =
            slm_tokenizer_decode(m512.tok, ids[i + 1], ids[i + 2], &pl);
        assert_int_equal(pl, 1);
        assert_int_equal((unsigned char)p[0], (unsigned char)text[i]);
        /* In llama2.c's vocabularies byte b is token b + 3. */
        assert_int_equal(ids[i + 2], (unsigned char)text[i] + 3);
    }
    free(ids);
    check_round_trip(m512.tok, text, len);
    check_same(m512.tok, &m512.ref, text, len, true, true);
    /* "é" is piece 485 of the 512-token vocabulary: looked up whole. */
    expect_ids(m512.tok, "\xC3\xA9", true, false,
               (const int32_t[]){1, 410, 485}, 3);
    check_round_trip(m512.tok, "\xC3\xA9\xE6\x97\xA5", 5);
    /* The 32000-token vocabulary has whole pieces for some of these. */
    check_round_trip(m32k.tok, text, len);
    check_same(m32k.tok, &m32k.ref, text, len, false, false);
    /* Both map every byte to "<0xNN>" = token NN + 3, as run.c assumes. */
    for (int b = 0; b < 256; b++) {
        assert_int_equal(m512.ref.byte_id[b], b + 3);
        assert_int_equal(m32k.ref.byte_id[b], b + 3);
    }
}

static void test_empty_text(void **state)
{
    (void)state;
    const model_vocab *ms[] = {&m512, &m32k};
    for (size_t i = 0; i < 2; i++) {
        int32_t *ids = NULL;
        size_t n = 99;
        assert_int_equal(
            slm_tokenizer_encode(ms[i]->tok, "", 0, true, false, &ids, &n),
            SLM_OK);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], SLM_TOKEN_BOS);
        free(ids);
        n = 99;
        assert_int_equal(
            slm_tokenizer_encode(ms[i]->tok, "", 0, false, false, &ids, &n),
            SLM_OK);
        assert_int_equal(n, 0);
        free(ids);
    }
}

static void test_heap_vs_reference_512(void **state)
{
    (void)state;
    heap_vs_reference(m512.tok, &m512.ref, 0x512, 2000, 200, true);
}

static void test_heap_vs_reference_32000(void **state)
{
    (void)state;
    heap_vs_reference(m32k.tok, &m32k.ref, 0x32000, 1000, 200, true);
}

/* A long text: quadratic merging would not finish within the test timeout. */
static void test_long_text(void **state)
{
    (void)state;
    const size_t cap = (size_t)1 << 20;
    char *text = malloc(cap);
    assert_non_null(text);
    uint64_t rng = 7;
    size_t len = 0;
    while (len + 256 < cap)
        len += rand_words(&rng, text + len, 256);
    check_round_trip(m32k.tok, text, len);
    check_round_trip(m512.tok, text, len);
    free(text);
}

static void test_model_bad_files(void **state)
{
    (void)state;
    check_bad_files(m512.data, m512.len, 512, 7, 17, 3);
    check_load_files(m512.data, m512.len, 512, 17);
    /* The exact message of the brief, through the real file name. */
    uint8_t *copy = malloc(m512.len);
    assert_non_null(copy);
    memcpy(copy, m512.data, m512.len);
    int32_t neg = -5;
    memcpy(copy + entry_offset(m512.data, m512.len, 17) + 4, &neg, 4);
    slm_tokenizer_t *t = NULL;
    assert_int_equal(slm_tokenizer_parse(copy, m512.len, 512, "tok512.bin", &t),
                     SLM_ERR_FORMAT);
    assert_non_null(strstr(slm_error_message(),
                           "tok512.bin: token 17: piece length -5 out of "
                           "range [0, 7]"));
    free(copy);
    /* The 32000-token file for a 512-token model, and the reverse. */
    expect_fail(m32k.data, m32k.len, 512, SLM_ERR_FORMAT, "trailing bytes",
                "vocab_size 512");
    expect_fail(m512.data, m512.len, 32000, SLM_ERR_FORMAT, "truncated",
                "ends after 512 of the model's vocab_size 32000");
    check_bad_files(m32k.data, m32k.len, 32000, 27, 1000, 4);
}

int main(void)
{
    const struct CMUnitTest synthetic[] = {
        cmocka_unit_test(test_synthetic_encode),
        cmocka_unit_test(test_synthetic_decode),
        cmocka_unit_test(test_synthetic_merge_floor),
        cmocka_unit_test(test_synthetic_heap_vs_reference),
        cmocka_unit_test(test_synthetic_bad_files),
    };
    const struct CMUnitTest with_models[] = {
        cmocka_unit_test(test_golden_once),
        cmocka_unit_test(test_golden_prompts_round_trip),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_empty_text),
        cmocka_unit_test(test_heap_vs_reference_512),
        cmocka_unit_test(test_heap_vs_reference_32000),
        cmocka_unit_test(test_long_text),
        cmocka_unit_test(test_model_bad_files),
    };
    int failed = cmocka_run_group_tests_name("tokenizer, synthetic", synthetic,
                                             NULL, NULL);
    char path[1024];
    if (slm_test_model_path("tok512.bin", path, sizeof path) != 0 ||
        slm_test_model_path("tokenizer.bin", path, sizeof path) != 0 ||
        slm_test_golden_path("tokens_once.txt", path, sizeof path) != 0 ||
        slm_test_golden_path("01.prompt", path, sizeof path) != 0 ||
        slm_test_golden_path("02.prompt", path, sizeof path) != 0) {
        fprintf(stderr, "shared models or golden outputs missing: ran the "
                        "synthetic tests only\n");
        return failed ? failed : slm_test_missing_shared();
    }
    failed += cmocka_run_group_tests_name(
        "tokenizer, shared models", with_models, models_setup, models_teardown);
    return failed;
}
