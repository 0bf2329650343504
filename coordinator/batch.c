/* coordinator/batch.c - see batch.h. JSON through jansson. */
#include "coordinator/batch.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"

static slm_status get_number(json_t *obj, const char *key, const char *what,
                             size_t line, double *out, bool *present)
{
    json_t *v = json_object_get(obj, key);
    *present = v != NULL;
    if (!v)
        return SLM_OK;
    if (!json_is_number(v))
        return slm_fail(SLM_ERR_FORMAT, "%s:%zu: \"%s\" must be a number", what,
                        line, key);
    *out = json_number_value(v);
    return SLM_OK;
}

static slm_status parse_line(json_t *obj, const char *what, size_t line,
                             slm_batch_request *r)
{
    if (!json_is_object(obj))
        return slm_fail(SLM_ERR_FORMAT, "%s:%zu: expected a JSON object", what,
                        line);
    json_t *prompt = json_object_get(obj, "prompt");
    if (!json_is_string(prompt))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s:%zu: \"prompt\" is required and must be a string",
                        what, line);
    /* A NUL inside the JSON string would silently cut the prompt short. */
    if (strlen(json_string_value(prompt)) != json_string_length(prompt))
        return slm_fail(SLM_ERR_FORMAT, "%s:%zu: \"prompt\" contains NUL", what,
                        line);
    r->prompt = strdup(json_string_value(prompt));
    json_t *id = json_object_get(obj, "id");
    if (id)
        r->id_json = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!r->prompt || (id && !r->id_json))
        return slm_fail(SLM_ERR_NOMEM, "%s:%zu: out of memory", what, line);

    double v = 0.0;
    bool present = false;
    SLM_CHECK(get_number(obj, "n", what, line, &v, &present));
    if (present) {
        if (v != floor(v) || v < 0 || v > (1 << 20))
            return slm_fail(SLM_ERR_FORMAT,
                            "%s:%zu: \"n\" = %g is not an "
                            "integer in [0, %d]",
                            what, line, v, 1 << 20);
        r->steps = (int32_t)v;
    }
    SLM_CHECK(get_number(obj, "temperature", what, line, &v, &present));
    if (present)
        r->sampling.temperature = (float)v;
    SLM_CHECK(get_number(obj, "top_p", what, line, &v, &present));
    if (present)
        r->sampling.top_p = (float)v;
    SLM_CHECK(get_number(obj, "repetition_penalty", what, line, &v, &present));
    if (present)
        r->sampling.repetition_penalty = (float)v;
    SLM_CHECK(get_number(obj, "top_k", what, line, &v, &present));
    if (present) {
        if (v != floor(v) || v < 0 || v > (1 << 20))
            return slm_fail(SLM_ERR_FORMAT,
                            "%s:%zu: \"top_k\" = %g is not an "
                            "integer in [0, %d]",
                            what, line, v, 1 << 20);
        r->sampling.top_k = (int32_t)v;
    }
    json_t *seed = json_object_get(obj, "seed");
    if (seed) {
        if (!json_is_integer(seed) || json_integer_value(seed) < 0)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s:%zu: \"seed\" must be a "
                            "non-negative integer",
                            what, line);
        r->sampling.seed = (uint64_t)json_integer_value(seed);
    }
    slm_status rc = slm_sampling_validate(&r->sampling);
    if (rc != SLM_OK)
        return slm_error_prefix(rc, "%s:%zu", what, line);
    return SLM_OK;
}

slm_status slm_batch_parse(const char *data, size_t len, const char *what,
                           int32_t default_steps,
                           const slm_sampling_params *defaults, slm_batch *out)
{
    slm_batch b = {NULL, 0};
    size_t cap = 0, line = 0;
    slm_status rc = SLM_OK;
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        line++;
        size_t n = (size_t)(stop - p);
        const char *q = p;
        p = nl ? nl + 1 : end;
        while (n > 0 && (q[0] == ' ' || q[0] == '\t' || q[0] == '\r')) {
            q++;
            n--;
        }
        if (n == 0)
            continue;
        if (b.n == SLM_BATCH_MAX_REQUESTS) {
            rc = slm_fail(SLM_ERR_RANGE, "%s: more than %d requests", what,
                          SLM_BATCH_MAX_REQUESTS);
            goto fail;
        }
        if (b.n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            slm_batch_request *items = realloc(b.items, ncap * sizeof *items);
            if (!items) {
                rc = slm_fail(SLM_ERR_NOMEM, "%s: out of memory", what);
                goto fail;
            }
            b.items = items;
            cap = ncap;
        }
        slm_batch_request *r = &b.items[b.n++];
        memset(r, 0, sizeof *r);
        r->steps = default_steps;
        r->sampling = *defaults;
        json_error_t err;
        json_t *obj = json_loadb(q, n, JSON_REJECT_DUPLICATES, &err);
        if (!obj) {
            rc = slm_fail(SLM_ERR_FORMAT, "%s:%zu:%d: %s", what, line,
                          err.column, err.text);
            goto fail;
        }
        rc = parse_line(obj, what, line, r);
        json_decref(obj);
        if (rc != SLM_OK)
            goto fail;
    }
    *out = b;
    return SLM_OK;
