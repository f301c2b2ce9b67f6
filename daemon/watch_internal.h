/*
 * daemon/watch's insides, shared by watch.c (the hub: routes, long polls),
 * watch_feed.c (the applied observer and the dispatcher), watch_sync.c
 * (catching up from the store) and watch_buf.c (events, key ranges and per-watcher queues:
 * pure code without locks, unit-tested by test/unit/test_watch.c).
 * Nothing here is for other parts of the daemon.
 */
#ifndef CAIRN_DAEMON_WATCH_INTERNAL_H
#define CAIRN_DAEMON_WATCH_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/watch.h"
#include "storage/mvcc.h"

/* ---------------------------------------------------------------- bounds (docs/daemon.md, "Watch") */

/* A watcher's queue past which the dispatcher stops feeding it and it catches up from the store later. */
#define WATCH_QUEUE_BYTES ((size_t)1 << 20)
/* Every queue together; past it only watchers with an empty queue are fed. */
#define WATCH_TOTAL_BYTES ((size_t)256 << 20)
/* One revision's events for a watch without fragment (sent whole); beyond, the watch is canceled. */
#define WATCH_REV_MAX_BYTES ((size_t)32 << 20)
/* WatchNext max_bytes: 0 means the default; others are clamped into [MIN, MAX]. */
#define WATCH_REPLY_DEFAULT ((size_t)1 << 20)
#define WATCH_REPLY_MIN ((size_t)256)
#define WATCH_REPLY_MAX ((size_t)32 << 20)
/* WatchNext timeout_ms: 0 means the default; longer ones are cut to the maximum. */
#define WATCH_POLL_DEFAULT_MS 10000
#define WATCH_POLL_MAX_MS 60000
/* Charged per event on top of its byte strings (protobuf framing, the header fields). */
#define WATCH_EVENT_OVERHEAD 32
/* The ring of apply batches between the observer and the dispatcher. */
#define WATCH_RING_BATCHES 4096
#define WATCH_RING_BYTES ((size_t)64 << 20)
/* One apply batch's events larger than this are not copied on the node thread (lost: read from the store). */
#define WATCH_BATCH_MAX_BYTES ((size_t)16 << 20)
/* Batches the dispatcher keeps after feeding them, so a watcher that caught up can join without a gap. */
#define WATCH_RECENT_BATCHES 1024
#define WATCH_RECENT_BYTES ((size_t)16 << 20)
/* History rows per catch-up page: between these, sized from the watcher's room and its average event. */
#define WATCH_PAGE_MIN 8
#define WATCH_PAGE_MAX 1000

/* ---------------------------------------------------------------- events (watch_buf.c) */

/*
 * One event, copied out of an apply batch or a history row, shared (by
 * reference count) between the batch and every queue holding it.  Byte
 * strings point into the same allocation.  Immutable once made.
 */
struct wev {
    int refs;                 /* atomic */
    int64_t rev;              /* main revision */
    enum mvcc_event_type type;
    bool has_prev;            /* prev is the key's previous live value */
    size_t size;              /* bytes charged without prev_kv */
    size_t prev_size;         /* extra bytes charged with prev_kv */
    struct mvcc_kv kv;        /* a DELETE carries key and mod_revision only */
    struct mvcc_kv prev;
};

/* wev_new: a copy of kv (and of prev when not NULL) with one reference; NULL without memory. */
struct wev *wev_new(enum mvcc_event_type type, const struct mvcc_kv *kv, const struct mvcc_kv *prev);
/* wev_copy_size: the bytes wev_new would allocate for these (to bound a batch before copying it). */
size_t wev_copy_size(const struct mvcc_kv *kv, const struct mvcc_kv *prev);
void wev_ref(struct wev *e);
void wev_unref(struct wev *e);
/* wev_bytes: what e costs a watcher with (or without) prev_kv. */
static inline size_t wev_bytes(const struct wev *e, bool prev_kv)
{
    return e->size + (prev_kv ? e->prev_size : 0);
}

/* ---------------------------------------------------------------- key ranges and filters */

/* A watched key range with etcd's rules (mvcc.h): end empty = key alone, "\0" = every key >= key. */
struct wrange {
    uint8_t *key, *end; /* owned */
    size_t klen, elen;
};

/* wrange_init: copy key and end into r.  0 or -ENOMEM. */
int wrange_init(struct wrange *r, const void *key, size_t klen, const void *end, size_t elen);
void wrange_free(struct wrange *r);
bool wrange_match(const struct wrange *r, const void *key, size_t klen);

struct wfilter {
    struct wrange range;
    bool noput, nodelete;
};

/* wfilter_match: e is in the range and not filtered out. */
bool wfilter_match(const struct wfilter *f, const struct wev *e);

/* ---------------------------------------------------------------- a watcher's queue */

/* Events waiting for a WatchNext, oldest first; holds one reference on each. */
struct wq {
    struct wev **v;
    size_t head, n, cap;
    size_t bytes; /* charged, with the owner's prev_kv choice */
};

static inline struct wev *wq_at(const struct wq *q, size_t i)
{
    return q->v[(q->head + i) % q->cap];
}

