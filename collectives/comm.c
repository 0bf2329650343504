/*
 * collectives/comm.c - the backend-independent half of every operation in
 * comm.h: argument validation (once, here, before any backend sees the
 * call), splitting counts larger than the backend can move at once, the
 * time statistics, and dispatch through the slm_comm_ops table.
 */
#include "collectives/comm.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "collectives/comm_impl.h"
#include "common/clock.h"
#include "common/checked.h"

size_t slm_dtype_size(slm_dtype dt)
{
    switch (dt) {
    case SLM_DTYPE_F32:
        return 4;
    case SLM_DTYPE_I32:
        return 4;
    }
    return 0;
}

const char *slm_dtype_name(slm_dtype dt)
{
    switch (dt) {
    case SLM_DTYPE_F32:
        return "f32";
    case SLM_DTYPE_I32:
        return "i32";
    }
    return "?";
}

const char *slm_redop_name(slm_redop op)
{
    switch (op) {
    case SLM_REDOP_SUM:
        return "sum";
    case SLM_REDOP_MAX:
        return "max";
    }
    return "?";
}

void slm__comm_init(slm_comm_t *comm, const slm_comm_ops *ops, int rank,
                    int size, size_t max_count)
{
    assert(comm && ops && size >= 1 && rank >= 0 && rank < size);
    assert(max_count >= 1);
    comm->ops = ops;
    comm->rank = rank;
    comm->size = size;
    comm->max_count = max_count;
    comm->max_count_limit = max_count;
    comm->seconds = 0.0;
}

void slm__comm_set_max_count(slm_comm_t *comm, size_t n)
{
    assert(comm);
    comm->max_count =
        n == 0 || n > comm->max_count_limit ? comm->max_count_limit : n;
}

/* --- validation: each helper fails with a message that names the
 * operation, this rank, the argument and its value --- */

__attribute__((format(printf, 4, 5))) static slm_status
arg_fail(slm_status code, const slm_comm_t *comm, const char *what,
         const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return slm_fail(code, "%s on rank %d of %d (%s): %s", what, comm->rank,
                    comm->size, comm->ops->name, detail);
}

static slm_status check_comm(const slm_comm_t *comm, const char *what)
{
    if (!comm)
        return slm_fail(SLM_ERR_INVALID, "%s: comm is NULL", what);
    return SLM_OK;
}

static slm_status check_dtype(const slm_comm_t *comm, const char *what,
                              slm_dtype dt)
{
    if (slm_dtype_size(dt) == 0)
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "dtype = %d is not an slm_dtype", (int)dt);
    return SLM_OK;
}

static slm_status check_redop(const slm_comm_t *comm, const char *what,
                              slm_redop op)
{
    if (op != SLM_REDOP_SUM && op != SLM_REDOP_MAX)
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "op = %d is not an slm_redop", (int)op);
    return SLM_OK;
}

/* `count` elements of dt at `buf`: non-NULL unless empty, and a byte size
 * that fits in size_t (returned in *bytes). dt must be valid. */
static slm_status check_buffer(const slm_comm_t *comm, const char *what,
                               const char *arg, const void *buf, size_t count,
                               slm_dtype dt, size_t *bytes)
{
    if (!slm_size_mul(count, slm_dtype_size(dt), bytes))
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "%s: count = %zu elements of %s overflows the address "
                        "space",
                        arg, count, slm_dtype_name(dt));
    if (!buf && count > 0)
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "%s is NULL with count = %zu", arg, count);
    return SLM_OK;
}

static slm_status check_rank_arg(const slm_comm_t *comm, const char *what,
                                 const char *arg, int value)
{
    if (value < 0 || value >= comm->size)
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "%s = %d is out of range [0, %d)", arg, value,
                        comm->size);
    return SLM_OK;
}

/* Whether [a, a + an) and [b, b + bn) share a byte. Compared as integers:
 * relational operators on pointers into different objects are undefined. */
static bool overlap(const void *a, size_t an, const void *b, size_t bn)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return an > 0 && bn > 0 && x < y + bn && y < x + an;
}