fail:
    slm_batch_free(&b);
    return rc;
}

slm_status slm_batch_load(const char *path, int32_t default_steps,
                          const slm_sampling_params *defaults, slm_batch *out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    SLM_CHECK(slm_file_read_all(path, SLM_BATCH_MAX_FILE, &data, &len));
    slm_status rc = slm_batch_parse((const char *)data, len, path,
                                    default_steps, defaults, out);
    free(data);
    return rc;
}

void slm_batch_free(slm_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->items[i].prompt);
        free(b->items[i].id_json);
    }
    free(b->items);
    b->items = NULL;
    b->n = 0;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid:
 * shortest forms only, no surrogates, at most U+10FFFF. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    unsigned min, cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        len = 2, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Model output can hold any bytes (byte-fallback pieces); JSON strings must
 * be UTF-8, so each invalid byte becomes U+FFFD. Caller frees *out. */
static slm_status utf8_sanitize(const char *text, size_t len, char **out,
                                size_t *out_len)
{
    size_t cap;
    if (__builtin_mul_overflow(len, (size_t)3, &cap) ||
        __builtin_add_overflow(cap, (size_t)1, &cap))
        return slm_fail(SLM_ERR_RANGE, "batch: output too long");
    char *buf = malloc(cap);
    if (!buf)
        return slm_fail(SLM_ERR_NOMEM, "batch: out of memory");
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0) {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(buf + o, p + i, n);
            o += n;
            i += n;
        }
    }
    *out = buf;
    *out_len = o;
    return SLM_OK;
}

/* Serialises o (consumed) as one compact ASCII line with its newline. */
static slm_status dump_line(json_t *o, char **line)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(o);
    if (!s)
        return slm_fail(SLM_ERR_NOMEM, "batch: cannot encode a result");
    size_t n = strlen(s);
    char *withnl = realloc(s, n + 2);
    if (!withnl) {
        free(s);
        return slm_fail(SLM_ERR_NOMEM, "batch: out of memory");
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    *line = withnl;
    return SLM_OK;
}

/* The request's id as JSON, or null. */
static json_t *id_value(const char *id_json)
{
    json_error_t err;
    json_t *id = id_json ? json_loads(id_json, JSON_DECODE_ANY, &err) : NULL;
    return id ? id : json_null();
}

slm_status slm_batch_error_line(const char *id_json, const char *message,
                                char **line)
{
    char *clean = NULL;
    size_t clean_len = 0;
    SLM_CHECK(utf8_sanitize(message, strlen(message), &clean, &clean_len));
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "id", id_value(id_json));
        json_object_set_new(o, "error", json_stringn(clean, clean_len));
    }
    free(clean);
    return dump_line(o, line);
}

slm_status slm_batch_result_line(const slm_batch_request *r, const char *text,
                                 size_t text_len, const slm_generate_stats *st,
                                 char **line)
{
    char *clean = NULL;
    size_t clean_len = 0;
    SLM_CHECK(utf8_sanitize(text, text_len, &clean, &clean_len));
    json_t *o = json_object();
    json_t *jtext = json_stringn(clean, clean_len);
    free(clean);
    if (!o || !jtext || json_object_set_new(o, "id", id_value(r->id_json)) ||
        json_object_set_new(o, "text", jtext) ||
        json_object_set_new(o, "prompt_tokens",
                            json_integer((json_int_t)st->prompt_tokens)) ||
        json_object_set_new(o, "completion_tokens",
                            json_integer((json_int_t)st->generated_tokens)) ||
        json_object_set_new(o, "finish_reason",
                            json_string(st->stopped ? "stop" : "length"))) {
        json_decref(o);
        return slm_fail(SLM_ERR_NOMEM, "batch: cannot build a result");
    }
    return dump_line(o, line);
}
