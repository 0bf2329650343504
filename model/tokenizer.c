/*
 * model/tokenizer.c - the tokenizer handle, and the llama2.c tokenizer behind
 * it; the file format is described in tokenizer.h. A handle opened from a
 * Hugging Face tokenizer.json forwards to model/tokenizer_hf.c instead.
 *
 * Encoding reproduces llama2.c run.c's encode() token for token, with three
 * deliberate differences, none of which changes the result on a well-formed
 * vocabulary:
 *   - byte fallback looks the "<0xNN>" pieces up instead of assuming that
 *     byte b is token b + 3 (a byte with no such piece becomes <unk>);
 *   - a vocabulary without a " " piece gets no dummy prefix (run.c would push
 *     the id -1);
 *   - text and pieces are (pointer, length) pairs, not C strings, so an
 *     embedded NUL is an ordinary byte rather than the end of the input.
 * run.c's merge loop rescans every adjacent pair after every merge, O(n^2)
 * lookups; here the tokens form a doubly linked list and the candidate pairs a
 * binary heap keyed by (score descending, left position ascending) with lazy
 * invalidation, O(n log n). Why the heap picks the same pair as the rescan is
 * argued at merge_tokens(); tests/unit/test_tokenizer.c checks it against a
 * literal port of run.c on both shared vocabularies.
 */
#include "model/tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/checked.h"
#include "common/file.h"
#include "common/reader.h"
#include "model/tokenizer_impl.h"

/* One entry of the lookup index: a piece and its id, sorted by bytes. */
typedef struct {
    const char *str; /* borrowed from the tokenizer's pool; (len) */
    uint32_t len;
    int32_t id;
} piece_ref;

struct slm_tokenizer {
    slm__tok_hf *hf; /* a tokenizer.json; then only vocab_size below is set */
    int32_t vocab_size;
    int32_t max_token_length;
    char *pool;        /* every piece, each followed by a NUL */
    uint32_t *offset;  /* (vocab_size) start of piece i in pool */
    uint32_t *length;  /* (vocab_size) bytes of piece i, NUL not counted */
    float *score;      /* (vocab_size) merge priority, always finite */
    int16_t *byte_of;  /* (vocab_size) NN when piece i is "<0xNN>", else -1 */
    piece_ref *sorted; /* (vocab_size) by bytes, then by id */
    int32_t byte_id[256];  /* byte -> its "<0xNN>" token, else SLM_TOKEN_UNK */
    int32_t space_id;      /* the " " piece (dummy prefix), or -1 */
    char byte_pieces[512]; /* byte b at [2b], NUL at [2b + 1] */
};

/* run.c starts its search for the best pair at this score and compares with
 * '>', so a pair whose merged piece scores no higher never merges. */
static const float merge_floor = -1e10f;

/* ------------------------------------------------------------------------ */
/* Parsing                                                                   */

/* Replaces the reader's truncation message with one that names the token
 * being read; a file that ends cleanly between entries is told apart, as it
 * is the usual sign of a vocabulary smaller than the model's. */
static slm_status truncated(const slm_reader *r, int32_t index,
                            int32_t vocab_size, const char *field, size_t need)
{
    if (slm_reader_remaining(r) == 0 && strcmp(field, "score") == 0)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: truncated at offset %zu: the file ends after %d "
                        "of the model's vocab_size %d tokens",
                        r->what, r->off, index, vocab_size);
    return slm_fail(SLM_ERR_FORMAT,
                    "%s: token %d: truncated at offset %zu reading %s (%zu "
                    "bytes needed, %zu left)",
                    r->what, index, r->off, field, need,
                    slm_reader_remaining(r));
}

/* Walks the entries after max_token_length, checking every field. With
 * fill == NULL it only validates and adds up the pool size; with fill it
 * copies the pieces and scores into fill's arrays, which must have been sized
 * from a validating pass over the same bytes. */
