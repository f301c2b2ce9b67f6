/*
 * within: a call on its own thread, waited for until a deadline.  Why: within.h.
 *
 * The record is shared by the caller and the thread; whichever of them
 * looks at it last frees it: the caller when the call returned in time, the
 * thread when the caller gave up first.
 */
#include "base/within.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "base/deadline.h"

struct call {
    void (*fn)(void *);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    bool done, abandoned;
};

static unsigned abandoned_total;

static void call_free(struct call *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void *call_main(void *arg)
{
    struct call *c = arg;
    c->fn(c->arg);
    pthread_mutex_lock(&c->mu);
    c->done = true;
    bool orphan = c->abandoned;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (orphan)
        call_free(c);
    return NULL;
}

int call_within(void (*fn)(void *), void *arg, unsigned ms)
{
    struct call *c = calloc(1, sizeof(*c));
    pthread_attr_t ta;
    pthread_t t;
    if (!c) {
        fn(arg);
        return 0;
    }
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_init(&c->mu, NULL);
    mono_cond_init(&c->cv);
    pthread_attr_init(&ta);
    pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &ta, call_main, c);
    pthread_attr_destroy(&ta);
    if (rc != 0) {
        call_free(c);
        fn(arg);
        return 0;
    }
    struct timespec until;
    deadline_after_ns(&until, (int64_t)ms * 1000000);
    pthread_mutex_lock(&c->mu);
    while (!c->done && pthread_cond_timedwait(&c->cv, &c->mu, &until) != ETIMEDOUT)
        ;
    if (!c->done) {
        c->abandoned = true; /* the thread frees c if the call ever returns */
        pthread_mutex_unlock(&c->mu);
        __atomic_add_fetch(&abandoned_total, 1, __ATOMIC_RELAXED);
        return -ETIMEDOUT;
    }
    pthread_mutex_unlock(&c->mu);
    call_free(c);
    return 0;
}

unsigned call_within_abandoned(void)
{
    return __atomic_load_n(&abandoned_total, __ATOMIC_RELAXED);
}
