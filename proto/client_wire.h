/*
 * proto/client_wire.h - size limits, packing and validated unpacking of the
 * client API messages (proto/client.proto).
 *
 * The server side calls slm_client_unpack_request() on every byte a client
 * sends: it parses with a bounded size and a bounded allocation, then checks
 * every field the server will use (ids, counts, strings, sampling numbers)
 * against the limits given, so the server never sees a request it would have
 * to re-check. The client side calls slm_client_unpack_response() on what the
 * server sends, with the same care. Nothing here trusts the peer.
 *
 * proto3 zero defaults: a field left out reads as 0. In SamplingParams,
 * top_p = 0 and repetition_penalty = 0 mean "unset" and are replaced by 1.0
 * (off) in the unpacked request; temperature 0 is greedy and top_k 0 is off,
 * as in coordinator/sampler.h. A missing SamplingParams is left NULL and
 * means every field unset (greedy). max_tokens 0 means the server's default
 * and deadline_ms 0 means no deadline.
 */
#ifndef SLM_PROTO_CLIENT_WIRE_H
#define SLM_PROTO_CLIENT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "proto/client.pb-c.h"

typedef Shardlm__Client__ClientMessage slm_client_msg; /* client -> server */
typedef Shardlm__Client__ServerMessage slm_server_msg; /* server -> client */

/* Hard cap on one message either way; used as ZMQ_MAXMSGSIZE. A request is
 * a prompt and a few small fields; a response is a chunk of text. */
#define SLM_CLIENT_MAX_MESSAGE_BYTES ((size_t)1 << 20)

/* Fixed bounds on what a server may send (checked by unpack_response). */
#define SLM_CLIENT_MAX_CHUNK_TOKENS 4096u       /* Chunk.token_ids */
#define SLM_CLIENT_MAX_TEXT_BYTES   (64u << 10) /* Chunk.text */
#define SLM_CLIENT_MAX_STRING_BYTES 1024u       /* messages, names, details */
#define SLM_CLIENT_MAX_RANKS        4096u       /* HealthResponse.ranks */

/* The most a request may ask to wait: 24 hours. */
#define SLM_CLIENT_MAX_DEADLINE_MS (24ull * 60 * 60 * 1000)

/* What a receiver allows. */
typedef struct {
    uint32_t vocab_size;       /* token ids must be below this; in a
                                  response, 0 = unknown (ids only >= 0) */
    uint32_t max_tokens;       /* cap on GenerateRequest.max_tokens */
    uint32_t max_prompt_bytes; /* GenerateRequest.prompt */
    uint32_t max_token_ids;    /* GenerateRequest.token_ids.ids */
    uint32_t max_stop;         /* number of stop sequences */
    uint32_t max_stop_bytes;   /* bytes of each stop sequence */
    uint32_t max_request_id_bytes;
    uint32_t max_messages; /* GenerateRequest.messages: their number; all
                              their contents count against max_prompt_bytes */
} slm_client_limits;

/* The house defaults for a model of vocab_size tokens whose server caps a
 * completion at max_tokens: prompts of 256 KiB, 65536 token ids, 16 stop
 * sequences of 256 bytes, request ids of 128 bytes, 256 chat messages. */
slm_client_limits slm_client_default_limits(uint32_t vocab_size,
                                            uint32_t max_tokens);

/* Serialise m into a new buffer. The caller owns *buf (free()). Fail with
 * SLM_ERR_RANGE if the packed size exceeds SLM_CLIENT_MAX_MESSAGE_BYTES.
 * They do not validate m: the receiver does. */
slm_status slm_client_pack_client(const slm_client_msg *m, uint8_t **buf,
                                  size_t *len);
slm_status slm_client_pack_server(const slm_server_msg *m, uint8_t **buf,
                                  size_t *len);

/* Server side. Parses and validates buf(len) against lim:
 * - exactly one body set;
 * - generate and cancel: request_id non-empty, at most max_request_id_bytes,
 *   printable ASCII (0x20..0x7e);
 * - generate: one input set (on the wire the last one wins, as protobuf
 *   specifies); a prompt at most max_prompt_bytes of well-formed UTF-8
 *   without NUL (empty is allowed: generation from BOS alone); or between 1
 *   and max_token_ids ids, each in [0, vocab_size); or between 1 and
 *   max_messages chat messages, each of role "system", "user" or
 *   "assistant" with well-formed UTF-8 content without NUL, at most
 *   max_prompt_bytes of content in all (the order of roles and the
 *   format's own rules are model/chat.h's to check);
 * - sampling: temperature finite and >= 0, top_k >= 0, top_p in (0, 1] and
 *   repetition_penalty finite and > 0, after the zero defaults above;
 * - max_tokens <= lim->max_tokens; at most max_stop stop sequences, each
 *   non-empty UTF-8 without NUL of at most max_stop_bytes;
 *   deadline_ms <= SLM_CLIENT_MAX_DEADLINE_MS.
 * A message over SLM_CLIENT_MAX_MESSAGE_BYTES is SLM_ERR_RANGE; anything
 * else wrong is SLM_ERR_FORMAT with the field and value in the message. On
 * success the caller owns *out and frees it with slm_client_free_request; on
 * failure *out is NULL. */
slm_status slm_client_unpack_request(const uint8_t *buf, size_t len,
                                     const slm_client_limits *lim,
                                     slm_client_msg **out);

/* Client side. Parses and validates buf(len): exactly one body set; every
 * request_id at most lim->max_request_id_bytes of printable ASCII (non-empty
 * except in Error); Chunk: at most SLM_CLIENT_MAX_CHUNK_TOKENS ids, each >= 0
 * and below lim->vocab_size when that is not 0, text at most
 * SLM_CLIENT_MAX_TEXT_BYTES; Final: a known finish_reason, times finite and
 * >= 0; Error: a known code; HealthResponse: known states, at most
 * SLM_CLIENT_MAX_RANKS ranks; other strings at most
 * SLM_CLIENT_MAX_STRING_BYTES. Errors and ownership as for
 * slm_client_unpack_request; free with slm_client_free_response. */
slm_status slm_client_unpack_response(const uint8_t *buf, size_t len,
                                      const slm_client_limits *lim,
                                      slm_server_msg **out);

/* Accept NULL and *m == NULL; set *m to NULL. */
void slm_client_free_request(slm_client_msg **m);
void slm_client_free_response(slm_server_msg **m);

/* "INVALID_ARGUMENT" etc. for an Error.Code; "UNKNOWN" for other values.
 * The string is static. */
const char *slm_client_code_name(int code);

#endif
