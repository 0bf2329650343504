/* model/chat.c - built-in chat formats and the recognition of known chat
 * templates; the contract is in chat.h.
 *
 * Each renderer below restates, for messages of the three roles with string
 * content, what one family's real template does; the comments name the
 * template lines where the behaviour is surprising. String functions the
 * templates call are Python's: Jinja's `trim` and `.strip()` remove every
 * character for which Python's str.isspace() is true (py_space), not only
 * ASCII white space, and `.strip('\n')` only newlines.
 */
#define _GNU_SOURCE /* memmem, asprintf */
#include "model/chat.h"

#include <jansson.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/checked.h"
#include "common/file.h"
#include "common/utf8.h"

/* A tokenizer_config.json nests 3 levels (added_tokens_decoder); deeper
 * documents are refused before jansson builds anything. */
#define MAX_DEPTH 16

#define LLAMA3_HEADER_START "<|start_header_id|>"
#define LLAMA3_HEADER_END   "<|end_header_id|>\n\n"
#define LLAMA3_EOT          "<|eot_id|>"
#define QWEN25_SYSTEM                                                          \
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

typedef enum { FAM_LLAMA2, FAM_LLAMA3, FAM_CHATML, FAM_MISTRAL } family;

static const struct {
    const char *name;
    family fam;
    const char *bos, *eos;
    const char *stops[3]; /* NULL-terminated */
} formats[SLM_CHAT_FORMAT_COUNT] = {
    [SLM_CHAT_LLAMA2] = {"llama2", FAM_LLAMA2, "<s>", "</s>", {"</s>"}},
    [SLM_CHAT_LLAMA3] = {"llama3",
                         FAM_LLAMA3,
                         "<|begin_of_text|>",
                         "<|eot_id|>",
                         {"<|eot_id|>", "<|end_of_text|>"}},
    [SLM_CHAT_LLAMA31] = {"llama3.1",
                          FAM_LLAMA3,
                          "<|begin_of_text|>",
                          "<|eot_id|>",
                          {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"}},
    [SLM_CHAT_LLAMA32] = {"llama3.2",
                          FAM_LLAMA3,
                          "<|begin_of_text|>",
                          "<|eot_id|>",
                          {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"}},
    [SLM_CHAT_CHATML] = {"chatml",
                         FAM_CHATML,
                         "",
                         "<|im_end|>",
                         {"<|im_end|>", "<|endoftext|>"}},
    [SLM_CHAT_QWEN25] = {"qwen2.5",
                         FAM_CHATML,
                         "",
                         "<|im_end|>",
                         {"<|im_end|>", "<|endoftext|>"}},
    [SLM_CHAT_QWEN3] = {"qwen3",
                        FAM_CHATML,
                        "",
                        "<|im_end|>",
                        {"<|im_end|>", "<|endoftext|>"}},
    [SLM_CHAT_MISTRAL_V01] =
        {"mistral-v0.1", FAM_MISTRAL, "<s>", "</s>", {"</s>"}},
    [SLM_CHAT_MISTRAL_V02] =
        {"mistral-v0.2", FAM_MISTRAL, "<s>", "</s>", {"</s>"}},
    [SLM_CHAT_MISTRAL_V1] =
        {"mistral-v1", FAM_MISTRAL, "<s>", "</s>", {"</s>"}},
    [SLM_CHAT_MISTRAL_V3] =
        {"mistral-v3", FAM_MISTRAL, "<s>", "</s>", {"</s>"}},
    [SLM_CHAT_MISTRAL_V3_TEKKEN] =
        {"mistral-v3-tekken", FAM_MISTRAL, "<s>", "</s>", {"</s>"}},
};

/* The known templates: SHA-256 of the normalised text (see normalise).
 * Each comes from a real model's tokenizer_config.json as collected in
 * llama.cpp (models/templates/, tests/test-chat-template.cpp) and
 * llama-cpp-python (llama_chat_format.py); tests/integration/
 * chat_templates.sh checks every one against its source and our rendering
 * against transformers'. Add a template only with its source and a test. */
static const struct {
    slm_chat_format f;
    const char *sha256;
} known[] = {
    /* meta-llama/Llama-2-{7,13,70}b-chat-hf */
    {SLM_CHAT_LLAMA2,
     "e8d5b5a546d3f19df16a5320c614fab05bdc4edd50e850f1afd947b503ea41cf"},
    /* meta-llama/Meta-Llama-3-{8,70}B-Instruct */
    {SLM_CHAT_LLAMA3,
     "ba03a121d097859c7b5b9cd03af99aafe95275210d2876f642ad9929a150f122"},
    /* meta-llama/Llama-3.1-8B-Instruct, Llama-3.3-70B-Instruct */
    {SLM_CHAT_LLAMA31,
     "93c0e9aa3629bbd77e68dbc0f5621f6e6b23aa8d74b932595cdb8d64684526d7"},
    /* meta-llama/Llama-3.2-3B-Instruct */
    {SLM_CHAT_LLAMA32,
     "d82792f95932f1c9cef5c4bd992f171225e3bf8c7b609b4557c9e1ec96be819f"},
    /* ChatML as llama-cpp-python writes it (real newlines) */
    {SLM_CHAT_CHATML,
     "153280e3ff55d19da1398bdb3914ee2a51b80429bfaedde11d7d216c39db80f3"},
    /* teknium/OpenHermes-2.5-Mistral-7B */
    {SLM_CHAT_CHATML,
     "fcf7a096fe99a48fd9ad2b250bf9237e96e8f48bffec1c7ea4d3f225176cd40e"},
    /* Qwen/Qwen2.5-7B-Instruct */
    {SLM_CHAT_QWEN25,
     "55b2f4a26ac9ee719330a61a0c39d9e538b0e9322212f048326318cff4f8674a"},
    /* Qwen/Qwen3-0.6B (the Qwen3 dense models share it) */
    {SLM_CHAT_QWEN3,
     "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5"},
    /* mistralai/Mistral-7B-Instruct-v0.1 (first release) */
    {SLM_CHAT_MISTRAL_V01,
     "7e995b379ec01747807246483647cd99030abf331653f1119e16d7ac041a3495"},
    /* mistralai/Mistral-7B-Instruct-v0.2, Mixtral-8x7B-Instruct-v0.1 */
    {SLM_CHAT_MISTRAL_V02,
     "26a59556925c987317ce5291811ba3b7f32ec4c647c400c6cc7e3a9993007ba7"},
    /* mistralai/Mistral-7B-Instruct-v0.2, later ("v1", with a system) */
    {SLM_CHAT_MISTRAL_V1,
     "bbc58aad99454df60138be9530c9601a0adfe3d8932cda975e1f10b2410ddc51"},
    /* mistralai/Mistral-Large-Instruct-2407 ("v3") */
    {SLM_CHAT_MISTRAL_V3,
     "cafb64e0e9e5fd2503054b3479593fae39cbdfd52338ce8af9bb4664a8eb05bd"},
    /* mistralai/Mistral-Nemo-Instruct-2407 ("v3-tekken") */
    {SLM_CHAT_MISTRAL_V3_TEKKEN,
     "e7deee034838db2bfc7487788a3013d8a307ab69f72f3c54a85f06fd76007d4e"},
};

struct slm_chat {
    slm_chat_format f;
    char bos[SLM_CHAT_MAX_TOKEN_BYTES + 1];
    char eos[SLM_CHAT_MAX_TOKEN_BYTES + 1];
    const char *stops[4];
    size_t n_stops;
};

/* ------------------------------------------------------------------------ */
/* Names                                                                     */

slm_status slm_chat_format_from_name(const char *name, slm_chat_format *out)
{
    for (int f = 0; name && f < SLM_CHAT_FORMAT_COUNT; f++)
        if (strcmp(name, formats[f].name) == 0) {
            *out = (slm_chat_format)f;
            return SLM_OK;
        }
    return slm_fail(SLM_ERR_INVALID,
                    "chat template '%s' is not a built-in format (one of: %s)",
                    name ? name : "(null)", slm_chat_format_names());
}

const char *slm_chat_format_name(slm_chat_format f)
{
    return (unsigned)f < SLM_CHAT_FORMAT_COUNT ? formats[f].name : "?";
}

const char *slm_chat_format_names(void)
{
    return "llama2 llama3 llama3.1 llama3.2 chatml qwen2.5 qwen3 mistral-v0.1 "
           "mistral-v0.2 mistral-v1 mistral-v3 mistral-v3-tekken";
}

slm_status slm_chat_role_parse(const char *s, size_t len, slm_chat_role *out)
{
    static const char *const names[] = {"system", "user", "assistant"};
    for (int r = 0; r < 3; r++)
        if (len == strlen(names[r]) && memcmp(s, names[r], len) == 0) {
            *out = (slm_chat_role)r;
            return SLM_OK;
        }
    return slm_fail(SLM_ERR_FORMAT,
                    "chat: role '%.*s' is not one of system, user, assistant",
                    (int)(len > 32 ? 32 : len), s);
}

/* ------------------------------------------------------------------------ */
/* Objects                                                                   */

static slm_status set_token(char *dst, const char *src, size_t len,
                            const char *what, const char *field)
{
    if (len > SLM_CHAT_MAX_TOKEN_BYTES)
        return slm_fail(SLM_ERR_FORMAT, "%s: %s is %zu bytes, more than %u",
                        what, field, len, SLM_CHAT_MAX_TOKEN_BYTES);
    if (memchr(src, '\0', len) || slm_utf8_bad_offset(src, len) != len)
        return slm_fail(SLM_ERR_FORMAT, "%s: %s is not UTF-8 text without NUL",
                        what, field);
    memcpy(dst, src, len);
    dst[len] = '\0';
    return SLM_OK;
}

static slm_status chat_new(slm_chat_format f, slm_chat_t **out)
{
    if (!out || (unsigned)f >= SLM_CHAT_FORMAT_COUNT)
        return slm_fail(SLM_ERR_INVALID, "chat: bad arguments");
    slm_chat_t *c = calloc(1, sizeof *c);
    if (!c)
        return slm_fail(SLM_ERR_NOMEM, "chat: out of memory");
    c->f = f;
    strcpy(c->bos, formats[f].bos); /* static, shorter than the buffers */
    strcpy(c->eos, formats[f].eos);
    *out = c;
    return SLM_OK;
}

/* The stop strings: the format's, and the model's eos if it differs. */
static void finish_stops(slm_chat_t *c)
{
    c->n_stops = 0;
    for (size_t i = 0; i < 3 && formats[c->f].stops[i]; i++)
        c->stops[c->n_stops++] = formats[c->f].stops[i];
    bool have = c->eos[0] == '\0';
    for (size_t i = 0; i < c->n_stops; i++)
        have = have || strcmp(c->stops[i], c->eos) == 0;
    if (!have)
        c->stops[c->n_stops++] = c->eos;
}

slm_status slm_chat_create(slm_chat_format f, slm_chat_t **out)
{
    SLM_CHECK(chat_new(f, out));
    finish_stops(*out);
    return SLM_OK;
}

void slm_chat_destroy(slm_chat_t **c)
{
    if (!c)
        return;
    free(*c);
    *c = NULL;
}

slm_chat_format slm_chat_get_format(const slm_chat_t *c)
{
    return c->f;
}

const char *slm_chat_bos(const slm_chat_t *c)
{
    return c->bos;
}

const char *slm_chat_eos(const slm_chat_t *c)
{
    return c->eos;
}

const char *const *slm_chat_stop_strings(const slm_chat_t *c, size_t *n)
{
    *n = c->n_stops;
    return c->stops;
}

/* ------------------------------------------------------------------------ */
/* Recognition                                                               */

/* SHA-256 (hex) of the template as Jinja reads it: CRLF made LF and one
 * final newline dropped (Jinja does both: newline_sequence "\n",
 * keep_trailing_newline off). Nothing else is forgiven - even white space
 * around the template is output where no tag strips it. */
static slm_status template_hash(const char *t, size_t len, char hex[65])
{
    if (sodium_init() < 0)
        return slm_fail(SLM_ERR_INTERNAL, "libsodium failed to initialise");
    if (len >= 2 && t[len - 2] == '\r' && t[len - 1] == '\n')
        len -= 2;
    else if (len >= 1 && t[len - 1] == '\n')
        len--;
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    size_t start = 0;
    for (size_t i = 0; i + 1 < len; i++)
        if (t[i] == '\r' && t[i + 1] == '\n') { /* drop the CR */
            crypto_hash_sha256_update(&h, (const unsigned char *)t + start,
                                      i - start);
            start = i + 1;
        }
    crypto_hash_sha256_update(&h, (const unsigned char *)t + start,
                              len - start);
    unsigned char d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&h, d);
    sodium_bin2hex(hex, 65, d, sizeof d);
    return SLM_OK;
}

static slm_status recognise(const char *t, size_t len, const char *what,
                            slm_chat_format *out)
{
    char hex[65];
    SLM_CHECK(template_hash(t, len, hex));
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(hex, known[i].sha256) == 0) {
            *out = known[i].f;
            return SLM_OK;
        }
    return slm_fail(SLM_ERR_UNSUPPORTED,
                    "%s: the chat template (%zu bytes, sha256 %.16s...) is "
                    "not one shardlm knows; templates are never run, only "
                    "recognised. If the model uses one of the built-in "
                    "formats, name it with --chat-template NAME (one of: %s)",
                    what, len, hex, slm_chat_format_names());
}

/* too_deep as in model/hf_config.c: linear, before jansson allocates. */
static bool too_deep(const char *text, size_t len)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        const char ch = text[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == '{' || ch == '[') {
            if (++depth > MAX_DEPTH)
                return true;
        } else if (ch == '}' || ch == ']') {
            depth--;
        }
    }
    return false;
}

