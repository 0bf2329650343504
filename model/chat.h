/*
 * model/chat.h - chat formats: turning a list of {role, content} messages
 * into the prompt text a chat model was trained on.
 *
 * A Hugging Face model says how in tokenizer_config.json's "chat_template"
 * (or a chat_template.jinja beside it): a Jinja program. Running template
 * code from a file is how llama-cpp-python got CVE-2024-34359 (a template
 * that reaches Python's globals runs anything), so shardlm never runs it.
 * It has built-in renderers of the formats of the families it supports,
 * each written from the real templates and checked byte for byte against
 * transformers' apply_chat_template (tests/integration/chat_templates.sh),
 * and it recognises a model's template only by exact match: the template,
 * with line ends made LF and one final newline dropped, must hash
 * (SHA-256) to one of the known templates listed in chat.c. Anything else -
 * an edited template, another family's, or one carrying an injection - is
 * refused with an error naming the way out: `--chat-template NAME`, which
 * picks a built-in by name whatever the file says.
 *
 * Rendering follows what the real template does for the messages it
 * accepts, including where it raises (Llama 2 and Mistral require user and
 * assistant to alternate after an optional first system message) - and is
 * stricter in two ways: a conversation must hold a user message, and no
 * content may contain the control strings of its format (such as
 * "<|im_end|>", "<|eot_id|>", "</s>", "[INST]"), since the prompt is encoded
 * with special tokens parsed and such a string would let a user forge the
 * turns of another role.
 */
#ifndef SLM_MODEL_CHAT_H
#define SLM_MODEL_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

/* Hard limits, checked before anything they size is allocated. */
#define SLM_CHAT_MAX_CONFIG_BYTES                                              \
    ((size_t)4 << 20) /* tokenizer_config.json                                 \
                       */
#define SLM_CHAT_MAX_TEMPLATE_BYTES                                            \
    ((size_t)256 << 10) /* one chat template                                   \
                         */
#define SLM_CHAT_MAX_MESSAGES    256u
#define SLM_CHAT_MAX_TOTAL_BYTES ((size_t)1 << 20) /* all contents */
#define SLM_CHAT_MAX_TOKEN_BYTES 64u               /* a bos or eos string */

typedef enum {
    SLM_CHAT_LLAMA2,            /* "llama2": Llama-2-*-chat */
    SLM_CHAT_LLAMA3,            /* "llama3": Meta-Llama-3-*-Instruct */
    SLM_CHAT_LLAMA31,           /* "llama3.1": Llama 3.1 and 3.3 Instruct */
    SLM_CHAT_LLAMA32,           /* "llama3.2": Llama 3.2 Instruct */
    SLM_CHAT_CHATML,            /* "chatml": plain ChatML */
    SLM_CHAT_QWEN25,            /* "qwen2.5": ChatML, a default system */
    SLM_CHAT_QWEN3,             /* "qwen3": ChatML with thinking blocks */
    SLM_CHAT_MISTRAL_V01,       /* "mistral-v0.1": Mistral-7B-Instruct-v0.1 */
    SLM_CHAT_MISTRAL_V02,       /* "mistral-v0.2": v0.2, Mixtral-8x7B */
    SLM_CHAT_MISTRAL_V1,        /* "mistral-v1": the v0.x with a system */
    SLM_CHAT_MISTRAL_V3,        /* "mistral-v3": v0.3, Large-2407 */
    SLM_CHAT_MISTRAL_V3_TEKKEN, /* "mistral-v3-tekken": Nemo-2407 */
    SLM_CHAT_FORMAT_COUNT
} slm_chat_format;

typedef enum {
    SLM_CHAT_SYSTEM,
    SLM_CHAT_USER,
    SLM_CHAT_ASSISTANT,
} slm_chat_role;

/* One message; both borrowed from the caller for the call. content(len)
 * need not be NUL-terminated. */
typedef struct {
    slm_chat_role role;
    const char *content;
    size_t len;
} slm_chat_message;

typedef struct slm_chat slm_chat_t;