/* Runs `piece` over [0, count) in pieces of at most comm->max_count
 * elements, at least once (send/recv exchange empty messages). */
typedef slm_status (*piece_fn)(slm_comm_t *comm, size_t offset_bytes, size_t n,
                               void *ctx);

static slm_status in_pieces(slm_comm_t *comm, const char *what, size_t count,
                            slm_dtype dt, piece_fn piece, void *ctx)
{
    const size_t esz = slm_dtype_size(dt);
    size_t done = 0;
    do {
        size_t n = count - done;
        if (n > comm->max_count)
            n = comm->max_count;
        slm_status rc = piece(comm, done * esz, n, ctx);
        if (rc != SLM_OK) {
            if (n < count)
                return slm_error_prefix(rc,
                                        "%s: piece of %zu elements at %zu "
                                        "of %zu",
                                        what, n, done, count);
            return rc;
        }
        done += n;
    } while (done < count);
    return SLM_OK;
}

/* --- all-reduce --- */

typedef struct {
    const char *send;
    char *recv;
    slm_dtype dt;
    slm_redop op;
    void *stream;
} reduce_args;

static slm_status reduce_piece(slm_comm_t *comm, size_t off, size_t n,
                               void *ctx)
{
    const reduce_args *a = ctx;
    return comm->ops->all_reduce(comm, a->send + off, a->recv + off, n, a->dt,
                                 a->op, a->stream);
}

slm_status slm_comm_all_reduce(const void *send, void *recv, size_t count,
                               slm_dtype dt, slm_redop op, slm_comm_t *comm,
                               void *stream)
{
    static const char what[] = "slm_comm_all_reduce";
    SLM_CHECK(check_comm(comm, what));
    SLM_CHECK(check_dtype(comm, what, dt));
    SLM_CHECK(check_redop(comm, what, op));
    size_t bytes = 0;
    SLM_CHECK(check_buffer(comm, what, "send", send, count, dt, &bytes));
    SLM_CHECK(check_buffer(comm, what, "recv", recv, count, dt, &bytes));
    if (send != recv && overlap(send, bytes, recv, bytes))
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "send %p and recv %p overlap (in place needs send == "
                        "recv)",
                        send, recv);
    if (count == 0)
        return SLM_OK;
    reduce_args a = {send, recv, dt, op, stream};
    double t0 = slm_now_seconds();
    slm_status rc = in_pieces(comm, what, count, dt, reduce_piece, &a);
    comm->seconds += slm_now_seconds() - t0;
    return rc;
}

/* --- all-gather --- */

slm_status slm_comm_all_gather(const void *send, void *recv, size_t send_count,
                               slm_dtype dt, slm_comm_t *comm, void *stream)
{
    static const char what[] = "slm_comm_all_gather";
    SLM_CHECK(check_comm(comm, what));
    SLM_CHECK(check_dtype(comm, what, dt));
    size_t send_bytes = 0, total = 0, recv_bytes = 0;
    SLM_CHECK(
        check_buffer(comm, what, "send", send, send_count, dt, &send_bytes));
    if (!slm_size_mul(send_count, (size_t)comm->size, &total))
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "send_count = %zu times %d ranks overflows", send_count,
                        comm->size);
    SLM_CHECK(check_buffer(comm, what, "recv", recv, total, dt, &recv_bytes));
    /* send_bytes * rank < recv_bytes, which did not overflow. */
    const bool in_place =
        send_count > 0 &&
        (uintptr_t)send == (uintptr_t)recv + send_bytes * (size_t)comm->rank;
    if (!in_place && overlap(send, send_bytes, recv, recv_bytes))
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "send %p overlaps recv %p other than in place (in "
                        "place needs send == recv + rank * send_count)",
                        send, recv);
    if (send_count == 0)
        return SLM_OK;
    if (send_count > comm->max_count)
        return arg_fail(SLM_ERR_RANGE, comm, what,
                        "send_count = %zu is above the backend's limit of "
                        "%zu elements per rank",
                        send_count, comm->max_count);
    double t0 = slm_now_seconds();
    slm_status rc = comm->ops->all_gather(comm, send, recv, send_count, dt,
                                          in_place, stream);
    comm->seconds += slm_now_seconds() - t0;
    return rc;
}

