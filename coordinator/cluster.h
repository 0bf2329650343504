/*
 * coordinator/cluster.h - the coordinator's handle on its shards.
 *
 * Rank 0 binds a ZeroMQ ROUTER for the control plane and hands its endpoint
 * to the shards through MPI (bootstrap only); each shard connects, says Hello
 * once its slice is loaded, and then runs one Step per position, answering
 * with a StepResult (the decider shard's carries the logits). A shard that
 * does not answer within the timeout, or answers out of turn, fails the
 * step: the coordinator never waits forever.
 */
#ifndef SLM_COORDINATOR_CLUSTER_H
#define SLM_COORDINATOR_CLUSTER_H

#include <mpi.h>
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

/* On rank 0 of `world` (shards are ranks 1..n_shards): binds `bind`, sends
 * the endpoint to every rank, and waits up to timeout_ms for every shard's
 * Hello. cfg is copied. The caller owns *out; free with
 * slm_cluster_destroy (after slm_cluster_shutdown). */
slm_status slm_cluster_create(MPI_Comm world, const slm_model_config *cfg,
                              int32_t n_shards, int32_t decider,
                              const char *bind, int timeout_ms,
                              slm_cluster_t **out);

/* The cluster as a generation runner (coordinator/generate.h). */
slm_model_runner slm_cluster_runner(slm_cluster_t *c);

/* Bytes of weights shard `shard` reported holding. */
uint64_t slm_cluster_shard_weight_bytes(const slm_cluster_t *c, int32_t shard);

/* Tells every shard to leave its loop. Best effort: a shard that is gone is
 * not waited for. */
void slm_cluster_shutdown(slm_cluster_t *c, const char *reason);

/* Accepts NULL; sets *c to NULL. */
void slm_cluster_destroy(slm_cluster_t **c);

#endif
