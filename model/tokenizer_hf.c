/*
 * model/tokenizer_hf.c - Hugging Face tokenizer.json files with a BPE model:
 * what the `tokenizers` library (0.23) does to encode one sequence and to
 * decode its ids, for the components published Llama, Mistral, Qwen, GPT-2
 * and SmolLM files use. Anything else is refused by name, so a file is never
 * half-understood.
 *
 * The format (JSON, read with jansson; duplicate keys refused):
 *   model          {"type": "BPE", "vocab": {piece: id}, "merges": ["a b"] or
 *                  [["a", "b"]], "unk_token", "byte_fallback", "fuse_unk",
 *                  "ignore_merges", "dropout": null,
 *                  "continuing_subword_prefix"/"end_of_word_suffix": null/""}
 *   added_tokens   [{"id", "content", "special", "normalized", "lstrip",
 *                  "rstrip", "single_word": false}]
 *   normalizer     null | Sequence | Prepend | Replace(String) |
 * NFC/NFD/NFKC/NFKD pre_tokenizer  null | Sequence | Metaspace | ByteLevel |
 * Digits | Split(Regex from the built-in table, or String; Isolated)
 *   post_processor null | TemplateProcessing | ByteLevel | Sequence of them
 *   decoder        null | ByteLevel | Metaspace | Sequence of Replace(String),
 *                  ByteFallback, Fuse, Strip(stop 0), ByteLevel, Metaspace
 *   truncation, padding: null (either would change what encode returns)
 *
 * Encoding, as `tokenizers` encodes one sequence:
 *   1. added tokens with normalized=false are split out of the raw text,
 *      leftmost-longest (special ones only when parse_special is asked; when
 *      not, their text stays text, as with encode_special_tokens=True);
 *   2. each remaining segment is normalized, and added tokens with
 *      normalized=true (their content normalized too) are split out of it;
 *   3. the pre-tokenizer steps turn each segment into pieces;
 *   4. each piece is BPE-encoded: its characters (after the GPT-2 byte map
 *      for byte-level files) looked up, byte fallback or <unk> for the rest,
 *      then the adjacent pair of lowest merge rank merged, leftmost first,
 *      until no pair has a rank;
 *   5. the post-processor's special tokens go around the whole.
 * Split regexes are never compiled from the file: the file's pattern must be
 * one of known_patterns below, and what is compiled is our PCRE2 spelling of
 * it. Oniguruma (what `tokenizers` uses) reads \s as Unicode White_Space, but
 * PCRE2 10.42's \s also takes U+180E, so the table spells the whitespace
 * class out.
 *
 * Decoding is per token (the streaming API): each id's bytes through the
 * decoder chain are computed at load, once as the first token of a text and
 * once as any later token (they differ where the chain strips or drops the
 * leading space).
 */
#include "model/tokenizer_impl.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/checked.h"
#include "common/utf8.h"

/* Nesting of Sequence inside Sequence: real files use one level. */
#define MAX_DEPTH 4
/* Steps of each chain and ids of each post-processor template side. */
#define MAX_STEPS        16
#define MAX_TEMPLATE_IDS 16
/* Prepend, Replace and Metaspace strings; Strip content is one character. */
#define MAX_SMALL_STRING 64
/* PCRE2 backtracking bounds per match: far above what the known patterns
 * need on any text (they are linear), low enough to stop a runaway. */
#define MATCH_LIMIT    50000000u
#define HEAP_LIMIT_KIB (256u * 1024u)

/* ------------------------------------------------------------------------ */
/* Growable buffers                                                          */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

typedef struct {
    int32_t *v;
    size_t n, cap;
} idvec;

/* A piece of a buffer: [off, off + len); first when it begins at offset 0 of
 * the original text (Metaspace's prepend_scheme "first" asks). */
typedef struct {
    size_t off, len;
    bool first;
} span;

typedef struct {
    span *v;
    size_t n, cap;
} spans;

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 16, bytes;
    while (c < need)
        if (!slm_size_mul(c, 2, &c))
            return false;
    if (!slm_size_mul(c, elem, &bytes))
        return false;
    void *q = realloc(*p, bytes);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}

static slm_status oom(void)
{
    return slm_fail(SLM_ERR_NOMEM, "tokenizer: out of memory");
}

static slm_status buf_put(buf *b, const void *s, size_t n)
{
    size_t need;
    if (!slm_size_add(b->n, n, &need) ||
        !grow((void **)&b->p, &b->cap, need, 1))
        return oom();
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n = need;
    return SLM_OK;
}

static slm_status ids_push(idvec *v, int32_t id)
{
    if (!grow((void **)&v->v, &v->cap, v->n + 1, sizeof *v->v))
        return oom();
    v->v[v->n++] = id;
    return SLM_OK;
}

static slm_status spans_push(spans *v, size_t off, size_t len, bool first)
{
    if (len == 0)
        return SLM_OK; /* `tokenizers` drops empty pieces */
    if (!grow((void **)&v->v, &v->cap, v->n + 1, sizeof *v->v))
        return oom();
    v->v[v->n++] = (span){off, len, first};
    return SLM_OK;
}

/* ------------------------------------------------------------------------ */
/* UTF-8 and the GPT-2 byte map                                              */

/* Length of the UTF-8 sequence led by c; text here is validated first. */
static size_t u8len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

static int32_t u8decode(const char *s, size_t *len)
{
    utf8proc_int32_t cp = -1;
    utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)s,
                                          (utf8proc_ssize_t)*len, &cp);
    *len = n > 0 ? (size_t)n : 1;
    return cp;
}

static size_t u8encode(int32_t cp, char out[4])
{
    return (size_t)utf8proc_encode_char(cp, (utf8proc_uint8_t *)out);
}

/* GPT-2's bytes_to_unicode: the printable bytes of Latin-1 stand for
 * themselves; the other 68, in increasing order, become U+0100 onwards, so
 * that every byte is a visible character in the vocabulary. */
static bool byte_printable(int b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
           (b >= 0xAE && b <= 0xFF);
}

/* Rust's char::is_whitespace (Unicode White_Space): lstrip and rstrip. */
static bool is_white_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ------------------------------------------------------------------------ */
/* The tokenizer                                                             */

enum { N_PREPEND, N_REPLACE, N_UNICODE };
typedef struct {
    int kind;
    char a[MAX_SMALL_STRING], b[MAX_SMALL_STRING];
    size_t alen, blen;
    utf8proc_option_t form; /* N_UNICODE */
} norm_step;

enum { P_METASPACE, P_SPLIT, P_BYTELEVEL, P_DIGITS };
enum { PREPEND_NEVER, PREPEND_FIRST, PREPEND_ALWAYS };
typedef struct {
    int kind;
    char rep[8]; /* Metaspace replacement, one character */
    size_t rep_len;
    int prepend;           /* Metaspace: PREPEND_* */
    bool split;            /* Metaspace */
    bool add_prefix_space; /* ByteLevel */
    bool individual;       /* Digits */
    pcre2_code *re;        /* Split; ByteLevel with use_regex */
} pre_step;

enum { D_BYTELEVEL, D_METASPACE, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP };
typedef struct {
    int kind;
    char a[MAX_SMALL_STRING], b[MAX_SMALL_STRING];
    size_t alen, blen;
    int prepend; /* Metaspace */
    int count;   /* Strip: characters at the start */
} dec_step;

enum { F_MODEL = 1, F_ADDED = 2, F_SPECIAL = 4 };

typedef struct {
    int32_t id;
    bool special, lstrip, rstrip, normalized;
    char *pat; /* what is matched: the content, normalized if `normalized` */
    size_t pat_len;
} added_tok;

/* Added tokens to match, by first byte, longest first within a byte. */
typedef struct {
    uint32_t *idx; /* into added[] */
    size_t n;
    size_t start[257];
} match_set;

typedef struct {
    uint64_t key; /* left id << 32 | right id; UINT64_MAX when empty */
    uint32_t rank;
    int32_t id;
} merge_ent;

struct slm__tok_hf {
    int32_t n_tok; /* ids [0, n_tok), each with a piece */
    char *pool;    /* every piece, each followed by a NUL */
    uint32_t *off, *len;
    uint8_t *flags; /* F_* */
    int32_t *ht;    /* piece -> id, open addressing; -1 empty */
    size_t ht_mask;
    merge_ent *mt;
    size_t mt_mask;

    added_tok *added;
    size_t n_added;
    match_set raw, norm;

    norm_step norm_steps[MAX_STEPS];
    size_t n_norm;
    pre_step pre[MAX_STEPS];
    size_t n_pre;
    bool byte_level; /* a ByteLevel pre-tokenizer: BPE sees mapped bytes */
    char byte_map[256][3]; /* byte -> its character in the byte alphabet */
    uint8_t byte_map_len[256];
    uint8_t byte_of_high[68]; /* U+0100 + k -> the byte it stands for */

    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;
    int32_t byte_id[256]; /* "<0xNN>" in the model vocabulary, else -1 */

    int32_t pre_ids[MAX_TEMPLATE_IDS], post_ids[MAX_TEMPLATE_IDS];
    size_t n_pre_ids, n_post_ids;
    int32_t bos_id, eos_id;
    int32_t max_token_bytes;

    dec_step dec[MAX_STEPS];
    size_t n_dec;
    bool dec_null; /* no decoder: `tokenizers` joins tokens with spaces */
    char *dec_pool;
    uint32_t *dec_off, *dec_len, *first_off, *first_len;

    pcre2_match_context *mctx;
};

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

/* Fails with "<what>: <field>: <message>". */
__attribute__((format(printf, 4, 5))) static slm_status
bad(slm_status code, const char *what, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return slm_fail(code, "%s: %s: %s", what, field, msg);
}

/* A JSON string shown in a message: at most 80 bytes of it. */
static int shown(size_t n)
{
    return n > 80 ? 80 : (int)n;
}

/* field + "." + key into out, for messages. */
/* A name too long for its buffer is shown cut short, which is what these
 * want: gcc's warning that it may happen is silenced here only. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-truncation"
static const char *sub(char *out, size_t cap, const char *field,
                       const char *key)
{
    snprintf(out, cap, "%s.%s", field, key);
    return out;
}

static const char *idx(char *out, size_t cap, const char *field, size_t i)
{
    snprintf(out, cap, "%s[%zu]", field, i);
    return out;
}
#pragma GCC diagnostic pop

/* ------------------------------------------------------------------------ */
/* JSON accessors: absent and null read as the default                      */

static slm_status get_bool(const char *what, const char *field, json_t *o,
                           const char *key, bool dflt, bool *out)
{
    char f[192];
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return SLM_OK;
    }
    if (!json_is_boolean(v))
        return bad(SLM_ERR_FORMAT, what, sub(f, sizeof f, field, key),
                   "must be true or false");
    *out = json_is_true(v);
    return SLM_OK;
}

