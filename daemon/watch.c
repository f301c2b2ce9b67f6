/*
 * daemon/watch: the hub.  It owns every watch of this member and serves the
 * five watch requests (routes on nng's threads, never blocking): creating,
 * parking and answering polls (one watch's WatchNext, several watches'
 * WatchPoll), canceling; it starts and stops the rest.
 * Feeding synced watchers from the applier is watch_feed.c's, catching up
 * from the store watch_sync.c's, queues and reply cutting watch_buf.c's.
 * Locks: mu (watchers) before ring_mu (the ring); the observer takes ring_mu
 * only, so the node thread never waits for work done under mu.  The
 * observer, the ring and the dispatcher thread are in watch_feed.c.
 */
#include "daemon/watch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/kvconv.h"
#include "daemon/watch_internal.h"
#include "proto/cairn.pb-c.h"


/* ---------------------------------------------------------------- lists and tables (with mu) */

static void list_add(struct wlist *l, struct watcher *w)
{
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->n++;
}

static void list_del(struct wlist *l, struct watcher *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->prev = w->next = NULL;
    l->n--;
}

static struct wlist *list_of(struct watch_hub *h, struct watcher *w)
{
    return w->state == W_SYNCED ? &h->synced : &h->unsynced;
}

static size_t slot_of(const struct watch_hub *h, int64_t id)
{
    uint64_t x = (uint64_t)id * 0x9E3779B97F4A7C15ULL;
    return (size_t)(x >> 32) & (h->table_size - 1);
}

static struct watcher *table_get(struct watch_hub *h, int64_t id)
{
    for (struct watcher *w = h->table[slot_of(h, id)]; w; w = w->hnext)
        if (w->id == id)
            return w;
    return NULL;
}

/* Insert w, growing the table first when it is full; a failed growth only makes chains longer. */
static void table_put(struct watch_hub *h, struct watcher *w)
{
    if (h->n_watchers >= h->table_size) {
        size_t size = h->table_size * 2;
        struct watcher **t = calloc(size, sizeof(*t));
        if (t) {
            struct watcher **old = h->table;
            size_t old_size = h->table_size;
            h->table = t;
            h->table_size = size;
            for (size_t i = 0; i < old_size; i++)
                for (struct watcher *x = old[i], *nx; x; x = nx) {
                    nx = x->hnext;
                    x->hnext = h->table[slot_of(h, x->id)];
                    h->table[slot_of(h, x->id)] = x;
                }
            free(old);
        }
    }
    size_t s = slot_of(h, w->id);
    w->hnext = h->table[s];
    h->table[s] = w;
}

static void table_del(struct watch_hub *h, struct watcher *w)
{
    for (struct watcher **pp = &h->table[slot_of(h, w->id)]; *pp; pp = &(*pp)->hnext)
        if (*pp == w) {
            *pp = w->hnext;
            return;
        }
}

static struct pipe_count **pipe_slot(struct watch_hub *h, uint32_t pipe)
{
    struct pipe_count **pp = &h->pipes[(pipe * 2654435761u) % WATCH_PIPE_BUCKETS];
    while (*pp && (*pp)->pipe != pipe)
        pp = &(*pp)->next;
    return pp;
}

static void pipe_release(struct watch_hub *h, uint32_t pipe)
{
    struct pipe_count **pp = pipe_slot(h, pipe), *pc = *pp;
    if (pc && --pc->n == 0) {
        *pp = pc->next;
        free(pc);
    }
}

/* ---------------------------------------------------------------- watcher life (with mu) */

void whub_unsync(struct watch_hub *h, struct watcher *w)
{
    if (w->state != W_SYNCED)
        return;
    list_del(&h->synced, w);
    w->state = W_UNSYNCED;
    w->cursor_sub = -1;
    list_add(&h->unsynced, w);
    h->resyncs++;
    pthread_cond_signal(&h->sync_cv);
}

void whub_rotate(struct watch_hub *h, struct watcher *w)
{
    struct wlist *l = list_of(h, w);
    list_del(l, w);
    list_add(l, w);
}

void whub_set_synced(struct watch_hub *h, struct watcher *w)
{
    if (w->state == W_SYNCED)
        return;
    list_del(&h->unsynced, w);
    w->state = W_SYNCED;
    list_add(&h->synced, w);
}

void whub_cancel(struct watch_hub *h, struct watcher *w, int64_t compact_revision, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->cancel_reason, sizeof w->cancel_reason, fmt, ap);
    va_end(ap);
    w->canceled = true;
    w->compact_revision = compact_revision;
    if (w->state == W_SYNCED) {
        list_del(&h->synced, w);
        w->state = W_UNSYNCED;
        list_add(&h->unsynced, w);
    }
    log_info(LOG_FIELDS(LOG_I64("CAIRN_WATCH", w->id), LOG_STR("CAIRN_REMOTE", w->remote)),
             "watch %" PRId64 " of %s canceled: %s", w->id, w->remote, w->cancel_reason);
}

static void free_watcher_memory(struct watcher *w)
{
    wq_clear(&w->q);
    wrange_free(&w->f.range);
    free(w->reply);
    free(w);
}

/* w leaves the WatchPoll it is in, which stays parked for the others. */
static void group_leave(struct watcher *w)
{
    struct wgroup *g = w->group;
    for (size_t i = 0; i < g->n; i++)
        if (g->w[i] == w)
            g->w[i] = NULL;
    w->group = NULL;
}

