/*
 * coordinator/run.h - `shardlm run` and `shardlm serve`: a cluster job,
 * started by mpirun with 1 + tp * pp ranks: rank 0 coordinates, the others
 * are shards. Every rank runs the same command line.
 */
#ifndef SLM_COORDINATOR_RUN_H
#define SLM_COORDINATOR_RUN_H

#include <stdbool.h>

/* argv[0] is "run" or "serve". `run` answers a batch (--prompt or --input
 * JSONL); `serve` answers JSON lines from stdin until EOF (the ZeroMQ
 * client API replaces stdin in the serving issue). Returns the process exit
 * status: 0 when every request was answered (a request at fault gets an
 * error line); non-zero, and the whole job ends, when the cluster fails. */
int slm_run_main(int argc, char **argv, bool serve);

#endif
