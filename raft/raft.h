/*
 * raft/: Cairn's Raft consensus as a pure, deterministic state machine.
 *
 * The library owns the protocol state (term, vote, the in-memory log, peer
 * progress) and nothing else: no I/O, no clock, no threads, no globals, no
 * hidden randomness (election jitter comes from cfg.seed).  The caller - the
 * daemon's node thread - persists, sends and applies what raft_ready() hands
 * out.  Design model: etcd's raft package (Step/Tick/Ready/Advance).
 *
 * ---------------------------------------------------------------------------
 * THE READY / ADVANCE CONTRACT (read this before writing the node loop)
 * ---------------------------------------------------------------------------
 * One thread owns a struct raft.  Its loop is:
 *
 *   raft_tick() every heartbeat interval; raft_step() for each peer message;
 *   raft_propose()/raft_read_index()/... for client work; then
 *   while (raft_has_ready(r)) {
 *       raft_ready(r, &rd);
 *       1. if rd.snapshot: install the state-machine data of that snapshot
 *          (received out of band for the MsgSnap that produced it), then
 *          persist rd.snapshot and drop every stored log entry;
 *       2. if rd.n_entries: discard stored entries with index >=
 *          rd.entries[0].index, then append rd.entries;
 *       3. if rd.hard_state_changed: persist rd.hard_state;
 *       4. if rd.must_sync: fsync all of the above.  The writes of 1-3 must be
 *          durable and atomic-in-order (a crash may lose a suffix of them,
 *          never leave a hole) BEFORE step 5;
 *       5. send every rd.msgs[i] (best effort; losing any is safe);
 *       6. apply rd.committed[] in order; for each entry of type
 *          RAFT_ENTRY_CONF_CHANGE call raft_apply_conf_change() - all of
 *          this Ready's conf changes before step 7;
 *       7. hand rd.reads[] to the read path: a read with index i may be
 *          served once the local state machine has applied index i;
 *       8. raft_advance(r, &rd).
 *   }
 *
 * Durability rule: nothing in rd.msgs may leave the member before the
 * snapshot, entries and hard state of the same Ready are durable, with one
 * exception: a LEADER (rd.role) whose Ready carries no snapshot and changes
 * neither term nor vote (hard state unchanged, or only its commit index
 * moved) may send rd.msgs first and persist while they travel (the Raft
 * thesis, 10.2.1; etcd does the same).  That is safe because a leader's
 * messages vouch for nothing of its own disk: MsgApp carries entries and a
 * commit index, and the commit index counts this leader's own log only as
 * far as raft_advance() said it is durable (another voter's ack is stepped
 * after the fsync of the Ready that carried the entries anyway; a lone
 * voter's entries commit in the Ready after the one that persists them).
 * A crash between sending and syncing loses uncommitted entries only;
 * raft-sim crashes leaders exactly there.  Every
 * other message - vote grant, append ack, anything from a follower or a
 * candidate - must wait: those do vouch for this member's disk.
 * When must_sync is 0 but hard_state_changed is 1, only the commit index
 * moved; it may be written without fsync, but it must become durable no
 * later than the next fsync (a WAL appending in order gives this for free):
 * raft relies on a member never appending a conf change while its durable
 * commit index is behind an earlier conf change (etcd's "Append" invariant
 * for apply-time membership).
 *
 * Apply rule: rd.committed entries are durable on a quorum; apply them only
 * after step 4 (they may also appear in rd.entries of the same Ready).
 * Except: when raft_ready_committed_durable(&rd), every committed entry is
 * already durable on this member, from an earlier Ready, and step 6 may
 * run before or while steps 2-4 do (the daemon applies while another
 * thread writes the WAL).
 *
 * Applying on another thread is fine: copy rd.committed, call
 * raft_apply_conf_change() for its conf changes on the raft thread before
 * raft_advance(), and serve a read only once the applier has reached its
 * index.
 *
 * Between raft_ready() and raft_advance() the only calls allowed are
 * raft_apply_conf_change(), raft_status(), raft_basic_status() and
 * raft_conf_state(); everything else returns -EBUSY.  Memory in rd
 * (entries, their data, messages, their entries/context/snapshot, reads)
 * is owned by raft and valid until raft_advance(); copy what you keep.
 *
 * Snapshots: the application snapshots its state machine whenever it likes
 * and calls raft_compact(); raft then keeps the snapshot's metadata to send
 * and drops log entries before index - keep.  A follower too far behind gets
 * a RAFT_MSG_SNAP carrying only metadata; the daemon streams the data to the
 * peer out of band and calls raft_report_snapshot().  The receiving daemon
 * stores the streamed data, then steps the RAFT_MSG_SNAP in; if raft accepts
 * it, it comes back as rd.snapshot (step 1 above); if not (stale), the data
 * may be discarded.
 *
 * Restart: raft_new() with what the WAL holds (hard state, latest snapshot
 * metadata, entries after it).  Raft re-delivers committed entries after the
 * snapshot through rd.committed; the applier skips those at or below its
 * consistent index but conf changes must still go to raft_apply_conf_change().
 *
 * Bootstrap: every initial member starts from the snapshot {index 1, term 1,
 * conf_state = initial voters/learners}, hard state {term 1, vote 0,
 * commit 1} and an empty state machine.  A
 * joining member starts from nothing (zero restore) and is brought in by a
 * snapshot from the leader after the conf change adding it commits.
 *
 * Errors: functions return 0 or a negative code: -CAIRN_E_xxx from
 * base/errors.h or -errno (-ENOMEM, -EBUSY, -EINVAL for API misuse).
 */