/* *s NULL when absent or null and !required. */
static slm_status get_str(const char *what, const char *field, json_t *o,
                          const char *key, bool required, const char **s,
                          size_t *n)
{
    char f[192];
    json_t *v = json_object_get(o, key);
    *s = NULL;
    *n = 0;
    if (!v || json_is_null(v)) {
        if (required)
            return bad(SLM_ERR_FORMAT, what, sub(f, sizeof f, field, key),
                       "missing");
        return SLM_OK;
    }
    if (!json_is_string(v))
        return bad(SLM_ERR_FORMAT, what, sub(f, sizeof f, field, key),
                   "must be a string");
    *s = json_string_value(v);
    *n = json_string_length(v);
    return SLM_OK;
}

static slm_status get_type(const char *what, const char *field, json_t *o,
                           const char **type)
{
    size_t n;
    if (!json_is_object(o))
        return bad(SLM_ERR_FORMAT, what, field, "must be an object or null");
    return get_str(what, field, o, "type", true, type, &n);
}

static slm_status small_string(const char *what, const char *field,
                               const char *s, size_t n, bool allow_empty,
                               char *dst, size_t *dst_len)
{
    if ((!allow_empty && n == 0) || n >= MAX_SMALL_STRING)
        return bad(SLM_ERR_FORMAT, what, field,
                   "length %zu out of range [%d, %d]", n, allow_empty ? 0 : 1,
                   MAX_SMALL_STRING - 1);
    memcpy(dst, s, n);
    dst[n] = '\0';
    *dst_len = n;
    return SLM_OK;
}

/* {"String": s} (or {"Regex": r} when allowed) of Replace and Split. */
static slm_status get_pattern(const char *what, const char *field, json_t *o,
                              bool allow_regex, const char **s, size_t *n,
                              bool *is_regex)
{
    char f[192];
    json_t *p = json_object_get(o, "pattern");
    sub(f, sizeof f, field, "pattern");
    if (!json_is_object(p) || json_object_size(p) != 1)
        return bad(SLM_ERR_FORMAT, what, f,
                   "must be {\"String\": ...} or {\"Regex\": ...}");
    json_t *v = json_object_get(p, "String");
    *is_regex = false;
    if (!v && (v = json_object_get(p, "Regex")) != NULL) {
        if (!allow_regex)
            return bad(SLM_ERR_UNSUPPORTED, what, f,
                       "Regex patterns are not supported here");
        *is_regex = true;
    }
    if (!json_is_string(v))
        return bad(SLM_ERR_FORMAT, what, f,
                   "must be {\"String\": ...} or {\"Regex\": ...}");
    *s = json_string_value(v);
    *n = json_string_length(v);
    return SLM_OK;
}

/* ------------------------------------------------------------------------ */
/* Lookups                                                                   */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_pair(uint64_t k)
{
    k ^= k >> 33; /* murmur3's finaliser */
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    return k ^ (k >> 33);
}

/* The id of piece s(n) among all tokens, or -1. */
static int32_t find(const struct slm__tok_hf *t, const char *s, size_t n)
{
    if (!t->ht)
        return -1;
    for (size_t i = hash_bytes(s, n) & t->ht_mask;; i = (i + 1) & t->ht_mask) {
        int32_t id = t->ht[i];
        if (id < 0)
            return -1;
        if (t->len[id] == n && memcmp(t->pool + t->off[id], s, n) == 0)
            return id;
    }
}

/* As find, but only the BPE model's own vocabulary (added tokens that are not
 * in model.vocab never come out of BPE). */
static int32_t find_model(const struct slm__tok_hf *t, const char *s, size_t n)
{
    int32_t id = find(t, s, n);
    return id >= 0 && (t->flags[id] & F_MODEL) ? id : -1;
}

static const merge_ent *find_merge(const struct slm__tok_hf *t, int32_t a,
                                   int32_t b)
{
    if (!t->mt)
        return NULL;
    const uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = hash_pair(key) & t->mt_mask;; i = (i + 1) & t->mt_mask) {
        if (t->mt[i].key == UINT64_MAX)
            return NULL;
        if (t->mt[i].key == key)
            return &t->mt[i];
    }
}

/* ------------------------------------------------------------------------ */
/* Normalizer                                                                */

static slm_status parse_normalizer(struct slm__tok_hf *t, const char *what,
                                   const char *field, json_t *n, int depth)
{
    char f[192], g[192];
    if (!n || json_is_null(n))
        return SLM_OK;
    const char *type;
    SLM_CHECK(get_type(what, field, n, &type));
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(n, "normalizers");
        sub(f, sizeof f, field, "normalizers");
        if (!json_is_array(list))
            return bad(SLM_ERR_FORMAT, what, f, "must be an array");
        if (depth >= MAX_DEPTH)
            return bad(SLM_ERR_UNSUPPORTED, what, field,
                       "Sequence nested deeper than %d", MAX_DEPTH);
        for (size_t i = 0; i < json_array_size(list); i++)
            SLM_CHECK(parse_normalizer(t, what, idx(g, sizeof g, f, i),
                                       json_array_get(list, i), depth + 1));
        return SLM_OK;
    }
    if (t->n_norm >= MAX_STEPS)
        return bad(SLM_ERR_UNSUPPORTED, what, field, "more than %d normalizers",
                   MAX_STEPS);
    norm_step *st = &t->norm_steps[t->n_norm];
    memset(st, 0, sizeof *st);
    const char *s;
    size_t len;
    if (strcmp(type, "Prepend") == 0) {
        st->kind = N_PREPEND;
        SLM_CHECK(get_str(what, field, n, "prepend", true, &s, &len));
        SLM_CHECK(small_string(what, sub(f, sizeof f, field, "prepend"), s, len,
                               false, st->a, &st->alen));
    } else if (strcmp(type, "Replace") == 0) {
        bool re;
        st->kind = N_REPLACE;
        SLM_CHECK(get_pattern(what, field, n, false, &s, &len, &re));
        SLM_CHECK(small_string(what, sub(f, sizeof f, field, "pattern"), s, len,
                               false, st->a, &st->alen));
        SLM_CHECK(get_str(what, field, n, "content", true, &s, &len));
        SLM_CHECK(small_string(what, sub(f, sizeof f, field, "content"), s, len,
                               true, st->b, &st->blen));
    } else if (strcmp(type, "NFC") == 0) {
        st->kind = N_UNICODE;
        st->form = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    } else if (strcmp(type, "NFD") == 0) {
        st->kind = N_UNICODE;
        st->form = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    } else if (strcmp(type, "NFKC") == 0) {
        st->kind = N_UNICODE;
        st->form = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    } else if (strcmp(type, "NFKD") == 0) {
        st->kind = N_UNICODE;
        st->form = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    } else {
        return bad(SLM_ERR_UNSUPPORTED, what, sub(f, sizeof f, field, "type"),
                   "unknown normalizer \"%s\"", type);
    }
    t->n_norm++;
    return SLM_OK;
}

/* Replaces every non-overlapping a(alen), left to right, by b(blen). */
static slm_status replace_all(const char *s, size_t n, const char *a,
                              size_t alen, const char *b, size_t blen, buf *out)
{
    out->n = 0;
    size_t i = 0, from = 0;
    while (i + alen <= n) {
        if (memcmp(s + i, a, alen) == 0) {
            SLM_CHECK(buf_put(out, s + from, i - from));
            SLM_CHECK(buf_put(out, b, blen));
            i += alen;
            from = i;
        } else {
            i++;
        }
    }
    return buf_put(out, s + from, n - from);
}

