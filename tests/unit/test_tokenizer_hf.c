/*
 * tests/unit/test_tokenizer_hf.c - Hugging Face tokenizer.json files
 * (model/tokenizer_hf.c through model/tokenizer.h) on small hand-written
 * files: one SentencePiece-style and one byte-level BPE, encoded and decoded,
 * special tokens matched only when asked, and every kind of refusal. The
 * real vocabularies are compared with `tokenizers` itself in
 * tests/integration/hf_tokenizer.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/tokenizer.h"
#include "tests/testutil.h"

/* ---- building files --------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

__attribute__((format(printf, 2, 3))) static void put(sbuf *b, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (b->n + (size_t)n + 1 > b->cap) {
        b->cap = (b->n + (size_t)n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* SentencePiece-style, as Llama 2's file: ids 0-2 <unk> <s> </s>, 3-258 the
 * byte tokens, then "\u2581" 259, "h" 260, "i" 261, "\u2581h" 262,
 * "\u2581hi" 263. */
#define SPM_VOCAB 264
static char *spm_json(const char *normalizer, const char *pre,
                      const char *decoder)
{
    sbuf b = {0};
    put(&b, "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,"
            "\"added_tokens\": ["
            "{\"id\": 0, \"content\": \"<unk>\", \"special\": true, "
            "\"normalized\": false, \"lstrip\": false, \"rstrip\": false, "
            "\"single_word\": false},"
            "{\"id\": 1, \"content\": \"<s>\", \"special\": true, "
            "\"normalized\": false},"
            "{\"id\": 2, \"content\": \"</s>\", \"special\": true, "
            "\"normalized\": false}],");
    put(&b, "\"normalizer\": %s, \"pre_tokenizer\": %s,", normalizer, pre);
    put(&b, "\"post_processor\": {\"type\": \"TemplateProcessing\", "
            "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": "
            "0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
            "\"pair\": [], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", "
            "\"ids\": [1], \"tokens\": [\"<s>\"]}}},");
    put(&b, "\"decoder\": %s,", decoder);
    put(&b, "\"model\": {\"type\": \"BPE\", \"dropout\": null, "
            "\"unk_token\": \"<unk>\", \"continuing_subword_prefix\": null, "
            "\"end_of_word_suffix\": null, \"fuse_unk\": true, "
            "\"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, "
            "\"</s>\": 2");
    for (int i = 0; i < 256; i++)
        put(&b, ", \"<0x%02X>\": %d", i, 3 + i);
    put(&b, ", \"\\u2581\": 259, \"h\": 260, \"i\": 261, \"\\u2581h\": 262, "
            "\"\\u2581hi\": 263}, \"merges\": [[\"\\u2581\", \"h\"], "
            "\"\\u2581h i\"]}}");
    return b.p;
}

static const char spm_legacy_norm[] =
    "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "
    "\"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": "
    "{\"String\": \" \"}, \"content\": \"\\u2581\"}]}";
static const char spm_decoder[] =
    "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", "
    "\"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": "
    "\"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", "
    "\"content\": \" \", \"start\": 1, \"stop\": 0}]}";
static const char spm_metaspace[] =
    "{\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", "
    "\"prepend_scheme\": \"first\", \"split\": false}";

/* Byte-level, as GPT-2's: "a" 0, "b" 1, "\u0120" (space) 2, "ab" 3,
 * "\u0120ab" 4, "<|end|>" 5 (special), "c" 6, "\u00c3\u00a9" (the bytes of
 * "é") 7 and its halves 8, 9; nothing else, so other characters are dropped
 * (there is no <unk>). */
