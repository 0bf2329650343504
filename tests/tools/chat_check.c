/*
 * tests/tools/chat_check.c - model/chat against transformers, for
 * tests/integration/chat_templates.sh.
 *
 * Usage: chat_check REFS_DIR (made by tests/reference/chat_ref.py)
 *
 * For every template of REFS_DIR/refs.json it gives the tokenizer_config.json
 * holding it to slm_chat_create_from_config and requires the built-in named
 * by "expect" - or a refusal where "expect" is null. For each recognised one
 * it renders every conversation, with add_generation_prompt false and true,
 * and requires transformers' text byte for byte; where transformers raised,
 * it requires a refusal too, and it refuses a conversation transformers
 * rendered only where the conversation says it may ("may_refuse": control
 * strings in a content, no user message). Prints one line per failure and a
 * summary; exits 1 on any failure.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "model/chat.h"

static int failures;

static void failf(const char *src, const char *fmt, const char *a)
{
    if (failures++ < 40)
        printf("FAIL %s: %s%s\n", src, fmt, a ? a : "");
}

/* Shows where two texts part, escaped. */
static void show_diff(const char *want, size_t wn, const char *got, size_t gn)
{
    size_t i = 0;
    while (i < wn && i < gn && want[i] == got[i])
        i++;
    const size_t from = i > 40 ? i - 40 : 0;
    printf("  they differ at byte %zu (transformers %zu bytes, shardlm %zu)\n",
           i, wn, gn);
    for (int k = 0; k < 2; k++) {
        const char *s = k ? got : want;
        const size_t n = k ? gn : wn;
        printf("  %s: ...", k ? "shardlm     " : "transformers");
        for (size_t j = from; j < n && j < i + 40; j++) {
            const unsigned char ch = (unsigned char)s[j];
            if (ch == '\n')
                printf("\\n");
            else if (ch < 0x20)
                printf("\\x%02x", ch);
            else
                putchar(ch);
        }
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: chat_check REFS_DIR\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/refs.json", argv[1]);
    json_error_t err;
    json_t *refs = json_load_file(path, 0, &err);
    if (!refs) {
        fprintf(stderr, "chat_check: %s: %s\n", path, err.text);
        return 2;
    }
    const json_t *convs = json_object_get(refs, "conversations");
    const json_t *tpls = json_object_get(refs, "templates");
    size_t n_known = 0, n_refused = 0, n_equal = 0, n_both_refuse = 0,
           n_we_refuse = 0, n_conv = json_array_size(convs);
    size_t ti;
    const json_t *t;
    json_array_foreach(tpls, ti, t)
    {
        const char *src = json_string_value(json_object_get(t, "source"));
        const json_t *expect = json_object_get(t, "expect");
        snprintf(path, sizeof path, "%s/%s", argv[1],
                 json_string_value(json_object_get(t, "config")));
        uint8_t *cfg = NULL;
        size_t cfg_len = 0;
        if (slm_file_read_all(path, SLM_CHAT_MAX_CONFIG_BYTES, &cfg,
                              &cfg_len) != SLM_OK) {
            failf(src, "cannot read ", path);
            continue;
        }
        slm_chat_t *chat = NULL;
        const slm_status rc = slm_chat_create_from_config(
            (const char *)cfg, cfg_len, NULL, 0, path, NULL, &chat);
        free(cfg);
        if (json_is_null(expect)) {
            if (rc == SLM_OK)
                failf(src, "accepted as ",
                      slm_chat_format_name(slm_chat_get_format(chat)));
            else if (rc != SLM_ERR_UNSUPPORTED ||
                     !strstr(slm_error_message(), "--chat-template"))
                failf(src, "refused, but not as an unknown template: ",
                      slm_error_message());
            else
                n_refused++;
            slm_chat_destroy(&chat);
            continue;
        }
        const char *want = json_string_value(expect);
        if (rc != SLM_OK) {
            failf(src, "not recognised: ", slm_error_message());
            continue;
        }
        if (strcmp(slm_chat_format_name(slm_chat_get_format(chat)), want)) {
            failf(src, "recognised as the wrong format: ",
                  slm_chat_format_name(slm_chat_get_format(chat)));
            slm_chat_destroy(&chat);
            continue;
        }
        n_known++;
        const json_t *renders = json_object_get(t, "renders");
        for (size_t ci = 0; ci < n_conv; ci++) {
            const json_t *conv = json_array_get(convs, ci);
            const char *cname =
                json_string_value(json_object_get(conv, "name"));
            const bool may_refuse =
                json_is_true(json_object_get(conv, "may_refuse"));
            const json_t *msgs = json_object_get(conv, "messages");
            const size_t n = json_array_size(msgs);
            slm_chat_message *m = calloc(n ? n : 1, sizeof *m);
            bool ok = m != NULL;
            for (size_t k = 0; ok && k < n; k++) {
                const json_t *e = json_array_get(msgs, k);
                const json_t *role = json_object_get(e, "role");
                const json_t *text = json_object_get(e, "content");
                ok = slm_chat_role_parse(json_string_value(role),
                                         json_string_length(role),
                                         &m[k].role) == SLM_OK;
                m[k].content = json_string_value(text);
                m[k].len = json_string_length(text);
            }
            if (!ok) {
                failf(src, "bad conversation ", cname);
                free(m);
                continue;
            }
            for (int agp = 0; agp < 2; agp++) {
                char label[512];
                snprintf(label, sizeof label,
                         "%s [%s, add_generation_prompt=%s]", src, cname,
                         agp ? "true" : "false");
                const json_t *ref =
                    json_array_get(renders, ci * 2 + (size_t)agp);
                const json_t *rtext = json_object_get(ref, "text");
                char *out = NULL;
                size_t len = 0;
                const slm_status r =
                    slm_chat_render(chat, m, n, agp, &out, &len);
                if (!rtext) {
                    if (r == SLM_OK)
                        failf(label, "rendered where transformers raised: ",
                              json_string_value(json_object_get(ref, "error")));
                    else
                        n_both_refuse++;
                } else if (r != SLM_OK) {
                    if (may_refuse)
                        n_we_refuse++;
                    else
                        failf(label, "refused where transformers rendered: ",
                              slm_error_message());
                } else if (len != json_string_length(rtext) ||
                           memcmp(out, json_string_value(rtext), len) != 0) {
                    failf(label, "rendered text differs", NULL);
                    show_diff(json_string_value(rtext),
                              json_string_length(rtext), out, len);
                } else {
                    n_equal++;
                }
                free(out);
            }
            free(m);
        }
        slm_chat_destroy(&chat);
    }
    json_decref(refs);
    printf("chat_check: %zu templates recognised as their built-in, %zu "
           "refused as unknown; %zu renderings equal to transformers' byte "
           "for byte, %zu refused as transformers refused them, %zu refused "
           "by shardlm's stricter checks; %d failures\n",
           n_known, n_refused, n_equal, n_both_refuse, n_we_refuse, failures);
    return failures ? 1 : 0;
}