/* The normalizer chain over s(n), into *out (reset first). */
static slm_status normalize(const struct slm__tok_hf *t, const char *s,
                            size_t n, buf *out)
{
    buf tmp = {0};
    slm_status rc;
    out->n = 0;
    SLM_CHECK_GOTO(buf_put(out, s, n), rc, done);
    for (size_t k = 0; k < t->n_norm; k++) {
        const norm_step *st = &t->norm_steps[k];
        tmp.n = 0;
        if (out->n == 0)
            break; /* every normalizer leaves an empty string empty */
        if (st->kind == N_PREPEND) {
            SLM_CHECK_GOTO(buf_put(&tmp, st->a, st->alen), rc, done);
            SLM_CHECK_GOTO(buf_put(&tmp, out->p, out->n), rc, done);
        } else if (st->kind == N_REPLACE) {
            SLM_CHECK_GOTO(replace_all(out->p, out->n, st->a, st->alen, st->b,
                                       st->blen, &tmp),
                           rc, done);
        } else {
            utf8proc_uint8_t *d = NULL;
            utf8proc_ssize_t m =
                utf8proc_map((const utf8proc_uint8_t *)out->p,
                             (utf8proc_ssize_t)out->n, &d, st->form);
            if (m < 0) {
                rc = slm_fail(m == UTF8PROC_ERROR_NOMEM ? SLM_ERR_NOMEM
                                                        : SLM_ERR_INVALID,
                              "tokenizer: normalizer: %s", utf8proc_errmsg(m));
                goto done;
            }
            rc = buf_put(&tmp, d, (size_t)m);
            free(d);
            if (rc != SLM_OK)
                goto done;
        }
        /* NFKC and Replace can grow text: keep it within what encode takes
         * from a caller, with room for the growth of real text. */
        if (tmp.n > 4 * SLM_TOKENIZER_MAX_TEXT) {
            rc = slm_fail(SLM_ERR_RANGE,
                          "tokenizer: normalized text of %zu bytes exceeds "
                          "the limit of %zu",
                          tmp.n, 4 * SLM_TOKENIZER_MAX_TEXT);
            goto done;
        }
        buf swap = *out;
        *out = tmp;
        tmp = swap;
    }
    rc = SLM_OK;
done:
    free(tmp.p);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Pre-tokenizer                                                             */

/* The split patterns we accept: the file's spelling (after JSON unescaping),
 * and the PCRE2 pattern we compile for it. WS is Oniguruma's Unicode \s. */
#define WS "\\t-\\r\\x{85}\\p{Z}"
static const struct {
    const char *name, *file, *pcre;
} known_patterns[] = {
    {"GPT-2",
     "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
     "|\\s+(?!\\S)|\\s+",
     "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+"
     "|[" WS "]+(?![^" WS "])|[" WS "]+"},
    {"Llama 3",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
     "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
     "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+"
     "|[" WS "]+(?![^" WS "])|[" WS "]+"},
    {"Qwen2",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
     "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
     "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+"
     "|[" WS "]+(?![^" WS "])|[" WS "]+"},
    {"Qwen3.5",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+"
     "|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)"
     "|\\s+",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+"
     "|\\p{N}| ?[^" WS "\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+"
     "|[" WS "]+(?![^" WS "])|[" WS "]+"},
};
#undef WS
#define GPT2_PATTERN 0

const char *slm_tokenizer_split_pattern(const char *name)
{
    for (size_t k = 0;
         name && k < sizeof known_patterns / sizeof *known_patterns; k++)
        if (strcmp(known_patterns[k].name, name) == 0)
            return known_patterns[k].file;
    return NULL;
}

static slm_status compile(const char *what, const char *field,
                          const char *pattern, size_t len, uint32_t options,
                          pcre2_code **out)
{
    int err;
    PCRE2_SIZE at;
    *out = pcre2_compile((PCRE2_SPTR)pattern, len,
                         PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | options,
                         &err, &at, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return bad(SLM_ERR_INTERNAL, what, field,
                   "PCRE2 refused the pattern at offset %zu: %s", (size_t)at,
                   (const char *)msg);
    }
    return SLM_OK;
}

static slm_status parse_pre(struct slm__tok_hf *t, const char *what,
                            const char *field, json_t *p, int depth)
{
    char f[192], g[192];
    if (!p || json_is_null(p))
        return SLM_OK;
    const char *type;
    SLM_CHECK(get_type(what, field, p, &type));
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(p, "pretokenizers");
        sub(f, sizeof f, field, "pretokenizers");
        if (!json_is_array(list))
            return bad(SLM_ERR_FORMAT, what, f, "must be an array");
        if (depth >= MAX_DEPTH)
            return bad(SLM_ERR_UNSUPPORTED, what, field,
                       "Sequence nested deeper than %d", MAX_DEPTH);
        for (size_t i = 0; i < json_array_size(list); i++)
            SLM_CHECK(parse_pre(t, what, idx(g, sizeof g, f, i),
                                json_array_get(list, i), depth + 1));
        return SLM_OK;
    }
    if (t->n_pre >= MAX_STEPS)
        return bad(SLM_ERR_UNSUPPORTED, what, field,
                   "more than %d pre-tokenizers", MAX_STEPS);
    /* ByteLevel maps the text to its byte alphabet; a step after it would
     * see that alphabet, which no published file does. */
    if (t->byte_level)
        return bad(SLM_ERR_UNSUPPORTED, what, field,
                   "a pre-tokenizer after ByteLevel is not supported");
    pre_step *st = &t->pre[t->n_pre];
    memset(st, 0, sizeof *st);
    const char *s;
    size_t len;
    if (strcmp(type, "Metaspace") == 0) {
        st->kind = P_METASPACE;
        SLM_CHECK(get_str(what, field, p, "replacement", true, &s, &len));
        size_t cl = len;
        if (len == 0 || u8decode(s, &cl) < 0 || cl != len)
            return bad(SLM_ERR_FORMAT, what,
                       sub(f, sizeof f, field, "replacement"),
                       "must be one character");
        memcpy(st->rep, s, len);
        st->rep_len = len;
        SLM_CHECK(get_bool(what, field, p, "split", true, &st->split));
        bool legacy = true;
        json_t *aps = json_object_get(p, "add_prefix_space");
        SLM_CHECK(get_bool(what, field, p, "add_prefix_space", true, &legacy));
        SLM_CHECK(get_str(what, field, p, "prepend_scheme", false, &s, &len));
        st->prepend = PREPEND_ALWAYS;
        if (s && strcmp(s, "first") == 0)
            st->prepend = PREPEND_FIRST;
        else if (s && strcmp(s, "never") == 0)
            st->prepend = PREPEND_NEVER;
        else if (s && strcmp(s, "always") != 0)
            return bad(SLM_ERR_UNSUPPORTED, what,
                       sub(f, sizeof f, field, "prepend_scheme"),
                       "unknown value \"%.*s\"", shown(len), s);
        if (!s && aps && !legacy) /* the older spelling */
            st->prepend = PREPEND_NEVER;
    } else if (strcmp(type, "Split") == 0) {
        bool re = false, invert = false;
        st->kind = P_SPLIT;
        SLM_CHECK(get_pattern(what, field, p, true, &s, &len, &re));
        SLM_CHECK(get_bool(what, field, p, "invert", false, &invert));
        if (invert)
            return bad(SLM_ERR_UNSUPPORTED, what,
                       sub(f, sizeof f, field, "invert"),
                       "true is not supported");
        const char *beh;
        size_t blen;
        SLM_CHECK(get_str(what, field, p, "behavior", true, &beh, &blen));
        if (strcmp(beh, "Isolated") != 0)
            return bad(
                SLM_ERR_UNSUPPORTED, what, sub(f, sizeof f, field, "behavior"),
                "\"%.*s\" is not supported (only Isolated)", shown(blen), beh);
        if (len == 0)
            return bad(SLM_ERR_FORMAT, what, sub(f, sizeof f, field, "pattern"),
                       "empty");
        if (!re) {
            /* A literal: compiled as one, so no regex syntax is involved. */
            SLM_CHECK(compile(what, sub(f, sizeof f, field, "pattern"), s, len,
                              PCRE2_LITERAL, &st->re));
        } else {
            size_t k = 0;
            const size_t n_known =
                sizeof known_patterns / sizeof *known_patterns;
            while (k < n_known && (strlen(known_patterns[k].file) != len ||
                                   memcmp(known_patterns[k].file, s, len) != 0))
                k++;
            if (k == n_known)
                return bad(SLM_ERR_UNSUPPORTED, what,
                           sub(f, sizeof f, field, "pattern.Regex"),
                           "\"%.*s%s\" is not one of the known split patterns "
                           "(GPT-2, Llama 3, Qwen2, Qwen3.5); arbitrary "
                           "regexes are not compiled",
                           shown(len), s, len > 80 ? "..." : "");
            SLM_CHECK(compile(what, field, known_patterns[k].pcre,
                              PCRE2_ZERO_TERMINATED, 0, &st->re));
        }
    } else if (strcmp(type, "ByteLevel") == 0) {
        bool use_regex = true;
        st->kind = P_BYTELEVEL;
        SLM_CHECK(get_bool(what, field, p, "add_prefix_space", true,
                           &st->add_prefix_space));
        SLM_CHECK(get_bool(what, field, p, "use_regex", true, &use_regex));
        if (use_regex)
            SLM_CHECK(compile(what, field, known_patterns[GPT2_PATTERN].pcre,
                              PCRE2_ZERO_TERMINATED, 0, &st->re));
        t->byte_level = true;
    } else if (strcmp(type, "Digits") == 0) {
        st->kind = P_DIGITS;
        SLM_CHECK(get_bool(what, field, p, "individual_digits", false,
                           &st->individual));
    } else {
        return bad(SLM_ERR_UNSUPPORTED, what, sub(f, sizeof f, field, "type"),
                   "unknown pre-tokenizer \"%s\"", type);
    }
    t->n_pre++;
    return SLM_OK;
}

/* Splits in(pieces of src) by the regex, each match and each gap a piece of
 * its own (behaviour Isolated), into out (pieces of the same src). */
static slm_status split_regex(const struct slm__tok_hf *t, const pre_step *st,
                              const char *src, const spans *in,
                              pcre2_match_data *md, spans *out)
{
    for (size_t k = 0; k < in->n; k++) {
        const span p = in->v[k];
        const char *s = src + p.off;
        size_t pos = 0, last = 0;
        while (pos < p.len) {
            int rc = pcre2_match(st->re, (PCRE2_SPTR)s, p.len, pos,
                                 PCRE2_NO_UTF_CHECK, md, t->mctx);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return slm_fail(SLM_ERR_RANGE,
                                "tokenizer: the split regex stopped at byte "
                                "%zu of a %zu-byte piece: %s",
                                pos, p.len, (const char *)msg);
            }
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me <= ms) { /* an empty match: no piece; step one character */
                pos = ms + u8len((unsigned char)s[ms]);
                continue;
            }
            SLM_CHECK(
                spans_push(out, p.off + last, ms - last, p.first && last == 0));
            SLM_CHECK(spans_push(out, p.off + ms, me - ms, p.first && ms == 0));
            last = pos = me;
        }
        SLM_CHECK(
            spans_push(out, p.off + last, p.len - last, p.first && last == 0));
    }
    return SLM_OK;
}

static bool is_numeric(int32_t cp)
{
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL ||
           c == UTF8PROC_CATEGORY_NO;
}

/* Digits: numeric characters (Rust's char::is_numeric) isolated, one by one
 * or in runs. */
static slm_status split_digits(const pre_step *st, const char *src,
                               const spans *in, spans *out)
{
    for (size_t k = 0; k < in->n; k++) {
        const span p = in->v[k];
        size_t i = 0, from = 0;
        while (i < p.len) {
            size_t cl = p.len - i;
            int32_t cp = u8decode(src + p.off + i, &cl);
            if (!is_numeric(cp)) {
                i += cl;
                continue;
            }
            size_t j = i + cl;
            while (!st->individual && j < p.len) {
                size_t dl = p.len - j;
                if (!is_numeric(u8decode(src + p.off + j, &dl)))
                    break;
                j += dl;
            }
            SLM_CHECK(
                spans_push(out, p.off + from, i - from, p.first && from == 0));
            SLM_CHECK(spans_push(out, p.off + i, j - i, p.first && i == 0));
            from = i = j;
        }
        SLM_CHECK(
            spans_push(out, p.off + from, p.len - from, p.first && from == 0));
    }
    return SLM_OK;
}

/* Metaspace: spaces become the replacement, which is prepended per
 * prepend_scheme, and with split each replacement starts a new piece. */
static slm_status metaspace(const pre_step *st, const char *src,
                            const spans *in, buf *dst, spans *out)
{
    for (size_t k = 0; k < in->n; k++) {
        const span p = in->v[k];
        const char *s = src + p.off;
        const size_t start = dst->n;
        /* tokenizers replaces first, then looks for the replacement */
        const bool starts =
            p.len > 0 &&
            (s[0] == ' ' ||
             (p.len >= st->rep_len && memcmp(s, st->rep, st->rep_len) == 0));
        if (!starts && (st->prepend == PREPEND_ALWAYS ||
                        (st->prepend == PREPEND_FIRST && p.first)))
            SLM_CHECK(buf_put(dst, st->rep, st->rep_len));
        for (size_t i = 0; i < p.len; i++) {
            if (s[i] == ' ')
                SLM_CHECK(buf_put(dst, st->rep, st->rep_len));
            else
                SLM_CHECK(buf_put(dst, s + i, 1));
        }
        const size_t end = dst->n;
        if (!st->split) {
            SLM_CHECK(spans_push(out, start, end - start, p.first));
            continue;
        }
        size_t from = start;
        for (size_t i = start; i + st->rep_len <= end;) {
            if (memcmp(dst->p + i, st->rep, st->rep_len) == 0) {
                if (i > from) {
                    SLM_CHECK(spans_push(out, from, i - from,
                                         p.first && from == start));
                    from = i;
                }
                i += st->rep_len;
            } else {
                i++;
            }
        }
        SLM_CHECK(spans_push(out, from, end - from, p.first && from == start));
    }
    return SLM_OK;
}