slm_status slm_comm_all_gather_v(const void *send, size_t send_count,
                                 void *recv, const size_t *counts, slm_dtype dt,
                                 slm_comm_t *comm, void *stream)
{
    static const char what[] = "slm_comm_all_gather_v";
    SLM_CHECK(check_comm(comm, what));
    SLM_CHECK(check_dtype(comm, what, dt));
    if (!counts)
        return arg_fail(SLM_ERR_INVALID, comm, what, "counts is NULL");
    if (send_count != counts[comm->rank])
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "send_count = %zu but counts[%d] = %zu", send_count,
                        comm->rank, counts[comm->rank]);
    size_t total = 0, before = 0; /* before: this rank's displacement */
    for (int r = 0; r < comm->size; r++) {
        if (r == comm->rank)
            before = total;
        if (!slm_size_add(total, counts[r], &total))
            return arg_fail(SLM_ERR_INVALID, comm, what,
                            "the sum of counts overflows at counts[%d] = %zu",
                            r, counts[r]);
    }
    size_t send_bytes = 0, recv_bytes = 0;
    SLM_CHECK(
        check_buffer(comm, what, "send", send, send_count, dt, &send_bytes));
    SLM_CHECK(check_buffer(comm, what, "recv", recv, total, dt, &recv_bytes));
    const bool in_place =
        send_count > 0 &&
        (uintptr_t)send == (uintptr_t)recv + before * slm_dtype_size(dt);
    if (!in_place && overlap(send, send_bytes, recv, recv_bytes))
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "send %p overlaps recv %p other than in place (in "
                        "place needs send == recv + %zu elements)",
                        send, recv, before);
    if (total == 0)
        return SLM_OK;
    if (total > comm->max_count)
        return arg_fail(SLM_ERR_RANGE, comm, what,
                        "the counts total %zu elements, above the backend's "
                        "limit of %zu",
                        total, comm->max_count);
    double t0 = slm_now_seconds();
    slm_status rc =
        comm->ops->all_gather_v(comm, send, recv, counts, dt, in_place, stream);
    comm->seconds += slm_now_seconds() - t0;
    return rc;
}

/* --- broadcast --- */

typedef struct {
    const char *send; /* the root's; NULL elsewhere */
    char *recv;
    slm_dtype dt;
    int root;
    void *stream;
} bcast_args;

static slm_status bcast_piece(slm_comm_t *comm, size_t off, size_t n, void *ctx)
{
    const bcast_args *a = ctx;
    return comm->ops->broadcast(comm, a->send ? a->send + off : NULL,
                                a->recv + off, n, a->dt, a->root, a->stream);
}

slm_status slm_comm_broadcast(const void *send, void *recv, size_t count,
                              slm_dtype dt, int root, slm_comm_t *comm,
                              void *stream)
{
    static const char what[] = "slm_comm_broadcast";
    SLM_CHECK(check_comm(comm, what));
    SLM_CHECK(check_dtype(comm, what, dt));
    SLM_CHECK(check_rank_arg(comm, what, "root", root));
    size_t bytes = 0;
    SLM_CHECK(check_buffer(comm, what, "recv", recv, count, dt, &bytes));
    if (comm->rank == root) {
        SLM_CHECK(check_buffer(comm, what, "send", send, count, dt, &bytes));
        if (send != recv && overlap(send, bytes, recv, bytes))
            return arg_fail(SLM_ERR_INVALID, comm, what,
                            "send %p and recv %p overlap on the root (in "
                            "place needs send == recv)",
                            send, recv);
    } else {
        send = NULL; /* not ours to read */
    }
    if (count == 0)
        return SLM_OK;
    bcast_args a = {send, recv, dt, root, stream};
    double t0 = slm_now_seconds();
    slm_status rc = in_pieces(comm, what, count, dt, bcast_piece, &a);
    comm->seconds += slm_now_seconds() - t0;
    return rc;
}

