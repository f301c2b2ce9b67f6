/*
 * daemon/watch's catch-up thread: unsynced watchers read their events from
 * the store (mvcc_history pages; previous values with mvcc_range at rev - 1)
 * on this thread's own reader, never on the node thread and never holding
 * the hub lock while reading.  A watcher that has read up to the store's
 * revision joins the synced set, through the hub's recent batches when the
 * dispatcher has moved on meanwhile.  Round robin, one page per watcher per
 * turn, each page sized to what the watcher's queue may still take.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/watch_internal.h"

#define RETRY_NS 100000000LL   /* pause after a failed read */
#define POLL_NS 1000000000LL   /* also looks for a replaced store this often */
#define FIRST_AVG_EVENT 65536  /* before any event was seen: a short first page */

bool watch_sync_wants(const struct watch_hub *h, const struct watcher *w)
{
    if (w->busy || w->dead || w->canceled || w->state != W_UNSYNCED)
        return false;
    if (w->q.bytes < WATCH_QUEUE_BYTES && (w->q.n == 0 || h->total_bytes < WATCH_TOTAL_BYTES))
        return true;
    /* a watch without fragment holding only part of one revision needs the rest before it can send */
    return !w->fragment && w->cursor_sub >= 0 && w->q.n && wq_at(&w->q, 0)->rev == w->next_rev;
}

static size_t page_limit(const struct watcher *w)
{
    size_t room = w->q.bytes < WATCH_QUEUE_BYTES ? WATCH_QUEUE_BYTES - w->q.bytes : WATCH_QUEUE_BYTES / 4;
    size_t n = room / (w->avg_event ? w->avg_event : FIRST_AVG_EVENT);
    return n < WATCH_PAGE_MIN ? WATCH_PAGE_MIN : n > WATCH_PAGE_MAX ? WATCH_PAGE_MAX : n;
}

/* What one read brought: events (references owned) and where the next read goes on. */
struct page {
    struct wev **ev;
    size_t n, rows, bytes;
    bool more;
    int64_t last_main, last_sub;   /* the last row read */
    int64_t revision, compact;     /* the store's, as the read saw it */
};

static void page_free(struct page *p)
{
    for (size_t i = 0; i < p->n; i++)
        wev_unref(p->ev[i]);
    free(p->ev);
    memset(p, 0, sizeof *p);
}

/* The key's live value just before kv (none, or compacted: etcd leaves prev_kv out then too). */
static int prev_of(struct mvcc_reader *r, const struct mvcc_kv *kv, struct mvcc_range_result **out)
{
    *out = NULL;
    if (kv->mod_revision <= 1)
        return 0;
    struct mvcc_range_req q = {.key = kv->key, .revision = kv->mod_revision - 1, .limit = 1};
    int rc = mvcc_range(r, &q, out, NULL);
    return rc == -CAIRN_E_COMPACTED ? 0 : rc;
}

/*
 * Read the next page of w's history from (next_rev, after cursor_sub) on,
 * without the hub lock (w is busy: it stays allocated, and its range,
 * filters and prev_kv never change).  Returns 0 or a negative error.
 */
