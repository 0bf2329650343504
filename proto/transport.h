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

/* Receives one message and validates it against lim (slm_wire_unpack_control).
 * On a ROUTER the sender's routing id is copied into peer(peer_cap), its
 * length into *peer_len and, if src_fd is not NULL, the connection's file
 * descriptor into *src_fd (-1 if unknown): how the coordinator ties a
 * monitor's disconnect event to a shard. On a DEALER pass NULL, 0, NULL,
 * NULL. A timeout returns
 * SLM_ERR_IO with "timed out" in the message. On success the caller owns *out
 * (slm_wire_free_control). */
slm_status slm_transport_recv(void *sock, char *peer, size_t peer_cap,
                              size_t *peer_len, int *src_fd,
                              const slm_wire_limits *lim,
                              slm_control_msg **out);

/* The control plane is CURVE-encrypted with keys made per job: the
 * coordinator's pair and one per shard, created in memory at launch and
 * exchanged over MPI (the launcher's trusted channel), never written to disk.
 * Z85 text, 40 characters and a NUL. */
typedef struct {
    char public_key[41];
    char secret_key[41];
} slm_curve_pair;

/* A fresh pair (zmq_curve_keypair); fails if libzmq was built without
 * CURVE. */
slm_status slm_transport_curve_pair(slm_curve_pair *out);

/* Makes sock a CURVE server with `me`'s secret key; peers are then vetted by
 * the ZAP handler of the socket's context for `zap_domain`, before any of
 * their bytes reach the application. */
slm_status slm_transport_curve_server(void *sock, const slm_curve_pair *me,
                                      const char *zap_domain);

/* Makes sock a CURVE client of the server whose public key is given. */
slm_status slm_transport_curve_client(void *sock, const slm_curve_pair *me,
                                      const char *server_public);

/* Clears key material where the compiler cannot skip it. */
void slm_transport_wipe(void *p, size_t n);

/* "shard-<index>" into buf; returns its length. */
size_t slm_transport_shard_id(int32_t index, char *buf, size_t cap);

/* "hb-<index>": the routing id of a shard's heartbeat socket, a second
 * DEALER owned by its heartbeat thread (ZeroMQ sockets are single-thread). */
size_t slm_transport_heartbeat_id(int32_t index, char *buf, size_t cap);

#endif
