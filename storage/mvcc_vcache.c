/*
 * storage/mvcc value cache: values of revisions that readers read, kept in
 * memory, so that a hot key's read skips SQLite's statement (about 5.5k of
 * the member's 28k instructions for a serializable get, docs/performance.md).
 *
 * A revision's value never changes once committed: a put or delete makes a
 * new revision and compaction only removes old ones.  So the cache is keyed
 * by (main, sub) and never invalidated.  Only values read from committed
 * snapshots go in (the applier, whose batch may still roll back and reuse
 * its revisions, neither fills nor consults it), and an entry of a compacted
 * revision is simply never asked for again and ages out.  A store whose
 * files are replaced (a snapshot install) is a new mvcc_store, with a new
 * cache.
 *
 * Buckets of four ways; a bucket's entries are found by the keys held in the
 * bucket, so a lookup touches one cache line before the value.  Eviction is
 * CLOCK: a read marks its way, and the way given up is the first unmarked
 * one after the bucket's hand (which unmarks what it passes).  The bytes
 * held, the bucket table included, stay within the budget: an insert first
 * evicts from the buckets under a global hand until its value fits, so room
 * is taken evenly from the whole cache (evicting only in the new value's own
 * bucket would let small old values keep out bigger new ones).  A full
 * bucket gives up a way of its own.  Locks are striped over the buckets.
 */
#include "storage/mvcc_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define VC_WAYS 4
#define VC_STRIPES 64
#define VC_MIN_BUCKETS 16
/* A bucket per this many bytes of budget: four ways of 256-byte values. */
#define VC_BYTES_PER_BUCKET (VC_WAYS * 256)

struct vc_item {
    size_t len;
    unsigned char data[];
};

struct vc_bucket {
    int64_t main[VC_WAYS];
    uint32_t sub[VC_WAYS];
    struct vc_item *item[VC_WAYS]; /* NULL: the way is free */
    uint8_t used;                  /* bit per way: read since the hand passed */
    uint8_t hand;
};

struct vcache {
    size_t budget, max_value, mask;
    struct vc_bucket *b;
    pthread_mutex_t stripe[VC_STRIPES];
    _Atomic size_t bytes;
    _Atomic size_t hand; /* the bucket evict_one looks at next */
    _Atomic uint64_t hits, misses;
};

static size_t item_cost(size_t len)
{
    return sizeof(struct vc_item) + len + 16; /* 16: malloc's own header, about */
}

int vcache_new(size_t budget, struct vcache **out)
{
    *out = NULL;
    size_t n = VC_MIN_BUCKETS;
    while (n * 2 <= budget / VC_BYTES_PER_BUCKET)
        n *= 2;
    if (budget < n * sizeof(struct vc_bucket) * 2)
        return 0; /* too small to hold anything beside its table: no cache */
    struct vcache *vc = calloc(1, sizeof(*vc));
    if (!vc || !(vc->b = calloc(n, sizeof(*vc->b)))) {
        free(vc);
        return -ENOMEM;
    }
    vc->budget = budget;
    vc->max_value = budget / 64;
    vc->mask = n - 1;
    atomic_init(&vc->bytes, n * sizeof(*vc->b));
    atomic_init(&vc->hand, 0);
    atomic_init(&vc->hits, 0);
    atomic_init(&vc->misses, 0);
    for (size_t i = 0; i < VC_STRIPES; i++)
        pthread_mutex_init(&vc->stripe[i], NULL);
    *out = vc;
    return 0;
}

void vcache_free(struct vcache *vc)
{
    if (!vc)
        return;
    for (size_t i = 0; i <= vc->mask; i++)
        for (int w = 0; w < VC_WAYS; w++)
            free(vc->b[i].item[w]);
    for (size_t i = 0; i < VC_STRIPES; i++)
        pthread_mutex_destroy(&vc->stripe[i]);
    free(vc->b);
    free(vc);
}

static size_t bucket_of(const struct vcache *vc, int64_t main, uint32_t sub)
{
    uint64_t h = ((uint64_t)main * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)sub * 0xc2b2ae3d27d4eb4fULL);
    return (size_t)(h >> 32) & vc->mask;
}

static int way_of(const struct vc_bucket *b, int64_t main, uint32_t sub)
{
    for (int w = 0; w < VC_WAYS; w++)
        if (b->item[w] && b->main[w] == main && b->sub[w] == sub)
            return w;
    return -1;
}

