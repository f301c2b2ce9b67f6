#include "base/histogram.h"

void histogram_observe_ns(struct histogram *h, uint64_t ns)
{
    unsigned i = 0;
    while (i < HISTOGRAM_BUCKETS && ns > histogram_bound_ns(i))
        i++;
    __atomic_add_fetch(&h->counts[i], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->sum_ns, ns, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->count, 1, __ATOMIC_RELAXED);
}

void histogram_read(const struct histogram *h, struct histogram *out)
{
    for (unsigned i = 0; i <= HISTOGRAM_BUCKETS; i++)
        out->counts[i] = __atomic_load_n(&h->counts[i], __ATOMIC_RELAXED);
    out->sum_ns = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);
    out->count = __atomic_load_n(&h->count, __ATOMIC_RELAXED);
}