static slm_status scan_entries(slm_reader *r, int32_t vocab_size,
                               int32_t max_token_length,
                               struct slm_tokenizer *fill, size_t *pool_len)
{
    size_t pool = 0;
    for (int32_t i = 0; i < vocab_size; i++) {
        float score;
        int32_t len;
        const uint8_t *bytes = NULL;
        if (slm_reader_f32(r, "score", &score) != SLM_OK)
            return truncated(r, i, vocab_size, "score", sizeof score);
        if (!isfinite(score))
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: token %d: score %g is not finite", r->what, i,
                            (double)score);
        if (slm_reader_i32(r, "piece length", &len) != SLM_OK)
            return truncated(r, i, vocab_size, "piece length", sizeof len);
        if (len < 0 || len > max_token_length)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: token %d: piece length %d out of range "
                            "[0, %d] (max_token_length)",
                            r->what, i, len, max_token_length);
        if (slm_reader_bytes(r, "piece bytes", (size_t)len, &bytes) != SLM_OK)
            return truncated(r, i, vocab_size, "piece bytes", (size_t)len);
        if (fill) {
            /* pool < file size + vocab_size: fits the uint32 offsets, as
             * SLM_TOKENIZER_MAX_FILE + SLM_TOKENIZER_MAX_VOCAB < 2^32. */
            fill->offset[i] = (uint32_t)pool;
            fill->length[i] = (uint32_t)len;
            fill->score[i] = score;
            if (len > 0)
                memcpy(fill->pool + pool, bytes, (size_t)len);
            fill->pool[pool + (size_t)len] = '\0';
        }
        if (!slm_size_add(pool, (size_t)len + 1, &pool))
            return slm_fail(SLM_ERR_RANGE, "%s: pieces overflow size_t",
                            r->what);
    }
    if (slm_reader_remaining(r) != 0)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: %zu trailing bytes at offset %zu: the file holds "
                        "more tokens than the model's vocab_size %d",
                        r->what, slm_reader_remaining(r), r->off, vocab_size);
    *pool_len = pool;
    return SLM_OK;
}

_Static_assert(SLM_TOKENIZER_MAX_FILE + SLM_TOKENIZER_MAX_VOCAB <= UINT32_MAX,
               "piece offsets are 32-bit");
_Static_assert(SLM_TOKENIZER_MAX_TEXT + 3 <= INT32_MAX,
               "token positions in merge_tokens are int32_t");

static int cmp_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

static int cmp_piece_ref(const void *pa, const void *pb)
{
    const piece_ref *a = pa, *b = pb;
    int c = cmp_bytes(a->str, a->len, b->str, b->len);
    if (c != 0)
        return c;
    return (a->id > b->id) - (a->id < b->id);
}

/* The id of the piece equal to s[0..n), or -1. Among duplicate pieces (none
 * in real vocabularies) the lowest id wins, so the result is deterministic
 * where run.c's bsearch is not. */