/* ------------------------------------------------------------------------ */
/* BPE                                                                       */

typedef struct {
    uint32_t rank;
    int32_t pos;
} cand;

typedef struct {
    int32_t *sym, *prev, *next; /* (count) symbols and their links */
    size_t sym_cap, prev_cap, next_cap;
    cand *heap; /* (heap_cap) */
    size_t heap_cap;
    buf mapped; /* the piece in the byte alphabet */
} bpe_work;

static bool cand_before(cand a, cand b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static slm_status heap_push(bpe_work *w, size_t *n, cand c)
{
    if (!grow((void **)&w->heap, &w->heap_cap, *n + 1, sizeof *w->heap))
        return oom();
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_before(c, w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
    return SLM_OK;
}

static cand heap_pop(bpe_work *w, size_t *n)
{
    cand top = w->heap[0], last = w->heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && cand_before(w->heap[c + 1], w->heap[c]))
            c++;
        if (!cand_before(w->heap[c], last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (*n > 0)
        w->heap[i] = last;
    return top;
}

static slm_status push_pair(const struct slm__tok_hf *t, bpe_work *w,
                            size_t *hn, int32_t left)
{
    if (left < 0 || w->next[left] < 0)
        return SLM_OK;
    const merge_ent *m = find_merge(t, w->sym[left], w->sym[w->next[left]]);
    return m ? heap_push(w, hn, (cand){m->rank, left}) : SLM_OK;
}

static slm_status sym_push(bpe_work *w, size_t *n, int32_t id)
{
    if (!grow((void **)&w->sym, &w->sym_cap, *n + 1, sizeof *w->sym))
        return oom();
    w->sym[(*n)++] = id;
    return SLM_OK;
}

/*
 * One piece through the BPE model, as tokenizers' BPE::merge_word: each
 * character looked up (byte fallback, else <unk>, fused when fuse_unk), then
 * merges by rank. The heap holds (rank, position) candidates with lazy
 * invalidation, and pops the lowest rank, leftmost among equals - the order
 * of tokenizers' own priority queue, so the same pairs merge. An entry is
 * stale when its left symbol died or the pair there changed; such an entry
 * is skipped, as the current pair at that position has its own.
 */
static slm_status bpe(const struct slm__tok_hf *t, const char *s, size_t n,
                      bpe_work *w, idvec *out)
{
    if (t->byte_level) {
        w->mapped.n = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char b = (unsigned char)s[i];
            SLM_CHECK(buf_put(&w->mapped, t->byte_map[b], t->byte_map_len[b]));
        }
        s = w->mapped.p;
        n = w->mapped.n;
    }
    if (t->ignore_merges) {
        int32_t id = find_model(t, s, n);
        if (id >= 0)
            return ids_push(out, id);
    }
    size_t count = 0;
    int32_t unk = -1; /* a pending <unk>, added when a known symbol comes */
    for (size_t i = 0; i < n;) {
        size_t cl = u8len((unsigned char)s[i]);
        if (cl > n - i)
            cl = n - i;
        int32_t id = find_model(t, s + i, cl);
        if (id >= 0) {
            if (unk >= 0)
                SLM_CHECK(sym_push(w, &count, unk));
            unk = -1;
            SLM_CHECK(sym_push(w, &count, id));
            i += cl;
            continue;
        }
        bool all = t->byte_fallback;
        for (size_t k = 0; all && k < cl; k++)
            all = t->byte_id[(unsigned char)s[i + k]] >= 0;
        if (all) {
            /* as tokenizers: a pending <unk> is not flushed here */
            for (size_t k = 0; k < cl; k++)
                SLM_CHECK(
                    sym_push(w, &count, t->byte_id[(unsigned char)s[i + k]]));
        } else if (t->unk_id >= 0) {
            if (unk >= 0 && !t->fuse_unk)
                SLM_CHECK(sym_push(w, &count, unk));
            unk = t->unk_id;
        }
        i += cl;
    }
    if (unk >= 0)
        SLM_CHECK(sym_push(w, &count, unk));
    if (count == 0)
        return SLM_OK;
    if (count > INT32_MAX)
        return slm_fail(SLM_ERR_RANGE, "tokenizer: piece of %zu symbols",
                        count);

    if (!grow((void **)&w->prev, &w->prev_cap, count, sizeof *w->prev) ||
        !grow((void **)&w->next, &w->next_cap, count, sizeof *w->next))
        return oom();
    for (size_t i = 0; i < count; i++) {
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < count ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < count; i++)
        SLM_CHECK(push_pair(t, w, &hn, (int32_t)i));
    while (hn > 0) {
        cand c = heap_pop(w, &hn);
        int32_t left = c.pos, right = w->next[left];
        if (w->sym[left] < 0 || right < 0)
            continue;
        const merge_ent *m = find_merge(t, w->sym[left], w->sym[right]);
        if (!m || m->rank != c.rank)
            continue;
        w->sym[left] = m->id;
        w->sym[right] = -1;
        w->next[left] = w->next[right];
        if (w->next[right] >= 0)
            w->prev[w->next[right]] = left;
        SLM_CHECK(push_pair(t, w, &hn, w->prev[left]));
        SLM_CHECK(push_pair(t, w, &hn, left));
    }
    for (size_t i = 0; i < count; i++)
        if (w->sym[i] >= 0)
            SLM_CHECK(ids_push(out, w->sym[i]));
    return SLM_OK;
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */

typedef struct {
    pcre2_match_data *md;
    bpe_work w;
    buf a, b, norm;
    spans sa, sb;
} enc_work;

/* Pre-tokenizer steps, then BPE of every piece: one segment of normalized
 * text; first when it begins the original text. */
static slm_status pretok_bpe(const struct slm__tok_hf *t, const char *s,
                             size_t n, bool first, enc_work *e, idvec *out)
{
    e->a.n = 0;
    e->sa.n = 0;
    SLM_CHECK(buf_put(&e->a, s, n));
    SLM_CHECK(spans_push(&e->sa, 0, n, first));
    for (size_t k = 0; k < t->n_pre; k++) {
        const pre_step *st = &t->pre[k];
        e->sb.n = 0;
        if (st->kind == P_SPLIT) {
            SLM_CHECK(split_regex(t, st, e->a.p, &e->sa, e->md, &e->sb));
        } else if (st->kind == P_DIGITS) {
            SLM_CHECK(split_digits(st, e->a.p, &e->sa, &e->sb));
        } else if (st->kind == P_METASPACE) {
            e->b.n = 0;
            SLM_CHECK(metaspace(st, e->a.p, &e->sa, &e->b, &e->sb));
            buf tb = e->a;
            e->a = e->b;
            e->b = tb;
        } else { /* P_BYTELEVEL: the prefix space per piece, then GPT-2 */
            e->b.n = 0;
            spans tmp = {0};
            slm_status rc = SLM_OK;
            for (size_t i = 0; i < e->sa.n && rc == SLM_OK; i++) {
                const span p = e->sa.v[i];
                const size_t start = e->b.n;
                if (st->add_prefix_space && e->a.p[p.off] != ' ')
                    rc = buf_put(&e->b, " ", 1);
                if (rc == SLM_OK)
                    rc = buf_put(&e->b, e->a.p + p.off, p.len);
                if (rc == SLM_OK)
                    rc = spans_push(st->re ? &tmp : &e->sb, start,
                                    e->b.n - start, p.first);
            }
            if (rc == SLM_OK && st->re)
                rc = split_regex(t, st, e->b.p, &tmp, e->md, &e->sb);
            free(tmp.v);
            SLM_CHECK(rc);
            buf tb = e->a;
            e->a = e->b;
            e->b = tb;
        }
        spans ts = e->sa;
        e->sa = e->sb;
        e->sb = ts;
    }
    for (size_t i = 0; i < e->sa.n; i++)
        SLM_CHECK(bpe(t, e->a.p + e->sa.v[i].off, e->sa.v[i].len, &e->w, out));
    return SLM_OK;
}

/* The longest token of ms matching s(n) at its start, as an index into
 * added[], or -1. */
static int64_t match_at(const struct slm__tok_hf *t, const match_set *ms,
                        const char *s, size_t n)
{
    const unsigned char c = (unsigned char)s[0];
    for (size_t k = ms->start[c]; k < ms->start[c + 1]; k++) {
        const added_tok *a = &t->added[ms->idx[k]];
        if (a->pat_len <= n && memcmp(a->pat, s, a->pat_len) == 0)
            return ms->idx[k];
    }
    return -1;
}

/* Splits s(n) at the added tokens of ms, leftmost-longest as tokenizers'
 * aho-corasick matcher; calls back text segments and pushes token ids. A
 * special token's match is skipped unless parse_special, but still consumed,
 * as tokenizers does under encode_special_tokens. */
typedef slm_status (*segment_fn)(const struct slm__tok_hf *t, const char *s,
                                 size_t n, bool first, enc_work *e, idvec *out,
                                 bool parse_special);

static slm_status split_added(const struct slm__tok_hf *t, const match_set *ms,
                              const char *s, size_t n, bool first,
                              bool parse_special, segment_fn text, enc_work *e,
                              idvec *out)
{
    size_t i = 0, from = 0;
    while (ms->n > 0 && i < n) {
        int64_t k = match_at(t, ms, s + i, n - i);
        if (k < 0) {
            i++;
            continue;
        }
        const added_tok *a = &t->added[k];
        size_t start = i, stop = i + a->pat_len;
        if (a->special && !parse_special) {
            i = stop;
            continue;
        }
        if (a->lstrip) { /* whitespace before it, back to the last match */
            while (start > from) {
                size_t j = start - 1;
                while (j > from && ((unsigned char)s[j] & 0xC0) == 0x80)
                    j--;
                size_t cl = start - j;
                if (!is_white_space(u8decode(s + j, &cl)))
                    break;
                start = j;
            }
        }
        if (a->rstrip) {
            while (stop < n) {
                size_t cl = n - stop;
                if (!is_white_space(u8decode(s + stop, &cl)))
                    break;
                stop += cl;
            }
        }
        if (start > from)
            SLM_CHECK(text(t, s + from, start - from, first && from == 0, e,
                           out, parse_special));
        SLM_CHECK(ids_push(out, a->id));
        from = i = stop;
    }
    if (n > from)
        SLM_CHECK(text(t, s + from, n - from, first && from == 0, e, out,
                       parse_special));
    return SLM_OK;
}

static slm_status norm_segment(const struct slm__tok_hf *t, const char *s,
                               size_t n, bool first, enc_work *e, idvec *out,
                               bool parse_special)
{
    (void)parse_special;
    return pretok_bpe(t, s, n, first, e, out);
}

/* A segment of raw text between added tokens: normalize, split out the
 * normalized added tokens, then pre-tokenize and BPE. */
static slm_status raw_segment(const struct slm__tok_hf *t, const char *s,
                              size_t n, bool first, enc_work *e, idvec *out,
                              bool parse_special)
{
    if (t->n_norm == 0)
        return split_added(t, &t->norm, s, n, first, parse_special,
                           norm_segment, e, out);
    /* nothing below this call writes e->norm */
    SLM_CHECK(normalize(t, s, n, &e->norm));
    return split_added(t, &t->norm, e->norm.p, e->norm.n, first, parse_special,
                       norm_segment, e, out);
}

slm_status slm__tok_hf_encode(const slm__tok_hf *t, const char *text,
                              size_t len, const slm_encode_opts *opts,
                              int32_t **ids, size_t *n_ids)
{
    const size_t bad_at = slm_utf8_bad_offset(text, len);
    if (bad_at != len)
        return slm_fail(SLM_ERR_INVALID,
                        "tokenizer: the text is not valid UTF-8 at byte %zu",
                        bad_at);
    if (opts->add_eos && t->eos_id < 0)
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "tokenizer: add_eos asked, but the tokenizer names no "
                        "EOS token");
    idvec out = {0};
    enc_work e = {0};
    slm_status rc = SLM_OK;
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md) {
        rc = oom();
        goto done;
    }
    if (opts->add_special)
        for (size_t i = 0; i < t->n_pre_ids; i++)
            SLM_CHECK_GOTO(ids_push(&out, t->pre_ids[i]), rc, done);
    SLM_CHECK_GOTO(split_added(t, &t->raw, text, len, true, opts->parse_special,
                               raw_segment, &e, &out),
                   rc, done);
    if (opts->add_special)
        for (size_t i = 0; i < t->n_post_ids; i++)
            SLM_CHECK_GOTO(ids_push(&out, t->post_ids[i]), rc, done);
    if (opts->add_eos && !(opts->add_special && t->n_post_ids > 0 &&
                           t->post_ids[t->n_post_ids - 1] == t->eos_id))
        SLM_CHECK_GOTO(ids_push(&out, t->eos_id), rc, done);
    if (out.n == 0) { /* an empty result still owns an allocation */
        SLM_CHECK_GOTO(ids_push(&out, 0), rc, done);
        out.n = 0;
    }
    *ids = out.v;
    *n_ids = out.n;
    out.v = NULL;
done:
    free(out.v);
    pcre2_match_data_free(e.md);
    free(e.w.sym);
    free(e.w.prev);
    free(e.w.next);
    free(e.w.heap);
    free(e.w.mapped.p);
    free(e.a.p);
    free(e.b.p);
    free(e.norm.p);
    free(e.sa.v);
    free(e.sb.v);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */

static slm_status parse_decoder(struct slm__tok_hf *t, const char *what,
                                const char *field, json_t *d, int depth,
                                bool *fused)
{
    char f[192], g[192];
    if (!d || json_is_null(d)) {
        if (depth == 0)
            t->dec_null = true;
        return SLM_OK;
    }
    const char *type;
    SLM_CHECK(get_type(what, field, d, &type));
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(d, "decoders");
        sub(f, sizeof f, field, "decoders");
        if (!json_is_array(list))
            return bad(SLM_ERR_FORMAT, what, f, "must be an array");
        if (depth >= MAX_DEPTH)
            return bad(SLM_ERR_UNSUPPORTED, what, field,
                       "Sequence nested deeper than %d", MAX_DEPTH);
        for (size_t i = 0; i < json_array_size(list); i++) {
            json_t *item = json_array_get(list, i);
            if (!item || json_is_null(item))
                return bad(SLM_ERR_FORMAT, what, idx(g, sizeof g, f, i),
                           "null");
            SLM_CHECK(parse_decoder(t, what, idx(g, sizeof g, f, i), item,
                                    depth + 1, fused));
        }
        return SLM_OK;
    }
    if (t->n_dec >= MAX_STEPS)
        return bad(SLM_ERR_UNSUPPORTED, what, field, "more than %d decoders",
                   MAX_STEPS);
    dec_step *st = &t->dec[t->n_dec];
    memset(st, 0, sizeof *st);
    const char *s;
    size_t len;
    if (strcmp(type, "Fuse") == 0) {
        st->kind = D_FUSE;
        *fused = true;
    } else if (strcmp(type, "Strip") == 0) {
        st->kind = D_STRIP;
        SLM_CHECK(get_str(what, field, d, "content", true, &s, &len));
        size_t cl = len;
        if (len == 0 || u8decode(s, &cl) < 0 || cl != len)
            return bad(SLM_ERR_FORMAT, what, sub(f, sizeof f, field, "content"),
                       "must be one character");
        memcpy(st->a, s, len);
        st->alen = len;
        json_t *start = json_object_get(d, "start");
        json_t *stop = json_object_get(d, "stop");
        if (!json_is_integer(start) || json_integer_value(start) < 0 ||
            json_integer_value(start) > 64)
            return bad(SLM_ERR_FORMAT, what, sub(f, sizeof f, field, "start"),
                       "must be an integer in [0, 64]");
        /* stripping the end of a text needs its last token: not streamable */
        if (!json_is_integer(stop) || json_integer_value(stop) != 0)
            return bad(SLM_ERR_UNSUPPORTED, what,
                       sub(f, sizeof f, field, "stop"), "only 0 is supported");
        st->count = (int)json_integer_value(start);
    } else if (*fused) {
        /* After Fuse there is one token, the whole text: a step there that
         * is not Strip would have to see across tokens. */
        return bad(SLM_ERR_UNSUPPORTED, what, sub(f, sizeof f, field, "type"),
                   "\"%s\" after Fuse is not supported", type);
    } else if (strcmp(type, "ByteLevel") == 0) {
        st->kind = D_BYTELEVEL;
    } else if (strcmp(type, "ByteFallback") == 0) {
        st->kind = D_BYTEFALLBACK;
    } else if (strcmp(type, "Replace") == 0) {
        bool re;
        st->kind = D_REPLACE;
        SLM_CHECK(get_pattern(what, field, d, false, &s, &len, &re));
        SLM_CHECK(small_string(what, sub(f, sizeof f, field, "pattern"), s, len,
                               false, st->a, &st->alen));
        SLM_CHECK(get_str(what, field, d, "content", true, &s, &len));
        SLM_CHECK(small_string(what, sub(f, sizeof f, field, "content"), s, len,
                               true, st->b, &st->blen));
    } else if (strcmp(type, "Metaspace") == 0) {
        st->kind = D_METASPACE;
        SLM_CHECK(get_str(what, field, d, "replacement", true, &s, &len));
        SLM_CHECK(small_string(what, sub(f, sizeof f, field, "replacement"), s,
                               len, false, st->a, &st->alen));
        bool legacy = true;
        json_t *aps = json_object_get(d, "add_prefix_space");
        SLM_CHECK(get_bool(what, field, d, "add_prefix_space", true, &legacy));
        SLM_CHECK(get_str(what, field, d, "prepend_scheme", false, &s, &len));
        st->prepend = PREPEND_ALWAYS;
        if (s && strcmp(s, "first") == 0)
            st->prepend = PREPEND_FIRST;
        else if (s && strcmp(s, "never") == 0)
            st->prepend = PREPEND_NEVER;
        else if (s && strcmp(s, "always") != 0)
            return bad(SLM_ERR_UNSUPPORTED, what,
                       sub(f, sizeof f, field, "prepend_scheme"),
                       "unknown value \"%.*s\"", shown(len), s);
        if (!s && aps && !legacy)
            st->prepend = PREPEND_NEVER;
    } else {
        return bad(SLM_ERR_UNSUPPORTED, what, sub(f, sizeof f, field, "type"),
                   "unknown decoder \"%s\"", type);
    }
    t->n_dec++;
    return SLM_OK;
}

/* NN when s(n) is "<0xNN>" (either case of hex digit), else -1. */
static int byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* ByteLevel's decoder: every character back to its byte, or, if one of them
 * is outside the byte alphabet, the token unchanged. */
static slm_status byte_level_inverse(const struct slm__tok_hf *t, const char *s,
                                     size_t n, buf *out)
{
    out->n = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = n - i;
        int32_t cp = u8decode(s + i, &cl);
        int b = -1;
        if (cp >= 0 && cp < 256 && byte_printable(cp)) {
            b = cp;
        } else if (cp >= 256 && cp < 256 + 68) {
            b = t->byte_of_high[cp - 256];
        }
        if (b < 0) {
            out->n = 0;
            return buf_put(out, s, n);
        }
        char c = (char)b;
        SLM_CHECK(buf_put(out, &c, 1));
        i += cl;
    }
    return SLM_OK;
}