#define BL_VOCAB 10
static char *bl_json(const char *normalizer, const char *pre)
{
    sbuf b = {0};
    put(&b,
        "{\"added_tokens\": [{\"id\": 5, \"content\": \"<|end|>\", "
        "\"special\": true, \"normalized\": false}],"
        "\"normalizer\": %s, \"pre_tokenizer\": %s,"
        "\"post_processor\": {\"type\": \"ByteLevel\", \"trim_offsets\": "
        "false},"
        "\"decoder\": {\"type\": \"ByteLevel\"},"
        "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, "
        "\"\\u0120\": 2, \"ab\": 3, \"\\u0120ab\": 4, \"<|end|>\": 5, "
        "\"c\": 6, \"\\u00c3\\u00a9\": 7, \"\\u00c3\": 8, "
        "\"\\u00a9\": 9}, \"merges\": [\"a b\", \"\\u0120 ab\", "
        "\"\\u00c3 \\u00a9\"]}}",
        normalizer, pre);
    return b.p;
}

static const char bl_pre[] =
    "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
    "\"trim_offsets\": true, \"use_regex\": true}";
/* Llama 3's split, spelled as in its file. */
static const char llama3_pre[] =
    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
    "\"pattern\": {\"Regex\": "
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"
    "\\\\p{N}{1,3}| "
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|"
    "\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": \"Isolated\", \"invert\": "
    "false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
    "\"trim_offsets\": true, \"use_regex\": false}]}";

static slm_tokenizer_t *parse_ok(const char *json, int32_t vocab)
{
    slm_tokenizer_t *t = NULL;
    slm_status rc = slm_tokenizer_parse_hf((const uint8_t *)json, strlen(json),
                                           vocab, "test.json", &t);
    if (rc != SLM_OK)
        fail_msg("parse failed: %s", slm_error_message());
    return t;
}

/* Parsing fails with `code` and a message holding `needle`. */
static void parse_bad(const char *json, int32_t vocab, slm_status code,
                      const char *needle)
{
    slm_tokenizer_t *t = (slm_tokenizer_t *)&t;
    slm_status rc = slm_tokenizer_parse_hf((const uint8_t *)json, strlen(json),
                                           vocab, "test.json", &t);
    if (rc == SLM_OK || strstr(slm_error_message(), needle) == NULL)
        fail_msg("expected an error with \"%s\", got %d: %s", needle, rc,
                 slm_error_message());
    assert_int_equal(rc, code);
    assert_null(t);
    assert_non_null(strstr(slm_error_message(), "test.json"));
}

