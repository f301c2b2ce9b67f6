/*
 * The wait table: a chained hash of request ID -> waiter.  Waiters are few
 * (bounded by the RPC contexts in flight), so the expiry sweep simply walks
 * every bucket.  A fired waiter that is held for a batch (wait_hold) keeps
 * its record, now carrying the reply, on the holder's list and then on the
 * sender thread's queue until its call is made.
 */
#include "daemon/wait.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "daemon/rpc.h"

#define WAIT_BUCKETS 1024 /* a power of two */

struct waiter {
    struct waiter *next;
    uint64_t id;
    int64_t deadline_ns;
    wait_fn fn;
    void *arg;
    int flags;
    /* once fired and held: what fn is to be called with */
    void *reply;
    size_t len;
    int err;
};

struct wait_table {
    pthread_mutex_t mu;
    size_t count;
    struct waiter *buckets[WAIT_BUCKETS];
    /* the holder's batch (only the holding thread touches these) */
    struct waiter *held, *held_tail;
    size_t n_held;
    /* the sender thread, started when a batch is first handed to it */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    struct waiter *q, *q_tail;
    bool q_busy; /* the sender is making calls it took off q */
    bool q_started, q_stopping;
    pthread_t q_thread;
};

/* The table whose replies this thread holds now (wait_hold), if any. */
static _Thread_local struct wait_table *held_here;

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
    if (w) {
        pthread_mutex_init(&w->mu, NULL);
        pthread_mutex_init(&w->q_mu, NULL);
        pthread_cond_init(&w->q_cv, NULL);
    }
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

/*
 * Make the held calls of list, in order, and free their records.  They send
 * replies, in one batch (rpc_batch_begin): those to one connection leave
 * together.
 */
static void call_held(struct waiter *list)
{
    rpc_batch_begin();
    while (list) {
        struct waiter *next = list->next;
        list->fn(list->arg, list->reply, list->len, list->err);
        free(list);
        list = next;
    }
    rpc_batch_end();
}

static void *sender_main(void *arg)
{
    struct wait_table *w = arg;
    pthread_setname_np(pthread_self(), "cairn-replies");
    pthread_mutex_lock(&w->q_mu);
    for (;;) {
        while (!w->q && !w->q_stopping)
            pthread_cond_wait(&w->q_cv, &w->q_mu);
        if (!w->q)
            break; /* stopping, and everything handed over is sent */
        struct waiter *list = w->q;
        w->q = w->q_tail = NULL;
        w->q_busy = true;
        pthread_mutex_unlock(&w->q_mu);
        call_held(list);
        pthread_mutex_lock(&w->q_mu);
        w->q_busy = false;
    }
    pthread_mutex_unlock(&w->q_mu);
    return NULL;
}

void wait_hold(struct wait_table *w)
{
    held_here = w;
}

void wait_release(struct wait_table *w)
{
    if (held_here == w)
        held_here = NULL;
    struct waiter *list = w->held, *tail = w->held_tail;
    size_t n = w->n_held;
    w->held = w->held_tail = NULL;
    w->n_held = 0;
    if (!list)
        return;
    pthread_mutex_lock(&w->q_mu);
    /* Here when few and nothing sent earlier is still queued: the sender
     * thread's wake-up would cost more than the sends themselves, and one
     * request in flight should not wait for a second thread. */
    bool here = n <= WAIT_INLINE_MAX && !w->q && !w->q_busy;
    if (!here && !w->q_started) {
        if (pthread_create(&w->q_thread, NULL, sender_main, w) == 0)
            w->q_started = true;
        else
            here = true; /* no thread: this one sends them all, as before */
    }
    if (!here) {
        if (w->q_tail)
            w->q_tail->next = list;
        else
            w->q = list;
        w->q_tail = tail;
        pthread_cond_signal(&w->q_cv);
    }
    pthread_mutex_unlock(&w->q_mu);
    if (here)
        call_held(list);
}

void wait_free(struct wait_table *w, int err)
{
    if (!w)
        return;
    if (held_here == w)
        wait_release(w);
    pthread_mutex_lock(&w->q_mu);
    w->q_stopping = true;
    pthread_cond_signal(&w->q_cv);
    pthread_mutex_unlock(&w->q_mu);
    if (w->q_started)
        pthread_join(w->q_thread, NULL);
    pthread_mutex_lock(&w->mu);
    struct waiter *list = take_expired(w, 1, 0);
    pthread_mutex_unlock(&w->mu);
    fail_list(list, err);
    pthread_cond_destroy(&w->q_cv);
    pthread_mutex_destroy(&w->q_mu);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int wait_add(struct wait_table *w, uint64_t id, int64_t deadline_ns, wait_fn fn, void *arg, int flags)
{
    struct waiter *x = malloc(sizeof(*x));
    if (!x)
        return -ENOMEM;
    *x = (struct waiter){.id = id, .deadline_ns = deadline_ns, .fn = fn, .arg = arg, .flags = flags};
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
    if (reply && (found->flags & WAIT_DEFER) && held_here == w) {
        found->reply = reply;
        found->len = len;
        found->err = err;
        found->next = NULL;
        if (w->held_tail)
            w->held_tail->next = found;
        else
            w->held = found;
        w->held_tail = found;
        w->n_held++;
        return 1;
    }
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
