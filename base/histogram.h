/*
 * Latency histograms for metrics: fixed exponential buckets (upper bounds
 * 100 us * 2^i, i = 0..HISTOGRAM_BUCKETS-1, the last about 13 s, plus +Inf),
 * updated with relaxed atomics so any thread may observe without a lock.
 * A reader gets a copy that may be a few observations behind, which is what
 * Prometheus expects of a scrape.
 */
#ifndef CAIRN_BASE_HISTOGRAM_H
#define CAIRN_BASE_HISTOGRAM_H

#include <stdint.h>

#define HISTOGRAM_BUCKETS 18

struct histogram {
    uint64_t counts[HISTOGRAM_BUCKETS + 1]; /* per bucket, not cumulative; the last is +Inf */
    uint64_t count;
    uint64_t sum_ns;
};

/* histogram_bound_ns: the upper bound of bucket i (i < HISTOGRAM_BUCKETS) in nanoseconds. */
static inline uint64_t histogram_bound_ns(unsigned i)
{
    return 100000ULL << i;
}

/* histogram_observe_ns: count one observation of ns nanoseconds. */
void histogram_observe_ns(struct histogram *h, uint64_t ns);

/* histogram_read: a copy of h (per-bucket counts, as stored). */
void histogram_read(const struct histogram *h, struct histogram *out);

#endif