/* Forget w: out of the table, lists and counts; freed now, or by the catch-up thread if it is busy with it. */
void whub_remove(struct watch_hub *h, struct watcher *w)
{
    table_del(h, w);
    list_del(list_of(h, w), w);
    pipe_release(h, w->pipe);
    h->n_watchers--;
    __atomic_sub_fetch(&h->live, 1, __ATOMIC_RELAXED);
    h->total_bytes -= w->q.bytes < h->total_bytes ? w->q.bytes : h->total_bytes;
    wq_clear(&w->q);
    if (w->call) {
        h->n_parked--;
        w->call = NULL;
    }
    if (w->group)
        group_leave(w);
    if (w->busy)
        w->dead = true;
    else
        free_watcher_memory(w);
}

void whub_free_watcher(struct watch_hub *h, struct watcher *w)
{
    (void)h;
    free_watcher_memory(w);
}

/* ---------------------------------------------------------------- answering polls (with mu) */

/* How many of w's queued events a reply of max bytes takes (and whether it cuts a revision): 0, nothing yet. */
static size_t plan(const struct watcher *w, size_t max, bool *frag)
{
    size_t frag_min = max < WATCH_QUEUE_BYTES ? max : WATCH_QUEUE_BYTES;
    *frag = false;
    return wq_plan(&w->q, w->next_rev, max, w->prev_kv, w->fragment, frag_min, frag);
}

/*
 * Move the n events plan() chose from w's queue into r, with the progress
 * revision and, when end is set (nothing else can go), w's cancellation.
 * Returns the bytes the events were charged.
 */
static size_t fill(struct watch_hub *h, struct watcher *w, struct wreply *r, size_t n, bool frag, bool end)
{
    size_t taken = 0;
    r->watch_id = w->id;
    r->prev_kv = w->prev_kv;
    if (n && !(r->ev = malloc(n * sizeof(*r->ev))))
        n = 0, frag = false; /* an empty reply is still true: it claims only what was delivered */
    for (size_t i = 0; i < n; i++) {
        size_t bytes = wev_bytes(wq_at(&w->q, 0), w->prev_kv);
        r->ev[i] = wq_pop(&w->q, bytes);
        h->total_bytes -= bytes < h->total_bytes ? bytes : h->total_bytes;
        taken += bytes;
    }
    r->n = n;
    r->fragment = frag;
    r->progress = wq_progress(&w->q, 0, w->next_rev);
    if (!n && end) {
        r->canceled = true;
        r->compact_revision = w->compact_revision;
        snprintf(r->cancel_reason, sizeof r->cancel_reason, "%s", w->cancel_reason);
    }
    w->active_ns = mono_now_ns();
    if (n && w->state == W_UNSYNCED)
        pthread_cond_signal(&h->sync_cv); /* room for the catch-up thread */
    return taken;
}

/*
 * Detach w's parked WatchNext into its reply with what can go now: events,
 * or the cancellation once nothing else can, or (force) an empty progress
 * reply.  Returns NULL (nothing detached) when there is nothing to say and
 * force is false.
 */
static struct wreply *detach(struct watch_hub *h, struct watcher *w, bool force)
{
    if (!w->call)
        return NULL;
    bool frag;
    size_t n = plan(w, w->max_bytes, &frag);
    if (!n && !w->canceled && !force)
        return NULL;
    struct wreply *r = w->reply;
    w->reply = NULL;
    r->call = w->call;
    w->call = NULL;
    h->n_parked--;
    fill(h, w, r, n, frag, w->canceled);
    return r;
}

static void add_reply(struct wreply **list, struct wreply *r)
{
    if (r) {
        r->next = *list;
        *list = r;
    }
}

void whub_answer(struct watch_hub *h, struct watcher *w, bool force, struct wreply **replies)
{
    struct wreply *r = detach(h, w, force);
    add_reply(replies, r);
    if (r && r->canceled)
        whub_remove(h, w);
}

/* w is in a WatchPoll: mark the poll ready if w has something to say. */
static void mark_ready(struct watch_hub *h, struct watcher *w)
{
    struct wgroup *g = w->group;
    bool frag;
    if (!g->ready && (w->canceled || plan(w, g->max_bytes, &frag))) {
        g->ready = true;
        h->n_ready++;
    }
}

void whub_wake(struct watch_hub *h, struct watcher *w, struct wreply **replies)
{
    if (w->group)
        mark_ready(h, w);
    else
        whub_answer(h, w, false, replies);
}

/* End w's parked poll with no events (err 0: an empty progress reply; else that error). */
static void detach_empty(struct watch_hub *h, struct watcher *w, int err, struct wreply **replies)
{
    struct wreply *r = w->reply;
    w->reply = NULL;
    r->call = w->call;
    r->watch_id = w->id;
    r->err = err;
    r->progress = wq_progress(&w->q, 0, w->next_rev);
    w->call = NULL;
    h->n_parked--;
    w->active_ns = mono_now_ns();
    add_reply(replies, r);
}

/* ---------------------------------------------------------------- WatchPolls (with mu) */

static void group_link(struct watch_hub *h, struct wgroup *g)
{
    g->next = NULL;
    g->prev = h->groups_tail;
    if (h->groups_tail)
        h->groups_tail->next = g;
    else
        h->groups = g;
    h->groups_tail = g;
    h->n_parked++;
}

/* Take g out of the hub and its members out of g; returns its reply, bound to its call. */
static struct wreply *group_unpark(struct watch_hub *h, struct wgroup *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else
        h->groups = g->next;
    if (g->next)
        g->next->prev = g->prev;
    else
        h->groups_tail = g->prev;
    h->n_parked--;
    if (g->ready)
        h->n_ready--;
    int64_t now = mono_now_ns();
    for (size_t i = 0; i < g->n; i++)
        if (g->w[i] && g->w[i]->group == g) {
            g->w[i]->group = NULL;
            g->w[i]->active_ns = now;
        }
    struct wreply *r = calloc(1, sizeof(*r));
    if (r) {
        r->call = g->call;
        r->poll = true;
    }
    return r;
}

