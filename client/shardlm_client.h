/*
 * shardlm_client.h - the C client library of the shardlm inference server.
 *
 * Connect to a server (`shardlm serve --listen ENDPOINT`), then ask it to
 * generate text, which arrives in chunks as it is produced, or ask for its
 * health or its model. Every call blocks until the server has answered, the
 * server has gone away, or timeout_ms has passed without a word from it.
 *
 *     shardlm_client_t *c = NULL;
 *     if (shardlm_client_connect("tcp://127.0.0.1:5555", NULL, &c) != 0) {
 *         fprintf(stderr, "%s\n", shardlm_client_last_error(NULL));
 *         return 1;
 *     }
 *     shardlm_client_generate_request_t req = {0};
 *     req.prompt = "Once upon a time";
 *     req.sampling = shardlm_client_sampling_defaults();
 *     req.max_tokens = 64;
 *     shardlm_client_result_t res;
 *     shardlm_client_code_t rc =
 *         shardlm_client_generate(c, &req, on_chunk, NULL, &res);
 *     if (rc != SHARDLM_CLIENT_OK)
 *         fprintf(stderr, "%s: %s\n", shardlm_client_code_name(rc),
 *                 shardlm_client_last_error(c));
 *     shardlm_client_destroy(&c);
 *
 * Threads: a handle is used by one thread at a time (one handle per thread
 * is the simple rule); separate handles are independent and may be used by
 * different threads at once. Nothing here installs signal handlers.
 *
 * Errors: every fallible call returns a shardlm_client_code_t whose values
 * are the server's error codes (proto/client.proto, Error.Code), so a code
 * the server sent and one the library produced read the same. The library
 * produces these itself:
 *   INVALID_ARGUMENT  a bad argument (NULL, out of range, both or neither
 *                     input), found before anything is sent;
 *   UNAVAILABLE       no message from the server within timeout_ms, or the
 *                     connection to it dropped (noticed at once: a server
 *                     that dies does not cost the whole timeout);
 *   INTERNAL          the server sent something malformed (every message is
 *                     validated before use), or the library failed.
 * shardlm_client_last_error() says what happened, with the values involved.
 *
 * This header needs only <stddef.h> and <stdint.h>. Link with
 * `pkg-config --cflags --libs shardlm_client`.
 */
#ifndef SHARDLM_CLIENT_H
#define SHARDLM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SHARDLM_CLIENT_API __attribute__((visibility("default")))
#else
#define SHARDLM_CLIENT_API
#endif

/* Used where shardlm_client_options_t.timeout_ms is 0. */
#define SHARDLM_CLIENT_DEFAULT_TIMEOUT_MS 30000
/* The longest request id a server accepts (bytes of printable ASCII). */
#define SHARDLM_CLIENT_MAX_REQUEST_ID 128
/* The longest string a server may send (model, version, rank detail). */
#define SHARDLM_CLIENT_MAX_STRING 1024

/* Values equal proto/client.proto's Error.Code. */
typedef enum {
    SHARDLM_CLIENT_OK = 0,
    SHARDLM_CLIENT_INVALID_ARGUMENT = 1,
    SHARDLM_CLIENT_RESOURCE_EXHAUSTED = 2, /* e.g. the server's queue is full */
    SHARDLM_CLIENT_UNAVAILABLE = 3,
    SHARDLM_CLIENT_DEADLINE_EXCEEDED = 4, /* the request's deadline_ms */
    SHARDLM_CLIENT_CANCELLED = 5,
    SHARDLM_CLIENT_INTERNAL = 6,
} shardlm_client_code_t;

/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN" for other values. Static. */
SHARDLM_CLIENT_API const char *
shardlm_client_code_name(shardlm_client_code_t code);

/* ------------------------------------------------------------------------ */
/* The handle                                                                */

typedef struct shardlm_client shardlm_client_t;

typedef struct {
    /* How long a call waits for the server: for health and info, for the
     * reply; for generate, for each message of the stream (the longest gap
     * between two, so a long completion is fine while chunks keep coming).
     * 0 = SHARDLM_CLIENT_DEFAULT_TIMEOUT_MS; negative is INVALID_ARGUMENT. */
    int32_t timeout_ms;
    /* CURVE (the server's default): the file holding the server's public
     * key (its PREFIX.key, from `shardlm keygen --curve`), and the file
     * holding ours (our PREFIX.key_secret: mode 0600, ours; the public key
     * is derived from it). Both or neither (plaintext, for a server started
     * with --insecure); files only - keys never come from arguments or the
     * environment. A server that refuses our key fails calls at once with
     * UNAVAILABLE. */
    const char *server_key_file;
    const char *key_file;
} shardlm_client_options_t;