int vcache_get(struct vcache *vc, struct arena *a, int64_t main, uint32_t sub, struct mvcc_buf *out)
{
    size_t i = bucket_of(vc, main, sub);
    struct vc_bucket *b = &vc->b[i];
    pthread_mutex_t *mu = &vc->stripe[i % VC_STRIPES];
    int rc = 0;
    pthread_mutex_lock(mu);
    int w = way_of(b, main, sub);
    if (w >= 0) {
        b->used |= (uint8_t)(1u << w);
        const struct vc_item *it = b->item[w];
        void *d = arena_dup(a, it->data, it->len);
        if (d) {
            *out = (struct mvcc_buf){d, it->len};
            rc = 1;
        } else {
            rc = -ENOMEM;
        }
    }
    pthread_mutex_unlock(mu);
    atomic_fetch_add_explicit(rc == 1 ? &vc->hits : &vc->misses, 1, memory_order_relaxed);
    return rc;
}

/* The way CLOCK gives up in b (an occupied one not read since the hand
 * last passed it), or -1 if b is empty. */
static int clock_victim(struct vc_bucket *b)
{
    for (int k = 0; k < 2 * VC_WAYS; k++) {
        int w = b->hand;
        b->hand = (uint8_t)((b->hand + 1) % VC_WAYS);
        if (!b->item[w])
            continue;
        if (!(b->used & (1u << w)))
            return w;
        b->used &= (uint8_t)~(1u << w);
    }
    return -1;
}

/* Take way w's item out of b (under b's lock); the caller frees it. */
static struct vc_item *take(struct vcache *vc, struct vc_bucket *b, int w)
{
    struct vc_item *it = b->item[w];
    b->item[w] = NULL;
    b->used &= (uint8_t)~(1u << w);
    atomic_fetch_sub_explicit(&vc->bytes, item_cost(it->len), memory_order_relaxed);
    return it;
}

/* Evict one value from the bucket under the global hand (or the next one
 * that holds any), so a full cache gives up room evenly over all buckets
 * whatever bucket the new value falls in.  false if the few buckets looked
 * at were all empty. */
static bool evict_one(struct vcache *vc)
{
    for (int tries = 0; tries < 16; tries++) {
        size_t i = atomic_fetch_add_explicit(&vc->hand, 1, memory_order_relaxed) & vc->mask;
        struct vc_bucket *b = &vc->b[i];
        pthread_mutex_t *mu = &vc->stripe[i % VC_STRIPES];
        pthread_mutex_lock(mu);
        int w = clock_victim(b);
        struct vc_item *it = w >= 0 ? take(vc, b, w) : NULL;
        pthread_mutex_unlock(mu);
        if (it) {
            free(it);
            return true;
        }
    }
    return false;
}

void vcache_put(struct vcache *vc, int64_t main, uint32_t sub, const void *p, size_t len)
{
    if (len > vc->max_value)
        return;
    size_t cost = item_cost(len);
    /* Make room first, with no lock held.  Inserts on other stripes may do
     * the same at the same moment, so the budget can be passed by what
     * they insert at once: a value per thread at most. */
    for (int n = 0; atomic_load_explicit(&vc->bytes, memory_order_relaxed) + cost > vc->budget; n++)
        if (n == 64 || !evict_one(vc))
            return; /* work per insert stays bounded: a big value among small ones gets in over a few reads */
    struct vc_item *it = malloc(sizeof(*it) + len);
    if (!it)
        return; /* a cache: nothing is lost */
    it->len = len;
    if (len)
        memcpy(it->data, p, len);
    size_t i = bucket_of(vc, main, sub);
    struct vc_bucket *b = &vc->b[i];
    pthread_mutex_t *mu = &vc->stripe[i % VC_STRIPES];
    struct vc_item *old = NULL;
    pthread_mutex_lock(mu);
    if (way_of(b, main, sub) < 0) {
        int w = 0;
        while (w < VC_WAYS && b->item[w])
            w++;
        if (w == VC_WAYS)
            old = take(vc, b, w = clock_victim(b));
        atomic_fetch_add_explicit(&vc->bytes, cost, memory_order_relaxed);
        b->main[w] = main;
        b->sub[w] = sub;
        b->item[w] = it;
        it = NULL;
    }
    pthread_mutex_unlock(mu);
    free(old);
    free(it); /* another reader cached it first */
}

void vcache_stats(struct vcache *vc, struct mvcc_status *st)
{
    if (!vc)
        return;
    st->value_cache_hits = atomic_load_explicit(&vc->hits, memory_order_relaxed);
    st->value_cache_misses = atomic_load_explicit(&vc->misses, memory_order_relaxed);
    st->value_cache_bytes = (int64_t)atomic_load_explicit(&vc->bytes, memory_order_relaxed);
}
