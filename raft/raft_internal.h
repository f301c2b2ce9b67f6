/*
 * raft/ internals shared by its files: the in-memory log, peer progress,
 * the raft struct itself.  Nothing here is visible to users of raft.h.
 */
#ifndef CAIRN_RAFT_INTERNAL_H
#define CAIRN_RAFT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"

/* ---- log.c: entries after the compaction point, owned data ---- */
struct rlog {
    struct raft_entry *ents;     /* ents[head] has index snap_index + 1 */
    size_t head, n, cap;
    uint64_t snap_index, snap_term; /* last index no longer held, and its term */
    uint64_t committed;
    uint64_t applied;            /* handed to the application and advanced */
    uint64_t stabled;            /* last index the caller made durable */
    uint64_t bytes;              /* data bytes held */
};

void log_init(struct rlog *l, uint64_t snap_index, uint64_t snap_term);
void log_free(struct rlog *l);
uint64_t log_last_index(const struct rlog *l);
uint64_t log_last_term(const struct rlog *l);
uint64_t log_first_index(const struct rlog *l);
/* term of index i into *t; false if i is compacted (< snap_index) or beyond the end */
bool log_term(const struct rlog *l, uint64_t i, uint64_t *t);
const struct raft_entry *log_at(const struct rlog *l, uint64_t i);
bool log_match_term(const struct rlog *l, uint64_t i, uint64_t t);
bool log_is_up_to_date(const struct rlog *l, uint64_t last_index, uint64_t term);
/* append copies of ents (indices contiguous, after truncating at ents[0].index) */
int log_append(struct rlog *l, const struct raft_entry *ents, size_t n);
/* append one entry taking ownership of data (malloc'd or NULL) */
int log_append_owned(struct rlog *l, uint64_t term, uint32_t type, void *data, uint32_t len);
/* follower append; returns 0 and *last_new, 1 on mismatch, <0 on error */
int log_maybe_append(struct rlog *l, uint64_t prev, uint64_t prev_term, uint64_t commit,
                     const struct raft_entry *ents, size_t n, uint64_t *last_new);
uint64_t log_find_conflict_by_term(const struct rlog *l, uint64_t index, uint64_t term);
void log_commit_to(struct rlog *l, uint64_t c);
void log_restore(struct rlog *l, uint64_t index, uint64_t term);
void log_compact(struct rlog *l, uint64_t index);
/* the contiguous entries [lo, hi] (must be held) */
const struct raft_entry *log_slice(const struct rlog *l, uint64_t lo);

/* ---- progress.c: what the leader knows of each peer ---- */
struct inflight { uint64_t index, bytes; };

struct progress {
    uint64_t id;
    uint64_t match, next;
    int state;                   /* enum raft_progress_state */
    bool probe_sent;             /* probe: one MsgApp out, wait for an answer */
    bool recent_active;
    bool is_learner;
    uint64_t pending_snapshot;
    uint64_t commit_sent;        /* the commit index the last MsgApp to this peer carried */
    struct inflight *ins;        /* ring of max_count */
    uint32_t ins_start, ins_count, ins_max;
    uint64_t ins_bytes, ins_max_bytes;
};

int progress_init(struct progress *p, uint64_t id, uint32_t max_count, uint64_t max_bytes);
void progress_free(struct progress *p);
void progress_reset(struct progress *p, uint64_t next);
bool progress_paused(const struct progress *p);
bool progress_ins_full(const struct progress *p);
void progress_ins_add(struct progress *p, uint64_t index, uint64_t bytes);
void progress_ins_free_to(struct progress *p, uint64_t index);
void progress_ins_free_first(struct progress *p);
void progress_become_probe(struct progress *p);
void progress_become_replicate(struct progress *p);
void progress_become_snapshot(struct progress *p, uint64_t index);
bool progress_maybe_update(struct progress *p, uint64_t n);
bool progress_maybe_decr_to(struct progress *p, uint64_t rejected, uint64_t match_hint);

/* ---- outgoing messages, materialised at raft_ready ---- */
struct pmsg {
    struct raft_message m;
    uint64_t ent_lo, ent_hi, ent_hi_term;  /* MsgApp entries by range; lo > hi = none */
    void *ctx;                             /* owned copy of m.context */
    struct raft_entry *own_ents;           /* MsgProp: owned copies */
};

