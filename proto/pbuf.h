/*
 * proto/pbuf.h - what every protobuf-c message we receive goes through:
 * unpacking with a bound on the memory the parser may allocate, and the one
 * malformation protobuf-c lets through (field number 0).
 *
 * protobuf-c allocates as it parses (the message structs, copies of strings,
 * repeated arrays, unknown fields, and scratch for the fields it has seen),
 * up to tens of bytes per input byte. slm_pb_unpack() counts every
 * allocation of one unpack against a budget, so a crafted message cannot
 * make the parser allocate without bound.
 */
#ifndef SLM_PROTO_PBUF_H
#define SLM_PROTO_PBUF_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Parses buf(len) as a message of descriptor d, allocating at most `budget`
 * bytes. `what` names the message in errors; buf may be NULL when len is 0.
 * Fails with SLM_ERR_FORMAT (malformed, or over the budget). On success the
 * caller owns *out and frees it with slm_pb_free. */
slm_status slm_pb_unpack(const ProtobufCMessageDescriptor *d,
                         const uint8_t *buf, size_t len, size_t budget,
                         const char *what, ProtobufCMessage **out);

/* Frees a message from slm_pb_unpack; accepts NULL. */
void slm_pb_free(ProtobufCMessage *m);

/* Fails with SLM_ERR_FORMAT if m or any sub-message holds an unknown field
 * numbered 0 (see pbuf.c). */
slm_status slm_pb_check_field_zero(const char *what, const ProtobufCMessage *m);

/* protobuf-c hands strings out NUL-terminated, so a NUL inside one on the
 * wire would silently cut it short ("id\0x" reads as "id"). Walks the raw
 * bytes buf(len) of a message of descriptor d (already accepted by
 * slm_pb_unpack) and fails with SLM_ERR_FORMAT naming the first string
 * field, in any sub-message, that holds a NUL byte. */
slm_status slm_pb_check_nul(const char *what,
                            const ProtobufCMessageDescriptor *d,
                            const uint8_t *buf, size_t len);

#endif
