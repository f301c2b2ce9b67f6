/*
 * The read path.  Reads move through four lists under one mutex:
 *   pending  - linearizable reads that arrived since the last ReadIndex went out
 *   inflight - the reads covered by the one ReadIndex request in flight (ctx)
 *   waiting  - reads whose read index is known, until the store applies it
 *   ready    - reads the pool may run now
 * Only one ReadIndex is in flight at a time: everything arriving meanwhile is
 * batched into the next one (etcd's linearizableReadLoop).  A ReadIndex lost
 * to a leader change or a dropped message is re-issued; a read past its
 * deadline fails (NO_LEADER when no leader is known, else TIMEOUT).
 *
 * On a leader that is the only voter, a ReadIndex would be answered at once
 * with the commit index, which the node publishes (node_solo_read_index):
 * a linearizable read takes it at submission and skips the round through
 * the node thread.  If the store has applied that index already, a cheap
 * one runs on the submitting thread like a serializable read.
 */
#include "daemon/reads.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"

#define REISSUE_NS 500000000LL   /* a ReadIndex unanswered this long is sent again */
#define TIMER_NS 50000000LL      /* deadline and re-issue checks */
#define MAX_THREADS 16
/* Store handles for cheap reads run by the submitting thread (one of nng's
 * few worker threads): enough for each of them to have one. */
#define INLINE_SLOTS 4

struct list {
    struct read_job *head, *tail;
};

struct reads {
    struct node *node;
    int nthreads;
    pthread_t threads[MAX_THREADS];
    pthread_t timer;
    int started;

    pthread_mutex_t mu;
    pthread_cond_t work;     /* ready is not empty, or stopping */
    pthread_cond_t tick;     /* the timer thread sleeps here */
    int stopping;
    struct list pending, inflight, waiting, ready;
    uint64_t inflight_ctx;   /* 0: none in flight */
    int64_t inflight_since;
    uint64_t next_ctx;
    _Atomic uint64_t applied; /* written under mu; read without it by reads_submit */
    _Atomic uint64_t rounds, solo; /* struct reads_stats */
    uint64_t lead;
    int running;
    struct node_reader_slot islots[INLINE_SLOTS];
    atomic_int ibusy[INLINE_SLOTS]; /* 1 while a submitting thread uses that handle */
    atomic_int iused[INLINE_SLOTS]; /* 1 if used since the timer's last look: idle handles release their read */
    atomic_int istopping;           /* set under mu with stopping: no inline run starts after it */
};