/* Up to `count` leading copies of the character a(alen) removed. */
static void strip_start(buf *x, const char *a, size_t alen, int count)
{
    size_t cut = 0;
    for (int k = 0;
         k < count && cut + alen <= x->n && memcmp(x->p + cut, a, alen) == 0;
         k++)
        cut += alen;
    memmove(x->p, x->p + cut, x->n - cut);
    x->n -= cut;
}

/* The decoder chain over one token, as a later token (*later) and as the
 * first of a text (*first). */
static slm_status decode_one(const struct slm__tok_hf *t, const char *s,
                             size_t n, buf *later, buf *first, buf *tmp)
{
    later->n = first->n = 0;
    if (t->dec_null) { /* tokenizers joins the tokens with spaces */
        SLM_CHECK(buf_put(later, " ", 1));
        SLM_CHECK(buf_put(later, s, n));
        return buf_put(first, s, n);
    }
    SLM_CHECK(buf_put(later, s, n));
    SLM_CHECK(buf_put(first, s, n));
    bool fused = false;
    for (size_t k = 0; k < t->n_dec; k++) {
        const dec_step *st = &t->dec[k];
        for (int v = 0; v < 2; v++) {
            buf *x = v ? first : later;
            tmp->n = 0;
            switch (st->kind) {
            case D_FUSE:
                fused = true;
                continue;
            case D_STRIP:
                if (!fused || v == 1)
                    strip_start(x, st->a, st->alen, st->count);
                continue;
            case D_BYTELEVEL:
                SLM_CHECK(byte_level_inverse(t, x->p, x->n, tmp));
                break;
            case D_BYTEFALLBACK: {
                int b = byte_token(x->p, x->n);
                if (b < 0)
                    continue;
                char c = (char)b;
                SLM_CHECK(buf_put(tmp, &c, 1));
                break;
            }
            case D_REPLACE:
                SLM_CHECK(replace_all(x->p, x->n, st->a, st->alen, st->b,
                                      st->blen, tmp));
                break;
            case D_METASPACE:
                /* tokenizers drops every replacement of the first token, and
                 * turns the others into spaces */
                SLM_CHECK(replace_all(
                    x->p, x->n, st->a, st->alen, " ",
                    v == 1 && st->prepend != PREPEND_NEVER ? 0 : 1, tmp));
                break;
            }
            buf sw = *x;
            *x = *tmp;
            *tmp = sw;
        }
    }
    return SLM_OK;
}