static void expect(const slm_tokenizer_t *t, const char *text, bool add,
                   bool special, const int32_t *want, size_t n_want)
{
    const slm_encode_opts o = {.add_special = add, .parse_special = special};
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(
        slm_tokenizer_encode_ex(t, text, strlen(text), &o, &ids, &n), SLM_OK);
    if (n != n_want || (n && memcmp(ids, want, n * sizeof *ids) != 0)) {
        fprintf(stderr, "text \"%s\": got", text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, ", want");
        for (size_t i = 0; i < n_want; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
        fail();
    }
    free(ids);
}
#define EXPECT(t, text, add, special, ...)                                     \
    do {                                                                       \
        const int32_t want_[] = {__VA_ARGS__};                                 \
        expect(t, text, add, special, want_, sizeof want_ / sizeof *want_);    \
    } while (0)

static void expect_decode(const slm_tokenizer_t *t, int32_t prev, int32_t token,
                          const char *want)
{
    size_t len = 99;
    const char *p = slm_tokenizer_decode(t, prev, token, &len);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(p, want, len);
}

/* ---- SentencePiece-style ---------------------------------------------- */

static void test_spm_encode(void **state)
{
    (void)state;
    char *json = spm_json(spm_legacy_norm, "null", spm_decoder);
    slm_tokenizer_t *t = parse_ok(json, SPM_VOCAB);
    EXPECT(t, "hi", true, false, 1, 263);
    EXPECT(t, "hi hi", false, false, 263, 263);
    /* no "e": byte fallback, the two bytes of é */
    EXPECT(t, "h\xc3\xa9", false, false, 262, 3 + 0xC3, 3 + 0xA9);
    EXPECT(t, "hi", false, false, 263);
    /* <s> in the text: BOS only when asked; else bytes of ordinary text */
    EXPECT(t, "<s>hi", false, true, 1, 263);
    EXPECT(t, "<s>hi", false, false, 259, 3 + '<', 3 + 's', 3 + '>', 260, 261);
    /* the Prepend normalizer runs per segment, as in tokenizers */
    EXPECT(t, "hi</s>hi", false, true, 263, 2, 263);
    assert_int_equal(slm_tokenizer_bos_id(t), 1);
    assert_int_equal(slm_tokenizer_eos_id(t), -1);
    assert_true(slm_tokenizer_is_special(t, 1));
    assert_false(slm_tokenizer_is_special(t, 263));
    int32_t id = -1;
    assert_int_equal(slm_tokenizer_token_id(t, "</s>", &id), SLM_OK);
    assert_int_equal(id, 2);
    assert_int_equal(slm_tokenizer_token_id(t, "<nope>", &id),
                     SLM_ERR_UNAVAILABLE);
    /* eos asked, none known */
    const slm_encode_opts eos = {.add_eos = true};
    int32_t *ids = (int32_t *)&ids;
    size_t n = 7;
    assert_int_equal(slm_tokenizer_encode_ex(t, "hi", 2, &eos, &ids, &n),
                     SLM_ERR_UNSUPPORTED);
    assert_null(ids);
    /* text that is not UTF-8 */
    const slm_encode_opts plain = {0};
    assert_int_equal(slm_tokenizer_encode_ex(t, "h\xff", 2, &plain, &ids, &n),
                     SLM_ERR_INVALID);
    /* empty text */
    assert_int_equal(slm_tokenizer_encode_ex(t, "", 0, &plain, &ids, &n),
                     SLM_OK);
    assert_int_equal(n, 0);
    free(ids);
    slm_tokenizer_destroy(&t);
    assert_null(t);
    free(json);
}

static void test_spm_decode(void **state)
{
    (void)state;
    char *json = spm_json(spm_legacy_norm, "null", spm_decoder);
    slm_tokenizer_t *t = parse_ok(json, SPM_VOCAB + 10); /* padded model */
    expect_decode(t, 1, 263, "hi");                      /* after BOS: Strip */
    expect_decode(t, -1, 263, "hi"); /* the start of a text */
    expect_decode(t, 263, 263, " hi");
    expect_decode(t, 263, 3 + 0xC3, "\xc3");
    expect_decode(t, 263, 1, "<s>");
    expect_decode(t, 263, SPM_VOCAB + 3, ""); /* a padding id */
    expect_decode(t, 263, -5, "");
    assert_int_equal(slm_tokenizer_vocab_size(t), SPM_VOCAB + 10);
    slm_tokenizer_destroy(&t);
    free(json);
}

static void test_spm_metaspace(void **state)
{
    (void)state;
    char *json = spm_json("null", spm_metaspace, spm_decoder);
    slm_tokenizer_t *t = parse_ok(json, SPM_VOCAB);
    EXPECT(t, "hi hi", false, false, 263, 263);
    /* "first": only the start of the text gets the prefix */
    EXPECT(t, "<s>hi", false, true, 1, 260, 261);
    EXPECT(t, " hi", false, false, 263);
    slm_tokenizer_destroy(&t);
    free(json);
}

/* ---- byte-level -------------------------------------------------------- */

static void test_byte_level(void **state)
{
    (void)state;
    char *json = bl_json("null", bl_pre);
    slm_tokenizer_t *t = parse_ok(json, BL_VOCAB);
    EXPECT(t, "ab ab", false, false, 3, 4);
    EXPECT(t, "abc", true, false, 3, 6); /* the post-processor adds nothing */
    /* the special token only when asked; else its characters, which this
     * vocabulary lacks (no <unk>: dropped, as tokenizers drops them) */
    EXPECT(t, "ab<|end|>", false, true, 3, 5);
    EXPECT(t, "ab<|end|>", false, false, 3);
    EXPECT(t, "\xc3\xa9", false, false, 7);
    expect_decode(t, -1, 4, " ab");
    expect_decode(t, 4, 7, "\xc3\xa9");
    expect_decode(t, 4, 5, "<|end|>");
    assert_int_equal(slm_tokenizer_bos_id(t), -1);
    assert_true(slm_tokenizer_is_special(t, 5));
    slm_tokenizer_destroy(&t);
    free(json);

    /* NFC composes e + U+0301 into é; without it they stay apart */
    json = bl_json("{\"type\": \"NFC\"}", bl_pre);
    t = parse_ok(json, BL_VOCAB);
    EXPECT(t, "e\xcc\x81", false, false, 7);
    slm_tokenizer_destroy(&t);
    free(json);

    json = bl_json("null", llama3_pre);
    t = parse_ok(json, BL_VOCAB);
    EXPECT(t, "ab ab", false, false, 3, 4);
    EXPECT(t, "e\xcc\x81", false, false);
    slm_tokenizer_destroy(&t);
    free(json);
}

/* tokenizer.json + tokenizer_config.json in a directory, by the model's
 * path; and the format chosen by the tokenizer's name. */
static void test_open(void **state)
{
    (void)state;
    char dir[] = "/tmp/slm_tok_hf_XXXXXX", path[512], cfg[512];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    char *json = bl_json("null", bl_pre);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    f = fopen(cfg, "w");
    assert_non_null(f);
    fputs("{\"eos_token\": {\"content\": \"<|end|>\"}, \"add_bos_token\": "
          "true, \"model_max_length\": 1000000000000000019884624838656}",
          f);
    fclose(f);
    slm_tokenizer_t *t = NULL;
    assert_int_equal(slm_tokenizer_open(dir, NULL, BL_VOCAB, &t), SLM_OK);
    assert_int_equal(slm_tokenizer_eos_id(t), 5);
    /* add_bos_token is ignored beside a tokenizer.json, as transformers 5 */
    EXPECT(t, "ab", true, false, 3);
    const slm_encode_opts eos = {.add_eos = true};
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(slm_tokenizer_encode_ex(t, "ab", 2, &eos, &ids, &n),
                     SLM_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], 5);
    free(ids);
    slm_tokenizer_destroy(&t);

    char st[512];
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    assert_int_equal(slm_tokenizer_open(st, NULL, BL_VOCAB, &t), SLM_OK);
    slm_tokenizer_destroy(&t);
    assert_int_equal(slm_tokenizer_open("/x/stories.bin", path, BL_VOCAB, &t),
                     SLM_OK);
    slm_tokenizer_destroy(&t);
    /* a llama2.c model has no tokenizer beside it */
    assert_int_equal(slm_tokenizer_open("/x/stories.bin", NULL, BL_VOCAB, &t),
                     SLM_ERR_INVALID);
    assert_null(t);
    /* a tokenizer not named .json is a llama2.c file */
    assert_int_equal(slm_tokenizer_open(dir, cfg, BL_VOCAB, &t),
                     SLM_ERR_FORMAT);
    /* a broken config is an error, not ignored */
    f = fopen(cfg, "w");
    assert_non_null(f);
    fputs("{\"eos_token\": 5}", f);
    fclose(f);
    assert_int_equal(slm_tokenizer_open(dir, NULL, BL_VOCAB, &t),
                     SLM_ERR_FORMAT);
    assert_non_null(strstr(slm_error_message(), "eos_token"));
    unlink(cfg);
    unlink(path);
    rmdir(dir);
    free(json);
}