/* wq_reserve: room for extra more events, so that many wq_push calls cannot fail.  0 or -ENOMEM. */
int wq_reserve(struct wq *q, size_t extra);
/* wq_push: append e (the queue takes over one reference the caller holds) charging bytes.  0 or -ENOMEM. */
int wq_push(struct wq *q, struct wev *e, size_t bytes);
/* wq_pop: take the oldest event out (the caller gets its reference); bytes is what it was charged. */
struct wev *wq_pop(struct wq *q, size_t bytes);
/* wq_clear: drop every event and free the array. */
void wq_clear(struct wq *q);

/*
 * wq_plan: how many events from the head of q one reply may take.  Events
 * with rev < complete_below are whole revisions; one at complete_below or
 * above belongs to a revision still being read.  Whole revisions go
 * together until max_bytes (the first one always, whatever its size); with
 * fragment, a revision larger than max_bytes, or an incomplete one that has
 * reached frag_min bytes, is split and *is_fragment set.  Returns 0 when
 * nothing can be sent yet.
 */
size_t wq_plan(const struct wq *q, int64_t complete_below, size_t max_bytes, bool prev_kv, bool fragment,
               size_t frag_min, bool *is_fragment);

/*
 * wq_progress: the progress revision after the first n events are taken:
 * every matching event up to it has been handed out.
 */
int64_t wq_progress(const struct wq *q, size_t n, int64_t complete_below);

/* ---------------------------------------------------------------- batches */

/*
 * The events of one apply batch, revisions (from, to].  A lost batch holds
 * no events: watchers that need them read them from the store.
 */
struct wbatch {
    int64_t from, to;
    bool lost;
    struct wev **ev;
    size_t n;
    size_t bytes;
    struct wbatch *next;
};

void wbatch_free(struct wbatch *b);

/* ---------------------------------------------------------------- watchers and the hub (watch.c) */

enum wstate { W_SYNCED, W_UNSYNCED };

struct wreply;
struct watcher;

/* WatchPoll: the most watches one poll names. */
#define WATCH_POLL_MAX_IDS 4096

/*
 * A parked WatchPoll: one request context for several watchers.  A member
 * w[i] points back with its group field; a member that leaves early (its
 * watch removed, or polled anew) leaves a NULL.  The poll is answered at
 * the end of the round that made any member answerable (whub_flush), so
 * one batch's events for all of them go in one reply.
 */
struct wgroup {
    struct rpc_call *call;
    uint32_t pipe;
    struct watcher **w;
    size_t n;
    size_t max_bytes;
    int64_t deadline_ns;
    bool ready;                   /* a member can be answered: whub_flush answers it */
    struct wgroup *prev, *next;   /* hub.groups */
};

struct watcher {
    struct watch_hub *h;
    int64_t id;
    uint32_t pipe;                /* the connection that created it (per-connection limit) */
    char remote[64];              /* its address, for logs */
    char user[256];               /* who created it (auth); only that user may poll or cancel it */
    struct wfilter f;
    bool prev_kv, progress_notify, fragment;
    enum wstate state;
    struct watcher *prev, *next;  /* in hub.synced or hub.unsynced */
    struct watcher *hnext;        /* id table chain */
    /* Every matching event below next_rev is queued or delivered.  Unsynced
     * with cursor_sub >= 0: the rows of next_rev up to that sub are queued too. */
    int64_t next_rev;
    int64_t cursor_sub;
    struct wq q;
    size_t avg_event;             /* catch-up page sizing */
    bool busy;                    /* the catch-up thread works on it without the lock */
    bool dead;                    /* removed while busy: the catch-up thread frees it */
    /* Canceled by the member (compaction, a revision too large): told once the queue is empty. */
    bool canceled;
    int64_t compact_revision;
    char cancel_reason[200];
    /* The parked WatchNext, if any, and the reply made for it before it parked. */
    struct rpc_call *call;
    struct wreply *reply;
    int64_t deadline_ns;
    size_t max_bytes;
    uint32_t call_pipe;
    int64_t active_ns;            /* creation or last answered poll: the idle drop counts from here */
    struct wgroup *group;         /* the WatchPoll it is parked in (never with call) */
};

struct wlist {
    struct watcher *head, *tail;
    size_t n;
};

struct pipe_count {
    uint32_t pipe, n;
    struct pipe_count *next;
};

#define WATCH_PIPE_BUCKETS 256

/* One WatchNext answer, built under the hub lock and sent after it (watch.c). */
struct wreply {
    struct rpc_call *call;
    int64_t watch_id;
    struct wev **ev;              /* references owned */
    size_t n;
    bool prev_kv, fragment, canceled;
    int64_t compact_revision, progress;
    char cancel_reason[200];
    int err;                      /* a positive CAIRN_E_ code: an error reply instead */
    /* A WatchPoll answer: its parts (one per watch, in order) or the IDs it did not find. */
    bool poll;
    struct wreply *parts;
    int64_t *missing;
    size_t n_missing;
    struct wreply *next;
};

