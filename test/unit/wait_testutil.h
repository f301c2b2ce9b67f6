/*
 * Header-only helper for tests that wait on other threads: WAIT_FOR(cond, ms)
 * evaluates cond every 5 ms until it holds or ms pass, and is whether it
 * came to hold.  A test asserts what must happen with a generous ms and
 * never asserts how fast it happened.
 */
#ifndef CAIRN_TEST_WAIT_TESTUTIL_H
#define CAIRN_TEST_WAIT_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void nap(void)
{
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
}

#define WAIT_FOR(cond, ms)                             \
    ({                                                 \
        uint64_t end_ = now_ms() + (ms);               \
        bool ok_ = false;                              \
        while (!(ok_ = (cond)) && now_ms() < end_)     \
            nap();                                     \
        ok_;                                           \
    })

#endif