/* bos_token / eos_token: absent or null keeps the family's; a string or an
 * AddedToken object {"content": string} replaces it. */
static slm_status read_token(const json_t *root, const char *key,
                             const char *what, char *dst)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return SLM_OK;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: field '%s' is neither a string nor an object "
                        "with a string 'content'",
                        what, key);
    return set_token(dst, json_string_value(v), json_string_length(v), what,
                     key);
}

/* The template of the config: a string, or the "default" of a list of
 * {"name", "template"}. Borrowed from root; *t NULL when there is none. */
static slm_status find_template(const json_t *root, const char *what,
                                const char **t, size_t *len)
{
    *t = NULL;
    *len = 0;
    const json_t *v = json_object_get(root, "chat_template");
    if (!v || json_is_null(v))
        return SLM_OK;
    if (json_is_array(v)) {
        const json_t *found = NULL;
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e)
        {
            const json_t *name = json_object_get(e, "name");
            if (json_is_string(name) &&
                strcmp(json_string_value(name), "default") == 0)
                found = json_object_get(e, "template");
        }
        if (!found)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: 'chat_template' is a list without an entry "
                            "named \"default\"",
                            what);
        v = found;
    }
    if (!json_is_string(v))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: 'chat_template' is not a string or a list of "
                        "named templates",
                        what);
    *len = json_string_length(v);
    if (*len > SLM_CHAT_MAX_TEMPLATE_BYTES)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: 'chat_template' is %zu bytes, more than %zu", what,
                        *len, SLM_CHAT_MAX_TEMPLATE_BYTES);
    *t = json_string_value(v);
    return SLM_OK;
}