/* Makes a handle for the server at endpoint (a ZeroMQ endpoint such as
 * "tcp://host:port"; at most 255 bytes). opts may be NULL (defaults). The
 * connection itself is made in the background and remade if it drops, so a
 * server that is not up yet is not an error here: the first call that needs
 * it waits up to timeout_ms. Fails with INVALID_ARGUMENT for a bad endpoint
 * or option and INTERNAL if ZeroMQ cannot be set up; the message is then
 * shardlm_client_last_error(NULL). On success the caller owns *out and frees
 * it with shardlm_client_destroy; on failure *out is NULL. */
SHARDLM_CLIENT_API shardlm_client_code_t shardlm_client_connect(
    const char *endpoint, const shardlm_client_options_t *opts,
    shardlm_client_t **out);

/* Closes the connection (messages not yet sent are dropped after at most
 * 100 ms) and frees the handle. Accepts NULL and *c == NULL; sets *c to
 * NULL. */
SHARDLM_CLIENT_API void shardlm_client_destroy(shardlm_client_t **c);

/* The message of the last failed call on c, or "" if none has failed. With
 * c NULL: that of the calling thread's last failure that had no handle to
 * keep it (a failed shardlm_client_connect, a call given a NULL handle).
 * Borrowed; valid until the next call on c (or such a failure). */
SHARDLM_CLIENT_API const char *
shardlm_client_last_error(const shardlm_client_t *c);

/* ------------------------------------------------------------------------ */
/* Generate                                                                  */

/* The server's sampling parameters. All zero is greedy decoding. */
typedef struct {
    float temperature;        /* >= 0, finite; 0 = greedy */
    int32_t top_k;            /* >= 0; 0 = off */
    float top_p;              /* (0, 1]; 0 = unset = 1 (off) */
    float repetition_penalty; /* > 0, finite; 0 = unset = 1 (off) */
    uint64_t seed;            /* used only when has_seed */
    int has_seed;             /* 0: the server picks a seed */
} shardlm_client_sampling_t;

/* `shardlm generate`'s defaults: temperature 1, top-p 0.9, no top-k, no
 * repetition penalty, no seed. */
SHARDLM_CLIENT_API shardlm_client_sampling_t
shardlm_client_sampling_defaults(void);

/* What to generate. Zero-initialise, then set the input: exactly one of
 * prompt (text) and token_ids (ids). Every pointer is borrowed for the
 * duration of the call. */
typedef struct {
    /* Printable ASCII, 1 to SHARDLM_CLIENT_MAX_REQUEST_ID bytes, unique among
     * this handle's requests; NULL or "" = the library makes one up (it is
     * returned in the result). */
    const char *request_id;
    const char *prompt; /* UTF-8; "" = generate from the start token alone */
    const int32_t *token_ids; /* n_token_ids ids, each >= 0 and below the */
    size_t n_token_ids;       /* model's vocabulary; 1 to 65536 of them */
    shardlm_client_sampling_t sampling;
    uint32_t max_tokens;     /* completion tokens; 0 = the server's default */
    const char *const *stop; /* n_stop stop sequences (at most 16 of at */
    size_t n_stop;           /* most 256 bytes, non-empty UTF-8) */
    uint64_t deadline_ms;    /* from the server's receipt; 0 = none; <= 24 h */
    /* Non-zero: go on past end-of-sequence until max_tokens (which must then
     * be set), for benchmarks of a fixed output length. */
    int ignore_eos;
    /* Optional: when *cancel_flag becomes non-zero (set, say, by a signal
     * handler), the request is cancelled as if on_chunk had returned
     * non-zero. Looked at at least every 100 ms. */
    const volatile int *cancel_flag;
} shardlm_client_generate_request_t;

/* One piece of the completion; borrowed for the duration of the callback. */
typedef struct {
    const char *request_id;
    const int32_t *token_ids; /* the new tokens, in order */
    size_t n_token_ids;
    const char *text; /* their text (NUL-terminated; may be "" when a */
    size_t text_len;  /* character spans tokens), excluding the prompt */
} shardlm_client_chunk_t;

/* Called for each chunk, in order, on the calling thread. Return 0 to go on;
 * anything else cancels the request: the library tells the server and waits
 * for it to confirm, delivering no further chunks, and the call returns
 * CANCELLED. The callback must not call into the same handle. */
typedef int (*shardlm_client_chunk_fn)(const shardlm_client_chunk_t *chunk,
                                       void *user);

typedef enum {
    SHARDLM_CLIENT_FINISH_UNSPECIFIED = 0,
    SHARDLM_CLIENT_FINISH_STOP = 1,          /* end of sequence */
    SHARDLM_CLIENT_FINISH_LENGTH = 2,        /* max_tokens or the context */
    SHARDLM_CLIENT_FINISH_STOP_SEQUENCE = 3, /* a stop sequence appeared */
} shardlm_client_finish_reason_t;

/* "STOP", "LENGTH", "STOP_SEQUENCE", "UNSPECIFIED" or "UNKNOWN". Static. */
SHARDLM_CLIENT_API const char *
shardlm_client_finish_reason_name(shardlm_client_finish_reason_t r);

