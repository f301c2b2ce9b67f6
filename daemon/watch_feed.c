/*
 * daemon/watch's live feed: the node's applied observer copies each apply
 * batch's events into a bounded ring (on the node thread: bounded work, no
 * wait for the hub lock), and the dispatcher thread feeds them to synced
 * watchers, keeps the recent ones for watchers joining, answers polls that
 * got events or reached their deadline and drops idle watchers.  A batch
 * the ring cannot keep is passed on as lost: whoever needed it reads the
 * store (watch_sync.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/deadline.h"
#include "base/log.h"
#include "daemon/watch_internal.h"

#define IDLE_CHECK_NS 1000000000LL /* the dispatcher looks at idle watchers at least this often */

static struct timespec abs_ts(int64_t ns)
{
    return (struct timespec){.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
}

/* ---------------------------------------------------------------- feeding (with mu) */

bool whub_feed(struct watch_hub *h, struct watcher *w, const struct wbatch *b)
{
    if (w->next_rev > b->to)
        return true;
    if (w->next_rev <= b->from || b->lost) {
        whub_unsync(h, w);
        return false;
    }
    size_t i = 0;
    while (i < b->n && b->ev[i]->rev < w->next_rev)
        i++;
    while (i < b->n) {
        int64_t rev = b->ev[i]->rev;
        size_t j = i, bytes = 0, count = 0;
        for (; j < b->n && b->ev[j]->rev == rev; j++)
            if (wfilter_match(&w->f, b->ev[j])) {
                bytes += wev_bytes(b->ev[j], w->prev_kv);
                count++;
            }
        if (count) {
            /* a queue that is not empty takes a revision only within its bounds: the rest comes from the store */
            if ((w->q.n && (w->q.bytes + bytes > WATCH_QUEUE_BYTES || h->total_bytes + bytes > WATCH_TOTAL_BYTES)) ||
                wq_reserve(&w->q, count) < 0) {
                w->next_rev = rev;
                whub_unsync(h, w);
                return false;
            }
            for (size_t k = i; k < j; k++)
                if (wfilter_match(&w->f, b->ev[k])) {
                    wev_ref(b->ev[k]);
                    wq_push(&w->q, b->ev[k], wev_bytes(b->ev[k], w->prev_kv));
                }
            h->total_bytes += bytes;
        }
        w->next_rev = rev + 1;
        i = j;
    }
    w->next_rev = b->to + 1;
    return true;
}

/* ---------------------------------------------------------------- the observer (node thread) */

/* A batch of the events above from, or NULL (lost) when they are too large or memory is short. */
static struct wbatch *copy_batch(const struct mvcc_result *res, int64_t from)
{
    size_t first = 0, bytes = 0;
    while (first < res->n_events && res->events[first].kv.mod_revision <= from)
        first++;
    for (size_t i = first; i < res->n_events; i++) {
        bytes += wev_copy_size(&res->events[i].kv, res->events[i].prev_kv);
        if (bytes > WATCH_BATCH_MAX_BYTES)
            return NULL;
    }
    struct wbatch *b = calloc(1, sizeof(*b));
    size_t n = res->n_events - first;
    if (!b || (n && !(b->ev = malloc(n * sizeof(*b->ev))))) {
        free(b);
        return NULL;
    }
    for (size_t i = first; i < res->n_events; i++) {
        const struct mvcc_event *e = &res->events[i];
        if (!(b->ev[b->n] = wev_new(e->type, &e->kv, e->prev_kv))) {
            wbatch_free(b);
            return NULL;
        }
        b->n++;
    }
    b->bytes = bytes;
    return b;
}

/* A watcher is live: apply batches are worth copying, old values and all. */
static bool any_watcher(struct watch_hub *h)
{
    return __atomic_load_n(&h->live, __ATOMIC_RELAXED) > 0;
}

/*
 * Push (from, to] with ring_mu held: b, or as lost when b is NULL, the ring
 * is full or revisions are already lost.  A batch not copied because no
 * watcher was live is lost to the ring too, but counted only when watched:
 * the counter says how often watchers had to read the store.
 */
static void ring_push(struct watch_hub *h, struct wbatch *b, int64_t from, int64_t to, bool watched)
{
    bool full = h->ring_n >= WATCH_RING_BATCHES || (b && h->ring_bytes + b->bytes > WATCH_RING_BYTES);
    if (!b || full || h->lost_to) {
        wbatch_free(b);
        if (!h->lost_to)
            h->lost_from = from;
        h->lost_to = to;
        if (watched)
            h->lost_batches++;
    } else {
        b->from = from;
        b->to = to;
        if (h->ring_tail)
            h->ring_tail->next = b;
        else
            h->ring = b;
        h->ring_tail = b;
        h->ring_n++;
        h->ring_bytes += b->bytes;
    }
    __atomic_store_n(&h->obs_rev, to, __ATOMIC_RELEASE);
    /* With nobody watching, the dispatcher has nothing to deliver: a batch
     * would wake it only to record the range as lost, a context switch per
     * write (1.6 per put at one in flight).  The range waits in lost_from/to
     * until a watched batch, the dispatcher's own timer, or a watcher
     * registering: register_watcher counts it live and then wakes the
     * dispatcher under ring_mu, so whichever of the two takes ring_mu
     * second sees the other's change, and a watcher that registers while
     * this batch is pushed does not wait for the timer. */
    if (h->ring || any_watcher(h))
        pthread_cond_signal(&h->ring_cv);
}

static void on_applied(void *arg, const struct mvcc_entry *ents, size_t n, const struct mvcc_result *res)
{
    struct watch_hub *h = arg;
    (void)ents;
    (void)n;
    pthread_mutex_lock(&h->ring_mu);
    int64_t from = h->obs_rev;
    bool lost = h->replaced || h->ring_stop;
    pthread_mutex_unlock(&h->ring_mu);
    if (res->revision <= from)
        return; /* wrote nothing, or already counted (at start, after a replaced store) */
    /* copied outside the lock: the dispatcher and the catch-up thread never wait for it */
    struct wbatch *b = NULL;
    bool live = any_watcher(h);
    /* A watcher that became live after the batch was applied without old
     * values (wants_event_values said nobody watched) reads it from the store. */
    if (!lost && live && res->event_values)
        b = copy_batch(res, from);
    pthread_mutex_lock(&h->ring_mu);
    if (h->ring_stop || res->revision <= h->obs_rev) {
        wbatch_free(b);
    } else {
        if (h->obs_rev != from || h->replaced) {
            /* the store was replaced meanwhile: the revisions up to here are read from it */
            wbatch_free(b);
            b = NULL;
        }
        h->replaced = false;
        ring_push(h, b, h->obs_rev, res->revision, live);
    }
    pthread_mutex_unlock(&h->ring_mu);
}

static void on_store_replaced(void *arg)
{
    struct watch_hub *h = arg;
    pthread_mutex_lock(&h->ring_mu);
    h->replaced = true;
    pthread_mutex_unlock(&h->ring_mu);
    pthread_cond_signal(&h->sync_cv); /* without mu, which the node thread never waits for; the catch-up thread also polls */
}

int watch_sync_replaced(struct watch_hub *h)
{
    struct mvcc_status st;
    int err = 0;
    struct mvcc_reader *r = node_read_begin(h->node, &h->slot, &err);
    if (!r)
        return err;
    int rc = mvcc_reader_status(r, &st);
    node_read_end(h->node);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&h->ring_mu);
    if (h->replaced && st.revision > h->obs_rev)
        ring_push(h, NULL, h->obs_rev, st.revision, any_watcher(h));
    h->replaced = false;
    pthread_mutex_unlock(&h->ring_mu);
    return 0;
}