#ifndef CAIRN_RAFT_RAFT_H
#define CAIRN_RAFT_RAFT_H

#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"

/* One member's Raft state; opaque. */
struct raft;

/* Most voters, and most learners, a configuration may hold. */
#define RAFT_MAX_MEMBERS 16

/* Node ID 0 means "none": never use it for a member. */
#define RAFT_NONE 0

enum raft_entry_type { RAFT_ENTRY_NORMAL = 0, RAFT_ENTRY_CONF_CHANGE = 1 };

/*
 * A log entry.  data is read-only for everyone who did not allocate it:
 * entries from raft (Ready) are valid until raft_advance(); entries given to
 * raft (raft_step, raft_new) are copied, the caller keeps its own.
 * data is NULL when len is 0.
 */
struct raft_entry {
    uint64_t term;
    uint64_t index;
    uint32_t type;        /* enum raft_entry_type */
    uint32_t len;
    const void *data;
};

struct raft_hard_state {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
};

struct raft_conf_state {
    uint64_t voters[RAFT_MAX_MEMBERS];
    uint32_t n_voters;
    uint64_t learners[RAFT_MAX_MEMBERS];
    uint32_t n_learners;
};

struct raft_snapshot_meta {
    uint64_t index;
    uint64_t term;
    struct raft_conf_state conf_state;
};

enum raft_msg_type {
    RAFT_MSG_APP = 1,          /* leader -> follower: index/log_term = prev entry */
    RAFT_MSG_APP_RESP,         /* index = last matching index, or the rejected prev index */
    RAFT_MSG_VOTE,             /* index/log_term = candidate's last entry */
    RAFT_MSG_VOTE_RESP,
    RAFT_MSG_PREVOTE,          /* term = the term the candidate would take */
    RAFT_MSG_PREVOTE_RESP,
    RAFT_MSG_HEARTBEAT,        /* commit, context = newest pending ReadIndex ctx */
    RAFT_MSG_HEARTBEAT_RESP,   /* context echoed back */
    RAFT_MSG_SNAP,             /* snapshot metadata; data goes out of band */
    RAFT_MSG_PROP,             /* follower -> leader: forwarded proposal (term 0;
                                * entries carry type and data, term/index 0) */
    RAFT_MSG_READ_INDEX,       /* follower -> leader: context = read ctx (term 0) */
    RAFT_MSG_READ_INDEX_RESP,  /* leader -> follower: index = read index, context */
    RAFT_MSG_TRANSFER_LEADER,  /* -> leader: index = the transferee's ID */
    RAFT_MSG_TIMEOUT_NOW,      /* leader -> transferee: campaign now */
};
#define RAFT_MSG_TYPE_MAX RAFT_MSG_TIMEOUT_NOW

/*
 * A message between members.  The daemon encodes every field on the wire
 * (entries opaquely: term, index, type, data).  Messages in a Ready, with
 * their entries, context and snapshot, are owned by raft until
 * raft_advance(); messages given to raft_step() stay the caller's.
 * A vote request made for a leadership transfer carries the context
 * "transfer" (voters then ignore their leader lease).
 */
