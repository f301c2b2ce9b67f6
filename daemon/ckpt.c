/* The store's checkpointer thread (ckpt.h). */
#include "daemon/ckpt.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/histogram.h"
#include "base/log.h"
#include "storage/mvcc.h"

#define CKPT_MIN_GAP_NS 20000000LL  /* between checkpoints that keep coming due (readers hold one back) */
#define CKPT_SLOW_NS 1000000000LL   /* a checkpoint or sync slower than this is logged */

struct ckpt {
    struct ckpt_ops ops;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;              /* on CLOCK_MONOTONIC */
    bool due, sync_wanted, stopping;
    int64_t last_run_ns;              /* when the last checkpoint began (the thread's) */
    struct mvcc_checkpointer *handle; /* under the owner's hold, or its exclusive hold */
};

/* Run fn on the held store's checkpointer connection, opened on first use. */
static int with_handle(struct ckpt *k, int (*fn)(struct mvcc_checkpointer *))
{
    struct mvcc_store *s = k->ops.hold(k->ops.arg);
    int rc = -CAIRN_E_STOPPED;
    if (s && (k->handle || (rc = mvcc_checkpointer_open(s, &k->handle)) == 0))
        rc = fn(k->handle);
    k->ops.release(k->ops.arg);
    return rc;
}

static void logged(const char *what, int rc, int64_t took_ns)
{
    if (rc < 0)
        log_err(NULL, "%s of the store failed: %s", what, cairn_strerror(rc));
    else if (took_ns > CKPT_SLOW_NS)
        log_warning(LOG_FIELDS(LOG_I64("CAIRN_DURATION_MS", took_ns / 1000000)),
                    "slow %s of the store: %" PRId64 " ms (expected well under a second; check the disk)", what,
                    took_ns / 1000000);
}

static void *ckpt_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-ckpt"); /* top -H, perf and gdb show it */
    struct ckpt *k = arg;
    pthread_mutex_lock(&k->mu);
    for (;;) {
        int64_t now = mono_now_ns(), gap_end = k->last_run_ns + CKPT_MIN_GAP_NS;
        bool run = k->due && now >= gap_end;
        if (k->stopping)
            break;
        if (!run && !k->sync_wanted) {
            if (k->due) { /* due, but within the gap */
                struct timespec ts;
                deadline_after_ns(&ts, gap_end - now);
                pthread_cond_timedwait(&k->cond, &k->mu, &ts);
            } else {
                pthread_cond_wait(&k->cond, &k->mu);
            }
            continue;
        }
        bool sync = k->sync_wanted;
        k->sync_wanted = false;
        if (run || sync) /* a sync checkpoints too */
            k->due = false;
        k->last_run_ns = now;
        pthread_mutex_unlock(&k->mu);

        int rc = with_handle(k, sync ? mvcc_checkpointer_sync : mvcc_checkpointer_run);
        int64_t took = mono_now_ns() - now;
        logged(sync ? "sync" : "checkpoint", rc, took);
        if (rc >= 0 && k->ops.durations)
            histogram_observe_ns(k->ops.durations, (uint64_t)took);
        if (sync)
            k->ops.synced(k->ops.arg, rc < 0 ? rc : 0);
        pthread_mutex_lock(&k->mu);
    }
    bool sync = k->sync_wanted;
    k->sync_wanted = false;
    pthread_mutex_unlock(&k->mu);
    if (sync)
        k->ops.synced(k->ops.arg, -CAIRN_E_STOPPED);
    return NULL;
}

int ckpt_start(const struct ckpt_ops *ops, struct ckpt **out)
{
    struct ckpt *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->ops = *ops;
    pthread_mutex_init(&k->mu, NULL);
    mono_cond_init(&k->cond);
    int rc = -pthread_create(&k->thread, NULL, ckpt_main, k);
    if (rc < 0) {
        pthread_cond_destroy(&k->cond);
        pthread_mutex_destroy(&k->mu);
        free(k);
        return rc;
    }
    *out = k;
    return 0;
}

void ckpt_due(struct ckpt *k)
{
    pthread_mutex_lock(&k->mu);
    if (!k->due) {
        k->due = true;
        pthread_cond_signal(&k->cond);
    }
    pthread_mutex_unlock(&k->mu);
}

void ckpt_sync(struct ckpt *k)
{
    pthread_mutex_lock(&k->mu);
    k->sync_wanted = true;
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->mu);
}

void ckpt_store_closing(struct ckpt *k)
{
    mvcc_checkpointer_close(k->handle);
    k->handle = NULL;
}

void ckpt_stop(struct ckpt *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&k->mu);
    k->stopping = true;
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
    mvcc_checkpointer_close(k->handle);
    pthread_cond_destroy(&k->cond);
    pthread_mutex_destroy(&k->mu);
    free(k);
}
