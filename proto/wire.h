/*
 * proto/wire.h - framing, size limits and validated unpacking of the control
 * messages (proto/control.proto).
 *
 * protobuf-c's unpack only checks that bytes parse; it knows nothing of our
 * limits. slm_wire_unpack_control() parses with a bounded size and then
 * checks every field the receiver will use as an index or size (ids and
 * counts against the limits given), so a caller never sees a message it
 * would have to re-check. Nothing here trusts the peer.
 */
#ifndef SLM_PROTO_WIRE_H
#define SLM_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "proto/control.pb-c.h"

typedef Shardlm__Control__ControlMessage slm_control_msg;

/* Hard cap on one control message (a step result carries a row of logits
 * per sequence of the step: 64 rows of a 256K vocabulary, plus framing).
 * Used as ZMQ_MAXMSGSIZE; only authenticated shards can send one. */
#define SLM_WIRE_MAX_CONTROL_BYTES ((size_t)72 << 20)

/* What a receiver knows, to bound the fields it will use. */
typedef struct {
    uint32_t n_shards;   /* shard ids must be below this */
    uint32_t vocab_size; /* logits come in rows of exactly this */
    int32_t seq_len;     /* positions must be in [0, seq_len) */
    uint32_t max_seqs;   /* sequences per step, and rows of logits */
    uint32_t max_tokens; /* tokens per step */
    uint32_t n_blocks;   /* KV blocks are below this */
    uint32_t block_size; /* positions per block */
} slm_wire_limits;

/* The most bytes a control message the coordinator sends a shard (a Step
 * within lim, packed as our sender packs it, or a Shutdown) can take: the
 * shard's ZMQ_MAXMSGSIZE, far below SLM_WIRE_MAX_CONTROL_BYTES, which only
 * results (rows of logits) need. 0 when the bound overflows size_t. */
size_t slm_wire_max_step_bytes(const slm_wire_limits *lim);

/* Serialises m into a new buffer. The caller owns *buf (free()). Fails with
 * SLM_ERR_RANGE if the packed size exceeds SLM_WIRE_MAX_CONTROL_BYTES. */
slm_status slm_wire_pack_control(const slm_control_msg *m, uint8_t **buf,
                                 size_t *len);

/* Parses and validates buf(len) against lim: exactly one body set; Step:
 * seq >= 1, at most max_seqs sequences and max_tokens tokens, each sequence
 * 1+ tokens in [0, vocab_size) at positions within [0, seq_len), its blocks
 * and the freed ones below n_blocks, at most a whole context's blocks per
 * sequence, want_argmax only with want_logits; StepResult and Hello and
 * Heartbeat: shard < n_shards; StepResult: at most max_seqs rows of
 * vocab_size finite floats, at most max_seqs argmax ids in [0, vocab_size),
 * error at most 1024 bytes; Hello: ranges within
 * the limits; Shutdown: reason at most 1024 bytes. On success the caller
 * owns *out and frees it with slm_wire_free_control. On failure *out is NULL
 * and the message names the field and value. */
slm_status slm_wire_unpack_control(const uint8_t *buf, size_t len,
                                   const slm_wire_limits *lim,
                                   slm_control_msg **out);

/* Accepts NULL and *m == NULL; sets *m to NULL. */
void slm_wire_free_control(slm_control_msg **m);

#endif