static int32_t lookup(const struct slm_tokenizer *t, const char *s, size_t n)
{
    size_t lo = 0, hi = (size_t)t->vocab_size;
    while (lo < hi) { /* first entry >= s */
        size_t mid = lo + (hi - lo) / 2;
        const piece_ref *e = &t->sorted[mid];
        if (cmp_bytes(e->str, e->len, s, n) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < (size_t)t->vocab_size) {
        const piece_ref *e = &t->sorted[lo];
        if (cmp_bytes(e->str, e->len, s, n) == 0)
            return e->id;
    }
    return -1;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* NN if p[0..n) is exactly "<0xNN>", else -1. Decoding accepts either case of
 * hex digit, as run.c's sscanf("%02hhX") does; the byte-fallback table for
 * encoding looks up the upper-case names SentencePiece writes. */
static int byte_piece_value(const char *p, size_t n)
{
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
        return -1;
    int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
    if (hi < 0 || lo < 0)
        return -1;
    return hi * 16 + lo;
}

slm_status slm_tokenizer_parse(const uint8_t *data, size_t len,
                               int32_t vocab_size, const char *what,
                               slm_tokenizer_t **out)
{
    if (!what)
        what = "tokenizer";
    if (!out || (!data && len > 0))
        return slm_fail(SLM_ERR_INVALID, "%s: NULL argument", what);
    *out = NULL;
    /* 3: the ids <unk>, <s> and </s> must exist. */
    if (vocab_size < 3 || vocab_size > SLM_TOKENIZER_MAX_VOCAB)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: vocab_size = %d is out of range [3, %d]", what,
                        vocab_size, SLM_TOKENIZER_MAX_VOCAB);
    if (len > SLM_TOKENIZER_MAX_FILE)
        return slm_fail(SLM_ERR_RANGE, "%s: size %zu exceeds the limit of %zu",
                        what, len, SLM_TOKENIZER_MAX_FILE);

    slm_reader r = slm_reader_make(data, len, what);
    int32_t max_len;
    SLM_CHECK(slm_reader_i32(&r, "max_token_length", &max_len));
    if (max_len < 1 || max_len > SLM_TOKENIZER_MAX_PIECE)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: max_token_length %d out of range [1, %d]", what,
                        max_len, SLM_TOKENIZER_MAX_PIECE);
    const size_t entries_at = r.off;

    /* Validate everything before allocating anything the file sizes. */
    size_t pool_len = 0;
    SLM_CHECK(scan_entries(&r, vocab_size, max_len, NULL, &pool_len));

    struct slm_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", what);
    const size_t v = (size_t)vocab_size;
    t->vocab_size = vocab_size;
    t->max_token_length = max_len;
    t->pool = malloc(pool_len);
    t->offset = malloc(v * sizeof *t->offset);
    t->length = malloc(v * sizeof *t->length);
    t->score = malloc(v * sizeof *t->score);
    t->byte_of = malloc(v * sizeof *t->byte_of);
    t->sorted = malloc(v * sizeof *t->sorted);
    slm_status rc;
    if (!t->pool || !t->offset || !t->length || !t->score || !t->byte_of ||
        !t->sorted) {
        rc = slm_fail(SLM_ERR_NOMEM,
                      "%s: out of memory for %d tokens (%zu bytes of pieces)",
                      what, vocab_size, pool_len);
        goto fail;
    }
    r.off = entries_at;
    SLM_CHECK_GOTO(scan_entries(&r, vocab_size, max_len, t, &pool_len), rc,
                   fail);

    for (int32_t i = 0; i < vocab_size; i++) {
        const char *p = t->pool + t->offset[i];
        t->sorted[i] = (piece_ref){p, t->length[i], i};
        t->byte_of[i] = (int16_t)byte_piece_value(p, t->length[i]);
    }
    qsort(t->sorted, v, sizeof *t->sorted, cmp_piece_ref);

    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        int32_t id = lookup(t, name, sizeof name);
        t->byte_id[b] = id >= 0 ? id : SLM_TOKEN_UNK;
        t->byte_pieces[2 * b] = (char)b;
        t->byte_pieces[2 * b + 1] = '\0';
    }
    t->space_id = lookup(t, " ", 1);
    *out = t;
    return SLM_OK;
fail:
    slm_tokenizer_destroy(&t);
    return rc;
}

slm_status slm_tokenizer_load(const char *path, int32_t vocab_size,
                              slm_tokenizer_t **out)
{
    if (!path || !out)
        return slm_fail(SLM_ERR_INVALID, "tokenizer: NULL argument");
    *out = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    SLM_CHECK(slm_file_read_all(path, SLM_TOKENIZER_MAX_FILE, &buf, &len));
    slm_status rc = slm_tokenizer_parse(buf, len, vocab_size, path, out);
    free(buf);
    return rc;
}