static void group_free(struct wgroup *g)
{
    free(g->w);
    free(g);
}

/*
 * Answer g: a part for each member with something to say (with force, for
 * every member: its progress), while the reply has room.  The members start
 * at one that moves on from answer to answer, so a member left out for room
 * goes first in a later one.  A told cancellation ends its watcher.
 */
static void group_answer(struct watch_hub *h, struct wgroup *g, bool force, struct wreply **replies)
{
    struct watcher **members = g->w;
    size_t n = g->n, used = 0, start = n ? h->poll_rr++ % n : 0;
    struct rpc_call *call = g->call;
    struct wreply *r = group_unpark(h, g);
    if (!r) {
        /* nothing is taken from any queue: the events wait for the next poll */
        rpc_call_error(call, ENOMEM, NULL);
        group_free(g);
        return;
    }
    struct wreply **tail = &r->parts;
    for (size_t k = 0; k < n; k++) {
        struct watcher *w = members[(start + k) % n];
        if (!w)
            continue;
        bool frag = false, room = used < g->max_bytes;
        size_t n_ev = room ? plan(w, g->max_bytes - used, &frag) : 0;
        bool end = !n_ev && w->canceled && (room || !w->q.n);
        if (!n_ev && !end && !force)
            continue;
        struct wreply *p = calloc(1, sizeof(*p));
        if (!p)
            continue; /* its events stay queued for the next poll */
        used += fill(h, w, p, n_ev, frag, end);
        *tail = p;
        tail = &p->next;
        if (p->canceled)
            whub_remove(h, w);
    }
    group_free(g);
    add_reply(replies, r);
}

/* End g with no events: an empty answer (err 0; the client gave up on it) or that error. */
static void group_end(struct watch_hub *h, struct wgroup *g, int err, struct wreply **replies)
{
    struct rpc_call *call = g->call;
    struct wreply *r = group_unpark(h, g);
    group_free(g);
    if (!r) {
        rpc_call_error(call, err ? err : ENOMEM, NULL);
        return;
    }
    r->err = err;
    add_reply(replies, r);
}

void whub_flush(struct watch_hub *h, struct wreply **replies)
{
    for (struct wgroup *g = h->groups, *nx; g && h->n_ready; g = nx) {
        nx = g->next;
        if (g->ready)
            group_answer(h, g, false, replies);
    }
}

int64_t whub_group_timers(struct watch_hub *h, int64_t now, int64_t next, struct wreply **replies)
{
    for (struct wgroup *g = h->groups, *nx; g; g = nx) {
        nx = g->next;
        if (g->deadline_ns <= now)
            group_answer(h, g, true, replies);
        else if (g->deadline_ns < next)
            next = g->deadline_ns;
    }
    return next;
}


/* ---------------------------------------------------------------- sending (without mu) */

/* r as a WatchNextResponse in body, its strings and events in a.  0, or -ENOMEM. */
static int build_next(const struct wreply *r, Cairn__WatchNextResponse *body, struct kvconv_arena *a)
{
    Cairn__Event **evs = NULL;
    if (r->n) {
        Cairn__Event *ev = kvconv_arena_alloc(a, r->n * sizeof(*ev));
        evs = kvconv_arena_alloc(a, r->n * sizeof(*evs));
        if (!ev || !evs)
            return -ENOMEM;
        for (size_t i = 0; i < r->n; i++) {
            const struct wev *e = r->ev[i];
            struct mvcc_event me = {.type = e->type, .kv = e->kv, .prev_kv = e->has_prev ? (struct mvcc_kv *)&e->prev : NULL};
            if (kvconv_event(&me, r->prev_kv, &ev[i], a) < 0)
                return -ENOMEM;
            evs[i] = &ev[i];
        }
    }
    body->watch_id = r->watch_id;
    body->events = evs;
    body->n_events = r->n;
    body->fragment = r->fragment;
    body->canceled = r->canceled;
    body->compact_revision = r->compact_revision;
    body->cancel_reason = (char *)r->cancel_reason;
    body->progress_revision = r->progress;
    return 0;
}

static void send_next(struct watch_hub *h, struct wreply *r)
{
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__WatchNextResponse body = CAIRN__WATCH_NEXT_RESPONSE__INIT;
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    if (build_next(r, &body, &a) < 0) {
        /* the events are gone from the queue: the client resumes from its last progress revision */
        rpc_call_error(r->call, ENOMEM, "out of memory building the reply of watch %" PRId64 "; resume it from "
                       "your last progress_revision + 1", r->watch_id);
        kvconv_arena_free(&a);
        return;
    }
    resp.body_case = CAIRN__RESPONSE__BODY_WATCH_NEXT;
    resp.watch_next = &body;
    rpc_call_reply(r->call, &resp, 0);
    kvconv_arena_free(&a);
    __atomic_add_fetch(&h->events_delivered, r->n, __ATOMIC_RELAXED);
}

