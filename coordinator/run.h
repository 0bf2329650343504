/*
 * coordinator/run.h - `shardlm run`: an offline batch job on a cluster,
 * started by mpirun with 1 + tp * pp ranks: rank 0 coordinates, the others
 * are shards. Every rank runs the same command line.
 */
#ifndef SLM_COORDINATOR_RUN_H
#define SLM_COORDINATOR_RUN_H

/* argv[0] is "run". Returns the process exit status: 0 when every request
 * was answered; non-zero (and the whole job ends) otherwise. */
int slm_run_main(int argc, char **argv);

#endif
