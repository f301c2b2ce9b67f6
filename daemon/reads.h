/*
 * The read path: a pool of reader threads, each with its own read-only store
 * handle, and etcd's linearizable read loop in front of it.  Linearizable
 * reads wait for one ReadIndex round that covers every read that arrived
 * before it was issued (batching), or on a lone voter take its commit index
 * at once, then wait for the store to apply that index; serializable reads
 * go straight to the pool.  No read runs on the node thread.  A read the
 * caller marks cheap (a point get) that need not wait runs on the
 * submitting thread itself when one of a few inline store handles is free:
 * no hand-off to a reader thread and back.  The caller owns each struct
 * read_job; it gets exactly one of run() or fail().
 */
#ifndef CAIRN_DAEMON_READS_H
#define CAIRN_DAEMON_READS_H

#include <stdint.h>

#include "daemon/node.h"

struct mvcc_reader;
struct reads;

struct read_job {
    /* On a reader thread with a handle on the store (r is NULL if it cannot
     * be read: then err says why). */
    void (*run)(struct read_job *j, struct mvcc_reader *r, int err);
    /* Instead of run: the read could not be served (positive CAIRN_E_ code). */
    void (*fail)(struct read_job *j, int code);
    int linearizable;
    int cheap;                 /* quick (a point get): may run inside reads_submit if it need not wait */
    int64_t deadline_ns;       /* CLOCK_MONOTONIC */
    /* private */
    struct read_job *next;
    uint64_t index;
};

/* reads_new: the read path, not yet attached to a node (its hooks go in node_start). */
struct reads *reads_new(int threads);

/* reads_hooks: fill the node hooks that feed the read path. */
void reads_hooks(struct reads *rs, struct node_hooks *hooks);

/* reads_start: attach the node and start the threads.  0 or a negative error. */
int reads_start(struct reads *rs, struct node *n);

/* reads_submit: queue j, or run a cheap one at once on this thread.  If the
 * read path is stopping, j->fail(STOPPED) is called at once. */
void reads_submit(struct reads *rs, struct read_job *j);

/* Counters since start (any thread). */
struct reads_stats {
    uint64_t rounds; /* ReadIndex requests sent to the node, each for a batch of linearizable reads */
    uint64_t solo;   /* linearizable reads that took a lone voter's commit index instead */
};
void reads_get_stats(struct reads *rs, struct reads_stats *st);

/* reads_idle: nonzero when no read is queued or running. */
int reads_idle(struct reads *rs);

/* reads_stop: fail every queued read with STOPPED, join the threads, free rs. */
void reads_stop(struct reads *rs);

#endif