/* ---------------------------------------------------------------- the dispatcher thread */

/* Keep b as the newest recent batch, dropping the oldest beyond the bounds (with mu). */
static void keep_recent(struct watch_hub *h, struct wbatch *b)
{
    b->next = NULL;
    if (h->recent_tail)
        h->recent_tail->next = b;
    else
        h->recent = b;
    h->recent_tail = b;
    h->recent_n++;
    h->recent_bytes += b->bytes;
    while (h->recent && h->recent != b &&
           (h->recent_n > WATCH_RECENT_BATCHES || h->recent_bytes > WATCH_RECENT_BYTES)) {
        struct wbatch *old = h->recent;
        h->recent = old->next;
        h->recent_n--;
        h->recent_bytes -= old->bytes;
        wbatch_free(old);
    }
}

static void dispatch(struct watch_hub *h, struct wbatch *b, struct wreply **replies)
{
    for (struct watcher *w = h->synced.head, *nx; w; w = nx) {
        nx = w->next;
        size_t before = w->q.n;
        if (whub_feed(h, w, b) && w->q.n != before)
            whub_wake(h, w, replies);
    }
    h->hub_rev = b->to;
    keep_recent(h, b);
}

/* Answer polls past their deadline, drop watchers idle too long; returns the next time to look. */
static int64_t timers(struct watch_hub *h, struct wreply **replies)
{
    int64_t now = mono_now_ns(), next = now + IDLE_CHECK_NS;
    int64_t idle = (int64_t)h->idle_ms * 1000000LL;
    struct wlist *lists[2] = {&h->synced, &h->unsynced};
    for (int l = 0; l < 2; l++)
        for (struct watcher *w = lists[l]->head, *nx; w; w = nx) {
            nx = w->next;
            if (w->call) {
                if (w->deadline_ns <= now)
                    whub_answer(h, w, true, replies);
                else if (w->deadline_ns < next)
                    next = w->deadline_ns;
                continue;
            }
            if (w->group)
                continue; /* polled: its WatchPoll's deadline is below */
            if (now - w->active_ns >= idle) {
                log_info(LOG_FIELDS(LOG_I64("CAIRN_WATCH", w->id), LOG_STR("CAIRN_REMOTE", w->remote)),
                         "watch %" PRId64 " of %s dropped: not polled for %u ms (--watch-idle-timeout)", w->id,
                         w->remote, h->idle_ms);
                whub_remove(h, w);
            } else if (w->active_ns + idle < next) {
                next = w->active_ns + idle;
            }
        }
    return whub_group_timers(h, now, next, replies);
}