slm_status slm_chat_create_from_config(const char *json, size_t len,
                                       const char *template_file,
                                       size_t template_len, const char *what,
                                       const char *override_name,
                                       slm_chat_t **out)
{
    if (!out || (!json && len) || (!template_file && template_len))
        return slm_fail(SLM_ERR_INVALID, "chat: bad arguments");
    *out = NULL;
    if (!what)
        what = "tokenizer_config.json";
    if (len > SLM_CHAT_MAX_CONFIG_BYTES)
        return slm_fail(SLM_ERR_FORMAT, "%s: %zu bytes (at most %zu)", what,
                        len, SLM_CHAT_MAX_CONFIG_BYTES);
    if (template_len > SLM_CHAT_MAX_TEMPLATE_BYTES)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: chat_template.jinja is %zu bytes, more than %zu",
                        what, template_len, SLM_CHAT_MAX_TEMPLATE_BYTES);
    if (too_deep(json, len))
        return slm_fail(SLM_ERR_FORMAT, "%s: nested deeper than %d levels",
                        what, MAX_DEPTH);
    json_error_t err;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return slm_fail(SLM_ERR_FORMAT, "%s: not valid JSON (line %d: %s)",
                        what, err.line, err.text);
    slm_status rc = SLM_OK;
    slm_chat_t *c = NULL;
    if (!json_is_object(root)) {
        rc = slm_fail(SLM_ERR_FORMAT, "%s: not a JSON object", what);
        goto done;
    }
    const char *t;
    size_t tlen;
    SLM_CHECK_GOTO(find_template(root, what, &t, &tlen), rc, done);
    slm_chat_format f = SLM_CHAT_LLAMA2;
    if (override_name) {
        SLM_CHECK_GOTO(slm_chat_format_from_name(override_name, &f), rc, done);
    } else {
        if (t && template_file) {
            /* Two templates that say different things: which one the
             * model was trained with is not ours to guess. */
            char a[65], b[65];
            SLM_CHECK_GOTO(template_hash(t, tlen, a), rc, done);
            SLM_CHECK_GOTO(template_hash(template_file, template_len, b), rc,
                           done);
            if (strcmp(a, b) != 0) {
                rc = slm_fail(SLM_ERR_UNSUPPORTED,
                              "%s: its 'chat_template' and chat_template.jinja "
                              "differ; name the format with --chat-template",
                              what);
                goto done;
            }
        }
        if (!t && template_file) {
            t = template_file;
            tlen = template_len;
        }
        if (!t) {
            rc = slm_fail(SLM_ERR_UNSUPPORTED,
                          "%s: the model has no chat template; name a "
                          "built-in format with --chat-template (one of: %s)",
                          what, slm_chat_format_names());
            goto done;
        }
        SLM_CHECK_GOTO(recognise(t, tlen, what, &f), rc, done);
    }
    SLM_CHECK_GOTO(chat_new(f, &c), rc, done);
    SLM_CHECK_GOTO(read_token(root, "bos_token", what, c->bos), rc, done);
    SLM_CHECK_GOTO(read_token(root, "eos_token", what, c->eos), rc, done);
    finish_stops(c);
    *out = c;
    c = NULL;