struct read_req {
    uint64_t index;
    uint64_t from;
    void *ctx;
    size_t ctx_len;
    uint64_t acks[RAFT_MAX_MEMBERS];
    uint32_t n_acks;
};

struct raft {
    struct raft_config cfg;
    uint64_t id;
    uint64_t term, vote, lead;
    int role;
    struct rlog log;
    struct raft_conf_state conf;
    struct raft_snapshot_meta snap;      /* the snapshot raft sends to peers */
    bool snap_to_install;                /* a received snapshot for the next Ready */

    struct progress *prs;                /* voters and learners, leader only meaningful */
    uint32_t n_prs;

    uint64_t votes[RAFT_MAX_MEMBERS];    /* ids that answered, with granted[] */
    bool granted[RAFT_MAX_MEMBERS];
    uint32_t n_votes;

    int election_elapsed, heartbeat_elapsed, randomized_timeout;
    uint64_t rng;
    uint64_t lead_transferee;
    uint64_t pending_conf_index;
    uint64_t uncommitted_bytes;

    /* ReadIndex: reads waiting for the quorum round, and reads received
     * before this leader committed an entry of its term. */
    struct read_req *reads;
    uint32_t n_reads;
    struct read_req *early;
    uint32_t n_early;
    struct raft_read_state *read_states; /* answers for the next Ready */
    uint32_t n_read_states, cap_read_states;

    struct pmsg *msgs;
    size_t n_msgs, cap_msgs;

    /* The Ready handed out and not yet advanced. */
    bool in_ready;
    struct raft_message *rd_msgs;
    size_t cap_rd_msgs;
    struct pmsg *rd_pmsgs;               /* msgs moved here at raft_ready */
    size_t n_rd_pmsgs, cap_rd_pmsgs;
    struct raft_read_state *rd_reads;
    uint32_t n_rd_reads, cap_rd_reads;
    struct raft_hard_state prev_hs;
    uint64_t prev_lead;
    int prev_role;
};

/* raft.c */
int raft_grow(void **p, size_t *cap, size_t need, size_t size);
int send_msg(struct raft *r, const struct raft_message *m, const void *ctx, size_t ctx_len);
int send_append_range(struct raft *r, const struct raft_message *m, uint64_t lo, uint64_t hi);
struct progress *raft_progress(struct raft *r, uint64_t id);
bool raft_is_voter(const struct raft *r, uint64_t id);
bool raft_is_learner(const struct raft *r, uint64_t id);
bool raft_promotable(const struct raft *r);
uint32_t raft_quorum(const struct raft *r);
bool raft_solo(const struct raft *r);
void become_follower(struct raft *r, uint64_t term, uint64_t lead);
int rebuild_progress(struct raft *r);
bool committed_in_term(const struct raft *r);
int propose_conf_entry(struct raft *r, const void *data, size_t len);

/* replication.c */
bool maybe_send_append(struct raft *r, struct progress *p, bool send_if_empty);
void send_timeout_now(struct raft *r, uint64_t to);
void leader_on_app_resp(struct raft *r, const struct raft_message *m, struct progress *p);
int follower_append(struct raft *r, const struct raft_message *m);
int follower_snapshot(struct raft *r, const struct raft_message *m);
void bcast_append(struct raft *r);
void bcast_commit(struct raft *r);
void bcast_heartbeat(struct raft *r, const void *ctx, size_t ctx_len);
bool maybe_commit(struct raft *r);

/* ready.c */
void free_pmsg(struct pmsg *p);

/* election.c */
void election_reset_timeout(struct raft *r);
int election_campaign(struct raft *r, bool pre, bool transfer);
int election_hup(struct raft *r, bool transfer);
int election_step_vote_req(struct raft *r, const struct raft_message *m);
int election_step_vote_resp(struct raft *r, const struct raft_message *m);
void become_leader(struct raft *r);

/* readindex.c */
int readindex_request(struct raft *r, uint64_t from, const void *ctx, size_t len);
void readindex_on_ack(struct raft *r, uint64_t from, const void *ctx, size_t len);
void readindex_on_commit_in_term(struct raft *r);
int readindex_add_state(struct raft *r, uint64_t index, const void *ctx, size_t len);
void readindex_reset(struct raft *r);
void readindex_free(struct raft *r);

/* confchange.c */
bool has_unapplied_conf_change(const struct raft *r);

#endif