void *watch_disp_main(void *arg)
{
    struct watch_hub *h = arg;
    int64_t timer_at = 0;
    pthread_mutex_lock(&h->ring_mu);
    for (;;) {
        while (!h->ring && !h->lost_to && !h->ring_stop && !h->timer_dirty && mono_now_ns() < timer_at) {
            struct timespec ts = abs_ts(timer_at);
            pthread_cond_timedwait(&h->ring_cv, &h->ring_mu, &ts);
        }
        if (h->ring_stop)
            break;
        h->disp_wakeups++;
        struct wbatch *list = h->ring;
        int64_t lost_from = h->lost_from, lost_to = h->lost_to;
        h->ring = h->ring_tail = NULL;
        h->ring_n = 0;
        h->ring_bytes = 0;
        h->lost_from = h->lost_to = 0;
        /* the timers walk every watcher: only when one is due, not on every batch */
        bool run_timers = h->timer_dirty || mono_now_ns() >= timer_at;
        h->timer_dirty = false;
        if (run_timers)
            h->disp_wake_ns = 0; /* computing: a poll parked now marks the timers dirty */
        pthread_mutex_unlock(&h->ring_mu);

        struct wreply *replies = NULL;
        pthread_mutex_lock(&h->mu);
        while (list) {
            struct wbatch *b = list;
            list = b->next;
            dispatch(h, b, &replies);
        }
        if (lost_to) {
            struct wbatch *b = calloc(1, sizeof(*b));
            if (b) {
                *b = (struct wbatch){.from = lost_from, .to = lost_to, .lost = true};
                dispatch(h, b, &replies);
            } else {
                /* no memory for the marker: every synced watcher catches up, the recent window restarts */
                for (struct watcher *w = h->synced.head, *nx; w; w = nx) {
                    nx = w->next;
                    whub_unsync(h, w);
                }
                while (h->recent) {
                    struct wbatch *old = h->recent;
                    h->recent = old->next;
                    wbatch_free(old);
                }
                h->recent_tail = NULL;
                h->recent_n = h->recent_bytes = 0;
                h->hub_rev = lost_to;
            }
        }
        if (run_timers)
            timer_at = timers(h, &replies);
        whub_flush(h, &replies); /* the WatchPolls this round made answerable: all their members fed */
        pthread_mutex_unlock(&h->mu);
        whub_send(h, replies);

        pthread_mutex_lock(&h->ring_mu);
        h->disp_wake_ns = timer_at;
    }
    pthread_mutex_unlock(&h->ring_mu);
    return NULL;
}

void whub_nudge_timer(struct watch_hub *h, int64_t deadline)
{
    pthread_mutex_lock(&h->ring_mu);
    if (h->disp_wake_ns == 0 || deadline < h->disp_wake_ns) {
        h->timer_dirty = true;
        pthread_cond_signal(&h->ring_cv);
    }
    pthread_mutex_unlock(&h->ring_mu);
}

void whub_wake_dispatcher(struct watch_hub *h)
{
    pthread_mutex_lock(&h->ring_mu);
    if (h->lost_to)
        pthread_cond_signal(&h->ring_cv);
    pthread_mutex_unlock(&h->ring_mu);
}

/* Only a batch copied for live watchers needs the old values (copy_batch). */
static bool wants_event_values(void *arg)
{
    return any_watcher(arg);
}

void watch_feed_observer(struct watch_hub *h, struct node_observer *o)
{
    *o = (struct node_observer){.arg = h, .applied = on_applied, .store_replaced = on_store_replaced,
                                .wants_event_values = wants_event_values};
}