/* Every token's bytes, as later and as first token, into the dec_* arrays. */
static slm_status build_decode(struct slm__tok_hf *t, const char *what)
{
    const size_t n = (size_t)t->n_tok;
    buf pool = {0}, later = {0}, first = {0}, tmp = {0};
    slm_status rc = SLM_OK;
    t->dec_off = malloc(n * sizeof *t->dec_off);
    t->dec_len = malloc(n * sizeof *t->dec_len);
    t->first_off = malloc(n * sizeof *t->first_off);
    t->first_len = malloc(n * sizeof *t->first_len);
    if (!t->dec_off || !t->dec_len || !t->first_off || !t->first_len) {
        rc = oom();
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        SLM_CHECK_GOTO(
            decode_one(t, t->pool + t->off[i], t->len[i], &later, &first, &tmp),
            rc, done);
        if (pool.n > UINT32_MAX - later.n - first.n) {
            rc = slm_fail(SLM_ERR_RANGE, "%s: decoded pieces exceed 4 GiB",
                          what);
            goto done;
        }
        t->dec_off[i] = (uint32_t)pool.n;
        t->dec_len[i] = (uint32_t)later.n;
        SLM_CHECK_GOTO(buf_put(&pool, later.p, later.n), rc, done);
        t->first_off[i] = (uint32_t)pool.n;
        t->first_len[i] = (uint32_t)first.n;
        SLM_CHECK_GOTO(buf_put(&pool, first.p, first.n), rc, done);
    }
    SLM_CHECK_GOTO(buf_put(&pool, "", 1), rc, done); /* never a NULL pool */
    t->dec_pool = pool.p;
    pool.p = NULL;
done:
    free(pool.p);
    free(later.p);
    free(first.p);
    free(tmp.p);
    return rc;
}

const char *slm__tok_hf_decode(const slm__tok_hf *t, int32_t prev,
                               int32_t token, size_t *len)
{
    if (token < 0 || token >= t->n_tok) {
        *len = 0;
        return "";
    }
    if (prev < 0 || (t->bos_id >= 0 && prev == t->bos_id)) {
        *len = t->first_len[token];
        return t->dec_pool + t->first_off[token];
    }
    *len = t->dec_len[token];
    return t->dec_pool + t->dec_off[token];
}

/* ------------------------------------------------------------------------ */
/* Parsing the vocabulary                                                    */

static slm_status add_piece(int32_t id, const char *s, size_t n,
                            struct slm__tok_hf *t, buf *pool)
{
    t->off[id] = (uint32_t)pool->n;
    t->len[id] = (uint32_t)n;
    SLM_CHECK(buf_put(pool, s, n));
    return buf_put(pool, "", 1);
}

/* The hash index over all pieces; a piece twice is refused. */
static slm_status build_index(struct slm__tok_hf *t, const char *what)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)t->n_tok)
        cap *= 2;
    t->ht = malloc(cap * sizeof *t->ht);
    if (!t->ht)
        return oom();
    memset(t->ht, 0xff, cap * sizeof *t->ht);
    t->ht_mask = cap - 1;
    for (int32_t id = 0; id < t->n_tok; id++) {
        const char *s = t->pool + t->off[id];
        const size_t n = t->len[id];
        size_t i = hash_bytes(s, n) & t->ht_mask;
        for (; t->ht[i] >= 0; i = (i + 1) & t->ht_mask) {
            int32_t o = t->ht[i];
            if (t->len[o] == n && memcmp(t->pool + t->off[o], s, n) == 0)
                return slm_fail(SLM_ERR_FORMAT,
                                "%s: the piece \"%.*s\" has two ids, %d and %d",
                                what, shown(n), s, o, id);
        }
        t->ht[i] = id;
    }
    return SLM_OK;
}

/* model.vocab and added_tokens: ids dense in [0, n_tok), n_tok <= the
 * model's vocab_size. An added token may repeat a vocabulary entry (same id,
 * same piece), as converted files do; any other overlap is refused. */
static slm_status parse_vocab(struct slm__tok_hf *t, const char *what,
                              json_t *model, json_t *added, int32_t vocab_size)
{
    char f[192], g[192];
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab))
        return bad(SLM_ERR_FORMAT, what, "model.vocab", "must be an object");
    if (added && !json_is_null(added) && !json_is_array(added))
        return bad(SLM_ERR_FORMAT, what, "added_tokens", "must be an array");
    const size_t n_vocab = json_object_size(vocab);
    const size_t n_added = json_is_array(added) ? json_array_size(added) : 0;
    if (n_vocab > (size_t)vocab_size || n_added > (size_t)vocab_size)
        return slm_fail(SLM_ERR_RANGE,
                        "%s: %zu vocabulary entries and %zu added tokens: "
                        "more than the model's vocab_size %d",
                        what, n_vocab, n_added, vocab_size);
    /* Pass 1: the highest id, and the checks that need no table. */
    int64_t max_id = -1;
    const char *key;
    size_t kl;
    json_t *val;
    json_object_keylen_foreach(vocab, key, kl, val)
    {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= vocab_size)
            return bad(SLM_ERR_RANGE, what, "model.vocab",
                       "the id of \"%.*s\" is not an integer in [0, %d) (the "
                       "model's vocab_size)",
                       shown(kl), key, vocab_size);
        if (kl == 0 || kl > SLM_TOKENIZER_MAX_PIECE)
            return bad(SLM_ERR_FORMAT, what, "model.vocab",
                       "piece %" JSON_INTEGER_FORMAT
                       " has length %zu, out of range [1, %d]",
                       json_integer_value(val), kl, SLM_TOKENIZER_MAX_PIECE);
        if (json_integer_value(val) > max_id)
            max_id = json_integer_value(val);
    }
    for (size_t i = 0; i < n_added; i++) {
        json_t *a = json_array_get(added, i);
        idx(f, sizeof f, "added_tokens", i);
        if (!json_is_object(a))
            return bad(SLM_ERR_FORMAT, what, f, "must be an object");
        json_t *id = json_object_get(a, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= vocab_size)
            return bad(SLM_ERR_RANGE, what, sub(g, sizeof g, f, "id"),
                       "not an integer in [0, %d) (the model's vocab_size)",
                       vocab_size);
        const char *s;
        size_t n;
        SLM_CHECK(get_str(what, f, a, "content", true, &s, &n));
        if (n == 0 || n > SLM_TOKENIZER_MAX_PIECE)
            return bad(SLM_ERR_FORMAT, what, sub(g, sizeof g, f, "content"),
                       "length %zu out of range [1, %d]", n,
                       SLM_TOKENIZER_MAX_PIECE);
        if (json_integer_value(id) > max_id)
            max_id = json_integer_value(id);
    }
    if (max_id < 0)
        return bad(SLM_ERR_FORMAT, what, "model.vocab", "empty");
    t->n_tok = (int32_t)(max_id + 1);
    const size_t nt = (size_t)t->n_tok;
    t->off = malloc(nt * sizeof *t->off);
    t->len = malloc(nt * sizeof *t->len);
    t->flags = calloc(nt, 1);
    if (!t->off || !t->len || !t->flags)
        return oom();

    /* Pass 2: the pieces. */
    buf pool = {0};
    slm_status rc = SLM_OK;
    json_object_keylen_foreach(vocab, key, kl, val)
    {
        const int32_t id = (int32_t)json_integer_value(val);
        if (t->flags[id]) {
            rc = bad(SLM_ERR_FORMAT, what, "model.vocab",
                     "id %d is given twice (\"%.*s\" and \"%.*s\")", id,
                     shown(kl), key, shown(t->len[id]), pool.p + t->off[id]);
            goto fail;
        }
        t->flags[id] = F_MODEL;
        SLM_CHECK_GOTO(add_piece(id, key, kl, t, &pool), rc, fail);
    }
    t->added = calloc(n_added ? n_added : 1, sizeof *t->added);
    if (!t->added) {
        rc = oom();
        goto fail;
    }
    for (size_t i = 0; i < n_added; i++) {
        json_t *a = json_array_get(added, i);
        idx(f, sizeof f, "added_tokens", i);
        const int32_t id =
            (int32_t)json_integer_value(json_object_get(a, "id"));
        const char *s;
        size_t n;
        SLM_CHECK_GOTO(get_str(what, f, a, "content", true, &s, &n), rc, fail);
        added_tok *at = &t->added[t->n_added];
        bool single_word = false;
        SLM_CHECK_GOTO(get_bool(what, f, a, "special", false, &at->special), rc,
                       fail);
        SLM_CHECK_GOTO(get_bool(what, f, a, "lstrip", false, &at->lstrip), rc,
                       fail);
        SLM_CHECK_GOTO(get_bool(what, f, a, "rstrip", false, &at->rstrip), rc,
                       fail);
        SLM_CHECK_GOTO(
            get_bool(what, f, a, "normalized", !at->special, &at->normalized),
            rc, fail);
        SLM_CHECK_GOTO(get_bool(what, f, a, "single_word", false, &single_word),
                       rc, fail);
        if (single_word) {
            rc = bad(SLM_ERR_UNSUPPORTED, what,
                     sub(g, sizeof g, f, "single_word"),
                     "true is not supported");
            goto fail;
        }
        if (t->flags[id] & F_ADDED) {
            rc = bad(SLM_ERR_FORMAT, what, sub(g, sizeof g, f, "id"),
                     "id %d is given to two added tokens", id);
            goto fail;
        }
        if (t->flags[id] & F_MODEL) {
            if (t->len[id] != n || memcmp(pool.p + t->off[id], s, n) != 0) {
                rc = bad(SLM_ERR_FORMAT, what, sub(g, sizeof g, f, "id"),
                         "id %d is \"%.*s\" in model.vocab but \"%.*s\" here",
                         id, shown(t->len[id]), pool.p + t->off[id], shown(n),
                         s);
                goto fail;
            }
        } else {
            SLM_CHECK_GOTO(add_piece(id, s, n, t, &pool), rc, fail);
        }
        t->flags[id] |= F_ADDED | (at->special ? F_SPECIAL : 0);
        at->id = id;
        t->n_added++;
    }
    for (int32_t id = 0; id < t->n_tok; id++)
        if (!t->flags[id]) {
            rc = bad(SLM_ERR_FORMAT, what, "model.vocab",
                     "id %d has no piece: ids must be dense in [0, %d)", id,
                     t->n_tok);
            goto fail;
        }
    t->pool = pool.p;
    pool.p = NULL;
    return build_index(t, what);
