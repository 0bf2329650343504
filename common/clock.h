/* common/clock.h - monotonic wall-clock seconds, for timings. */
#ifndef SLM_COMMON_CLOCK_H
#define SLM_COMMON_CLOCK_H

#include <time.h>

static inline double slm_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
