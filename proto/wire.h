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

/* Hard cap on one control message (a step result carries the logits: 1M
 * vocabulary x 4 bytes, plus framing). Used as ZMQ_MAXMSGSIZE. */
#define SLM_WIRE_MAX_CONTROL_BYTES ((size_t)5 << 20)

/* What a receiver knows, to bound the fields it will use. */
typedef struct {
    uint32_t n_shards;   /* shard ids must be below this */
    uint32_t vocab_size; /* a logits array must be empty or exactly this */
    int32_t seq_len;     /* positions must be in [0, seq_len) */
} slm_wire_limits;

/* Serialises m into a new buffer. The caller owns *buf (free()). Fails with
 * SLM_ERR_RANGE if the packed size exceeds SLM_WIRE_MAX_CONTROL_BYTES. */
slm_status slm_wire_pack_control(const slm_control_msg *m, uint8_t **buf,
                                 size_t *len);

/* Parses and validates buf(len) against lim: exactly one body set; Step:
 * seq >= 1, token in [0, vocab_size), pos in [0, seq_len); StepResult and
 * Hello and Heartbeat: shard < n_shards; StepResult: logits empty or exactly
 * vocab_size finite floats, error at most 1024 bytes; Hello: ranges within
 * the limits; Shutdown: reason at most 1024 bytes. On success the caller
 * owns *out and frees it with slm_wire_free_control. On failure *out is NULL
 * and the message names the field and value. */
slm_status slm_wire_unpack_control(const uint8_t *buf, size_t len,
                                   const slm_wire_limits *lim,
                                   slm_control_msg **out);

/* Accepts NULL and *m == NULL; sets *m to NULL. */
void slm_wire_free_control(slm_control_msg **m);

#endif