done:
    slm_chat_destroy(&c);
    json_decref(root);
    return rc;
}

/* path, or path's directory when it names a file (a .safetensors, a
 * config.json); the caller frees the result. */
static char *model_dir_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return strdup(path);
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    const size_t n = (size_t)(slash - path);
    char *d = malloc(n + 2);
    if (d) {
        memcpy(d, path, n ? n : 1);
        d[n ? n : 1] = '\0';
    }
    return d;
}

slm_status slm_chat_load(const char *model_dir, const char *override_name,
                         slm_chat_t **out)
{
    if (!model_dir || !out)
        return slm_fail(SLM_ERR_INVALID, "chat: bad arguments");
    *out = NULL;
    char *dir = model_dir_of(model_dir);
    char *cfg_path = NULL, *tpl_path = NULL;
    uint8_t *cfg = NULL, *tpl = NULL;
    size_t cfg_len = 0, tpl_len = 0;
    slm_status rc = SLM_OK;
    if (!dir || asprintf(&cfg_path, "%s/tokenizer_config.json", dir) < 0 ||
        asprintf(&tpl_path, "%s/chat_template.jinja", dir) < 0) {
        cfg_path = tpl_path = NULL;
        rc = slm_fail(SLM_ERR_NOMEM, "chat: out of memory");
        goto done;
    }
    struct stat st;
    if (stat(cfg_path, &st) != 0) {
        if (override_name) { /* a llama2.c model: the built-in as named */
            slm_chat_format f = SLM_CHAT_LLAMA2;
            SLM_CHECK_GOTO(slm_chat_format_from_name(override_name, &f), rc,
                           done);
            rc = slm_chat_create(f, out);
            goto done;
        }
        rc = slm_fail(SLM_ERR_UNSUPPORTED,
                      "%s: not found, so the model has no chat template; "
                      "name a built-in format with --chat-template (one of: "
                      "%s)",
                      cfg_path, slm_chat_format_names());
        goto done;
    }
    SLM_CHECK_GOTO(
        slm_file_read_all(cfg_path, SLM_CHAT_MAX_CONFIG_BYTES, &cfg, &cfg_len),
        rc, done);
    if (stat(tpl_path, &st) == 0)
        SLM_CHECK_GOTO(slm_file_read_all(tpl_path, SLM_CHAT_MAX_TEMPLATE_BYTES,
                                         &tpl, &tpl_len),
                       rc, done);
    rc = slm_chat_create_from_config((const char *)cfg, cfg_len,
                                     (const char *)tpl, tpl_len, cfg_path,
                                     override_name, out);
done:
    free(cfg);
    free(tpl);
    free(cfg_path);
    free(tpl_path);
    free(dir);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Text helpers                                                              */

typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->failed || n == 0)
        return;
    size_t need;
    if (!slm_size_add(b->len, n, &need) || !slm_size_add(need, 1, &need)) {
        b->failed = true;
        return;
    }
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            if (!slm_size_mul(cap, 2, &cap)) {
                b->failed = true;
                return;
            }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* A borrowed piece of text. */
