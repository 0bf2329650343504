/*
 * tests/mpi/control_intruder.c - knocks on a coordinator's control port the
 * ways a local attacker could, for tests/integration/control_auth.sh:
 *   1. plaintext (no CURVE), with a shard's routing id;
 *   2. CURVE with a fresh key the coordinator never saw, as "shard-0" and
 *      as "hb-0", sending a well-formed Heartbeat.
 * Each must be refused in the handshake, and be seen refused: within a
 * second the connection must be made (ZMQ_EVENT_CONNECTED: the attempt
 * reached the port) and then fail its handshake or be dropped by the server
 * before one succeeds (a failure event, or DISCONNECTED), and no handshake
 * may succeed. An attempt that never reaches the port is a failure, not a
 * refusal. Usage: control_intruder ENDPOINT SERVER_PUBLIC_KEY. Exit 0 when
 * every attempt was seen refused, 1 otherwise.
 */
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "common/zkeys.h"
#include "proto/transport.h"

/* Connects a DEALER (CURVE if server_key is not NULL) with routing id `id`,
 * sends a Heartbeat, and returns 0 if within 1 s it connected and was
 * refused without any handshake succeeding, 1 otherwise. */
static int not_refused(void *ctx, const char *ep, const char *server_key,
                       const char *id, int n)
{
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://intruder-%d", n);
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    const int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    char pub[SLM_ZKEY_Z85_BUF] = "-", sec[SLM_ZKEY_Z85_BUF];
    if (server_key) {
        if (slm_zkeys_pair(pub, sec) != SLM_OK ||
            slm_zkeys_apply_client(s, server_key, pub, sec) != SLM_OK) {
            fprintf(stderr, "control_intruder: %s\n", slm_error_message());
            return 1;
        }
    }
    zmq_socket_monitor(s, mon_ep,
                       ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED |
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(mon, mon_ep);
    zmq_connect(s, ep);
    Shardlm__Control__Heartbeat beat = SHARDLM__CONTROL__HEARTBEAT__INIT;
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT;
    m.heartbeat = &beat;
    (void)slm_transport_send(s, NULL, 0, &m);
    int succeeded = 0, connected = 0, refused = 0;
    zmq_pollitem_t it = {mon, 0, ZMQ_POLLIN, 0};
    for (int waited = 0; waited < 1000 && !succeeded; waited += 50) {
        if (zmq_poll(&it, 1, 50) <= 0)
            continue;
        zmq_msg_t f;
        zmq_msg_init(&f);
        zmq_msg_recv(&f, mon, 0);
        uint16_t ev = 0;
        if (zmq_msg_size(&f) >= 2)
            memcpy(&ev, zmq_msg_data(&f), 2);
        zmq_msg_close(&f);
        zmq_msg_init(&f);
        zmq_msg_recv(&f, mon, 0);
        zmq_msg_close(&f);
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            succeeded = 1;
        else if (ev == ZMQ_EVENT_CONNECTED)
            connected++;
        else if (connected) /* a failure or drop of a connection made */
            refused++;
    }
    const char *verdict = succeeded    ? "ADMITTED"
                          : !connected ? "NEVER CONNECTED"
                          : !refused   ? "NOT SEEN REFUSED"
                                       : "refused";
    /* The key, so that the test can find its refusal in the audit log. */
    printf("%s %s: %s (%d connections, %d refusal events) key %s\n",
           server_key ? "CURVE" : "plain", id, verdict, connected, refused,
           pub);
    zmq_socket_monitor(s, NULL, 0);
    zmq_close(s);
    zmq_close(mon);
    return succeeded || !connected || !refused;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: control_intruder ENDPOINT SERVER_KEY\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    int bad = 0;
    bad += not_refused(ctx, argv[1], NULL, "shard-0", 1);
    bad += not_refused(ctx, argv[1], argv[2], "shard-0", 2);
    bad += not_refused(ctx, argv[1], argv[2], "hb-0", 3);
    zmq_ctx_term(ctx);
    return bad ? 1 : 0;
}
