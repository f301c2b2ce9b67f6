/*
 * The node: the one thread that owns the member's Raft state, its WAL, the
 * store's writer and the peer transport.  It runs DESIGN.md's loop: take
 * proposals, ReadIndex requests and peer messages from its inbox, tick, and
 * for each Ready persist (WAL, fsync), send, apply (one SQLite transaction per
 * batch, the consistent index inside it), answer waiting writes through the
 * wait table, and take snapshots.  Other threads talk to it only through the
 * functions below; none of them blocks on the node's work.
 */
#ifndef CAIRN_DAEMON_NODE_H
#define CAIRN_DAEMON_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "base/histogram.h"
#include "daemon/boot.h"
#include "daemon/config.h"
#include "daemon/wait.h"

struct node;
struct mvcc_reader;

/* Called on the node thread; they must not block. */
struct node_hooks {
    void *arg;
    /* The ReadIndex request ctx may be served once the store has applied index. */
    void (*read_ready)(void *arg, uint64_t ctx, uint64_t index);
    /* The store has applied everything up to index. */
    void (*applied)(void *arg, uint64_t index);
    /* The leader changed (lead 0: none known). ReadIndex requests in flight are lost. */
    void (*leader_changed)(void *arg, uint64_t lead, uint64_t term);
};

/* What the node publishes for every thread (a consistent copy). */
struct node_info {
    uint64_t cluster_id, member_id;
    uint64_t term, lead, commit, applied, last_index, snapshot_index;
    int role;                    /* enum raft_role */
    int is_learner;
    int64_t revision, compact_revision;
    int64_t db_size, db_size_in_use; /* the store's file and the part holding data (bytes) */
    uint64_t proposals_pending;  /* in the inbox or waiting for a leader, not yet given to raft */
    int removed;                 /* this member was removed from the cluster: it must stop */
};

/*
 * node_start: take the WAL and store from bs (bs no longer owns them),
 * create Raft from what it recovered, start the peer transport and the node
 * thread.  waits is the table write requests wait in (the caller's).  Returns
 * 0 or a negative error with a message in err.
 */
int node_start(const struct config *cfg, struct boot_state *bs, struct wait_table *waits,
               const struct node_hooks *hooks, struct node **out, char *err, size_t errlen);

/*
 * node_release: let the node thread apply (and persist, send) from now on.
 * node_start leaves it holding its Readies (it still ticks and runs
 * node_call work) so the daemon's parts can register their observers and
 * load their state first.  Call it once every part has started.
 */
void node_release(struct node *n);

/*
 * node_stop: stop the thread after the Ready in progress, stop the peer
 * transport, fail what waits, and close the WAL and the store.  Every reader
 * slot must have been unregistered.  NULL is fine.
 */
void node_stop(struct node *n);

/* node_next_request_id: a request ID no other proposal of this member has or had. */
uint64_t node_next_request_id(struct node *n);

/*
 * node_propose: queue a packed internal RaftRequest (data, malloc'd; the node
 * takes it) whose ID is id.  The waiter registered under id is fired when the
 * entry is applied, or failed when the proposal cannot be made.  Returns 0,
 * -CAIRN_E_TOO_MANY_REQUESTS when the inbox is full, -CAIRN_E_STOPPED; on
 * error data has been freed and the waiter is still registered.
 */
int node_propose(struct node *n, uint64_t id, void *data, size_t len);

/* node_read_index: ask for a linearizable read point tagged ctx; the answer comes through hooks.read_ready. */
int node_read_index(struct node *n, uint64_t ctx);

/*
 * node_solo_read_index: any thread.  Nonzero while this member is the
 * leader and the only voter: a read point a linearizable read may take
 * instead of node_read_index's answer (raft_solo_read_index, published
 * before any entry above it is acknowledged).  0 otherwise.
 */
uint64_t node_solo_read_index(struct node *n);

/* node_info: the latest published state. */
void node_get_info(struct node *n, struct node_info *info);

/*
 * Readers.  A reader thread owns a slot; between node_read_begin and
 * node_read_end it may use the returned handle.  The node replaces the store
 * (installing a snapshot) only while no read is in progress, closing every
 * registered slot's handle; the next begin reopens it.
 */
struct node_reader_slot {
    struct mvcc_reader *r;
    bool keep; /* set after registering: the handle holds its read between calls (mvcc_reader_keep) */
    struct node_reader_slot *next;
};
void node_reader_register(struct node *n, struct node_reader_slot *slot);
void node_reader_unregister(struct node *n, struct node_reader_slot *slot);
/* node_read_begin: NULL (with *err set) if the store cannot be read; then do not call node_read_end. */
struct mvcc_reader *node_read_begin(struct node *n, struct node_reader_slot *slot, int *err);
void node_read_end(struct node *n);
/* node_reader_idle: a keep slot's owner, when the slot may sit unused: release its held read. */
void node_reader_idle(struct node *n, struct node_reader_slot *slot);

/*
 * Observers: other parts of the daemon (watch, lease) told about what the
 * node does, on the node thread.  They must not block.
 */