typedef struct {
    /* The request's id (given or made up); set on every return after the
     * arguments were accepted, so a failed request can be named. */
    char request_id[SHARDLM_CLIENT_MAX_REQUEST_ID + 1];
    /* The rest is set when the server finished the request (OK, or
     * CANCELLED when the request finished before the cancel reached the
     * server); otherwise zero. */
    shardlm_client_finish_reason_t finish_reason;
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    double queue_ms, prefill_ms, decode_ms;
} shardlm_client_result_t;

/* Sends req and streams the completion to on_chunk (may be NULL) with
 * `user`, until the server finishes (OK) or fails the request (its code
 * and message), or a local failure (see the top of this file). result may be
 * NULL. A request whose wait timed out or whose reply was malformed is
 * cancelled on the server before the call returns. */
SHARDLM_CLIENT_API shardlm_client_code_t shardlm_client_generate(
    shardlm_client_t *c, const shardlm_client_generate_request_t *req,
    shardlm_client_chunk_fn on_chunk, void *user,
    shardlm_client_result_t *result);

/* One message of a conversation; both strings borrowed for the call. */
typedef struct {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* UTF-8 */
} shardlm_client_message_t;

/* As shardlm_client_generate, for a chat model: the server renders
 * messages(n_messages) (1 to 256, at most 256 KiB of content in all) in the
 * model's chat format and streams the assistant's reply. req gives
 * everything but the input: its prompt and token_ids must be unset. A
 * server whose model has no chat format, or whose format refuses the
 * conversation (roles out of the order it requires, content holding its
 * control strings), answers INVALID_ARGUMENT saying why. */
SHARDLM_CLIENT_API shardlm_client_code_t shardlm_client_chat(
    shardlm_client_t *c, const shardlm_client_generate_request_t *req,
    const shardlm_client_message_t *messages, size_t n_messages,
    shardlm_client_chunk_fn on_chunk, void *user,
    shardlm_client_result_t *result);

/* Asks the server to stop the request request_id, sent earlier through this
 * handle (the server matches requests to their connection), and returns at
 * once: no reply is awaited (the server sends none for an id it does not
 * know). INVALID_ARGUMENT for a bad id, UNAVAILABLE if the message cannot be
 * queued. */
SHARDLM_CLIENT_API shardlm_client_code_t
shardlm_client_cancel(shardlm_client_t *c, const char *request_id);

/* ------------------------------------------------------------------------ */
/* Health and info                                                           */

/* Values equal proto/client.proto's HealthResponse.State. */
typedef enum {
    SHARDLM_CLIENT_STATE_UNSPECIFIED = 0,
    SHARDLM_CLIENT_STATE_SERVING = 1,
    SHARDLM_CLIENT_STATE_DEGRADED = 2,
    SHARDLM_CLIENT_STATE_FAILING = 3,
} shardlm_client_state_t;

/* "SERVING", "DEGRADED", "FAILING", "UNSPECIFIED" or "UNKNOWN". Static. */
SHARDLM_CLIENT_API const char *
shardlm_client_state_name(shardlm_client_state_t s);

typedef struct {
    uint32_t rank;
    shardlm_client_state_t state;
    const char *detail;         /* never NULL; may be "" */
    uint64_t last_heartbeat_ms; /* age of the rank's last heartbeat */
} shardlm_client_rank_health_t;

typedef struct {
    shardlm_client_state_t state; /* the server as a whole */
    size_t n_ranks;
    shardlm_client_rank_health_t *ranks; /* n_ranks entries, as sent */
} shardlm_client_health_t;

/* Asks the server for its health. On success the caller owns *out and frees
 * it with shardlm_client_health_free (one allocation: the ranks and their
 * details live inside it); on failure *out is NULL. */
SHARDLM_CLIENT_API shardlm_client_code_t
shardlm_client_health(shardlm_client_t *c, shardlm_client_health_t **out);

/* Accepts NULL and *h == NULL; sets *h to NULL. */
SHARDLM_CLIENT_API void shardlm_client_health_free(shardlm_client_health_t **h);

typedef struct {
    char model[SHARDLM_CLIENT_MAX_STRING + 1];
    uint32_t tp;         /* tensor-parallel degree */
    uint32_t pp;         /* pipeline stages */
    uint32_t vocab_size; /* token ids are below this */
    uint32_t seq_len;    /* the context length */
    char version[SHARDLM_CLIENT_MAX_STRING + 1];
} shardlm_client_info_t;

/* Asks the server which model it serves and how, into the caller's *out
 * (zeroed on failure). The handle remembers vocab_size: from then on the
 * token ids of a request and of every chunk are checked against it. */
SHARDLM_CLIENT_API shardlm_client_code_t
shardlm_client_info(shardlm_client_t *c, shardlm_client_info_t *out);

#ifdef __cplusplus
}
#endif

#endif
