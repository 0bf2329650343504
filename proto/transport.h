/*
 * proto/transport.h - control messages over ZeroMQ sockets.
 *
 * The coordinator holds a ROUTER; each shard a DEALER whose routing id is
 * "shard-<index>". Every socket gets ZMQ_MAXMSGSIZE (so an oversized frame
 * is dropped by ZeroMQ before we see it), no linger, and a receive timeout,
 * so a lost peer turns into an error instead of a hang.
 */
#ifndef SLM_PROTO_TRANSPORT_H
#define SLM_PROTO_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "proto/wire.h"

/* Applies the limits above to a socket; timeout_ms < 0 waits forever. */
slm_status slm_transport_configure(void *sock, int timeout_ms);

/* Sends m; on a ROUTER, `peer` (peer_len bytes) is the routing id to send to,
 * on a DEALER pass NULL. */
slm_status slm_transport_send(void *sock, const void *peer, size_t peer_len,
                              const slm_control_msg *m);

/* Where a message came from, on a ROUTER: the connection's file descriptor
 * (-1 if unknown), which ties a monitor's disconnect event to a peer, and
 * the User-Id the ZAP handler gave the peer's CURVE key ("" if none), which
 * unlike the routing id the peer cannot choose. */
typedef struct {
    int fd;
    char user_id[72];
} slm_transport_origin;

/* Receives one message and validates it against lim (slm_wire_unpack_control).
 * On a ROUTER the sender's routing id is copied into peer(peer_cap), its
 * length into *peer_len and, if origin is not NULL, where it came from into
 * *origin. On a DEALER pass NULL, 0, NULL, NULL. A timeout returns
 * SLM_ERR_IO with "timed out" in the message. On success the caller owns *out
 * (slm_wire_free_control). */
slm_status slm_transport_recv(void *sock, char *peer, size_t peer_cap,
                              size_t *peer_len, slm_transport_origin *origin,
                              const slm_wire_limits *lim,
                              slm_control_msg **out);

/* "shard-<index>" into buf; returns its length. */
size_t slm_transport_shard_id(int32_t index, char *buf, size_t cap);

/* "hb-<index>": the routing id of a shard's heartbeat socket, a second
 * DEALER owned by its heartbeat thread (ZeroMQ sockets are single-thread). */
size_t slm_transport_heartbeat_id(int32_t index, char *buf, size_t cap);

#endif