static void push(struct list *l, struct read_job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static void append(struct list *dst, struct list *src)
{
    if (!src->head)
        return;
    if (dst->tail)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    src->head = src->tail = NULL;
}

/* Send the ReadIndex for everything pending, if none is in flight.  Called with mu held. */
static void issue(struct reads *rs)
{
    if (rs->inflight_ctx || !rs->pending.head || !rs->node)
        return;
    append(&rs->inflight, &rs->pending);
    rs->inflight_ctx = ++rs->next_ctx;
    atomic_fetch_add_explicit(&rs->rounds, 1, memory_order_relaxed);
    rs->inflight_since = mono_now_ns();
    if (node_read_index(rs->node, rs->inflight_ctx) < 0)
        rs->inflight_since = 0; /* the timer re-issues */
}

/* Move waiting reads whose index is applied to ready.  Called with mu held. */
static void release_applied(struct reads *rs)
{
    struct read_job **pp = &rs->waiting.head, *last = NULL;
    int moved = 0;
    while (*pp) {
        struct read_job *j = *pp;
        if (j->index <= rs->applied) {
            *pp = j->next;
            push(&rs->ready, j);
            moved = 1;
        } else {
            last = j;
            pp = &j->next;
        }
    }
    rs->waiting.tail = last;
    if (moved)
        pthread_cond_broadcast(&rs->work);
}

static void on_read_ready(void *arg, uint64_t ctx, uint64_t index)
{
    struct reads *rs = arg;
    pthread_mutex_lock(&rs->mu);
    if (ctx == rs->inflight_ctx && ctx) {
        if (index == 0) {
            rs->inflight_since = 0; /* refused (no leader yet): the timer tries again */
        } else {
            for (struct read_job *j = rs->inflight.head; j; j = j->next)
                j->index = index;
            append(&rs->waiting, &rs->inflight);
            rs->inflight_ctx = 0;
            release_applied(rs);
            issue(rs);
        }
    }
    pthread_mutex_unlock(&rs->mu);
}

static void on_applied(void *arg, uint64_t index)
{
    struct reads *rs = arg;
    pthread_mutex_lock(&rs->mu);
    rs->applied = index;
    if (rs->waiting.head)
        release_applied(rs);
    pthread_mutex_unlock(&rs->mu);
}

static void on_leader_changed(void *arg, uint64_t lead, uint64_t term)
{
    struct reads *rs = arg;
    (void)term;
    pthread_mutex_lock(&rs->mu);
    rs->lead = lead;
    if (rs->inflight_ctx) {
        /* the ReadIndex in flight died with the old leader: send the same reads again */
        struct list l = rs->inflight;
        rs->inflight.head = rs->inflight.tail = NULL;
        rs->inflight_ctx = 0;
        append(&l, &rs->pending);
        rs->pending = l;
        if (lead)
            issue(rs);
    }
    pthread_mutex_unlock(&rs->mu);
}

struct reads *reads_new(int threads)
{
    struct reads *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return NULL;
    rs->nthreads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    pthread_mutex_init(&rs->mu, NULL);
    pthread_cond_init(&rs->work, NULL);
    mono_cond_init(&rs->tick);
    return rs;
}

void reads_hooks(struct reads *rs, struct node_hooks *hooks)
{
    hooks->arg = rs;
    hooks->read_ready = on_read_ready;
    hooks->applied = on_applied;
    hooks->leader_changed = on_leader_changed;
}

static void *worker(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-reader"); /* top -H, perf and gdb show it */
    struct reads *rs = arg;
    struct node_reader_slot slot;
    node_reader_register(rs->node, &slot);
    slot.keep = true; /* back-to-back reads share one SQLite read while nothing is written */
    bool held = false;
    pthread_mutex_lock(&rs->mu);
    for (;;) {
        if (held && !rs->ready.head && !rs->stopping) {
            /* out of work: let go of the read before sleeping (not under mu: the gate) */
            pthread_mutex_unlock(&rs->mu);
            node_reader_idle(rs->node, &slot);
            held = false;
            pthread_mutex_lock(&rs->mu);
            continue;
        }
        while (!rs->ready.head && !rs->stopping)
            pthread_cond_wait(&rs->work, &rs->mu);
        if (!rs->ready.head)
            break;
        struct read_job *j = rs->ready.head;
        rs->ready.head = j->next;
        if (!rs->ready.head)
            rs->ready.tail = NULL;
        rs->running++;
        pthread_mutex_unlock(&rs->mu);
        int err = 0;
        struct mvcc_reader *r = node_read_begin(rs->node, &slot, &err);
        j->run(j, r, err);
        if (r)
            node_read_end(rs->node);
        held = true;
        pthread_mutex_lock(&rs->mu);
        rs->running--;
    }
    pthread_mutex_unlock(&rs->mu);
    node_reader_unregister(rs->node, &slot);
    return NULL;
}

/* Fail the reads of l past their deadline (all of them when now is 0). */
static void expire(struct list *l, int64_t now, struct list *failed)
{
    struct read_job **pp = &l->head, *last = NULL;
    while (*pp) {
        struct read_job *j = *pp;
        if (!now || j->deadline_ns <= now) {
            *pp = j->next;
            j->next = NULL;
            push(failed, j);
        } else {
            last = j;
            pp = &j->next;
        }
    }
    l->tail = last;
}

static void fail_all(struct list *failed, int code)
{
    for (struct read_job *j = failed->head, *next; j; j = next) {
        next = j->next;
        j->fail(j, code);
    }
}

/* An inline handle unused for a whole tick lets go of its held read (mvcc_reader_keep). */
static void release_idle_inline(struct reads *rs)
{
    for (int i = 0; i < INLINE_SLOTS; i++) {
        int expect = 0;
        if (atomic_exchange(&rs->iused[i], 0) || !atomic_compare_exchange_strong(&rs->ibusy[i], &expect, 1))
            continue;
        node_reader_idle(rs->node, &rs->islots[i]);
        atomic_store(&rs->ibusy[i], 0);
    }
}

static void *timer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-readidx"); /* top -H, perf and gdb show it */
    struct reads *rs = arg;
    pthread_mutex_lock(&rs->mu);
    while (!rs->stopping) {
        struct timespec ts;
        deadline_after_ns(&ts, TIMER_NS);
        pthread_cond_timedwait(&rs->tick, &rs->mu, &ts);
        if (rs->stopping)
            break;
        int64_t now = mono_now_ns();
        struct list failed = {0};
        int code = rs->lead ? CAIRN_E_TIMEOUT : CAIRN_E_NO_LEADER;
        expire(&rs->pending, now, &failed);
        expire(&rs->inflight, now, &failed);
        expire(&rs->waiting, now, &failed);
        if (rs->inflight_ctx && !rs->inflight.head)
            rs->inflight_ctx = 0;
        if (rs->inflight_ctx && now - rs->inflight_since > REISSUE_NS) {
            /* unanswered (lost message, no leader yet): a new ctx, the same reads */
            struct list l = rs->inflight;
            rs->inflight.head = rs->inflight.tail = NULL;
            rs->inflight_ctx = 0;
            append(&l, &rs->pending);
            rs->pending = l;
        }
        issue(rs);
        pthread_mutex_unlock(&rs->mu);
        fail_all(&failed, code);
        release_idle_inline(rs);
        pthread_mutex_lock(&rs->mu);
    }
    pthread_mutex_unlock(&rs->mu);
    return NULL;
}