fail:
    free(pool.p);
    return rc;
}

/* An added token's place in a match set: by first byte, longest first. */
typedef struct {
    unsigned char first;
    size_t len;
    uint32_t index;
} match_key;

static int cmp_match_key(const void *pa, const void *pb)
{
    const match_key *a = pa, *b = pb;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

static slm_status build_match_sets(struct slm__tok_hf *t)
{
    buf nb = {0};
    match_key *keys = NULL;
    slm_status rc = SLM_OK;
    for (int set = 0; set < 2; set++) {
        match_set *ms = set ? &t->norm : &t->raw;
        ms->idx = malloc((t->n_added ? t->n_added : 1) * sizeof *ms->idx);
        if (!ms->idx) {
            rc = oom();
            goto done;
        }
    }
    for (size_t i = 0; i < t->n_added; i++) {
        added_tok *a = &t->added[i];
        const char *c = t->pool + t->off[a->id];
        size_t cl = t->len[a->id];
        /* tokenizers matches a normalized token by its normalized content */
        if (a->normalized && t->n_norm > 0) {
            SLM_CHECK_GOTO(normalize(t, c, cl, &nb), rc, done);
            c = nb.p;
            cl = nb.n;
        }
        a->pat = malloc(cl ? cl : 1);
        if (!a->pat) {
            rc = oom();
            goto done;
        }
        if (cl)
            memcpy(a->pat, c, cl);
        a->pat_len = cl;
        if (cl == 0)
            continue; /* normalized to nothing: never matches */
        match_set *ms = a->normalized ? &t->norm : &t->raw;
        ms->idx[ms->n++] = (uint32_t)i;
    }
    keys = malloc((t->n_added ? t->n_added : 1) * sizeof *keys);
    if (!keys) {
        rc = oom();
        goto done;
    }
    for (int set = 0; set < 2; set++) {
        match_set *ms = set ? &t->norm : &t->raw;
        for (size_t i = 0; i < ms->n; i++) {
            const added_tok *a = &t->added[ms->idx[i]];
            keys[i] =
                (match_key){(unsigned char)a->pat[0], a->pat_len, ms->idx[i]};
        }
        qsort(keys, ms->n, sizeof *keys, cmp_match_key);
        for (size_t i = 0; i < ms->n; i++)
            ms->idx[i] = keys[i].index;
        size_t k = 0;
        for (int c = 0; c <= 256; c++) {
            while (k < ms->n && (unsigned char)t->added[ms->idx[k]].pat[0] < c)
                k++;
            ms->start[c] = k;
        }
    }
done:
    free(nb.p);
    free(keys);
    return rc;
}

static slm_status parse_merges(struct slm__tok_hf *t, const char *what,
                               json_t *model)
{
    char f[192];
    json_t *merges = json_object_get(model, "merges");
    if (!merges || json_is_null(merges))
        return SLM_OK;
    if (!json_is_array(merges))
        return bad(SLM_ERR_FORMAT, what, "model.merges", "must be an array");
    const size_t n = json_array_size(merges);
    if (n > SLM_TOKENIZER_HF_MAX_MERGES)
        return bad(SLM_ERR_RANGE, what, "model.merges",
                   "%zu merges exceed the limit of %d", n,
                   SLM_TOKENIZER_HF_MAX_MERGES);
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    t->mt = malloc(cap * sizeof *t->mt);
    if (!t->mt)
        return oom();
    for (size_t i = 0; i < cap; i++)
        t->mt[i].key = UINT64_MAX;
    t->mt_mask = cap - 1;
    char joined[2 * SLM_TOKENIZER_MAX_PIECE];
    for (size_t r = 0; r < n; r++) {
        json_t *m = json_array_get(merges, r);
        const char *a, *b;
        size_t al, bl;
        idx(f, sizeof f, "model.merges", r);
        if (json_is_string(m)) { /* "a b": exactly one space, as tokenizers */
            const char *s = json_string_value(m);
            const size_t sl = json_string_length(m);
            const char *sp = memchr(s, ' ', sl);
            if (!sp || memchr(sp + 1, ' ', sl - (size_t)(sp + 1 - s)))
                return bad(SLM_ERR_FORMAT, what, f,
                           "\"%.*s\" is not two pieces separated by one space",
                           shown(sl), s);
            a = s;
            al = (size_t)(sp - s);
            b = sp + 1;
            bl = sl - al - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            al = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            bl = json_string_length(json_array_get(m, 1));
        } else {
            return bad(SLM_ERR_FORMAT, what, f,
                       "must be \"a b\" or [\"a\", \"b\"]");
        }
        const int32_t ia = find_model(t, a, al), ib = find_model(t, b, bl);
        if (ia < 0 || ib < 0)
            return bad(SLM_ERR_FORMAT, what, f,
                       "\"%.*s\" is not a piece of model.vocab",
                       ia < 0 ? shown(al) : shown(bl), ia < 0 ? a : b);
        int32_t id = -1;
        if (al + bl <= sizeof joined) {
            memcpy(joined, a, al);
            memcpy(joined + al, b, bl);
            id = find_model(t, joined, al + bl);
        }
        if (id < 0)
            return bad(SLM_ERR_FORMAT, what, f,
                       "the merged piece \"%.*s%.*s\" is not in model.vocab",
                       shown(al), a, shown(bl), b);
        /* A pair listed twice keeps its last rank, as tokenizers' map. */
        const uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        size_t i = hash_pair(key) & t->mt_mask;
        while (t->mt[i].key != UINT64_MAX && t->mt[i].key != key)
            i = (i + 1) & t->mt_mask;
        t->mt[i] = (merge_ent){key, (uint32_t)r, id};
    }
    return SLM_OK;
}

static slm_status parse_model(struct slm__tok_hf *t, const char *what,
                              json_t *model)
{
    const char *type, *s;
    size_t n;
    SLM_CHECK(get_type(what, "model", model, &type));
    if (strcmp(type, "BPE") != 0)
        return bad(SLM_ERR_UNSUPPORTED, what, "model.type",
                   "unknown model \"%s\" (only BPE is supported)", type);
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout))
        return bad(SLM_ERR_UNSUPPORTED, what, "model.dropout",
                   "must be null (BPE dropout makes encoding random)");
    static const char *const affixes[] = {"continuing_subword_prefix",
                                          "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        char f[64];
        SLM_CHECK(get_str(what, "model", model, affixes[i], false, &s, &n));
        if (s && n > 0)
            return bad(SLM_ERR_UNSUPPORTED, what,
                       sub(f, sizeof f, "model", affixes[i]),
                       "\"%.*s\" is not supported (only null or \"\")",
                       shown(n), s);
    }
    SLM_CHECK(get_bool(what, "model", model, "byte_fallback", false,
                       &t->byte_fallback));
    SLM_CHECK(get_bool(what, "model", model, "fuse_unk", false, &t->fuse_unk));
    SLM_CHECK(get_bool(what, "model", model, "ignore_merges", false,
                       &t->ignore_merges));
    SLM_CHECK(get_str(what, "model", model, "unk_token", false, &s, &n));
    t->unk_id = -1;
    if (s) {
        t->unk_id = find_model(t, s, n);
        if (t->unk_id < 0)
            return bad(SLM_ERR_FORMAT, what, "model.unk_token",
                       "\"%.*s\" is not a piece of model.vocab", shown(n), s);
    }
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        /* tokenizers' format!("<{:#04X}>"): "0x" then upper-case digits */
        char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        t->byte_id[b] = find_model(t, name, sizeof name);
        int cp = b;
        if (!byte_printable(b)) {
            cp = 256;
            for (int x = 0; x < b; x++)
                cp += !byte_printable(x);
            t->byte_of_high[cp - 256] = (uint8_t)b;
        }
        t->byte_map_len[b] = (uint8_t)u8encode(cp, t->byte_map[b]);
    }
    return SLM_OK;
}

/* TemplateProcessing's "single": special tokens before and after $A. */
static slm_status parse_template(struct slm__tok_hf *t, const char *what,
                                 const char *field, json_t *p)
{
    char f[192], g[192], h[192];
    json_t *single = json_object_get(p, "single");
    json_t *specials = json_object_get(p, "special_tokens");
    sub(f, sizeof f, field, "single");
    if (!json_is_array(single))
        return bad(SLM_ERR_FORMAT, what, f, "must be an array");
    if (specials && !json_is_null(specials) && !json_is_object(specials))
        return bad(SLM_ERR_FORMAT, what,
                   sub(g, sizeof g, field, "special_tokens"),
                   "must be an object");
    bool seen_a = false;
    t->n_pre_ids = t->n_post_ids = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *item = json_array_get(single, i);
        idx(g, sizeof g, f, i);
        json_t *seq = json_object_get(item, "Sequence");
        json_t *tok = json_object_get(item, "SpecialToken");
        if (!json_is_object(item) || json_object_size(item) != 1 ||
            (!json_is_object(seq) && !json_is_object(tok)))
            return bad(
                SLM_ERR_FORMAT, what, g,
                "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
        const char *name;
        size_t nl;
        if (seq) {
            SLM_CHECK(get_str(what, g, seq, "id", true, &name, &nl));
            if (strcmp(name, "A") != 0 || seen_a)
                return bad(SLM_ERR_UNSUPPORTED, what, g,
                           "a single-sequence template holds $A once, not "
                           "\"%.*s\"",
                           shown(nl), name);
            seen_a = true;
            continue;
        }
        SLM_CHECK(get_str(what, g, tok, "id", true, &name, &nl));
        json_t *st = json_object_get(specials, name);
        json_t *ids = json_object_get(st, "ids");
        if (!json_is_array(ids))
            return bad(SLM_ERR_FORMAT, what, g,
                       "\"%.*s\" is not in special_tokens with its ids",
                       shown(nl), name);
        for (size_t k = 0; k < json_array_size(ids); k++) {
            json_t *v = json_array_get(ids, k);
            idx(h, sizeof h, "ids", k);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) >= t->n_tok)
                return bad(SLM_ERR_RANGE, what, g,
                           "special token \"%.*s\": %s is not an id in [0, "
                           "%d)",
                           shown(nl), name, h, t->n_tok);
            int32_t *side = seen_a ? t->post_ids : t->pre_ids;
            size_t *count = seen_a ? &t->n_post_ids : &t->n_pre_ids;
            if (*count >= MAX_TEMPLATE_IDS)
                return bad(SLM_ERR_UNSUPPORTED, what, f,
                           "more than %d special ids on one side of $A",
                           MAX_TEMPLATE_IDS);
            side[(*count)++] = (int32_t)json_integer_value(v);
        }
    }
    if (!seen_a)
        return bad(SLM_ERR_FORMAT, what, f, "no $A");
    return SLM_OK;
}