struct raft_message {
    uint32_t type;          /* enum raft_msg_type */
    uint32_t reject;        /* APP_RESP, VOTE_RESP, PREVOTE_RESP: nonzero = rejected */
    uint64_t from;
    uint64_t to;
    uint64_t term;
    uint64_t log_term;
    uint64_t index;
    uint64_t commit;
    uint64_t reject_hint;   /* APP_RESP reject: follower's guess of the match index,
                             * with log_term = its term there (0 if unknown) */
    uint32_t commit_only;   /* APP: no entries, and index is the follower's match as the
                             * leader knows it: the message only moves the follower's
                             * commit index.  Accepted, it is not answered (the answer
                             * would tell the leader nothing); rejected, it is. */
    const struct raft_entry *entries;
    size_t n_entries;
    const struct raft_snapshot_meta *snapshot;   /* RAFT_MSG_SNAP only, else NULL */
    const void *context;
    size_t context_len;
};

enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRECANDIDATE,
    RAFT_CANDIDATE,
    RAFT_LEADER,
};

/* A ReadIndex answer: reads tagged ctx may run once applied >= index. */
struct raft_read_state {
    uint64_t index;
    const void *context;
    size_t context_len;
};

/* Everything raft asks the caller to do; see the contract above. */
struct raft_ready {
    struct raft_hard_state hard_state;
    int hard_state_changed;
    int must_sync;
    uint64_t lead;          /* soft state: current leader (RAFT_NONE if unknown) */
    int role;               /* soft state: enum raft_role */
    int soft_state_changed;
    const struct raft_snapshot_meta *snapshot;  /* to install, or NULL */
    const struct raft_entry *entries;           /* to persist */
    size_t n_entries;
    const struct raft_entry *committed;         /* to apply */
    size_t n_committed;
    const struct raft_message *msgs;            /* to send */
    size_t n_msgs;
    const struct raft_read_state *reads;        /* ReadIndex results */
    size_t n_reads;
};

struct raft_config {
    uint64_t id;                 /* this member, nonzero */
    uint64_t seed;               /* election jitter seed; mix in something per member */
    int election_tick;           /* ticks without a leader before campaigning (etcd: 10) */
    int heartbeat_tick;          /* ticks between heartbeats (etcd: 1) */
    int pre_vote;                /* nonzero: pre-vote before every election */
    int check_quorum;            /* nonzero: leader steps down without a quorum; leader lease */
    uint32_t max_inflight_msgs;  /* in-flight MsgApp per follower (etcd: 256); 0 = default */
    uint64_t max_inflight_bytes; /* in-flight entry bytes per follower; 0 = unbounded */
    uint64_t max_msg_bytes;      /* entry bytes per MsgApp; 0 = 1 MiB; always >= 1 entry */
    uint64_t max_committed_bytes;   /* entry bytes per rd.committed; 0 = 64 MiB */
    uint32_t solo_ready_entries; /* a leader that is the only voter: new entries per
                                  * rd.entries; 0 = all (see docs/raft.md, "Applying
                                  * while persisting"); raft_set_solo_ready_entries */
    uint64_t max_uncommitted_bytes; /* leader: proposals beyond this are dropped; 0 = unbounded */
    uint32_t max_pending_reads;  /* queued ReadIndex requests; 0 = 4096 */
};

/*
 * What the caller's durable storage held at startup.  All zero for a member
 * joining an existing cluster; see "Bootstrap" above for a new cluster.
 * entries are the stored entries after snapshot.index, in order; entries at
 * or below the snapshot index are ignored.  Raft copies everything.
 */
struct raft_restore {
    struct raft_hard_state hard_state;
    struct raft_snapshot_meta snapshot;
    const struct raft_entry *entries;
    size_t n_entries;
};

/* Membership changes: one at a time, effective when applied. */
enum raft_conf_change_type {
    RAFT_CC_ADD_VOTER = 1,     /* new voter, or promote a learner */
    RAFT_CC_ADD_LEARNER = 2,   /* new learner (a voter cannot be demoted) */
    RAFT_CC_PROMOTE = 3,       /* promote an existing learner to voter */
    RAFT_CC_REMOVE = 4,        /* remove a voter or a learner (the leader too) */
};

/* A decoded conf change; context points into the entry's data. */
struct raft_conf_change {
    uint32_t type;
    uint64_t node_id;
    const void *context;
    size_t context_len;
};

/* Per-peer replication state, for status and metrics. */
enum raft_progress_state { RAFT_PROGRESS_PROBE = 0, RAFT_PROGRESS_REPLICATE, RAFT_PROGRESS_SNAPSHOT };

struct raft_progress_status {
    uint64_t id;
    uint64_t match;
    uint64_t next;
    int state;              /* enum raft_progress_state */
    int is_learner;
    int recent_active;
    int paused;
    uint32_t inflight;      /* MsgApp in flight */
    uint64_t inflight_bytes;
    uint64_t pending_snapshot;
};