/* ---- refusals ---------------------------------------------------------- */

/* The byte-level file with `from` replaced by `to` (once). */
static char *edit(const char *from, const char *to)
{
    char *json = bl_json("null", bl_pre);
    char *at = strstr(json, from);
    assert_non_null(at);
    sbuf b = {0};
    put(&b, "%.*s%s%s", (int)(at - json), json, to, at + strlen(from));
    free(json);
    return b.p;
}

static void bad_edit(const char *from, const char *to, slm_status code,
                     const char *needle)
{
    char *json = edit(from, to);
    parse_bad(json, BL_VOCAB, code, needle);
    free(json);
}

static void test_refusals(void **state)
{
    (void)state;
    parse_bad("{", BL_VOCAB, SLM_ERR_FORMAT, "not valid JSON");
    parse_bad("[]", BL_VOCAB, SLM_ERR_FORMAT, "not a JSON object");
    parse_bad("{}", BL_VOCAB, SLM_ERR_FORMAT, "model");
    bad_edit("\"type\": \"BPE\"", "\"type\": \"WordPiece\"",
             SLM_ERR_UNSUPPORTED, "model.type: unknown model \"WordPiece\"");
}

static void test_refusals_fields(void **state)
{
    (void)state;
    /* a regex that is not in the built-in table, naming the field */
    bad_edit(bl_pre,
             "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\d+\"}, "
             "\"behavior\": \"Isolated\", \"invert\": false}",
             SLM_ERR_UNSUPPORTED, "pre_tokenizer.pattern.Regex: \"\\d+\"");
    bad_edit(bl_pre, "{\"type\": \"Whitespace\"}", SLM_ERR_UNSUPPORTED,
             "pre_tokenizer.type: unknown pre-tokenizer \"Whitespace\"");
    bad_edit(bl_pre,
             "{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, "
             "\"behavior\": \"Removed\", \"invert\": false}",
             SLM_ERR_UNSUPPORTED, "pre_tokenizer.behavior: \"Removed\"");
    bad_edit("\"normalizer\": null",
             "\"normalizer\": {\"type\": \"Lowercase\"}", SLM_ERR_UNSUPPORTED,
             "normalizer.type: unknown normalizer");
    bad_edit("\"normalizer\": null",
             "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": "
             "[{\"type\": \"NFC\"}, {\"type\": \"Strip\"}]}",
             SLM_ERR_UNSUPPORTED, "normalizer.normalizers[1].type");
    bad_edit("{\"type\": \"ByteLevel\"},", "{\"type\": \"WordPiece\"},",
             SLM_ERR_UNSUPPORTED,
             "decoder.type: unknown decoder \"WordPiece\"");
    bad_edit("\"post_processor\": {\"type\": \"ByteLevel\"",
             "\"post_processor\": {\"type\": \"BertProcessing\"",
             SLM_ERR_UNSUPPORTED,
             "post_processor.type: unknown post-processor");
    /* ids: out of the model's range, twice, not dense */
    char *ok = bl_json("null", bl_pre);
    parse_bad(ok, BL_VOCAB - 1, SLM_ERR_RANGE, "the model's vocab_size 9");
    free(ok);
    bad_edit("\"c\": 6", "\"c\": 3", SLM_ERR_FORMAT, "id 3 is given twice");
    bad_edit("\"c\": 6", "\"c\": 12", SLM_ERR_RANGE,
             "the id of \"c\" is not an integer in [0, 10)");
    bad_edit("\"c\": 6,", "", SLM_ERR_FORMAT, "id 6 has no piece");
    /* a piece twice: JSON keys (duplicate keys are refused), or an added
     * token repeating a piece under another id */
    bad_edit("\"c\": 6", "\"c\": 6, \"c\": 6", SLM_ERR_FORMAT,
             "not valid JSON");
    bad_edit("\"content\": \"<|end|>\"", "\"content\": \"ab\"", SLM_ERR_FORMAT,
             "id 5 is \"<|end|>\" in model.vocab but \"ab\" here");
    /* merges: unknown piece, unknown result, malformed */
    bad_edit("\"a b\"", "\"a z\"", SLM_ERR_FORMAT,
             "model.merges[0]: \"z\" is not a piece");
    bad_edit("\"a b\"", "\"b a\"", SLM_ERR_FORMAT,
             "merged piece \"ba\" is not in model.vocab");
    bad_edit("\"a b\"", "\"a b c\"", SLM_ERR_FORMAT, "model.merges[0]");
    bad_edit("\"a b\"", "[\"a\"]", SLM_ERR_FORMAT, "model.merges[0]");
    /* model fields */
    bad_edit("\"type\": \"BPE\",", "\"type\": \"BPE\", \"dropout\": 0.1,",
             SLM_ERR_UNSUPPORTED, "model.dropout");
    bad_edit("\"type\": \"BPE\",", "\"type\": \"BPE\", \"unk_token\": \"?\",",
             SLM_ERR_FORMAT, "model.unk_token");
    bad_edit("\"type\": \"BPE\",",
             "\"type\": \"BPE\", \"continuing_subword_prefix\": \"##\",",
             SLM_ERR_UNSUPPORTED, "model.continuing_subword_prefix");
    bad_edit("{\"added_tokens\"", "{\"truncation\": {}, \"added_tokens\"",
             SLM_ERR_UNSUPPORTED, "truncation");
    bad_edit("\"normalized\": false", "\"single_word\": true",
             SLM_ERR_UNSUPPORTED, "added_tokens[0].single_word");
    bad_edit("\"special\": true", "\"special\": 1", SLM_ERR_FORMAT,
             "added_tokens[0].special: must be true or false");

    /* a piece longer than the limit */
    sbuf b = {0};
    put(&b, "\"c\": 6, \"");
    for (int i = 0; i <= SLM_TOKENIZER_MAX_PIECE; i++)
        put(&b, "x");
    put(&b, "\": 8");
    char *json = edit("\"c\": 6", b.p);
    parse_bad(json, BL_VOCAB + 1, SLM_ERR_FORMAT, "out of range [1, 1024]");
    free(json);
    free(b.p);

    /* a file over the size limit, refused before it is read as JSON */
    const size_t big = SLM_TOKENIZER_HF_MAX_FILE + 1;
    uint8_t *huge = calloc(big, 1);
    assert_non_null(huge);
    slm_tokenizer_t *t = NULL;
    assert_int_equal(
        slm_tokenizer_parse_hf(huge, big, BL_VOCAB, "test.json", &t),
        SLM_ERR_RANGE);
    assert_non_null(strstr(slm_error_message(), "exceeds the limit"));
    free(huge);
    assert_int_equal(slm_tokenizer_parse_hf(NULL, 0, 0, "test.json", &t),
                     SLM_ERR_INVALID);
}

/* Every truncation of a valid file: an error or a tokenizer, never a crash
 * (ASan builds check the reads). */
static void test_truncations(void **state)
{
    (void)state;
    char *json = spm_json(spm_legacy_norm, "null", spm_decoder);
    const size_t n = strlen(json);
    for (size_t k = 0; k < n; k += 7) {
        uint8_t *cut = malloc(k ? k : 1);
        memcpy(cut, json, k);
        slm_tokenizer_t *t = NULL;
        slm_status rc = slm_tokenizer_parse_hf(cut, k, SPM_VOCAB, "cut", &t);
        assert_int_not_equal(rc, SLM_OK);
        assert_null(t);
        free(cut);
    }
    free(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_encode),
        cmocka_unit_test(test_spm_decode),
        cmocka_unit_test(test_spm_metaspace),
        cmocka_unit_test(test_byte_level),
        cmocka_unit_test(test_open),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_refusals_fields),
        cmocka_unit_test(test_truncations),
    };
    return cmocka_run_group_tests_name("tokenizer_hf", tests, NULL, NULL);
}