void slm_tokenizer_destroy(slm_tokenizer_t **t)
{
    if (!t || !*t)
        return;
    struct slm_tokenizer *p = *t;
    slm__tok_hf_destroy(&p->hf);
    free(p->pool);
    free(p->offset);
    free(p->length);
    free(p->score);
    free(p->byte_of);
    free(p->sorted);
    free(p);
    *t = NULL;
}

int32_t slm_tokenizer_vocab_size(const slm_tokenizer_t *t)
{
    return t ? t->vocab_size : 0;
}

int32_t slm_tokenizer_max_token_bytes(const slm_tokenizer_t *t)
{
    if (t && t->hf)
        return slm__tok_hf_max_token_bytes(t->hf);
    return t ? t->max_token_length : 0;
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */

/* The token that the pieces of a and b concatenated form, or -1. Only pieces
 * no longer than max_token_length exist, so longer pairs need no lookup. */
static int32_t pair_id(const struct slm_tokenizer *t, int32_t a, int32_t b)
{
    size_t la = t->length[a], lb = t->length[b];
    if (la + lb > (size_t)t->max_token_length)
        return -1;
    char buf[SLM_TOKENIZER_MAX_PIECE];
    memcpy(buf, t->pool + t->offset[a], la);
    memcpy(buf + la, t->pool + t->offset[b], lb);
    return lookup(t, buf, la + lb);
}

/* A candidate merge of the node at `left` with its right neighbour. */
typedef struct {
    float score;
    int32_t left;
} cand;

/* True if a should be merged before b: higher score, then further left. */
static int cand_before(cand a, cand b)
{
    return a.score > b.score || (a.score == b.score && a.left < b.left);
}

typedef struct {
    cand *v; /* (cap) */
    size_t n;
} cand_heap;

static void heap_push(cand_heap *h, cand c)
{
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_before(c, h->v[parent]))
            break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = c;
}

static cand heap_pop(cand_heap *h)
{
    cand top = h->v[0];
    cand last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n)
            break;
        if (child + 1 < h->n && cand_before(h->v[child + 1], h->v[child]))
            child++;
        if (!cand_before(h->v[child], last))
            break;
        h->v[i] = h->v[child];
        i = child;
    }
    if (h->n > 0)
        h->v[i] = last;
    return top;
}

/* Pushes the pair (left, next[left]) if it merges into some piece. */
static void push_pair(const struct slm_tokenizer *t, cand_heap *h,
                      const int32_t *tok, const int32_t *next, int32_t left)
{
    if (left < 0 || next[left] < 0)
        return;
    int32_t id = pair_id(t, tok[left], tok[next[left]]);
    if (id >= 0 && t->score[id] > merge_floor)
        heap_push(h, (cand){t->score[id], left});
}

/*
 * Merges tok[0..*n) in place the way run.c does: while some adjacent pair
 * concatenates to a piece scoring above merge_floor, replace the pair whose
 * piece scores highest (the leftmost among equals) by that piece.
 *
 * Why this equals run.c's rescan: a node keeps its array index for life, and
 * a merge keeps the left node and unlinks the right one, so index order is
 * list order and "leftmost pair" means "smallest left index". A pair's merged
 * piece and score depend only on the two ids, so the candidate (score, left)
 * is fully described by its key. Invariant: every mergeable adjacent pair of
 * the current list has an entry with its exact key in the heap (all pairs are
 * pushed at the start; a merge changes only the pairs touching the merged
 * node, and both are pushed). Entries may be stale (their node died, or the
 * pair at `left` changed); on pop an entry is accepted only if the pair now
 * at `left` merges with exactly the entry's score, in which case it is
 * indistinguishable from that pair's own entry. The first accepted entry is
 * therefore the greatest key among current pairs: run.c's choice. Each merge
 * pops one entry and pushes at most two, so the heap never holds more than
 * (n - 1) + (n - 1) entries.
 */