struct raft_status {
    uint64_t id;
    int role;
    uint64_t term;
    uint64_t vote;
    uint64_t lead;
    uint64_t commit;
    uint64_t applied;
    uint64_t first_index;    /* first entry held in memory */
    uint64_t last_index;
    uint64_t snapshot_index; /* the snapshot raft would send */
    uint64_t lead_transferee;
    uint64_t log_bytes;      /* entry data bytes held in memory */
    struct raft_conf_state conf;
    struct raft_progress_status progress[2 * RAFT_MAX_MEMBERS]; /* leader only */
    uint32_t n_progress;
};

/*
 * raft_new: create a member from cfg and what storage holds (rs, which may
 * be NULL for "nothing").  Copies both.  Returns 0 and *out (free with
 * raft_free), -EINVAL for a bad config or inconsistent restore data, -ENOMEM.
 */
int raft_new(const struct raft_config *cfg, const struct raft_restore *rs, struct raft **out);

/* raft_free: release r and everything it owns (including any unadvanced Ready). */
void raft_free(struct raft *r);

/*
 * raft_tick: advance logical time by one tick (heartbeats, election timeouts,
 * check-quorum, transfer expiry).  Returns 0 or -EBUSY inside a Ready.
 */
int raft_tick(struct raft *r);

/*
 * raft_step: feed a message from a peer.  m stays the caller's.  Returns 0
 * (including for stale or ignored messages), -CAIRN_E_MALFORMED for a message
 * that cannot be valid, -CAIRN_E_CLUSTER_MISMATCH if m->to is not this
 * member, -EBUSY inside a Ready, -ENOMEM.
 */
int raft_step(struct raft *r, const struct raft_message *m);

/*
 * raft_propose: append data (copied) as a normal entry; on a follower it is
 * forwarded to the leader.  Returns 0 once accepted for replication (it may
 * still be lost before it commits: watch for it being applied), or
 * -CAIRN_E_NO_LEADER, -CAIRN_E_LEADER_TRANSFER, -CAIRN_E_PROPOSAL_DROPPED
 * (removed member, uncommitted bytes limit), -EBUSY, -ENOMEM.
 */
int raft_propose(struct raft *r, const void *data, size_t len);

/* One proposal of a batch: data is copied. */
struct raft_buf {
    const void *data;
    size_t len;
};

/* raft_propose_batch: raft_propose for n entries in one message (all or none). */
int raft_propose_batch(struct raft *r, const struct raft_buf *bufs, size_t n);

/*
 * raft_propose_conf_change: propose a membership change; ctx (copied, may be
 * NULL) travels in the entry for the application (e.g. peer URLs).  Returns
 * as raft_propose, plus -CAIRN_E_PROPOSAL_DROPPED on a leader that still has
 * an unapplied conf change, -EINVAL for a bad type or node 0.
 */
int raft_propose_conf_change(struct raft *r, uint32_t type, uint64_t node_id, const void *ctx, size_t ctx_len);

/*
 * raft_apply_conf_change: make the committed conf-change entry e take effect
 * (call in log order, before raft_advance of the Ready that delivered it).
 * Fills *cc (context points into e->data) and *cs (the configuration now);
 * either may be NULL.  Returns 0, -CAIRN_E_MALFORMED if e's payload is not a
 * conf change, or -CAIRN_E_INVALID_ARGUMENT if the change cannot apply (e.g.
 * promoting a non-learner); in both error cases the configuration is
 * unchanged on every member alike.
 */
int raft_apply_conf_change(struct raft *r, const struct raft_entry *e, struct raft_conf_change *cc, struct raft_conf_state *cs);

/*
 * raft_conf_change_encode: the entry payload for a conf change:
 *   byte 0 0xCA, byte 1 version 1, byte 2 type, byte 3 0,
 *   bytes 4..11 node ID (little-endian), bytes 12.. context.
 * Writes into buf (cap bytes); returns the length, or -ENOSPC / -EINVAL.
 */
int raft_conf_change_encode(const struct raft_conf_change *cc, void *buf, size_t cap);

/* raft_conf_change_decode: parse a payload; cc->context points into data.  0 or -CAIRN_E_MALFORMED. */
int raft_conf_change_decode(const void *data, size_t len, struct raft_conf_change *cc);

/*
 * raft_read_index: request a linearizable read point tagged ctx (copied; it
 * must be unique among reads in flight).  The answer comes back in a later
 * rd.reads with the same ctx.  Reads are lost on leader change (time them
 * out).  Returns 0, -CAIRN_E_NO_LEADER, -CAIRN_E_TOO_MANY_REQUESTS, -EBUSY.
 */
