/* bench/membw.c - placeholder until the probe lands. */
#include "bench/membw.h"

slm_status slm_bench_read_bandwidth(size_t bytes, int threads, int reps,
                                    double *best_gbps)
{
    (void)bytes; (void)threads; (void)reps;
    *best_gbps = 0.0;
    return slm_fail(SLM_ERR_UNSUPPORTED, "not yet");
}
