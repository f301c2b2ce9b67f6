/*
 * deadline: a condition variable on CLOCK_MONOTONIC, the time on that clock
 * a given span from now (for pthread_cond_timedwait on such a condition),
 * and that clock's time in nanoseconds, for measuring spans.
 */
#ifndef CAIRN_BASE_DEADLINE_H
#define CAIRN_BASE_DEADLINE_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* mono_cond_init: pthread_cond_init for a condition whose timed waits take
 * CLOCK_MONOTONIC deadlines (deadline_after_ns), which a wall-clock step
 * cannot stretch or cut short. */
static inline void mono_cond_init(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

/* mono_now_ns: CLOCK_MONOTONIC now, in nanoseconds. */
static inline int64_t mono_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* mono_now_ms: CLOCK_MONOTONIC now, in milliseconds. */
static inline int64_t mono_now_ms(void)
{
    return mono_now_ns() / 1000000;
}

/* deadline_after_ns: *ts = now (CLOCK_MONOTONIC) + ns; ns >= 0. */
static inline void deadline_after_ns(struct timespec *ts, int64_t ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec += (long)(ns % 1000000000LL);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

#endif
