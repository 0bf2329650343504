/*
 * coordinator/cluster.h - the coordinator's handle on its shards.
 *
 * Rank 0 binds a ZeroMQ ROUTER for the control plane and hands its endpoint
 * to the shards through MPI (bootstrap only); each shard connects, says Hello
 * once its slice is loaded, and then runs one Step per position, answering
 * with a StepResult (the decider shard's carries the logits). Each shard also
 * beats from a second socket of its own thread. A shard that does not
 * answer within the timeout, answers out of turn, or stops beating fails the
 * step: the coordinator never waits forever, and learns of a lost shard in
 * about a second rather than at the end of a step's deadline.
 */
#ifndef SLM_COORDINATOR_CLUSTER_H
#define SLM_COORDINATOR_CLUSTER_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/generate.h"
#include "model/checkpoint.h"

/* Default control endpoint: loopback only, port chosen by the system. */
#define SLM_CLUSTER_DEFAULT_BIND "tcp://127.0.0.1:*"
/* Longest endpoint string exchanged at bootstrap. */
#define SLM_CLUSTER_ENDPOINT_MAX 256

typedef struct slm_cluster slm_cluster_t;

typedef struct {
    int timeout_ms;           /* for every Hello, and each step's answers */
    int heartbeat_ms;         /* the shards' beat interval */
    int heartbeat_timeout_ms; /* a shard silent this long is lost */
} slm_cluster_timing;

/* 30 s, beats every 200 ms, lost after 1 s of silence: a dead or stopped
 * shard is named well inside 2 s, and a busy host has five beats of slack. */
slm_cluster_timing slm_cluster_default_timing(void);

/* On rank 0 of `world` (shards are ranks 1..n_shards): binds `bind`, sends
 * the endpoint to every rank, and waits up to timing->timeout_ms for every
 * shard's Hello. cfg and kv (resolved with slm_kv_config_resolve, as every
 * shard resolves it) are copied. The caller owns *out; free with
 * slm_cluster_destroy (after slm_cluster_shutdown).
 *
 * From then on every wait of the cluster also watches the shards' health:
 * a shard whose heartbeats stop for heartbeat_timeout_ms, or whose
 * connection drops and whose beats then stop, is lost. A lost shard fails
 * the wait, and every later call, with SLM_ERR_UNAVAILABLE and a message
 * naming its rank: a tensor group cannot go on without a member. */
slm_status slm_cluster_create(MPI_Comm world, const slm_model_config *cfg,
                              const slm_kv_config *kv, int32_t n_shards,
                              int32_t decider, const char *bind,
                              const slm_cluster_timing *timing,
                              slm_cluster_t **out);

/* A socket of the caller's (the client front end) that the cluster's waits
 * watch too, so that requests are taken in while a step runs: fn(user,
 * readable) is called after every wake-up of a wait - at least every
 * SLM_CLUSTER_TICK_MS - with readable set when sock has input. A non-OK
 * return ends the wait with that status. */
#define SLM_CLUSTER_TICK_MS 50
typedef slm_status (*slm_cluster_watch_fn)(void *user, bool readable);
void slm_cluster_watch(slm_cluster_t *c, void *sock, slm_cluster_watch_fn fn,
                       void *user);

/* Waits up to timeout_ms for the watched socket or the shards, handling
 * what arrives; returns early after the watch function ran on input. */
slm_status slm_cluster_pump(slm_cluster_t *c, int timeout_ms);

/* The index of the lost shard, or -1 while all are healthy. */
int32_t slm_cluster_lost_shard(const slm_cluster_t *c);

/* Milliseconds since shard `shard`'s last heartbeat. */
double slm_cluster_heartbeat_age_ms(const slm_cluster_t *c, int32_t shard);

int32_t slm_cluster_shards(const slm_cluster_t *c);
const slm_cluster_timing *slm_cluster_get_timing(const slm_cluster_t *c);

/* Whether some shard said in its Hello that it takes only one sequence of
 * one token per step (the GPU backend): schedule no batches then. */
bool slm_cluster_single_sequence(const slm_cluster_t *c);

/* The cluster as a generation runner (coordinator/generate.h). */
slm_model_runner slm_cluster_runner(slm_cluster_t *c);

/* Bytes of weights shard `shard` reported holding. */
uint64_t slm_cluster_shard_weight_bytes(const slm_cluster_t *c, int32_t shard);

/* Tells every shard to leave its loop and waits, up to the heartbeat
 * timeout, for all of them to close their connections. SLM_ERR_UNAVAILABLE
 * if some did not (stopped, or stuck): the caller must then end the job with
 * MPI_Abort rather than wait in MPI_Finalize. */
slm_status slm_cluster_shutdown(slm_cluster_t *c, const char *reason);

/* Accepts NULL; sets *c to NULL. */
void slm_cluster_destroy(slm_cluster_t **c);

#endif