typedef struct {
    const char *p;
    size_t n;
} span;

/* Python's str.isspace(). */
static bool py_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) ||
           cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* The code point of the well-formed sequence at p of k bytes. */
static uint32_t decode(const unsigned char *p, int k)
{
    static const unsigned char lead_mask[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
    uint32_t cp = p[0] & lead_mask[k];
    for (int i = 1; i < k; i++)
        cp = (cp << 6) | (p[i] & 0x3f);
    return cp;
}

/* Python's s.strip() on well-formed UTF-8 (contents were checked). */
static span py_strip(span s)
{
    const unsigned char *p = (const unsigned char *)s.p;
    size_t a = 0, b = s.n;
    while (a < b) {
        const int k = slm_utf8_sequence(p + a, b - a);
        if (k <= 0 || !py_space(decode(p + a, k)))
            break;
        a += (size_t)k;
    }
    while (b > a) {
        size_t start = b - 1;
        while (start > a && (p[start] & 0xc0) == 0x80)
            start--;
        const int k = slm_utf8_sequence(p + start, b - start);
        if (k <= 0 || !py_space(decode(p + start, k)))
            break;
        b = start;
    }
    return (span){s.p + a, b - a};
}

static span lstrip_nl(span s)
{
    while (s.n && s.p[0] == '\n') {
        s.p++;
        s.n--;
    }
    return s;
}

static span rstrip_nl(span s)
{
    while (s.n && s.p[s.n - 1] == '\n')
        s.n--;
    return s;
}

static const char *find(span s, const char *needle)
{
    return memmem(s.p, s.n, needle, strlen(needle));
}

static const char *find_last(span s, const char *needle)
{
    const size_t k = strlen(needle);
    for (size_t i = s.n; i >= k && k; i--)
        if (memcmp(s.p + i - k, needle, k) == 0)
            return s.p + i - k;
    return NULL;
}

static bool starts(span s, const char *x)
{
    const size_t k = strlen(x);
    return s.n >= k && memcmp(s.p, x, k) == 0;
}

static bool ends(span s, const char *x)
{
    const size_t k = strlen(x);
    return s.n >= k && memcmp(s.p + s.n - k, x, k) == 0;
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                    */

static const char *const role_names[] = {"system", "user", "assistant"};

/* A "<|name|>" marker (Llama 3's and ChatML's special tokens all look so)
 * anywhere in s: its offset, or -1. */
static long find_marker(span s)
{
    for (size_t i = 0; i + 1 < s.n; i++) {
        if (s.p[i] != '<' || s.p[i + 1] != '|')
            continue;
        size_t j = i + 2;
        while (j < s.n && (s.p[j] == '_' || (s.p[j] >= '0' && s.p[j] <= '9') ||
                           (s.p[j] >= 'a' && s.p[j] <= 'z') ||
                           (s.p[j] >= 'A' && s.p[j] <= 'Z')))
            j++;
        if (j > i + 2 && j + 1 < s.n && s.p[j] == '|' && s.p[j + 1] == '>')
            return (long)i;
    }
    return -1;
}

static slm_status check_content(const slm_chat_t *c, size_t i, span s)
{
    const size_t bad = slm_utf8_bad_offset(s.p, s.n);
    if (bad != s.n)
        return slm_fail(SLM_ERR_FORMAT,
                        "chat: message %zu: content is not valid UTF-8 (byte "
                        "0x%02x at offset %zu)",
                        i, (unsigned)(unsigned char)s.p[bad], bad);
    if (memchr(s.p, '\0', s.n))
        return slm_fail(SLM_ERR_FORMAT, "chat: message %zu: content holds NUL",
                        i);
    /* The prompt is encoded with special tokens parsed: a control string
     * in a content would be the real token, and a user could end their
     * turn and speak as the system. */
    static const char *const inst[] = {
        "[INST]",       "[/INST]",           "<<SYS>>",
        "<</SYS>>",     "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
        "[TOOL_CALLS]", "[TOOL_RESULTS]",    "[/TOOL_RESULTS]",
    };
    const family fam = formats[c->f].fam;
    const char *hit = NULL;
    if (c->bos[0] && find(s, c->bos))
        hit = c->bos;
    else if (c->eos[0] && find(s, c->eos))
        hit = c->eos;
    for (size_t k = 0; !hit && (fam == FAM_LLAMA2 || fam == FAM_MISTRAL) &&
                       k < sizeof inst / sizeof inst[0];
         k++)
        if (find(s, inst[k]))
            hit = inst[k];
    if (!hit && (fam == FAM_LLAMA3 || fam == FAM_CHATML)) {
        const long at = find_marker(s);
        if (at >= 0)
            return slm_fail(SLM_ERR_FORMAT,
                            "chat: message %zu: content holds a control "
                            "marker \"<|...|>\" at offset %ld, which the "
                            "%s format reserves",
                            i, at, formats[c->f].name);
    }
    if (hit)
        return slm_fail(SLM_ERR_FORMAT,
                        "chat: message %zu: content holds \"%s\", which the "
                        "%s format reserves",
                        i, hit, formats[c->f].name);
    return SLM_OK;
}

/* After an optional first system message, user and assistant alternate
 * starting with the user; `from` is where the alternation starts. Llama 2
 * and Mistral's templates raise otherwise. */
static slm_status check_alternation(const slm_chat_message *m, size_t n,
                                    size_t from, bool system_ok)
{
    for (size_t i = 0; i < n; i++) {
        if (m[i].role == SLM_CHAT_SYSTEM && !(system_ok && i == 0))
            return slm_fail(SLM_ERR_FORMAT,
                            "chat: message %zu: a system message may only "
                            "come first in this format%s",
                            i, system_ok ? "" : " (it has none at all)");
        if (i < from)
            continue;
        const slm_chat_role want =
            (i - from) % 2 == 0 ? SLM_CHAT_USER : SLM_CHAT_ASSISTANT;
        if (m[i].role != want)
            return slm_fail(SLM_ERR_FORMAT,
                            "chat: message %zu is %s where %s was expected: "
                            "after an optional system message, user and "
                            "assistant must alternate, starting with user",
                            i, role_names[m[i].role], role_names[want]);
    }
    return SLM_OK;
}

/* ------------------------------------------------------------------------ */
/* Renderers                                                                 */

static span content(const slm_chat_message *m)
{
    return (span){m->content, m->len};
}

static void put_span(buf *b, span s)
{
    put(b, s.p, s.n);
}

/* Llama-2-chat: the system text goes inside the first user turn, and each
 * turn's whole text (system included) is .strip()ped. */
static void render_llama2(const slm_chat_t *c, const slm_chat_message *m,
                          size_t n, buf *b)
{
    const bool sys = n > 0 && m[0].role == SLM_CHAT_SYSTEM;
    for (size_t i = sys; i < n; i++) {
        if (m[i].role == SLM_CHAT_USER) {
            puts_(b, c->bos);
            puts_(b, "[INST] ");
            if (sys && i == 1) {
                /* content.strip() of "<<SYS>>\n" + system + "\n<</SYS>>
                 * \n\n" + user: strip the whole, which an empty or blank
                 * user text lets reach into the scaffolding. */
                buf t = {0};
                puts_(&t, "<<SYS>>\n");
                put_span(&t, content(&m[0]));
                puts_(&t, "\n<</SYS>>\n\n");
                put_span(&t, content(&m[i]));
                b->failed = b->failed || t.failed;
                if (t.p)
                    put_span(b, py_strip((span){t.p, t.len}));
                free(t.p);
            } else {
                put_span(b, py_strip(content(&m[i])));
            }
            puts_(b, " [/INST]");
        } else {
            puts_(b, " ");
            put_span(b, py_strip(content(&m[i])));
            puts_(b, " ");
            puts_(b, c->eos);
        }
    }
}

static void llama3_turn(buf *b, const char *role, span text)
{
    puts_(b, LLAMA3_HEADER_START);
    puts_(b, role);
    puts_(b, LLAMA3_HEADER_END);
    put_span(b, py_strip(text));
    puts_(b, LLAMA3_EOT);
}

/* Llama 3: every message as it comes, trimmed. 3.1 and later always open
 * with a system turn carrying the knowledge cut-off and a date (3.1 a
 * fixed one, 3.2 today's: transformers gives templates strftime_now). */
static void render_llama3(const slm_chat_t *c, const slm_chat_message *m,
                          size_t n, bool agp, buf *b)
{
    size_t i = 0;
    puts_(b, c->bos);
    if (c->f != SLM_CHAT_LLAMA3) {
        char date[32] = "26 Jul 2024";
        if (c->f == SLM_CHAT_LLAMA32) {
            const time_t now = time(NULL);
            struct tm tm;
            if (!localtime_r(&now, &tm) ||
                strftime(date, sizeof date, "%d %b %Y", &tm) == 0)
                b->failed = true;
        }
        puts_(b, LLAMA3_HEADER_START
              "system" LLAMA3_HEADER_END
              "Cutting Knowledge Date: December 2023\nToday Date: ");
        puts_(b, date);
        puts_(b, "\n\n");
        if (n > 0 && m[0].role == SLM_CHAT_SYSTEM)
            put_span(b, py_strip(content(&m[i++])));
        puts_(b, LLAMA3_EOT);
    }
    for (; i < n; i++)
        llama3_turn(b, role_names[m[i].role], content(&m[i]));
    if (agp)
        puts_(b, LLAMA3_HEADER_START "assistant" LLAMA3_HEADER_END);
}

static void chatml_turn(buf *b, const char *role, span text)
{
    puts_(b, "<|im_start|>");
    puts_(b, role);
    puts_(b, "\n");
    put_span(b, text);
    puts_(b, "<|im_end|>\n");
}

/* Qwen3 keeps a reply's thinking only after the last real user query,
 * and opens the final reply's think block even when it was empty. */
static void qwen3_assistant(buf *b, span text, bool after_query, bool last)
{
    span body = text, reasoning = {"", 0};
    const char *close = find(text, "</think>");
    if (close) {
        /* content.split('</think>')[-1].lstrip('\n') */
        const char *after = find_last(text, "</think>") + strlen("</think>");
        body = lstrip_nl((span){after, (size_t)(text.p + text.n - after)});
        /* content.split('</think>')[0].rstrip('\n').split('<think>')[-1]
         * .lstrip('\n') */
        span head = rstrip_nl((span){text.p, (size_t)(close - text.p)});
        const char *open = find_last(head, "<think>");
        if (open) {
            const char *from = open + strlen("<think>");
            head = (span){from, (size_t)(head.p + head.n - from)};
        }
        reasoning = lstrip_nl(head);
    }
    puts_(b, "<|im_start|>assistant\n");
    if (after_query && (last || reasoning.n)) {
        puts_(b, "<think>\n");
        put_span(b, rstrip_nl(lstrip_nl(reasoning)));
        puts_(b, "\n</think>\n\n");
        put_span(b, lstrip_nl(body));
    } else {
        put_span(b, body);
    }
    puts_(b, "<|im_end|>\n");
}

static void render_chatml(const slm_chat_t *c, const slm_chat_message *m,
                          size_t n, bool agp, buf *b)
{
    if (c->f == SLM_CHAT_QWEN25 && (n == 0 || m[0].role != SLM_CHAT_SYSTEM))
        puts_(b, "<|im_start|>system\n" QWEN25_SYSTEM "<|im_end|>\n");
    size_t last_query = n ? n - 1 : 0;
    for (size_t i = n; c->f == SLM_CHAT_QWEN3 && i-- > 0;) {
        const span t = content(&m[i]);
        if (m[i].role == SLM_CHAT_USER &&
            !(starts(t, "<tool_response>") && ends(t, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (c->f == SLM_CHAT_QWEN3 && m[i].role == SLM_CHAT_ASSISTANT)
            qwen3_assistant(b, content(&m[i]), i > last_query, i == n - 1);
        else
            chatml_turn(b, role_names[m[i].role], content(&m[i]));
    }
    if (agp)
        puts_(b, "<|im_start|>assistant\n");
}

/* The Mistral family differs in spaces: v0.x "[INST] x [/INST]", v1
 * " [INST] x [/INST]", v3 "[INST] x[/INST]" and a trimmed reply after a
 * space, tekken "[INST]x[/INST]"; v0.1 puts a space after eos. v1 puts the
 * system text in the first user turn, v3 and tekken in the last message
 * if that is a user turn (and nowhere otherwise). */
static void render_mistral(const slm_chat_t *c, const slm_chat_message *m,
                           size_t n, buf *b)
{
    const slm_chat_format f = c->f;
    const bool sys = n > 0 && m[0].role == SLM_CHAT_SYSTEM;
    const char *open = f == SLM_CHAT_MISTRAL_V1          ? " [INST] "
                       : f == SLM_CHAT_MISTRAL_V3_TEKKEN ? "[INST]"
                                                         : "[INST] ";
    const char *shut =
        f == SLM_CHAT_MISTRAL_V3 || f == SLM_CHAT_MISTRAL_V3_TEKKEN
            ? "[/INST]"
            : " [/INST]";
    puts_(b, c->bos);
    for (size_t i = sys; i < n; i++) {
        if (m[i].role == SLM_CHAT_USER) {
            puts_(b, open);
            const bool here =
                sys && (f == SLM_CHAT_MISTRAL_V1 ? i == 1 : i == n - 1);
            if (here) {
                put_span(b, content(&m[0]));
                puts_(b, "\n\n");
            }
            put_span(b, content(&m[i]));
            puts_(b, shut);
        } else if (f == SLM_CHAT_MISTRAL_V3) {
            puts_(b, " ");
            put_span(b, py_strip(content(&m[i])));
            puts_(b, c->eos);
        } else {
            if (f == SLM_CHAT_MISTRAL_V1)
                puts_(b, " ");
            put_span(b, content(&m[i]));
            puts_(b, c->eos);
            if (f == SLM_CHAT_MISTRAL_V01)
                puts_(b, " ");
        }
    }
}

slm_status slm_chat_render(const slm_chat_t *c, const slm_chat_message *msgs,
                           size_t n, bool add_generation_prompt, char **text,
                           size_t *len)
{
    if (!c || !text || !len || (!msgs && n))
        return slm_fail(SLM_ERR_INVALID, "chat: bad arguments");
    *text = NULL;
    *len = 0;
    if (n < 1 || n > SLM_CHAT_MAX_MESSAGES)
        return slm_fail(SLM_ERR_FORMAT, "chat: %zu messages, expected 1 to %u",
                        n, SLM_CHAT_MAX_MESSAGES);
    size_t total = 0;
    bool user = false;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)msgs[i].role > SLM_CHAT_ASSISTANT)
            return slm_fail(SLM_ERR_FORMAT, "chat: message %zu: bad role %d", i,
                            (int)msgs[i].role);
        if (!msgs[i].content && msgs[i].len)
            return slm_fail(SLM_ERR_INVALID, "chat: message %zu: NULL content",
                            i);
        if (!slm_size_add(total, msgs[i].len, &total) ||
            total > SLM_CHAT_MAX_TOTAL_BYTES)
            return slm_fail(SLM_ERR_FORMAT,
                            "chat: the messages hold more than %zu bytes of "
                            "content",
                            SLM_CHAT_MAX_TOTAL_BYTES);
        SLM_CHECK(check_content(
            c, i, (span){msgs[i].content ? msgs[i].content : "", msgs[i].len}));
        user = user || msgs[i].role == SLM_CHAT_USER;
    }
    if (!user)
        return slm_fail(SLM_ERR_FORMAT,
                        "chat: the conversation has no user message");
    const bool sys = msgs[0].role == SLM_CHAT_SYSTEM;
    switch (c->f) {
    case SLM_CHAT_LLAMA2:
    case SLM_CHAT_MISTRAL_V1:
    case SLM_CHAT_MISTRAL_V3:
    case SLM_CHAT_MISTRAL_V3_TEKKEN:
        SLM_CHECK(check_alternation(msgs, n, sys, true));
        break;
    case SLM_CHAT_MISTRAL_V01:
    case SLM_CHAT_MISTRAL_V02:
        SLM_CHECK(check_alternation(msgs, n, 0, false));
        break;
    default: /* Llama 3 and ChatML render any order, as their templates */
        break;
    }
    buf b = {0};
    /* Rendering reads only what was checked; an empty content may have a
     * NULL pointer, which the helpers never dereference at length 0. */
    slm_chat_message *safe = NULL;
    const slm_chat_message *m = msgs;
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].content) {
            safe = malloc(n * sizeof *safe);
            if (!safe)
                return slm_fail(SLM_ERR_NOMEM, "chat: out of memory");
            for (size_t k = 0; k < n; k++) {
                safe[k] = msgs[k];
                if (!safe[k].content)
                    safe[k].content = "";
            }
            m = safe;
            break;
        }
    switch (formats[c->f].fam) {
    case FAM_LLAMA2:
        render_llama2(c, m, n, &b);
        break;
    case FAM_LLAMA3:
        render_llama3(c, m, n, add_generation_prompt, &b);
        break;
    case FAM_CHATML:
        render_chatml(c, m, n, add_generation_prompt, &b);
        break;
    case FAM_MISTRAL:
        render_mistral(c, m, n, &b);
        break;
    }
    free(safe);
    puts_(&b, ""); /* an empty rendering still gets its NUL */
    if (!b.failed && !b.p) {
        b.p = calloc(1, 1);
        b.failed = !b.p;
    }
    if (b.failed) {
        free(b.p);
        return slm_fail(SLM_ERR_NOMEM, "chat: out of memory for the prompt");
    }
    *text = b.p;
    *len = b.len;
    return SLM_OK;
}
