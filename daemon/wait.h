/*
 * The wait table: client writes waiting for their Raft entry to be applied,
 * keyed by the unique request ID stamped in the entry.  The RPC layer adds a
 * waiter before it proposes; the node thread fires it when the entry is
 * applied (or fails it when the proposal cannot be made); a periodic sweep
 * fails waiters whose deadline passed with "outcome unknown".  Thread-safe:
 * one mutex; callbacks run with it released.
 *
 * Replies held for a batch: the node thread answers a whole apply batch at
 * once, and sending a reply means taking nng's per-socket lock, which nng's
 * own threads take for every send and receive completion (under load the
 * node thread waited for it about 17 times per batch of ~100 puts,
 * docs/performance.md "Session 8").
 * Between wait_hold() and wait_release() the holding thread's replies to
 * waiters added with WAIT_DEFER are queued; release sends a few of them
 * itself and hands a larger batch to the table's sender thread, so the node
 * thread goes on to its next batch while the replies go out.
 */
#ifndef CAIRN_DAEMON_WAIT_H
#define CAIRN_DAEMON_WAIT_H

#include <stddef.h>
#include <stdint.h>

/*
 * What a waiter is told.  reply is a packed cairn.Response the callback takes
 * ownership of (NULL when err is set instead: the caller builds the error
 * reply).  err is 0 or a positive CAIRN_E_ code; with a reply it is the
 * error the reply itself carries (0: success), for counting.
 */
typedef void (*wait_fn)(void *arg, void *reply, size_t reply_len, int err);

struct wait_table;

/* wait_new: an empty table; NULL if out of memory. */
struct wait_table *wait_new(void);

/* wait_free: make the calls the sender thread still has, stop it, fail every remaining waiter with err and free the table. */
void wait_free(struct wait_table *w, int err);

/*
 * wait_add flags.  WAIT_DEFER: a call with a reply may be made later, on the
 * table's sender thread (see wait_hold), so fn must not use anything that
 * is freed before wait_free().  Calls without a reply (errors) are never
 * deferred.
 */
#define WAIT_DEFER 1

/* wait_add: register request id with a deadline (monotonic ns).  0, -EEXIST, -ENOMEM. */
int wait_add(struct wait_table *w, uint64_t id, int64_t deadline_ns, wait_fn fn, void *arg, int flags);

/*
 * wait_fire: if id is waited on, remove it and call its function with
 * (reply, len, err), or queue that call while held (wait_hold); returns 1.
 * Otherwise returns 0 and the caller keeps reply.  Each waiter is called
 * exactly once.
 */
int wait_fire(struct wait_table *w, uint64_t id, void *reply, size_t len, int err);

/* wait_expire: fail every waiter whose deadline is <= now_ns with err; returns how many. */
size_t wait_expire(struct wait_table *w, int64_t now_ns, int err);

/*
 * wait_hold: until wait_release(), this thread's wait_fire() calls with a
 * reply to a WAIT_DEFER waiter are queued instead of made.  One holder at a
 * time (the node thread); other threads' fires are made at once as before.
 */
void wait_hold(struct wait_table *w);

/*
 * wait_release: make the queued calls: here when there are at most
 * WAIT_INLINE_MAX and the sender thread has nothing left to send (one
 * request in flight pays no hand-off), else on the sender thread, after
 * what it already has (replies leave in the order they were applied).
 */
#define WAIT_INLINE_MAX 4
void wait_release(struct wait_table *w);

/* wait_count: waiters registered now. */
size_t wait_count(struct wait_table *w);

#endif