int raft_read_index(struct raft *r, const void *ctx, size_t ctx_len);

/*
 * raft_solo_read_index: the read point raft_read_index would answer at once,
 * with no heartbeat round: the commit index when r is the leader, the only
 * voter, and has committed an entry of its own term; 0 otherwise.  While r
 * is the only voter no other member can lead or commit, and a configuration
 * with more voters takes effect only when raft_apply_conf_change applies it.
 * A caller that publishes the value to other threads must publish it again
 * after each raft_ready (before it applies or acknowledges the entries, or
 * sends the messages) and after each raft_apply_conf_change.
 */
uint64_t raft_solo_read_index(const struct raft *r);

/*
 * raft_campaign: start an election now (as if the election timeout passed;
 * with pre-vote, a pre-vote first; deferred while a committed conf change
 * is unapplied).  Returns 0, -EINVAL if r cannot campaign (learner,
 * removed, leader already), -EBUSY inside a Ready.
 */
int raft_campaign(struct raft *r);

/*
 * raft_transfer_leader: ask the leader (forwarded if r is a follower) to hand
 * leadership to voter to.  The leader stops accepting proposals, catches to
 * up and sends it RAFT_MSG_TIMEOUT_NOW; the attempt is abandoned after an
 * election timeout.  Returns 0, -CAIRN_E_NO_LEADER, -EINVAL (to not a voter), -EBUSY.
 */
int raft_transfer_leader(struct raft *r, uint64_t to);

/* raft_has_ready: nonzero if raft_ready() would return work. */
int raft_has_ready(const struct raft *r);

/*
 * raft_ready: fill *rd with the work to do (see the contract).  Returns 0,
 * -EBUSY if the previous Ready was not advanced, -ENOMEM.
 */
int raft_ready(struct raft *r, struct raft_ready *rd);

/* raft_advance: the caller has done everything rd asked; frees rd's memory.  0 or -EINVAL. */
int raft_advance(struct raft *r, struct raft_ready *rd);

/* raft_set_solo_ready_entries: change raft_config.solo_ready_entries from the
 * next Ready on (a caller may size the slice from how fast its disk syncs). */
void raft_set_solo_ready_entries(struct raft *r, uint32_t n);

/* raft_ready_committed_durable: nonzero if rd has committed entries, no
 * snapshot, and every committed entry lies below the first entry rd asks
 * to persist (or rd asks to persist none), so each is on this member's
 * disk since an earlier Ready; see the apply rule above.  A follower that
 * catches up gets entries and a commit index covering them in one Ready:
 * then 0. */
int raft_ready_committed_durable(const struct raft_ready *rd);

/*
 * raft_compact: the application has a durable snapshot described by meta
 * (meta->index <= applied; meta->term must be the log's term there;
 * meta->conf_state the configuration as of that index).  Raft sends it to
 * peers that fall behind and drops its log entries at or below
 * meta->index - keep.  Returns 0, -CAIRN_E_SNAPSHOT_TOO_OLD, -EINVAL, -EBUSY.
 */
int raft_compact(struct raft *r, const struct raft_snapshot_meta *meta, uint64_t keep);

/*
 * raft_report_snapshot: the out-of-band transfer to peer id succeeded
 * (ok != 0) or failed.  Report every RAFT_MSG_SNAP sent (failure if it could
 * not be sent): until then the leader sends that peer nothing more.
 * Returns 0, or -EBUSY inside a Ready.
 */
int raft_report_snapshot(struct raft *r, uint64_t id, int ok);

/* raft_report_unreachable: sending to id failed; the leader stops pipelining to it.  0 or -EBUSY. */
int raft_report_unreachable(struct raft *r, uint64_t id);

/* The cheap part of raft_status (no per-peer progress), for hot paths. */
struct raft_basic_status {
    uint64_t id;
    int role;
    uint64_t term;
    uint64_t vote;
    uint64_t lead;
    uint64_t commit;
    uint64_t applied;
};

/* raft_basic_status: fill *st; cheap enough to call after every event. */
void raft_basic_status(const struct raft *r, struct raft_basic_status *st);

/* raft_status: a snapshot of r's state for STATUS= and metrics. */
void raft_status(const struct raft *r, struct raft_status *st);

/* raft_conf_state: the configuration in effect (as of the last applied conf change). */
void raft_conf_state(const struct raft *r, struct raft_conf_state *cs);

/* Static names for logs: "follower", "MsgApp", ... ("?" if unknown). */
const char *raft_role_name(int role);
const char *raft_msg_type_name(int type);

#endif
