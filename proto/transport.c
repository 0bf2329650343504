/* proto/transport.c - see transport.h. */
#include "proto/transport.h"
#include "common/zkeys.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* ZeroMQ passes a zero-copy buffer to its I/O thread, which frees it,
 * through its own lock-free queue: compiled without ThreadSanitizer, that
 * hand-over is invisible to it, and the free would read as racing with the
 * writes that filled the buffer. Under TSAN the hand-over is stated - a
 * release on the buffer before ZeroMQ takes it, an acquire where ZeroMQ
 * gives it back - and nothing else is hidden; elsewhere these are no-ops. */
#if defined(__SANITIZE_THREAD__) /* gcc */
#define TRANSPORT_TSAN 1
#elif defined(__has_feature) /* clang */
#if __has_feature(thread_sanitizer)
#define TRANSPORT_TSAN 1
#endif
#endif
#ifdef TRANSPORT_TSAN
#include <sanitizer/tsan_interface.h>
#define handed_over(p) __tsan_release(p)
#define given_back(p)  __tsan_acquire(p)
#else
#define handed_over(p) ((void)(p))
#define given_back(p)  ((void)(p))
#endif

slm_status slm_transport_configure(void *sock, int timeout_ms)
{
    /* CURVE (every control socket) adds its box to each frame, and the
     * limit counts the frame as it travels. */
    const int64_t max =
        (int64_t)SLM_WIRE_MAX_CONTROL_BYTES + SLM_ZKEY_CURVE_OVERHEAD;
    const int zero = 0;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0 ||
        zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms) !=
            0 ||
        zmq_setsockopt(sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms) != 0)
        return slm_fail(SLM_ERR_IO, "zmq_setsockopt: %s", zmq_strerror(errno));
    return SLM_OK;
}

size_t slm_transport_shard_id(int32_t index, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "shard-%d", index);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

size_t slm_transport_heartbeat_id(int32_t index, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "hb-%d", index);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static void free_buffer(void *data, void *hint)
{
    (void)hint;
    given_back(data);
    free(data);
}

slm_status slm_transport_send(void *sock, const void *peer, size_t peer_len,
                              const slm_control_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    SLM_CHECK(slm_wire_pack_control(m, &buf, &len));
    int rc = 0;
    if (peer)
        rc = zmq_send(sock, peer, peer_len, ZMQ_SNDMORE);
    int err = errno;
    if (rc < 0) {
        free(buf);
    } else {
        /* ZeroMQ takes the buffer as it is (a step result carries megabytes
         * of logits: copying them again costs a millisecond a step) and
         * frees it once sent, or at once if the send fails. */
        zmq_msg_t msg;
        handed_over(buf);
        if (zmq_msg_init_data(&msg, buf, len, free_buffer, NULL) != 0) {
            err = errno;
            free(buf);
            rc = -1;
        } else {
            rc = zmq_msg_send(&msg, sock, 0);
            err = errno;
            if (rc < 0)
                zmq_msg_close(&msg);
        }
    }
    if (rc < 0)
        return slm_fail(SLM_ERR_IO, "control send: %s",
                        err == EAGAIN ? "timed out" : zmq_strerror(err));
    return SLM_OK;
}

slm_status slm_transport_recv(void *sock, char *peer, size_t peer_cap,
                              size_t *peer_len, slm_transport_origin *origin,
                              const slm_wire_limits *lim, slm_control_msg **out)
{
    zmq_msg_t frame;
    *out = NULL;
    if (origin) {
        origin->fd = -1;
        origin->user_id[0] = '\0';
    }
    if (peer) {
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, sock, 0) < 0) {
            int err = errno;
            zmq_msg_close(&frame);
            return slm_fail(SLM_ERR_IO, "control receive: %s",
                            err == EAGAIN ? "timed out" : zmq_strerror(err));
        }
        size_t n = zmq_msg_size(&frame);
        *peer_len = n < peer_cap ? n : peer_cap;
        memcpy(peer, zmq_msg_data(&frame), *peer_len);
        int more = zmq_msg_more(&frame);
        zmq_msg_close(&frame);
        if (!more)
            return slm_fail(SLM_ERR_FORMAT,
                            "control receive: routing id without a body");
    }
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, sock, 0) < 0) {
        int err = errno;
        zmq_msg_close(&frame);
        return slm_fail(SLM_ERR_IO, "control receive: %s",
                        err == EAGAIN ? "timed out" : zmq_strerror(err));
    }
    /* The body carries its connection's fd; a ROUTER's id frame may not. */
    if (origin) {
        origin->fd = zmq_msg_get(&frame, ZMQ_SRCFD);
        const char *user = zmq_msg_gets(&frame, "User-Id");
        if (user)
            snprintf(origin->user_id, sizeof origin->user_id, "%s", user);
    }
    slm_status rc = SLM_OK;
    if (zmq_msg_more(&frame)) {
        rc = slm_fail(SLM_ERR_FORMAT, "control receive: unexpected frames");
        /* drain the rest so the next receive starts on a message boundary */
        while (zmq_msg_more(&frame)) {
            zmq_msg_close(&frame);
            zmq_msg_init(&frame);
            if (zmq_msg_recv(&frame, sock, 0) < 0)
                break;
        }
    } else {
        rc = slm_wire_unpack_control(zmq_msg_data(&frame), zmq_msg_size(&frame),
                                     lim, out);
    }
    zmq_msg_close(&frame);
    return rc;
}