static slm_status merge_tokens(const struct slm_tokenizer *t, int32_t *tok,
                               size_t *n)
{
    const size_t count = *n;
    if (count < 2)
        return SLM_OK;
    size_t bytes_links, bytes_heap;
    if (!slm_size_mul(count, sizeof(int32_t), &bytes_links) ||
        !slm_size_mul3(count, 2, sizeof(cand), &bytes_heap))
        return slm_fail(SLM_ERR_RANGE, "tokenizer: %zu tokens overflow", count);
    int32_t *next = malloc(bytes_links);
    int32_t *prev = malloc(bytes_links);
    cand_heap h = {malloc(bytes_heap), 0};
    if (!next || !prev || !h.v) {
        free(next);
        free(prev);
        free(h.v);
        return slm_fail(SLM_ERR_NOMEM,
                        "tokenizer: out of memory merging %zu tokens", count);
    }
    for (size_t i = 0; i < count; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < count ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < count; i++)
        push_pair(t, &h, tok, next, (int32_t)i);

    while (h.n > 0) {
        cand c = heap_pop(&h);
        int32_t left = c.left, right = next[left];
        if (tok[left] < 0 || right < 0)
            continue; /* the left node died or lost its neighbour */
        int32_t id = pair_id(t, tok[left], tok[right]);
        if (id < 0 || t->score[id] != c.score)
            continue; /* the pair changed; its own entry is in the heap */
        tok[left] = id;
        tok[right] = -1; /* dead; ids are never negative */
        next[left] = next[right];
        if (next[right] >= 0)
            prev[next[right]] = left;
        push_pair(t, &h, tok, next, prev[left]);
        push_pair(t, &h, tok, next, left);
    }

    size_t w = 0;
    for (size_t i = 0; i < count; i++)
        if (tok[i] >= 0)
            tok[w++] = tok[i];
    *n = w;
    free(next);
    free(prev);
    free(h.v);
    return SLM_OK;
}

slm_status slm_tokenizer_encode(const slm_tokenizer_t *t, const char *text,
                                size_t len, bool bos, bool eos, int32_t **ids,
                                size_t *n_ids)
{
    const slm_encode_opts opts = {.add_special = bos, .add_eos = eos};
    return slm_tokenizer_encode_ex(t, text, len, &opts, ids, n_ids);
}