/* --- send / recv --- */

typedef struct {
    char *buf; /* const for send: cast back in send_piece */
    slm_dtype dt;
    int peer;
    void *stream;
} p2p_args;

static slm_status send_piece(slm_comm_t *comm, size_t off, size_t n, void *ctx)
{
    const p2p_args *a = ctx;
    return comm->ops->send(comm, a->buf ? a->buf + off : NULL, n, a->dt,
                           a->peer, a->stream);
}

static slm_status recv_piece(slm_comm_t *comm, size_t off, size_t n, void *ctx)
{
    const p2p_args *a = ctx;
    return comm->ops->recv(comm, a->buf ? a->buf + off : NULL, n, a->dt,
                           a->peer, a->stream);
}

static slm_status p2p(const char *what, void *buf, size_t count, slm_dtype dt,
                      int peer, slm_comm_t *comm, void *stream, bool sending)
{
    SLM_CHECK(check_comm(comm, what));
    SLM_CHECK(check_dtype(comm, what, dt));
    SLM_CHECK(check_rank_arg(comm, what, "peer", peer));
    if (peer == comm->rank)
        return arg_fail(SLM_ERR_INVALID, comm, what,
                        "peer = %d is this rank (a blocking exchange with "
                        "oneself cannot complete)",
                        peer);
    size_t bytes = 0;
    SLM_CHECK(check_buffer(comm, what, "buf", buf, count, dt, &bytes));
    p2p_args a = {buf, dt, peer, stream};
    double t0 = slm_now_seconds();
    slm_status rc =
        in_pieces(comm, what, count, dt, sending ? send_piece : recv_piece, &a);
    comm->seconds += slm_now_seconds() - t0;
    return rc;
}

slm_status slm_comm_send(const void *buf, size_t count, slm_dtype dt, int peer,
                         slm_comm_t *comm, void *stream)
{
    /* The cast only lets send and recv share p2p(); send_piece passes the
     * buffer on to ops->send, which takes it const again. */
    return p2p("slm_comm_send", (void *)(uintptr_t)buf, count, dt, peer, comm,
               stream, true);
}

slm_status slm_comm_recv(void *buf, size_t count, slm_dtype dt, int peer,
                         slm_comm_t *comm, void *stream)
{
    return p2p("slm_comm_recv", buf, count, dt, peer, comm, stream, false);
}

/* --- the communicator itself --- */

int slm_comm_rank(const slm_comm_t *comm)
{
    assert(comm);
    return comm->rank;
}

int slm_comm_size(const slm_comm_t *comm)
{
    assert(comm);
    return comm->size;
}

const char *slm_comm_backend_name(const slm_comm_t *comm)
{
    assert(comm);
    return comm->ops->name;
}

slm_status slm_comm_split(slm_comm_t *parent, int color, int key,
                          slm_comm_t **out)
{
    static const char what[] = "slm_comm_split";
    if (!out)
        return slm_fail(SLM_ERR_INVALID, "%s: out is NULL", what);
    *out = NULL;
    SLM_CHECK(check_comm(parent, what));
    if (color < 0 && color != SLM_COMM_NO_COLOR)
        return arg_fail(SLM_ERR_INVALID, parent, what,
                        "color = %d is negative and not SLM_COMM_NO_COLOR",
                        color);
    return parent->ops->split(parent, color, key, out);
}

void slm_comm_destroy(slm_comm_t **comm)
{
    if (!comm || !*comm)
        return;
    (*comm)->ops->destroy(*comm);
    *comm = NULL;
}

void slm_comm_abort(slm_comm_t *comm, const char *why)
{
    if (!comm)
        return;
    comm->ops->abort(comm, why);
}

double slm_comm_seconds(const slm_comm_t *comm)
{
    assert(comm);
    return comm->seconds;
}

void slm_comm_reset_stats(slm_comm_t *comm)
{
    assert(comm);
    comm->seconds = 0.0;
}