static void send_poll(struct watch_hub *h, struct wreply *r)
{
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__WatchPollResponse body = CAIRN__WATCH_POLL_RESPONSE__INIT;
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    size_t n = 0, events = 0;
    for (const struct wreply *p = r->parts; p; p = p->next)
        n++;
    Cairn__WatchNextResponse *parts = n ? kvconv_arena_alloc(&a, n * sizeof(*parts)) : NULL;
    Cairn__WatchNextResponse **ptrs = n ? kvconv_arena_alloc(&a, n * sizeof(*ptrs)) : NULL;
    int rc = n && (!parts || !ptrs) ? -ENOMEM : 0;
    size_t i = 0;
    for (const struct wreply *p = r->parts; p && rc == 0; p = p->next, i++) {
        parts[i] = (Cairn__WatchNextResponse)CAIRN__WATCH_NEXT_RESPONSE__INIT;
        rc = build_next(p, &parts[i], &a);
        ptrs[i] = &parts[i];
        events += p->n;
    }
    if (rc < 0) {
        rpc_call_error(r->call, ENOMEM, "out of memory building the reply of a WatchPoll; resume its watches from "
                       "your last progress_revision + 1");
        kvconv_arena_free(&a);
        return;
    }
    body.watches = ptrs;
    body.n_watches = n;
    body.missing = r->missing;
    body.n_missing = r->n_missing;
    resp.body_case = CAIRN__RESPONSE__BODY_WATCH_POLL;
    resp.watch_poll = &body;
    rpc_call_reply(r->call, &resp, 0);
    kvconv_arena_free(&a);
    __atomic_add_fetch(&h->events_delivered, events, __ATOMIC_RELAXED);
}

static void wreply_free(struct wreply *r)
{
    while (r) {
        struct wreply *nx = r->next;
        for (size_t i = 0; i < r->n; i++)
            wev_unref(r->ev[i]);
        free(r->ev);
        wreply_free(r->parts);
        free(r->missing);
        free(r);
        r = nx;
    }
}

void whub_send(struct watch_hub *h, struct wreply *replies)
{
    rpc_batch_begin(); /* the replies to one connection leave together */
    while (replies) {
        struct wreply *r = replies;
        replies = r->next;
        r->next = NULL;
        if (r->err == CAIRN_E_STOPPED && r->poll)
            rpc_call_error(r->call, r->err, "member %s is stopping; resume the watches on another member from "
                           "their last progress_revision + 1", h->cfg->name);
        else if (r->err == CAIRN_E_STOPPED)
            rpc_call_error(r->call, r->err, "member %s is stopping; resume the watch on another member from "
                           "revision %" PRId64, h->cfg->name, r->progress + 1);
        else if (r->err)
            rpc_call_error(r->call, r->err, NULL);
        else if (r->poll)
            send_poll(h, r);
        else
            send_next(h, r);
        wreply_free(r);
    }
    rpc_batch_end();
}

/* ---------------------------------------------------------------- routes (nng threads, reader threads) */

static void reply_create(struct rpc_call *call, int64_t id, int64_t compact_revision, const char *reason,
                         int64_t revision)
{
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__WatchCreateResponse body = CAIRN__WATCH_CREATE_RESPONSE__INIT;
    body.watch_id = id;
    if (reason) {
        body.canceled = true;
        body.compact_revision = compact_revision;
        body.cancel_reason = (char *)reason;
    }
    resp.body_case = CAIRN__RESPONSE__BODY_WATCH_CREATE;
    resp.watch_create = &body;
    rpc_call_reply(call, &resp, revision);
}

static struct watcher *watcher_new(struct watch_hub *h, struct rpc_call *call, const Cairn__WatchCreateRequest *q)
{
    struct watcher *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    if (wrange_init(&w->f.range, q->key.data, q->key.len, q->range_end.data, q->range_end.len) < 0) {
        free(w);
        return NULL;
    }
    w->h = h;
    for (size_t i = 0; i < q->n_filters; i++) {
        if (q->filters[i] == CAIRN__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT)
            w->f.noput = true;
        if (q->filters[i] == CAIRN__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE)
            w->f.nodelete = true;
    }
    w->prev_kv = q->prev_kv;
    w->progress_notify = q->progress_notify;
    w->fragment = q->fragment;
    w->pipe = rpc_call_pipe(call);
    snprintf(w->remote, sizeof w->remote, "%s", rpc_call_remote(call));
    uint64_t auth_rev;
    snprintf(w->user, sizeof w->user, "%s", rpc_call_auth(call, &auth_rev));
    w->cursor_sub = -1;
    /* the node's request IDs start at the wall clock: a restarted member never hands out an old watch's ID */
    w->id = (int64_t)(node_next_request_id(h->node) & INT64_MAX);
    return w;
}

/* Count a watch about to be made against the limits (with mu).  0, or a CAIRN_E_ code with msg. */
static int reserve(struct watch_hub *h, uint32_t pipe, char *msg, size_t len)
{
    if (h->n_watchers + h->n_reserved >= h->max_watchers) {
        snprintf(msg, len, "too many watchers: this member has %zu, its limit (--max-watchers %u); cancel "
                 "watches or use another member", h->n_watchers + h->n_reserved, h->max_watchers);
        return CAIRN_E_TOO_MANY_WATCHERS;
    }
    struct pipe_count **pp = pipe_slot(h, pipe);
    if (*pp && (*pp)->n >= h->max_per_conn) {
        snprintf(msg, len, "too many watchers on this connection: %u, the limit (--max-watchers-per-connection "
                 "%u); cancel watches or open another connection", (*pp)->n, h->max_per_conn);
        return CAIRN_E_TOO_MANY_WATCHERS;
    }
    if (!*pp) {
        if (!(*pp = calloc(1, sizeof(**pp)))) {
            snprintf(msg, len, "out of memory");
            return ENOMEM;
        }
        (*pp)->pipe = pipe;
    }
    (*pp)->n++;
    h->n_reserved++;
    return 0;
}