slm_status slm_tokenizer_encode_ex(const slm_tokenizer_t *t, const char *text,
                                   size_t len, const slm_encode_opts *opts,
                                   int32_t **ids, size_t *n_ids)
{
    if (!t || !opts || !ids || !n_ids || (!text && len > 0))
        return slm_fail(SLM_ERR_INVALID, "tokenizer: encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (len > SLM_TOKENIZER_MAX_TEXT)
        return slm_fail(SLM_ERR_RANGE,
                        "tokenizer: text of %zu bytes exceeds the limit of %zu",
                        len, SLM_TOKENIZER_MAX_TEXT);
    if (t->hf)
        return slm__tok_hf_encode(t->hf, text ? text : "", len, opts, ids,
                                  n_ids);
    const bool bos = opts->add_special, eos = opts->add_eos;
    /* At most one token per byte, plus BOS, the dummy prefix and EOS. */
    int32_t *tok = malloc((len + 3) * sizeof *tok);
    if (!tok)
        return slm_fail(SLM_ERR_NOMEM,
                        "tokenizer: out of memory encoding %zu bytes", len);
    size_t n = 0;
    if (bos)
        tok[n++] = SLM_TOKEN_BOS;
    if (len > 0 && t->space_id >= 0)
        tok[n++] = t->space_id;

    /* A code point is a byte and the continuation bytes (10xxxxxx) after it,
     * four bytes at most. Like run.c, nothing else about UTF-8 is checked:
     * a stray continuation byte starts a "code point" of its own. */
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t j = i + 1;
        while (j < len && j - i < 4 && (s[j] & 0xC0) == 0x80)
            j++;
        int32_t id = lookup(t, text + i, j - i);
        if (id >= 0) {
            tok[n++] = id;
        } else {
            for (size_t k = i; k < j; k++)
                tok[n++] = t->byte_id[s[k]];
        }
        i = j;
    }

    slm_status rc = merge_tokens(t, tok, &n);
    if (rc != SLM_OK) {
        free(tok);
        return rc;
    }
    if (eos)
        tok[n++] = SLM_TOKEN_EOS;
    *ids = tok;
    *n_ids = n;
    return SLM_OK;
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */

const char *slm_tokenizer_decode(const slm_tokenizer_t *t, int32_t prev,
                                 int32_t token, size_t *len)
{
    size_t dummy;
    if (!len)
        len = &dummy;
    if (!t || token < 0 || token >= t->vocab_size) {
        *len = 0;
        return "";
    }
    if (t->hf)
        return slm__tok_hf_decode(t->hf, prev, token, len);
    const char *p = t->pool + t->offset[token];
    size_t n = t->length[token];
    int b = t->byte_of[token];
    /* SentencePiece drops the leading space of the first piece after BOS. */
    if (prev == SLM_TOKEN_BOS && n > 0 && p[0] == ' ') {
        p++;
        n--;
        b = byte_piece_value(p, n);
    }
    if (b >= 0) {
        *len = 1;
        return &t->byte_pieces[2 * b];
    }
    *len = n;
    return p;
}

/* ------------------------------------------------------------------------ */
/* Hugging Face tokenizer.json, and choosing the format                      */

/* A handle around an HF tokenizer, for a model of vocab_size ids. */
static slm_status wrap_hf(slm__tok_hf *hf, int32_t vocab_size,
                          slm_tokenizer_t **out)
{
    struct slm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        slm__tok_hf_destroy(&hf);
        return slm_fail(SLM_ERR_NOMEM, "tokenizer: out of memory");
    }
    t->hf = hf;
    t->vocab_size = vocab_size;
    *out = t;
    return SLM_OK;
}

slm_status slm_tokenizer_parse_hf(const uint8_t *data, size_t len,
                                  int32_t vocab_size, const char *what,
                                  slm_tokenizer_t **out)
{
    if (!what)
        what = "tokenizer.json";
    if (!out || (!data && len > 0))
        return slm_fail(SLM_ERR_INVALID, "%s: NULL argument", what);
    *out = NULL;
    slm__tok_hf *hf = NULL;
    SLM_CHECK(slm__tok_hf_parse(data ? data : (const uint8_t *)"", len, NULL, 0,
                                vocab_size, what, NULL, &hf));
    return wrap_hf(hf, vocab_size, out);
}

/* dir + "/" + name into a new string (free()), or NULL when out of memory. */
static char *join_path(const char *dir, size_t dir_len, const char *name)
{
    size_t n;
    if (!slm_size_add(dir_len, strlen(name) + 2, &n))
        return NULL;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%.*s/%s", (int)dir_len, dir, name);
    return p;
}

