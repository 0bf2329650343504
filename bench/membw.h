/*
 * bench/membw.h - this machine's memory read bandwidth, measured in the same
 * run as the benchmark it is a reference for.
 */
#ifndef SLM_BENCH_MEMBW_H
#define SLM_BENCH_MEMBW_H

#include <stddef.h>

#include "common/status.h"

/* Reads a buffer of `bytes` (far larger than the caches; 1 GiB is a good
 * value) with `threads` OpenMP threads, `reps` times, with the fastest read
 * loop we can write (vectorized, several independent accumulators, chosen by
 * run-time ISA detection). *best_gbps receives the best repetition in GB/s
 * (1e9 bytes/s). */
slm_status slm_bench_read_bandwidth(size_t bytes, int threads, int reps,
                                    double *best_gbps);

#endif
