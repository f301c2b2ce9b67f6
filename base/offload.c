#include "base/offload.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct offload {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;  /* the thread waits here for a call or the stop */
    pthread_cond_t done_cond; /* the owner waits here for the result */
    offload_fn fn;        /* the call given and not yet started; NULL: none */
    void *arg;
    int finished;         /* it returned rc */
    int rc;
    int stopping;
    char name[16];
};

static void *offload_main(void *p)
{
    struct offload *o = p;
    pthread_setname_np(pthread_self(), o->name);
    pthread_mutex_lock(&o->mu);
    for (;;) {
        while (!o->fn && !o->stopping)
            pthread_cond_wait(&o->cond, &o->mu);
        if (!o->fn)
            break;
        offload_fn fn = o->fn;
        void *arg = o->arg;
        o->fn = NULL;
        pthread_mutex_unlock(&o->mu);
        int rc = fn(arg);
        pthread_mutex_lock(&o->mu);
        o->rc = rc;
        o->finished = 1;
        pthread_cond_signal(&o->done_cond);
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

int offload_start(const char *name, struct offload **out)
{
    struct offload *o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    snprintf(o->name, sizeof o->name, "%s", name);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cond, NULL);
    pthread_cond_init(&o->done_cond, NULL);
    int rc = pthread_create(&o->thread, NULL, offload_main, o);
    if (rc != 0) {
        pthread_cond_destroy(&o->done_cond);
        pthread_cond_destroy(&o->cond);
        pthread_mutex_destroy(&o->mu);
        free(o);
        return -rc;
    }
    *out = o;
    return 0;
}

void offload_begin(struct offload *o, offload_fn fn, void *arg)
{
    pthread_mutex_lock(&o->mu);
    o->fn = fn;
    o->arg = arg;
    o->finished = 0;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->mu);
}

int offload_end(struct offload *o)
{
    pthread_mutex_lock(&o->mu);
    while (!o->finished)
        pthread_cond_wait(&o->done_cond, &o->mu);
    o->finished = 0;
    int rc = o->rc;
    pthread_mutex_unlock(&o->mu);
    return rc;
}

void offload_stop(struct offload *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->mu);
    o->stopping = 1;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->thread, NULL);
    pthread_cond_destroy(&o->done_cond);
    pthread_cond_destroy(&o->cond);
    pthread_mutex_destroy(&o->mu);
    free(o);
}