slm_status slm_tokenizer_load_hf(const char *path, int32_t vocab_size,
                                 slm_tokenizer_t **out)
{
    if (!path || !out)
        return slm_fail(SLM_ERR_INVALID, "tokenizer: NULL argument");
    *out = NULL;
    const char *slash = strrchr(path, '/');
    char *config_path =
        slash ? join_path(path, (size_t)(slash - path), "tokenizer_config.json")
              : join_path(".", 1, "tokenizer_config.json");
    if (!config_path)
        return slm_fail(SLM_ERR_NOMEM, "tokenizer: out of memory");
    uint8_t *buf = NULL, *config = NULL;
    size_t len = 0, config_len = 0;
    slm__tok_hf *hf = NULL;
    slm_status rc;
    SLM_CHECK_GOTO(
        slm_file_read_all(path, SLM_TOKENIZER_HF_MAX_FILE, &buf, &len), rc,
        done);
    /* The config is optional: only its absence is not an error. */
    struct stat st;
    if (stat(config_path, &st) == 0) {
        SLM_CHECK_GOTO(slm_file_read_all(config_path,
                                         SLM_TOKENIZER_HF_MAX_CONFIG, &config,
                                         &config_len),
                       rc, done);
    } else if (errno != ENOENT) {
        rc = slm_fail(SLM_ERR_IO, "%s: %s", config_path, strerror(errno));
        goto done;
    }
    SLM_CHECK_GOTO(slm__tok_hf_parse(buf, len, config, config_len, vocab_size,
                                     path, config_path, &hf),
                   rc, done);
    rc = wrap_hf(hf, vocab_size, out);
done:
    free(buf);
    free(config);
    free(config_path);
    return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

slm_status slm_tokenizer_open(const char *model_path,
                              const char *tokenizer_path, int32_t vocab_size,
                              slm_tokenizer_t **out)
{
    if (!out || (!model_path && !tokenizer_path))
        return slm_fail(SLM_ERR_INVALID, "tokenizer: NULL argument");
    *out = NULL;
    if (tokenizer_path) {
        if (ends_with(tokenizer_path, ".json"))
            return slm_tokenizer_load_hf(tokenizer_path, vocab_size, out);
        return slm_tokenizer_load(tokenizer_path, vocab_size, out);
    }
    /* A Hugging Face model (as model/hf_model.c recognises one) keeps its
     * tokenizer.json beside its weights. */
    struct stat st;
    char *path = NULL;
    if (stat(model_path, &st) == 0 && S_ISDIR(st.st_mode)) {
        path = join_path(model_path, strlen(model_path), "tokenizer.json");
    } else if (ends_with(model_path, ".safetensors")) {
        const char *slash = strrchr(model_path, '/');
        path = slash ? join_path(model_path, (size_t)(slash - model_path),
                                 "tokenizer.json")
                     : join_path(".", 1, "tokenizer.json");
    } else {
        return slm_fail(SLM_ERR_INVALID,
                        "%s: no tokenizer given, and only a Hugging Face "
                        "model (a directory or a .safetensors file) has one "
                        "beside it",
                        model_path);
    }
    if (!path)
        return slm_fail(SLM_ERR_NOMEM, "tokenizer: out of memory");
    slm_status rc = slm_tokenizer_load_hf(path, vocab_size, out);
    free(path);
    return rc;
}

bool slm_tokenizer_is_hf(const slm_tokenizer_t *t)
{
    return t && t->hf;
}

int32_t slm_tokenizer_bos_id(const slm_tokenizer_t *t)
{
    if (!t)
        return -1;
    return t->hf ? slm__tok_hf_bos_id(t->hf) : SLM_TOKEN_BOS;
}

int32_t slm_tokenizer_eos_id(const slm_tokenizer_t *t)
{
    if (!t)
        return -1;
    return t->hf ? slm__tok_hf_eos_id(t->hf) : SLM_TOKEN_EOS;
}

slm_status slm_tokenizer_token_id(const slm_tokenizer_t *t, const char *piece,
                                  int32_t *id)
{
    if (!t || !piece || !id)
        return slm_fail(SLM_ERR_INVALID, "tokenizer: token_id: NULL argument");
    const size_t n = strlen(piece);
    *id = t->hf ? slm__tok_hf_token_id(t->hf, piece, n) : lookup(t, piece, n);
    if (*id < 0)
        return slm_fail(SLM_ERR_UNAVAILABLE, "tokenizer: no token is \"%.*s\"",
                        n > 80 ? 80 : (int)n, piece);
    return SLM_OK;
}

bool slm_tokenizer_is_special(const slm_tokenizer_t *t, int32_t id)
{
    if (!t)
        return false;
    if (t->hf)
        return slm__tok_hf_is_special(t->hf, id);
    return id >= SLM_TOKEN_UNK && id <= SLM_TOKEN_EOS && id < t->vocab_size;
}
