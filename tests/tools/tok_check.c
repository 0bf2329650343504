/*
 * tests/tools/tok_check.c - shardlm's tokenizer against `tokenizers` on one
 * case of tests/reference/tokenizers_ref.py (run by
 * tests/integration/hf_tokenizer.sh).
 *
 * Usage: tok_check CASE_DIR
 * CASE_DIR holds tokenizer.json, tokenizer_config.json and ref.json. The
 * tokenizer is opened the way the engine opens one for a Hugging Face model
 * directory (slm_tokenizer_open(CASE_DIR, NULL, ...)). Checked, counting
 * each: for every llama.cpp test text, our ids == tokenizers' ids; for every
 * random string, our ids == tokenizers' with special tokens as text, with
 * them parsed, and (some rows) with the post-processor's tokens; our decode
 * of tokenizers' ids == tokenizers' decode. Reported but not failed on: the
 * test texts whose original-tokenizer ids (.out) differ from ours, printed as
 * "out_diffs: i,j,..." for the script to compare with the known list, and
 * how many strings decode back to themselves.
 * Exit 0 when everything that is checked matched, 1 otherwise, 2 on usage or
 * load errors.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

#define SHOW_MAX 5

typedef struct {
    const char *name;
    size_t ok, total;
} tally;

static int shown_failures;

/* Prints text(len) with C escapes, for failure reports. */
static void show_text(const char *label, const char *s, size_t n)
{
    fprintf(stderr, "  %s \"", label);
    for (size_t i = 0; i < n && i < 300; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' || c == '"')
            fprintf(stderr, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fprintf(stderr, "\"%s\n", n > 300 ? "..." : "");
}

static void show_ids(const char *label, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s [", label);
    for (size_t i = 0; i < n && i < 60; i++)
        fprintf(stderr, "%s%d", i ? ", " : "", ids[i]);
    fprintf(stderr, "%s]\n", n > 60 ? ", ..." : "");
}

/* The ids of a JSON array into a new buffer (free()). */
static int32_t *json_ids(json_t *a, size_t *n)
{
    *n = json_array_size(a);
    int32_t *v = malloc((*n ? *n : 1) * sizeof *v);
    if (!v) {
        fprintf(stderr, "tok_check: out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < *n; i++)
        v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return v;
}

static bool same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* Our ids for text under opts == expected? Counts into *t. */
static bool check_encode(const slm_tokenizer_t *tok, tally *t, const char *text,
                         size_t len, const slm_encode_opts *opts, json_t *want,
                         int32_t **ours, size_t *n_ours)
{
    int32_t *ids = NULL;
    size_t n = 0;
    t->total++;
    slm_status rc = slm_tokenizer_encode_ex(tok, text, len, opts, &ids, &n);
    size_t nw;
    int32_t *w = json_ids(want, &nw);
    bool ok = rc == SLM_OK && same_ids(ids, n, w, nw);
    if (ok) {
        t->ok++;
    } else if (shown_failures++ < SHOW_MAX) {
        fprintf(stderr, "MISMATCH %s:\n", t->name);
        show_text("text", text, len);
        if (rc != SLM_OK)
            fprintf(stderr, "  encode failed: %s\n", slm_error_message());
        show_ids("ours      ", ids, n);
        show_ids("tokenizers", w, nw);
    }
    free(w);
    if (ours) {
        *ours = ids;
        *n_ours = n;
    } else {
        free(ids);
    }
    return ok;
}

/* Streams ids through slm_tokenizer_decode from the start of a text
 * (prev -1), leaving out special tokens when skip_special. Caller frees. */
static char *decode_all(const slm_tokenizer_t *tok, const int32_t *ids,
                        size_t n, bool skip_special, size_t *len)
{
    size_t cap = 64, used = 0;
    char *out = malloc(cap);
    int32_t prev = -1;
    for (size_t i = 0; out && i < n; i++) {
        size_t pl = 0;
        const char *p = slm_tokenizer_decode(tok, prev, ids[i], &pl);
        prev = ids[i];
        if (skip_special && slm_tokenizer_is_special(tok, ids[i]))
            continue;
        while (used + pl + 1 > cap) {
            cap *= 2;
            char *q = realloc(out, cap);
            if (!q) {
                free(out);
                return NULL;
            }
            out = q;
        }
        memcpy(out + used, p, pl);
        used += pl;
    }
    if (!out) {
        fprintf(stderr, "tok_check: out of memory\n");
        exit(2);
    }
    *len = used;
    return out;
}

static void check_decode(const slm_tokenizer_t *tok, tally *t, json_t *ids,
                         json_t *want, bool skip_special)
{
    size_t n, len = 0;
    int32_t *v = json_ids(ids, &n);
    char *got = decode_all(tok, v, n, skip_special, &len);
    const size_t wl = json_string_length(want);
    t->total++;
    if (len == wl && memcmp(got, json_string_value(want), wl) == 0) {
        t->ok++;
    } else if (shown_failures++ < SHOW_MAX) {
        fprintf(stderr, "MISMATCH %s:\n", t->name);
        show_ids("ids       ", v, n);
        show_text("ours      ", got, len);
        show_text("tokenizers", json_string_value(want), wl);
    }
    free(got);
    free(v);
}

static void report(const tally *t)
{
    printf("  %-22s %zu/%zu\n", t->name, t->ok, t->total);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: tok_check CASE_DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    char path[4096];
    snprintf(path, sizeof path, "%s/ref.json", dir);
    json_error_t je;
    json_t *ref = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!ref) {
        fprintf(stderr, "tok_check: %s: %s\n", path, je.text);
        return 2;
    }
    const int32_t vocab_size =
        (int32_t)json_integer_value(json_object_get(ref, "vocab_size"));
    slm_tokenizer_t *tok = NULL;
    if (slm_tokenizer_open(dir, NULL, vocab_size, &tok) != SLM_OK) {
        fprintf(stderr, "tok_check: %s: %s\n", dir, slm_error_message());
        json_decref(ref);
        return 2;
    }
    const slm_encode_opts plain = {0}, special = {.parse_special = true},
                          add = {.add_special = true};
    tally t_inp = {"inp ids == tokenizers", 0, 0},
          t_out = {"inp ids == .out", 0, 0}, t_plain = {"random plain", 0, 0},
          t_special = {"random parse_special", 0, 0},
          t_add = {"random add_special", 0, 0}, t_dec = {"decode", 0, 0},
          t_dec_add = {"decode add_special", 0, 0},
          t_round = {"decode(encode(s)) == s", 0, 0},
          t_empty = {"add_special of \"\"", 0, 0};

    check_encode(tok, &t_empty, "", 0, &add,
                 json_object_get(ref, "add_special"), NULL, NULL);

    json_t *inp = json_object_get(ref, "inp");
    char diffs[4096] = "";
    size_t dl = 0;
    for (size_t i = 0; i < json_array_size(inp); i++) {
        json_t *row = json_array_get(inp, i);
        json_t *text = json_object_get(row, "text");
        int32_t *ours = NULL;
        size_t n = 0, no;
        check_encode(tok, &t_inp, json_string_value(text),
                     json_string_length(text), &plain,
                     json_object_get(row, "ids"), &ours, &n);
        int32_t *out = json_ids(json_object_get(row, "out"), &no);
        t_out.total++;
        if (same_ids(ours, n, out, no))
            t_out.ok++;
        else if (dl + 16 < sizeof diffs)
            dl += (size_t)snprintf(diffs + dl, sizeof diffs - dl, "%s%zu",
                                   dl ? "," : "", i);
        free(out);
        free(ours);
    }

    json_t *rows = json_object_get(ref, "random");
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *row = json_array_get(rows, i);
        json_t *text = json_object_get(row, "text");
        const char *s = json_string_value(text);
        const size_t len = json_string_length(text);
        int32_t *ours = NULL;
        size_t n = 0;
        check_encode(tok, &t_plain, s, len, &plain, json_object_get(row, "ids"),
                     &ours, &n);
        check_encode(tok, &t_special, s, len, &special,
                     json_object_get(row, "ids_special"), NULL, NULL);
        check_decode(tok, &t_dec, json_object_get(row, "ids"),
                     json_object_get(row, "decode"), false);
        size_t rl = 0;
        char *back = decode_all(tok, ours, n, false, &rl);
        t_round.total++;
        t_round.ok += rl == len && memcmp(back, s, len) == 0;
        free(back);
        free(ours);
        if (json_object_get(row, "ids_add")) {
            check_encode(tok, &t_add, s, len, &add,
                         json_object_get(row, "ids_add"), NULL, NULL);
            check_decode(tok, &t_dec_add, json_object_get(row, "ids_add"),
                         json_object_get(row, "decode_add"), true);
        }
    }

    printf("%s: vocab %d, bos %d, eos %d, max_token_bytes %d\n", dir,
           vocab_size, slm_tokenizer_bos_id(tok), slm_tokenizer_eos_id(tok),
           slm_tokenizer_max_token_bytes(tok));
    const tally *checked[] = {&t_empty, &t_inp, &t_plain,  &t_special,
                              &t_add,   &t_dec, &t_dec_add};
    bool all = true;
    for (size_t i = 0; i < sizeof checked / sizeof *checked; i++) {
        report(checked[i]);
        all = all && checked[i]->ok == checked[i]->total;
    }
    report(&t_out);
    report(&t_round);
    printf("out_diffs: %s\n", diffs);
    slm_tokenizer_destroy(&tok);
    json_decref(ref);
    return all ? 0 : 1;
}