static int read_page(struct watch_hub *h, const struct watcher *w, int64_t next_rev, int64_t cursor_sub,
                     size_t limit, struct page *p)
{
    int err = 0, rc;
    struct mvcc_history_result *res = NULL;
    struct mvcc_reader *r = node_read_begin(h->node, &h->slot, &err);
    if (!r)
        return err;
    struct mvcc_history_req q = {
        .key = {w->f.range.key, w->f.range.klen},
        .range_end = {w->f.range.end, w->f.range.elen},
        .min_revision = next_rev,
        .limit = (int64_t)limit,
        .after_main = cursor_sub >= 0 ? next_rev : 0,
        .after_sub = cursor_sub >= 0 ? cursor_sub : 0,
    };
    if ((rc = mvcc_history(r, &q, &res)) < 0)
        goto out;
    p->revision = res->revision;
    p->compact = res->compact_revision;
    p->more = res->more;
    p->rows = res->n_rows;
    if (p->compact >= next_rev)
        goto out; /* rows we need may be hidden: the caller cancels */
    if (res->n_rows) {
        p->last_main = res->rows[res->n_rows - 1].kv.mod_revision;
        p->last_sub = res->rows[res->n_rows - 1].sub_revision;
        if (!(p->ev = malloc(res->n_rows * sizeof(*p->ev)))) {
            rc = -ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < res->n_rows; i++) {
        const struct mvcc_history_row *row = &res->rows[i];
        enum mvcc_event_type type = row->tombstone ? MVCC_EVENT_DELETE : MVCC_EVENT_PUT;
        if (type == MVCC_EVENT_PUT ? w->f.noput : w->f.nodelete)
            continue;
        struct mvcc_range_result *prev = NULL;
        if (w->prev_kv && (rc = prev_of(r, &row->kv, &prev)) < 0)
            goto out;
        struct wev *e = wev_new(type, &row->kv, prev && prev->resp.n_kvs ? &prev->resp.kvs[0] : NULL);
        mvcc_range_result_free(prev);
        if (!e) {
            rc = -ENOMEM;
            goto out;
        }
        p->ev[p->n++] = e;
        p->bytes += wev_bytes(e, w->prev_kv);
    }
out:
    node_read_end(h->node);
    mvcc_history_result_free(res);
    if (rc < 0)
        page_free(p);
    return rc;
}

/*
 * w has every event up to next_rev - 1: join the synced set if the
 * dispatcher is not past that, or if its recent batches cover the gap
 * without a lost one (with mu).  Otherwise w reads another page.
 */
static void try_join(struct watch_hub *h, struct watcher *w)
{
    if (w->next_rev > h->hub_rev) {
        whub_set_synced(h, w);
        return;
    }
    struct wbatch *b = h->recent;
    while (b && b->to < w->next_rev)
        b = b->next;
    if (!b || b->from >= w->next_rev)
        return; /* the window starts after what w has */
    for (; b; b = b->next)
        if (!whub_feed(h, w, b))
            return;
    whub_set_synced(h, w);
}

/* Bytes queued for the revision w is still reading (with mu). */
static size_t partial_bytes(const struct watcher *w)
{
    size_t bytes = 0;
    for (size_t i = w->q.n; i > 0 && wq_at(&w->q, i - 1)->rev == w->next_rev; i--)
        bytes += wev_bytes(wq_at(&w->q, i - 1), w->prev_kv);
    return bytes;
}

/* Queue the page's events and move w's position on (with mu).  Takes the page's events. */
static void apply_page(struct watch_hub *h, struct watcher *w, int64_t next_rev, struct page *p,
                       struct wreply **replies)
{
    if (p->compact >= next_rev) {
        whub_cancel(h, w, p->compact + 1,
                   "revision %" PRId64 " was compacted (compact revision %" PRId64 ") before the watch reached "
                   "it; watch from revision %" PRId64 " or later", next_rev, p->compact, p->compact + 1);
        whub_wake(h, w, replies);
        return;
    }
    if (p->n && wq_reserve(&w->q, p->n) < 0)
        return; /* read again later */
    for (size_t i = 0; i < p->n; i++)
        wq_push(&w->q, p->ev[i], wev_bytes(p->ev[i], w->prev_kv));
    h->total_bytes += p->bytes;
    if (p->n) {
        size_t avg = p->bytes / p->n;
        w->avg_event = avg < 64 ? 64 : avg;
    }
    free(p->ev);
    p->ev = NULL;
    p->n = 0;
    if (p->more) {
        w->next_rev = p->last_main;
        w->cursor_sub = p->last_sub;
    } else if (p->revision >= next_rev) {
        w->next_rev = p->revision + 1;
        w->cursor_sub = -1;
    } else {
        w->cursor_sub = -1; /* a start revision still in the future: it stays where it is */
    }
    if (!w->fragment && w->cursor_sub >= 0 && partial_bytes(w) >= WATCH_REV_MAX_BYTES)
        whub_cancel(h, w, 0,
                   "revision %" PRId64 " has more than %zu bytes of events for this watch; create it with "
                   "fragment to receive them in parts", w->next_rev, WATCH_REV_MAX_BYTES);
    else if (w->cursor_sub < 0)
        try_join(h, w);
    whub_wake(h, w, replies);
}

static void wait_ns(struct watch_hub *h, int64_t ns)
{
    int64_t at = mono_now_ns() + ns;
    struct timespec ts = {.tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL};
    pthread_cond_timedwait(&h->sync_cv, &h->mu, &ts);
}

static void log_read_failure(const struct watcher *w, int rc)
{
    static int64_t last;
    int64_t now = mono_now_ns();
    if (now - last < 10000000000LL)
        return; /* one line per 10 s: a store that cannot be read is reported by the node too */
    last = now;
    log_warning(LOG_FIELDS(LOG_I64("CAIRN_WATCH", w->id)),
                "watch %" PRId64 " cannot catch up from the store: %s; retrying", w->id, cairn_strerror(rc));
}

void *watch_sync_main(void *arg)
{
    struct watch_hub *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        pthread_mutex_lock(&h->ring_mu);
        bool replaced = h->replaced;
        pthread_mutex_unlock(&h->ring_mu);
        if (replaced) {
            pthread_mutex_unlock(&h->mu);
            int rc = watch_sync_replaced(h);
            pthread_mutex_lock(&h->mu);
            if (rc < 0)
                wait_ns(h, RETRY_NS);
            continue;
        }
        struct watcher *w = h->unsynced.head;
        while (w && !watch_sync_wants(h, w))
            w = w->next;
        if (!w) {
            wait_ns(h, POLL_NS);
            continue;
        }
        whub_rotate(h, w);
        w->busy = true;
        int64_t next_rev = w->next_rev, cursor = w->cursor_sub;
        size_t limit = page_limit(w);
        pthread_mutex_unlock(&h->mu);

        struct page p = {0};
        int rc = read_page(h, w, next_rev, cursor, limit, &p);

        pthread_mutex_lock(&h->mu);
        w->busy = false;
        if (w->dead) {
            page_free(&p);
            whub_free_watcher(h, w);
            continue;
        }
        if (rc < 0) {
            log_read_failure(w, rc);
            wait_ns(h, RETRY_NS);
            continue;
        }
        struct wreply *replies = NULL;
        apply_page(h, w, next_rev, &p, &replies);
        page_free(&p);
        whub_flush(h, &replies);
        if (replies) {
            pthread_mutex_unlock(&h->mu);
            whub_send(h, replies);
            pthread_mutex_lock(&h->mu);
        }
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}