int reads_start(struct reads *rs, struct node *n)
{
    rs->node = n;
    for (int i = 0; i < INLINE_SLOTS; i++) {
        node_reader_register(n, &rs->islots[i]);
        rs->islots[i].keep = true;
    }
    struct node_info info;
    node_get_info(n, &info);
    pthread_mutex_lock(&rs->mu);
    if (info.applied > rs->applied)
        rs->applied = info.applied;
    rs->lead = info.lead;
    pthread_mutex_unlock(&rs->mu);
    for (int i = 0; i < rs->nthreads; i++) {
        int rc = pthread_create(&rs->threads[i], NULL, worker, rs);
        if (rc) {
            rs->nthreads = i;
            return -rc;
        }
    }
    int rc = pthread_create(&rs->timer, NULL, timer_main, rs);
    if (rc)
        return -rc;
    rs->started = 1;
    return 0;
}

/* Run j here if an inline handle is free; false if none is (or stopping). */
static bool run_inline(struct reads *rs, struct read_job *j)
{
    for (int i = 0; i < INLINE_SLOTS; i++) {
        int expect = 0;
        if (!atomic_compare_exchange_strong(&rs->ibusy[i], &expect, 1))
            continue;
        if (atomic_load(&rs->istopping)) {
            atomic_store(&rs->ibusy[i], 0);
            return false;
        }
        int err = 0;
        struct mvcc_reader *r = node_read_begin(rs->node, &rs->islots[i], &err);
        j->run(j, r, err);
        if (r)
            node_read_end(rs->node);
        atomic_store(&rs->iused[i], 1);
        atomic_store(&rs->ibusy[i], 0);
        return true;
    }
    return false;
}

void reads_submit(struct reads *rs, struct read_job *j)
{
    uint64_t solo = j->linearizable && rs->node ? node_solo_read_index(rs->node) : 0;
    if (solo) {
        j->index = solo;
        atomic_fetch_add_explicit(&rs->solo, 1, memory_order_relaxed);
    }
    bool now = !j->linearizable || (solo && solo <= atomic_load(&rs->applied));
    if (j->cheap && now && rs->node && run_inline(rs, j))
        return;
    pthread_mutex_lock(&rs->mu);
    if (rs->stopping) {
        pthread_mutex_unlock(&rs->mu);
        j->fail(j, CAIRN_E_STOPPED);
        return;
    }
    if (solo) {
        push(&rs->waiting, j);
        release_applied(rs);
    } else if (j->linearizable) {
        push(&rs->pending, j);
        issue(rs);
    } else {
        push(&rs->ready, j);
        pthread_cond_signal(&rs->work);
    }
    pthread_mutex_unlock(&rs->mu);
}

void reads_get_stats(struct reads *rs, struct reads_stats *st)
{
    st->rounds = atomic_load_explicit(&rs->rounds, memory_order_relaxed);
    st->solo = atomic_load_explicit(&rs->solo, memory_order_relaxed);
}

int reads_idle(struct reads *rs)
{
    pthread_mutex_lock(&rs->mu);
    int idle = !rs->pending.head && !rs->inflight.head && !rs->waiting.head && !rs->ready.head && !rs->running;
    for (int i = 0; i < INLINE_SLOTS; i++)
        idle &= !atomic_load(&rs->ibusy[i]);
    pthread_mutex_unlock(&rs->mu);
    return idle;
}

void reads_stop(struct reads *rs)
{
    if (!rs)
        return;
    struct list failed = {0};
    pthread_mutex_lock(&rs->mu);
    rs->stopping = 1;
    atomic_store(&rs->istopping, 1);
    expire(&rs->pending, 0, &failed);
    expire(&rs->inflight, 0, &failed);
    expire(&rs->waiting, 0, &failed);
    expire(&rs->ready, 0, &failed);
    pthread_cond_broadcast(&rs->work);
    pthread_cond_broadcast(&rs->tick);
    pthread_mutex_unlock(&rs->mu);
    fail_all(&failed, CAIRN_E_STOPPED);
    for (int i = 0; i < rs->nthreads && rs->node; i++)
        pthread_join(rs->threads[i], NULL);
    /* an inline run that began before istopping finishes on its own thread */
    for (int i = 0; i < INLINE_SLOTS && rs->node; i++) {
        int expect = 0;
        while (!atomic_compare_exchange_weak(&rs->ibusy[i], &expect, 1)) {
            expect = 0;
            sched_yield();
        }
        node_reader_unregister(rs->node, &rs->islots[i]);
    }
    if (rs->started)
        pthread_join(rs->timer, NULL);
    pthread_cond_destroy(&rs->work);
    pthread_cond_destroy(&rs->tick);
    pthread_mutex_destroy(&rs->mu);
    free(rs);
}