static void unreserve(struct watch_hub *h, uint32_t pipe)
{
    h->n_reserved--;
    pipe_release(h, pipe);
}

static void register_watcher(struct watch_hub *h, struct watcher *w, enum wstate st, int64_t next_rev)
{
    h->n_reserved--;
    w->next_rev = next_rev;
    w->state = st;
    w->active_ns = mono_now_ns();
    list_add(st == W_SYNCED ? &h->synced : &h->unsynced, w);
    table_put(h, w);
    h->n_watchers++;
    if (__atomic_add_fetch(&h->live, 1, __ATOMIC_RELAXED) == 1)
        whub_wake_dispatcher(h); /* batches applied while nobody watched wait for it as lost (ring_push) */
    if (st == W_UNSYNCED)
        pthread_cond_signal(&h->sync_cv);
    whub_nudge_timer(h, w->active_ns + (int64_t)h->idle_ms * 1000000LL);
}

/* A start revision in the past: checked against the compact revision on a reader thread. */
static void create_read(struct rpc_call *call, struct mvcc_reader *r, int err, void *arg)
{
    struct watcher *w = arg;
    struct watch_hub *h = w->h;
    int64_t start = rpc_call_request(call)->watch_create->start_revision;
    struct mvcc_status st;
    int rc = r ? mvcc_reader_status(r, &st) : err;
    pthread_mutex_lock(&h->mu);
    if (rc == 0 && start > st.compact_revision && !h->stopping) {
        register_watcher(h, w, W_UNSYNCED, start);
        int64_t id = w->id;
        pthread_mutex_unlock(&h->mu);
        reply_create(call, id, 0, NULL, 0);
        return;
    }
    unreserve(h, w->pipe);
    bool stopping = h->stopping;
    pthread_mutex_unlock(&h->mu);
    free_watcher_memory(w);
    if (rc < 0) {
        rpc_call_unreadable(call, rc);
    } else if (stopping) {
        rpc_call_error(call, CAIRN_E_STOPPED, NULL);
    } else {
        /* a delete at the compact revision itself is gone from the store: the first revision
         * a watch can deliver exactly is the one after it (etcd allows it and can skip that delete) */
        char reason[200];
        snprintf(reason, sizeof reason,
                 "required revision %" PRId64 " has been compacted (compact revision %" PRId64
                 "); watch from revision %" PRId64 " or later", start, st.compact_revision,
                 st.compact_revision + 1);
        reply_create(call, 0, st.compact_revision + 1, reason, st.revision);
    }
}

static void on_create(void *arg, struct rpc_call *call)
{
    struct watch_hub *h = arg;
    const Cairn__WatchCreateRequest *q = rpc_call_request(call)->watch_create;
    char msg[300];
    struct watcher *w = watcher_new(h, call, q);
    if (!w) {
        rpc_call_error(call, ENOMEM, NULL);
        return;
    }
    pthread_mutex_lock(&h->mu);
    int code = h->stopping ? CAIRN_E_STOPPED : reserve(h, w->pipe, msg, sizeof msg);
    if (code) {
        pthread_mutex_unlock(&h->mu);
        free_watcher_memory(w);
        if (code == CAIRN_E_STOPPED)
            rpc_call_error(call, code, NULL);
        else
            rpc_call_error(call, code, "%s", msg);
        return;
    }
    int64_t obs = __atomic_load_n(&h->obs_rev, __ATOMIC_ACQUIRE);
    if (q->start_revision == 0 || q->start_revision > obs) {
        /* from now or from the future: the dispatcher's batches bring everything from next_rev on */
        register_watcher(h, w, W_SYNCED, q->start_revision ? q->start_revision : obs + 1);
        int64_t id = w->id;
        pthread_mutex_unlock(&h->mu);
        reply_create(call, id, 0, NULL, obs);
        return;
    }
    pthread_mutex_unlock(&h->mu);
    rpc_call_read(call, 0, create_read, w);
}

/* With auth on, a watch answers only the user who made it: its ID would
 * otherwise let anyone with a token read events of keys they may not read.
 * (With auth off every caller is "".) */
static bool owner(const struct watcher *w, struct rpc_call *call)
{
    uint64_t rev;
    return strcmp(w->user, rpc_call_auth(call, &rev)) == 0;
}

/* A poll's timeout_ms and max_bytes as the member applies them: its deadline, and *max. */
static int64_t poll_bounds(uint32_t timeout_ms, uint32_t max_bytes, size_t *max)
{
    uint32_t ms = timeout_ms ? (timeout_ms < WATCH_POLL_MAX_MS ? timeout_ms : WATCH_POLL_MAX_MS) : WATCH_POLL_DEFAULT_MS;
    size_t m = max_bytes ? max_bytes : WATCH_REPLY_DEFAULT;
    *max = m < WATCH_REPLY_MIN ? WATCH_REPLY_MIN : m > WATCH_REPLY_MAX ? WATCH_REPLY_MAX : m;
    return mono_now_ns() + (int64_t)ms * 1000000LL;
}

/* The refusal of a poll past WATCH_MAX_PARKED (TOO_MANY_REQUESTS). */
static void too_many_parked(const struct watch_hub *h, char *msg, size_t len)
{
    snprintf(msg, len, "too many watch polls waiting on member %s (%d, the most it parks so other requests keep "
             "contexts); poll fewer watches at once or spread them over members", h->cfg->name, WATCH_MAX_PARKED);
}