struct mvcc_entry;
struct mvcc_result;
struct mvcc_request;
struct kvconv_arena;
struct Cairnint__RaftRequest;
struct node_observer {
    void *arg;
    /* After each apply batch: the entries given to the store and its result (events in revision order). */
    void (*applied)(void *arg, const struct mvcc_entry *ents, size_t n, const struct mvcc_result *res);
    /* Leadership changed: lead is the new leader (0: none), is_self when it is this member. */
    void (*leader_changed)(void *arg, uint64_t lead, uint64_t term, int is_self);
    /* The store was replaced by a snapshot (state derived from it must be reloaded). */
    void (*store_replaced)(void *arg);
    /* Before each apply batch: true if this observer reads the previous
     * values in the batch's PUT events (mvcc_set_event_values); when none
     * does, the store skips reading them. */
    bool (*wants_event_values)(void *arg);
    /*
     * Before the store applies a committed request (log order, entries above
     * the store's consistent index only, so also during WAL replay after a
     * restart): rr as proposed, req what the store will be given.  It may
     * replace *req (with memory from arena, which lives until the batch's
     * replies are sent), or refuse the request by returning a positive
     * CAIRN_E_ code: the store applies a no-op in its place and the proposer
     * gets that error.  Whatever it decides must depend only on the log and
     * the store, never on the clock or this member's role, since every member
     * must decide alike.  0: apply as is.
     */
    int (*before_apply)(void *arg, uint64_t index, const struct Cairnint__RaftRequest *rr,
                        struct mvcc_request *req, struct kvconv_arena *arena);
};
#define NODE_MAX_OBSERVERS 8

/*
 * node_observe: add an observer; 0 or -ENOSPC.  The node applies nothing
 * (not even its WAL replay) until node_release, so observers added before it
 * see every entry; one added later misses what was applied before.
 */
int node_observe(struct node *n, const struct node_observer *o);

/*
 * node_propose_internal: propose a request nobody waits on (lease revokes,
 * checkpoints); rr->id and rr->proposer are set here.  Returns 0 once queued
 * (it may still be dropped: the caller retries if it matters), or an error.
 */
struct Cairnint__RaftRequest;
int node_propose_internal(struct node *n, struct Cairnint__RaftRequest *rr);

/*
 * node_call: run fn(n, arg, 0) on the node thread between two Readies (after
 * the apply in progress), for work that needs the store's writer.  If the
 * node stops first, fn(n, arg, 1) runs on the stopping thread instead: it
 * must only release arg and answer whoever waits.  Returns 0 once queued, or
 * -CAIRN_E_STOPPED / -ENOMEM (fn is then not called).  A long job should do a
 * bounded step and queue itself again, so applies go on in between.
 */
typedef void (*node_call_fn)(struct node *n, void *arg, int stopping);
int node_call(struct node *n, node_call_fn fn, void *arg);

/* node_writer: the store's writer; only inside a node_call function (stopping == 0). */
struct mvcc_store;
struct mvcc_store *node_writer(struct node *n);

/* node_checkpoint_owed: only inside a node_call function, when a checkpoint
 * of the store was held back by a reader's older snapshot and something
 * waits on a complete one (a defragmentation's file shrinks only then): the
 * node loop tries a passive checkpoint again every 100 ms until one gets
 * to the end of SQLite's WAL. */
void node_checkpoint_owed(struct node *n);

/*
 * node_transfer_leader: ask the leader (this member) to hand leadership to
 * member `to` (raft's leadership transfer).  Returns 0 once queued; whether it
 * worked shows in node_get_info's lead.  -CAIRN_E_STOPPED.
 */
int node_transfer_leader(struct node *n, uint64_t to);

/* Counters and latency histograms for metrics (monotonic since start). */
struct node_stats {
    uint64_t proposals_committed; /* entries this member saw committed */
    uint64_t proposals_applied;   /* entries applied to the store */
    uint64_t proposals_failed;    /* proposals refused or dropped before reaching the log */
    uint64_t proposals_parked;    /* writes that found no leader and waited for one */
    uint64_t leader_changes;      /* times this member saw a new leader (not "no leader") */
    uint64_t snapshots_taken, snapshots_installed;
    uint64_t snapshot_sends_ok, snapshot_sends_failed;
    uint64_t slow_applies, slow_fsyncs;
    struct histogram wal_fsync;       /* one per WAL save that synced */
    struct histogram backend_commit;  /* one per apply batch (one store transaction) */
    struct histogram store_checkpoint; /* one per checkpoint or sync of SQLite's WAL (daemon/ckpt.h) */
};
void node_get_stats(struct node *n, struct node_stats *st);

/*
 * node_propose_member_change: check a membership change on the node thread
 * (the member set, strict quorum check with --strict-reconfig-check, a
 * learner's progress for a promotion, which only the leader knows) and
 * propose it.  kind: RAFT_CC_ADD_VOTER, _ADD_LEARNER, _PROMOTE or _REMOVE;
 * m (copied; NULL but for adds) the member's peer URLs.  The waiter req_id,
 * registered by the caller, gets the packed reply once the change is
 * applied (the new member list), or an error.  0 once queued.
 */
struct Cairn__Member;
int node_propose_member_change(struct node *n, uint64_t req_id, int kind, uint64_t id, const struct Cairn__Member *m);

/* node_fail_waiter: answer the waiter req_id with the error code (positive CAIRN_E_ or errno). */
void node_fail_waiter(struct node *n, uint64_t req_id, int code);

/* node_set_watchdog: ping systemd's watchdog (WATCHDOG=1) from the node loop every usec/2; 0 disables. */
void node_set_watchdog(struct node *n, uint64_t usec);

/* node_reload_peer_tls: re-read the peer TLS files of cfg (SIGHUP); see peer_reload_tls. */
int node_reload_peer_tls(struct node *n, char *err, size_t errlen);

/* node_peer_stats: for Status and metrics; see peer.h. */
struct peer_stats;
size_t node_peer_stats(struct node *n, struct peer_stats *out, size_t max);

#endif