static slm_status parse_post(struct slm__tok_hf *t, const char *what,
                             const char *field, json_t *p, int depth,
                             bool *templated)
{
    char f[192], g[192];
    if (!p || json_is_null(p))
        return SLM_OK;
    const char *type;
    SLM_CHECK(get_type(what, field, p, &type));
    if (strcmp(type, "ByteLevel") == 0)
        return SLM_OK; /* it only trims offsets, which we do not return */
    if (strcmp(type, "TemplateProcessing") == 0) {
        if (*templated)
            return bad(SLM_ERR_UNSUPPORTED, what, field,
                       "a second TemplateProcessing");
        *templated = true;
        return parse_template(t, what, field, p);
    }
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(p, "processors");
        sub(f, sizeof f, field, "processors");
        if (!json_is_array(list))
            return bad(SLM_ERR_FORMAT, what, f, "must be an array");
        if (depth >= MAX_DEPTH)
            return bad(SLM_ERR_UNSUPPORTED, what, field,
                       "Sequence nested deeper than %d", MAX_DEPTH);
        for (size_t i = 0; i < json_array_size(list); i++)
            SLM_CHECK(parse_post(t, what, idx(g, sizeof g, f, i),
                                 json_array_get(list, i), depth + 1,
                                 templated));
        return SLM_OK;
    }
    return bad(SLM_ERR_UNSUPPORTED, what, sub(f, sizeof f, field, "type"),
               "unknown post-processor \"%s\"", type);
}

/* tokenizer_config.json: only eos_token is used (see tokenizer.h). */
static slm_status parse_config(struct slm__tok_hf *t, const uint8_t *data,
                               size_t len, const char *what)
{
    /* Integers as reals: transformers writes model_max_length as 1e30, past
     * jansson's integers; nothing read here is an integer. */
    json_error_t je;
    json_t *root =
        json_loadb((const char *)data, len,
                   JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &je);
    if (!root)
        return slm_fail(SLM_ERR_FORMAT, "%s: not valid JSON: %s (line %d)",
                        what, je.text, je.line);
    slm_status rc = SLM_OK;
    if (!json_is_object(root)) {
        rc = slm_fail(SLM_ERR_FORMAT, "%s: not a JSON object", what);
        goto done;
    }
    json_t *eos = json_object_get(root, "eos_token");
    if (json_is_object(eos)) /* a serialized AddedToken */
        eos = json_object_get(eos, "content");
    if (eos && !json_is_null(eos)) {
        if (!json_is_string(eos)) {
            rc = bad(SLM_ERR_FORMAT, what, "eos_token",
                     "must be a string, an object with content, or null");
            goto done;
        }
        int32_t id = find(t, json_string_value(eos), json_string_length(eos));
        if (id < 0) {
            rc = bad(SLM_ERR_FORMAT, what, "eos_token",
                     "\"%.*s\" is not a token of the tokenizer",
                     shown(json_string_length(eos)), json_string_value(eos));
            goto done;
        }
        t->eos_id = id;
    }
done:
    json_decref(root);
    return rc;
}

/* An upper bound on the bytes of text one token can stand for (see
 * slm_tokenizer_max_token_bytes), or SLM_TOKENIZER_MAX_TEXT where no bound
 * holds (a fused <unk>, lstrip/rstrip, a Replace to nothing). */
static int32_t max_text_per_token(const struct slm__tok_hf *t)
{
    const size_t unbounded = SLM_TOKENIZER_MAX_TEXT;
    size_t mult = 1, longest = 1;
    bool all_bytes = t->byte_fallback; /* then <unk> never comes out */
    for (int b = 0; b < 256; b++)
        all_bytes = all_bytes && t->byte_id[b] >= 0;
    if (t->unk_id >= 0 && t->fuse_unk && !all_bytes)
        return (int32_t)unbounded;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].lstrip || t->added[i].rstrip)
            return (int32_t)unbounded;
    for (size_t k = 0; k < t->n_norm; k++) {
        const norm_step *st = &t->norm_steps[k];
        if (st->kind == N_REPLACE && st->alen > st->blen) {
            if (st->blen == 0)
                return (int32_t)unbounded;
            mult *= (st->alen + st->blen - 1) / st->blen;
        }
        /* composition: a Hangul L V T (9 bytes) becomes 3 */
        if (st->kind == N_UNICODE && (st->form & UTF8PROC_COMPOSE))
            mult *= 3;
    }
    for (int32_t id = 0; id < t->n_tok; id++) {
        size_t n = t->len[id];
        if (t->byte_level && (t->flags[id] & F_MODEL)) {
            size_t chars = 0; /* one byte of text per character */
            for (size_t i = 0; i < n; i++)
                chars +=
                    ((unsigned char)t->pool[t->off[id] + i] & 0xC0) != 0x80;
            n = chars;
        }
        if (n > longest)
            longest = n;
    }
    if (mult > unbounded / longest)
        return (int32_t)unbounded;
    return (int32_t)(longest * mult);
}

slm_status slm__tok_hf_parse(const uint8_t *data, size_t len,
                             const uint8_t *config, size_t config_len,
                             int32_t vocab_size, const char *what,
                             const char *config_what, slm__tok_hf **out)
{
    *out = NULL;
    if (vocab_size < 1 || vocab_size > SLM_TOKENIZER_MAX_VOCAB)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: vocab_size = %d is out of range [1, %d]", what,
                        vocab_size, SLM_TOKENIZER_MAX_VOCAB);
    if (len > SLM_TOKENIZER_HF_MAX_FILE)
        return slm_fail(SLM_ERR_RANGE, "%s: size %zu exceeds the limit of %zu",
                        what, len, SLM_TOKENIZER_HF_MAX_FILE);
    if (config_len > SLM_TOKENIZER_HF_MAX_CONFIG)
        return slm_fail(SLM_ERR_RANGE, "%s: size %zu exceeds the limit of %zu",
                        config_what, config_len, SLM_TOKENIZER_HF_MAX_CONFIG);
    json_error_t je;
    json_t *root = json_loadb((const char *)data, len,
                              JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: not valid JSON: %s (line %d, column %d)", what,
                        je.text, je.line, je.column);
    slm_status rc = SLM_OK;
    struct slm__tok_hf *t = calloc(1, sizeof *t);
    if (!t) {
        rc = oom();
        goto fail;
    }
    t->bos_id = t->eos_id = t->unk_id = -1;
    if (!json_is_object(root)) {
        rc = slm_fail(SLM_ERR_FORMAT, "%s: not a JSON object", what);
        goto fail;
    }
    static const char *const must_be_null[] = {"truncation", "padding"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, must_be_null[i]);
        if (v && !json_is_null(v)) {
            rc = bad(SLM_ERR_UNSUPPORTED, what, must_be_null[i],
                     "must be null (it would change what encode returns)");
            goto fail;
        }
    }
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        rc = bad(SLM_ERR_FORMAT, what, "model", "missing or not an object");
        goto fail;
    }
    const char *type;
    SLM_CHECK_GOTO(get_type(what, "model", model, &type), rc, fail);
    if (strcmp(type, "BPE") != 0) {
        rc = bad(SLM_ERR_UNSUPPORTED, what, "model.type",
                 "unknown model \"%s\" (only BPE is supported)", type);
        goto fail;
    }
    SLM_CHECK_GOTO(parse_vocab(t, what, model,
                               json_object_get(root, "added_tokens"),
                               vocab_size),
                   rc, fail);
    SLM_CHECK_GOTO(parse_model(t, what, model), rc, fail);
    SLM_CHECK_GOTO(parse_merges(t, what, model), rc, fail);
    SLM_CHECK_GOTO(parse_normalizer(t, what, "normalizer",
                                    json_object_get(root, "normalizer"), 0),
                   rc, fail);
    SLM_CHECK_GOTO(parse_pre(t, what, "pre_tokenizer",
                             json_object_get(root, "pre_tokenizer"), 0),
                   rc, fail);
    bool templated = false, fused = false;
    SLM_CHECK_GOTO(parse_post(t, what, "post_processor",
                              json_object_get(root, "post_processor"), 0,
                              &templated),
                   rc, fail);
    SLM_CHECK_GOTO(parse_decoder(t, what, "decoder",
                                 json_object_get(root, "decoder"), 0, &fused),
                   rc, fail);
    SLM_CHECK_GOTO(build_match_sets(t), rc, fail);
    t->bos_id = t->n_pre_ids > 0 ? t->pre_ids[0] : -1;
    t->eos_id = t->n_post_ids > 0 ? t->post_ids[t->n_post_ids - 1] : -1;
    if (config)
        SLM_CHECK_GOTO(parse_config(t, config, config_len, config_what), rc,
                       fail);
    SLM_CHECK_GOTO(build_decode(t, what), rc, fail);
    t->max_token_bytes = max_text_per_token(t);
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->mctx) {
        rc = oom();
        goto fail;
    }
    pcre2_set_match_limit(t->mctx, MATCH_LIMIT);
    pcre2_set_heap_limit(t->mctx, HEAP_LIMIT_KIB);
    json_decref(root);
    *out = t;
    return SLM_OK;
fail:
    json_decref(root);
    slm__tok_hf_destroy(&t);
    return rc;
}

void slm__tok_hf_destroy(slm__tok_hf **tp)
{
    if (!tp || !*tp)
        return;
    struct slm__tok_hf *t = *tp;
    free(t->pool);
    free(t->off);
    free(t->len);
    free(t->flags);
    free(t->ht);
    free(t->mt);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].pat);
    free(t->added);
    free(t->raw.idx);
    free(t->norm.idx);
    for (size_t i = 0; i < t->n_pre; i++)
        pcre2_code_free(t->pre[i].re);
    /* a step that failed half-way may hold a compiled pattern too */
    if (t->n_pre < MAX_STEPS)
        pcre2_code_free(t->pre[t->n_pre].re);
    free(t->dec_pool);
    free(t->dec_off);
    free(t->dec_len);
    free(t->first_off);
    free(t->first_len);
    pcre2_match_context_free(t->mctx);
    free(t);
    *tp = NULL;
}

int32_t slm__tok_hf_max_token_bytes(const slm__tok_hf *t)
{
    return t->max_token_bytes;
}

int32_t slm__tok_hf_bos_id(const slm__tok_hf *t)
{
    return t->bos_id;
}

int32_t slm__tok_hf_eos_id(const slm__tok_hf *t)
{
    return t->eos_id;
}

int32_t slm__tok_hf_token_id(const slm__tok_hf *t, const char *piece,
                             size_t len)
{
    return find(t, piece, len);
}

bool slm__tok_hf_is_special(const slm__tok_hf *t, int32_t id)
{
    return id >= 0 && id < t->n_tok && (t->flags[id] & F_SPECIAL);
}