static void on_next(void *arg, struct rpc_call *call)
{
    struct watch_hub *h = arg;
    const Cairn__WatchNextRequest *q = rpc_call_request(call)->watch_next;
    struct wreply *r = calloc(1, sizeof(*r)), *replies = NULL;
    if (!r) {
        rpc_call_error(call, ENOMEM, NULL);
        return;
    }
    size_t max;
    int64_t deadline = poll_bounds(q->timeout_ms, q->max_bytes, &max);
    int code = 0;
    char msg[300] = "";
    pthread_mutex_lock(&h->mu);
    struct watcher *w = h->stopping ? NULL : table_get(h, q->watch_id);
    if (h->stopping) {
        code = CAIRN_E_STOPPED;
        snprintf(msg, sizeof msg, "member %s is stopping; resume the watch on another member", h->cfg->name);
    } else if (!w) {
        code = CAIRN_E_WATCH_NOT_FOUND;
        snprintf(msg, sizeof msg, "watch %" PRId64 " not found on member %s: it was canceled, or dropped after "
                 "%u ms without a poll (--watch-idle-timeout); create it again from your last "
                 "progress_revision + 1", q->watch_id, h->cfg->name, h->idle_ms);
    } else if (!owner(w, call)) {
        code = CAIRN_E_PERMISSION_DENIED;
        snprintf(msg, sizeof msg, "permission denied: watch %" PRId64 " was created by another user", q->watch_id);
    } else {
        if (w->call)
            detach_empty(h, w, 0, &replies); /* the client gave up on it: it must not carry events */
        if (w->group)
            group_end(h, w->group, 0, &replies); /* the same for a WatchPoll it was in */
        w->reply = r;
        r = NULL;
        w->call = call;
        w->call_pipe = rpc_call_pipe(call);
        w->max_bytes = max;
        w->deadline_ns = deadline;
        h->n_parked++;
        size_t before = h->n_parked;
        whub_answer(h, w, false, &replies);
        if (h->n_parked == before && h->n_parked > WATCH_MAX_PARKED) {
            r = w->reply;
            w->reply = NULL;
            w->call = NULL;
            h->n_parked--;
            w->active_ns = mono_now_ns();
            code = CAIRN_E_TOO_MANY_REQUESTS;
            too_many_parked(h, msg, sizeof msg);
        } else if (h->n_parked == before) {
            whub_nudge_timer(h, w->deadline_ns);
        }
    }
    pthread_mutex_unlock(&h->mu);
    whub_send(h, replies);
    free(r);
    if (code)
        rpc_call_error(call, code, "%s", msg);
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* A WatchPoll's IDs are distinct and within bounds: 0, or a CAIRN_E_ code with msg. */
static int check_poll_ids(const Cairn__WatchPollRequest *q, char *msg, size_t len)
{
    if (!q->n_watch_ids || q->n_watch_ids > WATCH_POLL_MAX_IDS) {
        snprintf(msg, len, "a WatchPoll names %zu watches; it takes 1 to %d", q->n_watch_ids, WATCH_POLL_MAX_IDS);
        return CAIRN_E_INVALID_ARGUMENT;
    }
    int64_t *ids = malloc(q->n_watch_ids * sizeof(*ids));
    if (!ids) {
        snprintf(msg, len, "out of memory");
        return ENOMEM;
    }
    memcpy(ids, q->watch_ids, q->n_watch_ids * sizeof(*ids));
    qsort(ids, q->n_watch_ids, sizeof(*ids), cmp_id);
    int code = 0;
    for (size_t i = 1; i < q->n_watch_ids && !code; i++)
        if (ids[i] == ids[i - 1]) {
            snprintf(msg, len, "a WatchPoll names watch %" PRId64 " twice", ids[i]);
            code = CAIRN_E_INVALID_ARGUMENT;
        }
    free(ids);
    return code;
}

/*
 * Find the poll's watchers into g->w (with mu).  0; or IDs this member
 * does not have into r->missing; or a CAIRN_E_ code with msg.
 */
static int find_members(struct watch_hub *h, struct rpc_call *call, const Cairn__WatchPollRequest *q,
                        struct wgroup *g, struct wreply *r, char *msg, size_t len)
{
    for (size_t i = 0; i < q->n_watch_ids; i++) {
        struct watcher *w = table_get(h, q->watch_ids[i]);
        if (w && !owner(w, call)) {
            snprintf(msg, len, "permission denied: watch %" PRId64 " was created by another user", q->watch_ids[i]);
            return CAIRN_E_PERMISSION_DENIED;
        }
        if (!w && !r->missing && !(r->missing = malloc(q->n_watch_ids * sizeof(*r->missing)))) {
            snprintf(msg, len, "out of memory");
            return ENOMEM;
        }
        if (!w)
            r->missing[r->n_missing++] = q->watch_ids[i];
        g->w[i] = w;
    }
    return 0;
}

/* Park g with its members (with mu); answer it at once if one has something to say. */
static int park_group(struct watch_hub *h, struct wgroup *g, struct wreply **replies, char *msg, size_t len)
{
    /* the client gave up on the polls its watches were in: they end empty first, then the watches join g */
    for (size_t i = 0; i < g->n; i++) {
        struct watcher *w = g->w[i];
        if (w->call)
            detach_empty(h, w, 0, replies);
        if (w->group)
            group_end(h, w->group, 0, replies);
    }
    for (size_t i = 0; i < g->n; i++)
        g->w[i]->group = g;
    group_link(h, g);
    for (size_t i = 0; i < g->n && !g->ready; i++)
        mark_ready(h, g->w[i]);
    if (g->ready) {
        group_answer(h, g, false, replies);
        return 0;
    }
    if (h->n_parked > WATCH_MAX_PARKED) {
        free(group_unpark(h, g));
        group_free(g);
        too_many_parked(h, msg, len);
        return CAIRN_E_TOO_MANY_REQUESTS;
    }
    whub_nudge_timer(h, g->deadline_ns);
    return 0;
}

static void on_poll(void *arg, struct rpc_call *call)
{
    struct watch_hub *h = arg;
    const Cairn__WatchPollRequest *q = rpc_call_request(call)->watch_poll;
    char msg[300] = "";
    int code = check_poll_ids(q, msg, sizeof msg);
    if (code) {
        rpc_call_error(call, code, "%s", msg);
        return;
    }
    struct wgroup *g = calloc(1, sizeof(*g));
    struct wreply *r = calloc(1, sizeof(*r)), *replies = NULL;
    if (!g || !r || !(g->w = calloc(q->n_watch_ids, sizeof(*g->w)))) {
        free(g);
        free(r);
        rpc_call_error(call, ENOMEM, NULL);
        return;
    }
    g->deadline_ns = poll_bounds(q->timeout_ms, q->max_bytes, &g->max_bytes);
    g->n = q->n_watch_ids;
    g->call = call;
    g->pipe = rpc_call_pipe(call);
    pthread_mutex_lock(&h->mu);
    if (h->stopping) {
        code = CAIRN_E_STOPPED;
        snprintf(msg, sizeof msg, "member %s is stopping; resume the watches on another member", h->cfg->name);
    } else {
        code = find_members(h, call, q, g, r, msg, sizeof msg);
    }
    if (!code && !r->n_missing) {
        code = park_group(h, g, &replies, msg, sizeof msg);
        g = NULL; /* parked, answered or freed */
    }
    pthread_mutex_unlock(&h->mu);
    whub_send(h, replies);
    if (g)
        group_free(g);
    if (code) {
        rpc_call_error(call, code, "%s", msg);
        wreply_free(r);
    } else if (r->n_missing) {
        /* nothing parked: the client makes the missing watches again and polls anew */
        r->call = call;
        r->poll = true;
        whub_send(h, r);
    } else {
        wreply_free(r);
    }
}

static void on_cancel(void *arg, struct rpc_call *call)
{
    struct watch_hub *h = arg;
    int64_t id = rpc_call_request(call)->watch_cancel->watch_id;
    struct wreply *replies = NULL;
    pthread_mutex_lock(&h->mu);
    struct watcher *w = h->stopping ? NULL : table_get(h, id);
    if (w && !owner(w, call)) {
        pthread_mutex_unlock(&h->mu);
        rpc_call_error(call, CAIRN_E_PERMISSION_DENIED, "permission denied: watch %" PRId64 " was created by another user",
                       id);
        return;
    }
    if (w) {
        if (w->call || w->group) {
            h->total_bytes -= w->q.bytes < h->total_bytes ? w->q.bytes : h->total_bytes;
            wq_clear(&w->q);
            w->canceled = true;
            w->compact_revision = 0;
            snprintf(w->cancel_reason, sizeof w->cancel_reason, "canceled by WatchCancel");
        }
        if (w->group) {
            group_answer(h, w->group, false, &replies); /* tells w's end, and what the others have, and removes w */
        } else {
            add_reply(&replies, detach(h, w, true));
            whub_remove(h, w);
        }
    }
    bool stopping = h->stopping;
    pthread_mutex_unlock(&h->mu);
    whub_send(h, replies);
    if (stopping) {
        rpc_call_error(call, CAIRN_E_STOPPED, NULL);
    } else if (!w) {
        rpc_call_error(call, CAIRN_E_WATCH_NOT_FOUND, "watch %" PRId64 " not found on member %s: already canceled "
                       "or dropped", id, h->cfg->name);
    } else {
        Cairn__Response resp = CAIRN__RESPONSE__INIT;
        Cairn__WatchCancelResponse body = CAIRN__WATCH_CANCEL_RESPONSE__INIT;
        resp.body_case = CAIRN__RESPONSE__BODY_WATCH_CANCEL;
        resp.watch_cancel = &body;
        rpc_call_reply(call, &resp, 0);
    }
}

/* Every poll parked from this connection answers now (etcd's RequestProgress). */
static void on_progress(void *arg, struct rpc_call *call)
{
    struct watch_hub *h = arg;
    uint32_t pipe = rpc_call_pipe(call);
    struct wreply *replies = NULL;
    pthread_mutex_lock(&h->mu);
    struct wlist *lists[2] = {&h->synced, &h->unsynced};
    for (int l = 0; l < 2; l++)
        for (struct watcher *w = lists[l]->head, *nx; w; w = nx) {
            nx = w->next;
            if (w->call && w->call_pipe == pipe)
                whub_answer(h, w, true, &replies);
        }
    for (struct wgroup *g = h->groups, *nx; g; g = nx) {
        nx = g->next;
        if (g->pipe == pipe)
            group_answer(h, g, true, &replies);
    }
    pthread_mutex_unlock(&h->mu);
    whub_send(h, replies);
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__WatchProgressResponse body = CAIRN__WATCH_PROGRESS_RESPONSE__INIT;
    resp.body_case = CAIRN__RESPONSE__BODY_WATCH_PROGRESS;
    resp.watch_progress = &body;
    rpc_call_reply(call, &resp, 0);
}

/* ---------------------------------------------------------------- life */

int watch_start(const struct config *cfg, struct node *n, struct watch_hub **out, char *err, size_t errlen)
{
    struct watch_hub *h = calloc(1, sizeof(*h));
    int rc;
    if (!h || !(h->table = calloc(1024, sizeof(*h->table)))) {
        free(h);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    h->table_size = 1024;
    h->cfg = cfg;
    h->node = n;
    h->idle_ms = cfg->watch_idle_timeout_ms;
    h->max_watchers = cfg->max_watchers;
    h->max_per_conn = cfg->max_watchers_per_connection;
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->ring_mu, NULL);
    mono_cond_init(&h->sync_cv);
    mono_cond_init(&h->ring_cv);
    h->replaced = true; /* until the first status read: revisions before now are not delivered live */
    h->routes[0] = (struct rpc_route){CAIRN__REQUEST__BODY_WATCH_CREATE, on_create, h, 0};
    h->routes[1] = (struct rpc_route){CAIRN__REQUEST__BODY_WATCH_NEXT, on_next, h, 0};
    h->routes[2] = (struct rpc_route){CAIRN__REQUEST__BODY_WATCH_CANCEL, on_cancel, h, 0};
    h->routes[3] = (struct rpc_route){CAIRN__REQUEST__BODY_WATCH_PROGRESS, on_progress, h, 0};
    h->routes[4] = (struct rpc_route){CAIRN__REQUEST__BODY_WATCH_POLL, on_poll, h, 0};
    struct node_observer obs;
    watch_feed_observer(h, &obs);
    if ((rc = node_observe(n, &obs)) < 0) {
        snprintf(err, errlen, "cannot observe the node: %s", cairn_strerror(rc));
        watch_free(h);
        return rc;
    }
    /* From here on the node may call the observer: on failure h is stopped but never freed. */
    node_reader_register(n, &h->slot);
    h->slot_registered = true;
    if ((rc = watch_sync_replaced(h)) < 0) {
        snprintf(err, errlen, "cannot read the store's revision: %s", cairn_strerror(rc));
        goto fail;
    }
    if ((rc = -pthread_create(&h->disp_thread, NULL, watch_disp_main, h)) < 0) {
        snprintf(err, errlen, "cannot start the watch dispatcher: %s", strerror(-rc));
        goto fail;
    }
    h->disp_started = true;
    pthread_setname_np(h->disp_thread, "cairn-watch");
    if ((rc = -pthread_create(&h->sync_thread, NULL, watch_sync_main, h)) < 0) {
        snprintf(err, errlen, "cannot start the watch catch-up thread: %s", strerror(-rc));
        goto fail;
    }
    h->sync_started = true;
    pthread_setname_np(h->sync_thread, "cairn-wsync");
    *out = h;
    return 0;
fail:
    watch_stop(h); /* the observer now does nothing; h stays allocated for it while the process exits */
    return rc;
}

const struct rpc_route *watch_routes(struct watch_hub *h, size_t *n)
{
    *n = sizeof h->routes / sizeof h->routes[0];
    return h->routes;
}

void watch_stop(struct watch_hub *h)
{
    if (!h)
        return;
    struct wreply *replies = NULL;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    struct wlist *lists[2] = {&h->synced, &h->unsynced};
    for (int l = 0; l < 2; l++)
        for (struct watcher *w = lists[l]->head; w; w = w->next)
            if (w->call)
                detach_empty(h, w, CAIRN_E_STOPPED, &replies);
    while (h->groups)
        group_end(h, h->groups, CAIRN_E_STOPPED, &replies);
    pthread_cond_broadcast(&h->sync_cv);
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_lock(&h->ring_mu);
    h->ring_stop = true;
    pthread_cond_signal(&h->ring_cv);
    pthread_mutex_unlock(&h->ring_mu);
    whub_send(h, replies);
    if (h->disp_started)
        pthread_join(h->disp_thread, NULL);
    if (h->sync_started)
        pthread_join(h->sync_thread, NULL);
    h->disp_started = h->sync_started = false;
    if (h->slot_registered)
        node_reader_unregister(h->node, &h->slot);
    h->slot_registered = false;
}

void watch_free(struct watch_hub *h)
{
    if (!h)
        return;
    struct wlist *lists[2] = {&h->synced, &h->unsynced};
    for (int l = 0; l < 2; l++)
        while (lists[l]->head) {
            struct watcher *w = lists[l]->head;
            list_del(lists[l], w);
            free_watcher_memory(w);
        }
    struct wbatch *chains[2] = {h->ring, h->recent};
    for (int c = 0; c < 2; c++)
        while (chains[c]) {
            struct wbatch *b = chains[c];
            chains[c] = b->next;
            wbatch_free(b);
        }
    for (size_t i = 0; i < WATCH_PIPE_BUCKETS; i++)
        while (h->pipes[i]) {
            struct pipe_count *pc = h->pipes[i];
            h->pipes[i] = pc->next;
            free(pc);
        }
    free(h->table);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->ring_mu);
    pthread_cond_destroy(&h->sync_cv);
    pthread_cond_destroy(&h->ring_cv);
    free(h);
}

void watch_get_stats(struct watch_hub *h, struct watch_stats *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&h->mu);
    st->watchers = h->n_watchers;
    st->synced = h->synced.n;
    st->unsynced = h->unsynced.n;
    st->parked = h->n_parked;
    st->queued_bytes = h->total_bytes;
    st->resyncs = h->resyncs;
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_lock(&h->ring_mu);
    st->lost_batches = h->lost_batches;
    st->dispatcher_wakeups = h->disp_wakeups;
    pthread_mutex_unlock(&h->ring_mu);
    st->events_delivered = __atomic_load_n(&h->events_delivered, __ATOMIC_RELAXED);
}
