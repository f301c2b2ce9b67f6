/*
 * daemon/ckpt: the store's checkpointer, a thread that does the store's
 * slow disk work off the node thread (docs/performance.md, "Session 16").
 *
 * - Checkpoints of SQLite's WAL.  One of MVCC_WAL_FRAMES_DUE pages holds
 *   its thread for ~15 ms (copying 8 MiB into the database file and syncing
 *   both); on the node thread that stalled every write in flight, and was
 *   most of the three-member p99 at 64 puts in flight.  The node thread
 *   calls ckpt_due after an apply that left the WAL that long.
 * - Syncs of the store before a Raft snapshot purges the log (mvcc_sync's
 *   rule): ckpt_sync, answered through ops->synced.
 *
 * It reaches the store only between ops->hold and ops->release, through a
 * connection of its own (struct mvcc_checkpointer) opened on first use; the
 * owner calls ckpt_store_closing, with the store held exclusively, before
 * it closes or replaces the store.
 */
#ifndef CAIRN_DAEMON_CKPT_H
#define CAIRN_DAEMON_CKPT_H

struct mvcc_store;
struct histogram;
struct ckpt;

struct ckpt_ops {
    void *arg;
    /* Hold the store (readers' share) and return it; NULL if there is none. */
    struct mvcc_store *(*hold)(void *arg);
    void (*release)(void *arg);
    /* The sync ckpt_sync asked for: done (rc 0) or failed (rc < 0).  Called
     * on the checkpointer's thread, holding nothing. */
    void (*synced)(void *arg, int rc);
    struct histogram *durations; /* each checkpoint's or sync's duration, observed here (may be NULL) */
};

/* ckpt_start: start the thread (named cairn-ckpt). */
int ckpt_start(const struct ckpt_ops *ops, struct ckpt **out);

/* ckpt_due: a checkpoint is due.  Cheap, any thread; runs at most one per
 * CKPT_MIN_GAP_NS while they keep coming (each syncs two files). */
void ckpt_due(struct ckpt *k);

/* ckpt_sync: make every batch the writer committed before this call
 * durable, then ops->synced(rc).  One at a time: a second asked before the
 * first was answered is answered with it. */
void ckpt_sync(struct ckpt *k);

/* ckpt_store_closing: close the checkpointer's connection, with the store
 * held exclusively (so the thread is not between hold and release). */
void ckpt_store_closing(struct ckpt *k);

/* ckpt_stop: finish what is under way, stop the thread and free k (a sync
 * not yet started is answered with -CAIRN_E_STOPPED).  NULL is ignored. */
void ckpt_stop(struct ckpt *k);

#endif