struct watch_hub {
    const struct config *cfg;
    struct node *node;
    struct rpc_route routes[5];
    uint32_t idle_ms, max_watchers, max_per_conn;

    /* --- guarded by mu: watchers, queues, parked polls, the recent batches */
    pthread_mutex_t mu;
    pthread_cond_t sync_cv;       /* the catch-up thread: work, a replaced store, or stop */
    struct watcher **table;       /* by id, chained */
    size_t table_size, n_watchers, n_reserved;
    struct pipe_count *pipes[WATCH_PIPE_BUCKETS];
    struct wlist synced, unsynced;
    struct wgroup *groups, *groups_tail; /* parked WatchPolls */
    size_t n_ready;               /* groups marked ready since the last whub_flush */
    size_t poll_rr;               /* where the next WatchPoll answer starts among its members */
    size_t n_parked;              /* parked requests: WatchNexts and WatchPolls */
    size_t total_bytes;
    int64_t hub_rev;              /* synced watchers have been fed every batch up to here */
    struct wbatch *recent, *recent_tail;
    size_t recent_n, recent_bytes;
    bool stopping;
    uint64_t resyncs;

    /* --- guarded by ring_mu: what the observer hands the dispatcher */
    pthread_mutex_t ring_mu;
    pthread_cond_t ring_cv;       /* the dispatcher: batches, a parked poll's deadline, or stop */
    struct wbatch *ring, *ring_tail;
    size_t ring_n, ring_bytes;
    int64_t lost_from, lost_to;   /* revisions dropped after the ring's batches (0, 0: none) */
    int64_t obs_rev;              /* the last revision observed; read atomically outside */
    bool replaced;                /* the store was replaced: the next revisions count as lost */
    bool ring_stop;
    int64_t disp_wake_ns;         /* when the dispatcher will wake on its own; 0 while it computes that */
    bool timer_dirty;             /* a poll parked with an earlier deadline: recompute */
    uint64_t lost_batches;
    uint64_t disp_wakeups;        /* rounds of the dispatcher's loop */

    int live;                     /* atomic: watchers, so the observer copies nothing when there are none */
    uint64_t events_delivered;    /* atomic */

    pthread_t disp_thread, sync_thread;
    bool disp_started, sync_started;
    struct node_reader_slot slot; /* the catch-up thread's reader */
    bool slot_registered;
};

/* watch.c, for watch_sync.c; all with h->mu held. */
void whub_unsync(struct watch_hub *h, struct watcher *w);
void whub_set_synced(struct watch_hub *h, struct watcher *w);
/* whub_rotate: w to the end of its list (the catch-up thread's round robin). */
void whub_rotate(struct watch_hub *h, struct watcher *w);
/* whub_feed: give w the events of b it lacks; false if w went back to catching up. */
bool whub_feed(struct watch_hub *h, struct watcher *w, const struct wbatch *b);
/* whub_wake: if w has a parked WatchNext that can be answered now, detach it into *replies; if
 * it is in a WatchPoll, mark that ready for whub_flush. */
void whub_wake(struct watch_hub *h, struct watcher *w, struct wreply **replies);
/* whub_flush: answer the WatchPolls marked ready into *replies.  Every caller of whub_wake calls
 * it before it lets go of mu. */
void whub_flush(struct watch_hub *h, struct wreply **replies);
/* whub_group_timers: answer WatchPolls past their deadline; returns the earliest deadline left, or next. */
int64_t whub_group_timers(struct watch_hub *h, int64_t now, int64_t next, struct wreply **replies);
/* whub_cancel: the member cancels w (told to the client once its queue is drained). */
void whub_cancel(struct watch_hub *h, struct watcher *w, int64_t compact_revision, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void whub_free_watcher(struct watch_hub *h, struct watcher *w);
/* whub_answer: answer w's parked poll if there is something to say (or force); a told cancellation ends w. */
void whub_answer(struct watch_hub *h, struct watcher *w, bool force, struct wreply **replies);
/* whub_remove: forget w (table, lists, counts); freed now, or by the catch-up thread if it is busy with it. */
void whub_remove(struct watch_hub *h, struct watcher *w);
/* whub_nudge_timer: make the dispatcher wake by deadline (takes ring_mu). */
void whub_nudge_timer(struct watch_hub *h, int64_t deadline);
/* whub_wake_dispatcher: wake the dispatcher if revisions wait for it as lost (takes ring_mu). */
void whub_wake_dispatcher(struct watch_hub *h);
/* whub_send: send replies built under the lock (call without it). */
void whub_send(struct watch_hub *h, struct wreply *replies);

/* watch_feed.c */
void watch_feed_observer(struct watch_hub *h, struct node_observer *o);
void *watch_disp_main(void *arg);

/* watch_sync.c */
void *watch_sync_main(void *arg);
/* watch_sync_replaced: the store changed under the observer: push the jump as lost (reads the store). */
int watch_sync_replaced(struct watch_hub *h);
/* watch_sync_wants: the catch-up thread has something to read for w (with h->mu held). */
bool watch_sync_wants(const struct watch_hub *h, const struct watcher *w);

#endif
