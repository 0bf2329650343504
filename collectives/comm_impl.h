/*
 * collectives/comm_impl.h - what a collectives backend implements; internal
 * to collectives/ (and to tests that need to reach inside).
 *
 * A backend defines a struct whose first member is `struct slm_comm`, fills a
 * static slm_comm_ops table, and calls slm__comm_init. comm.c validates every
 * argument once (non-NULL buffers, ranges, dtype/op values, overlap, sizes
 * within max_count), splits element-wise operations into pieces of at most
 * max_count elements, and keeps the time statistics, so the ops below may
 * assume:
 *  - comm, dtype and op are valid; peer and root are in [0, size);
 *  - count (or, for the gathers, the per-rank and total counts) is in
 *    [1, max_count] - never 0: comm.c returns early for empty collectives
 *    (send/recv excepted, which may see 0);
 *  - buffers are non-NULL where they hold data and either disjoint or
 *    exactly in the allowed in-place position (the `in_place` argument).
 * They set the slm_fail message on failure.
 */
#ifndef SLM_COLLECTIVES_COMM_IMPL_H
#define SLM_COLLECTIVES_COMM_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "collectives/comm.h"

typedef struct slm_comm_ops {
    const char *name; /* static: "mpi" */
    slm_status (*all_reduce)(slm_comm_t *comm, const void *send, void *recv,
                             size_t count, slm_dtype dt, slm_redop op,
                             void *stream);
    /* in_place: send == recv + rank * send_count (send then unused). */
    slm_status (*all_gather)(slm_comm_t *comm, const void *send, void *recv,
                             size_t send_count, slm_dtype dt, bool in_place,
                             void *stream);
    /* counts (size) in elements, their total in [1, max_count]; rank r's
     * part goes at recv + (counts[0] + ... + counts[r-1]); in_place: send
     * is already there (send then unused). */
    slm_status (*all_gather_v)(slm_comm_t *comm, const void *send, void *recv,
                               const size_t *counts, slm_dtype dt,
                               bool in_place, void *stream);
    /* send is meaningful on the root only, where it may equal recv. */
    slm_status (*broadcast)(slm_comm_t *comm, const void *send, void *recv,
                            size_t count, slm_dtype dt, int root, void *stream);
    slm_status (*send)(slm_comm_t *comm, const void *buf, size_t count,
                       slm_dtype dt, int peer, void *stream);
    slm_status (*recv)(slm_comm_t *comm, void *buf, size_t count, slm_dtype dt,
                       int peer, void *stream);
    /* color is >= 0 or SLM_COMM_NO_COLOR (then *out = NULL); out is
     * non-NULL and already NULL. */
    slm_status (*split)(slm_comm_t *comm, int color, int key, slm_comm_t **out);
    /* Frees everything, the comm included; comm is non-NULL. */
    void (*destroy)(slm_comm_t *comm);
    /* Must not wait for other ranks; comm is non-NULL; why may be NULL. */
    void (*abort)(slm_comm_t *comm, const char *why);
} slm_comm_ops;

/* The part of every communicator that comm.c reads; embedded first in each
 * backend's struct. */
struct slm_comm {
    const slm_comm_ops *ops;
    int rank;
    int size;
    /* Largest element count one backend call may move: per call for
     * all_reduce/broadcast/send/recv (comm.c splits larger ones), per rank
     * for all_gather and in total for all_gather_v (comm.c refuses larger
     * ones). INT_MAX for MPI, whose counts and displacements are int. */
    size_t max_count;
    size_t max_count_limit; /* the backend's own max_count */
    double seconds;         /* see slm_comm_seconds */
};

/* Fills the common header; for backend constructors. */
void slm__comm_init(slm_comm_t *comm, const slm_comm_ops *ops, int rank,
                    int size, size_t max_count);

/* Lowers max_count to n, so tests can exercise the splitting of large
 * counts without allocating gigabytes; n == 0, or n above the backend's own
 * limit, restores that limit. */
void slm__comm_set_max_count(slm_comm_t *comm, size_t n);

#endif
