/*
 * The wait table: a chained hash of request ID -> waiter.  Waiters are few
 * (bounded by the RPC contexts in flight), so the expiry sweep simply walks
 * every bucket.
 */
#include "daemon/wait.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#define WAIT_BUCKETS 1024 /* a power of two */

struct waiter {
    struct waiter *next;
    uint64_t id;
    int64_t deadline_ns;
    wait_fn fn;
    void *arg;
};

struct wait_table {
    pthread_mutex_t mu;
    size_t count;
    struct waiter *buckets[WAIT_BUCKETS];
};

static size_t bucket_of(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)(id & (WAIT_BUCKETS - 1));
}

struct wait_table *wait_new(void)
{
    struct wait_table *w = calloc(1, sizeof(*w));
    if (w)
        pthread_mutex_init(&w->mu, NULL);
    return w;
}

/* unlink: remove and return every waiter matching (all or deadline <= now) as a list. */
static struct waiter *take_expired(struct wait_table *w, int all, int64_t now_ns)
{
    struct waiter *out = NULL;
    for (size_t b = 0; b < WAIT_BUCKETS; b++) {
        struct waiter **pp = &w->buckets[b];
        while (*pp) {
            struct waiter *x = *pp;
            if (all || x->deadline_ns <= now_ns) {
                *pp = x->next;
                x->next = out;
                out = x;
                w->count--;
            } else {
                pp = &x->next;
            }
        }
    }
    return out;
}

static size_t fail_list(struct waiter *list, int err)
{
    size_t n = 0;
    while (list) {
        struct waiter *next = list->next;
        list->fn(list->arg, NULL, 0, err);
        free(list);
        list = next;
        n++;
    }
    return n;
}

void wait_free(struct wait_table *w, int err)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    struct waiter *list = take_expired(w, 1, 0);
    pthread_mutex_unlock(&w->mu);
    fail_list(list, err);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int wait_add(struct wait_table *w, uint64_t id, int64_t deadline_ns, wait_fn fn, void *arg)
{
    struct waiter *x = malloc(sizeof(*x));
    if (!x)
        return -ENOMEM;
    *x = (struct waiter){.id = id, .deadline_ns = deadline_ns, .fn = fn, .arg = arg};
    size_t b = bucket_of(id);
    pthread_mutex_lock(&w->mu);
    for (struct waiter *y = w->buckets[b]; y; y = y->next) {
        if (y->id == id) {
            pthread_mutex_unlock(&w->mu);
            free(x);
            return -EEXIST;
        }
    }
    x->next = w->buckets[b];
    w->buckets[b] = x;
    w->count++;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int wait_fire(struct wait_table *w, uint64_t id, void *reply, size_t len, int err)
{
    struct waiter *found = NULL;
    size_t b = bucket_of(id);
    pthread_mutex_lock(&w->mu);
    for (struct waiter **pp = &w->buckets[b]; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            found = *pp;
            *pp = found->next;
            w->count--;
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    if (!found)
        return 0;
    found->fn(found->arg, reply, len, err);
    free(found);
    return 1;
}

size_t wait_expire(struct wait_table *w, int64_t now_ns, int err)
{
    pthread_mutex_lock(&w->mu);
    struct waiter *list = w->count ? take_expired(w, 0, now_ns) : NULL;
    pthread_mutex_unlock(&w->mu);
    return fail_list(list, err);
}

size_t wait_count(struct wait_table *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->count;
    pthread_mutex_unlock(&w->mu);
    return n;
}