/* The built-in format called `name` (as listed above, e.g. "llama3.1").
 * SLM_ERR_INVALID, listing the names, for any other. */
slm_status slm_chat_format_from_name(const char *name, slm_chat_format *out);

/* The format's name; static, never NULL ("?" for an invalid value). */
const char *slm_chat_format_name(slm_chat_format f);

/* The space-separated names of every built-in, for help and errors;
 * static. */
const char *slm_chat_format_names(void);

/* "system", "user", "assistant" -> the role; SLM_ERR_FORMAT for any other
 * string (s(len), not NUL-terminated). */
slm_status slm_chat_role_parse(const char *s, size_t len, slm_chat_role *out);

/* The built-in format `f` with its family's bos and eos strings ("<s>" and
 * "</s>" for Llama 2 and Mistral, "<|begin_of_text|>" and "<|eot_id|>" for
 * Llama 3, none and "<|im_end|>" for ChatML). The caller owns *out and frees
 * it with slm_chat_destroy. */
slm_status slm_chat_create(slm_chat_format f, slm_chat_t **out);

/* Parses a tokenizer_config.json held in json(len) (at most
 * SLM_CHAT_MAX_CONFIG_BYTES, nesting at most 16 deep; `what` names it in
 * errors) and chooses the format: `override_name` if not NULL (a built-in's
 * name: the template is then not looked at), else the one whose known
 * template "chat_template" is (a string, or a list of {"name", "template"}
 * whose "default" entry is used). `template_file`(template_len), if not
 * NULL, is the text of a chat_template.jinja beside the config, used when
 * the config has no "chat_template". bos_token and eos_token (strings or
 * {"content": ...} objects) replace the family's when given.
 * Refused: invalid JSON, a wrong type, a template over
 * SLM_CHAT_MAX_TEMPLATE_BYTES, no template and no override
 * (SLM_ERR_UNSUPPORTED: "has no chat template"), an unknown template
 * (SLM_ERR_UNSUPPORTED, saying that templates are never run and naming
 * --chat-template). The caller owns *out (slm_chat_destroy). */
slm_status slm_chat_create_from_config(const char *json, size_t len,
                                       const char *template_file,
                                       size_t template_len, const char *what,
                                       const char *override_name,
                                       slm_chat_t **out);

/* Reads model_dir/tokenizer_config.json (and model_dir/chat_template.jinja
 * if the config has no template) and proceeds as
 * slm_chat_create_from_config. With override_name set, a directory without
 * a config is fine: the built-in with its family's tokens. */
slm_status slm_chat_load(const char *model_dir, const char *override_name,
                         slm_chat_t **out);

/* Accepts NULL; sets *c to NULL. */
void slm_chat_destroy(slm_chat_t **c);

slm_chat_format slm_chat_get_format(const slm_chat_t *c);

/* The bos and eos strings rendering uses; borrowed, valid while c lives;
 * "" when the format has none. */
const char *slm_chat_bos(const slm_chat_t *c);
const char *slm_chat_eos(const slm_chat_t *c);

/* The strings whose token ends a reply in this format (e.g. "<|eot_id|>",
 * "<|im_end|>", "</s>"), as *n borrowed strings valid while c lives: a
 * generation stops on the token of any of them. */
const char *const *slm_chat_stop_strings(const slm_chat_t *c, size_t *n);

/* Checks msgs(n) and renders them into the prompt text, ending with the
 * assistant's header when add_generation_prompt (formats whose template
 * has no such header ignore it, as the template does). Checks, each
 * SLM_ERR_FORMAT with the message's index in the error: 1 to
 * SLM_CHAT_MAX_MESSAGES messages holding at most SLM_CHAT_MAX_TOTAL_BYTES
 * of content in all; a user message among them; each content well-formed
 * UTF-8 without NUL and without the format's control strings; the order the
 * real template enforces. The text is NUL-terminated and holds no NUL; the
 * caller owns *text (free()), of *len bytes. */
slm_status slm_chat_render(const slm_chat_t *c, const slm_chat_message *msgs,
                           size_t n, bool add_generation_prompt, char **text,
                           size_t *len);

#endif
