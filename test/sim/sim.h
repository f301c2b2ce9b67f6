/*
 * raft-sim: a deterministic simulation of a Raft cluster in one process.
 * Shared types of the simulator's files: the cluster (sim.c), the
 * invariant checker (check.c) and the command line (main.c).
 */
#ifndef CAIRN_TEST_SIM_H
#define CAIRN_TEST_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"

#define SIM_MAX_NODES 16

/* A message on the simulated wire: a deep copy, plus snapshot data. */
struct netmsg {
    struct raft_message m;
    struct raft_entry *ents;
    void *ctx;
    struct raft_snapshot_meta snap;
    uint64_t *snap_sm;          /* the state machine carried out of band */
    int from_inc;               /* sender's incarnation, for snapshot reports */
};

struct ev {
    uint64_t t, seq;
    int type;
    int node;
    int inc;                    /* EV_TICK: the incarnation it belongs to */
    struct netmsg *msg;
};

/* A member's durable storage: what survives a crash. */
struct dlog {
    struct raft_entry *e;       /* indices snap.index+1 .. */
    size_t n, cap;
};

struct pend_snap { uint64_t index; uint64_t *sm; };

struct simnode {
    uint64_t id;
    bool created, up, halted;
    int incarnation;
    struct raft *r;
    /* durable */
    struct raft_hard_state hs;
    struct raft_hard_state hs_seen;  /* newest written, synced or not (lost in a crash) */
    struct raft_snapshot_meta snap;
    uint64_t *snap_sm;          /* fingerprints 1..snap.index (index 0 unused) */
    struct dlog log;
    /* volatile */
    uint64_t *sm;               /* applied fingerprints 1..applied */
    uint64_t applied, smcap;
    struct raft_conf_state conf;   /* as of applied */
    struct pend_snap pend[4];
    bool ready_sched;
    uint64_t leader_checked_term;
    uint64_t last_commit;
    uint64_t tick_offset;
};

struct read_rec { uint64_t id; int node; uint64_t min_index; bool done; };

struct sim {
    uint64_t seed, rng, now, seq;
    int verbose;
    bool failed;
    char why[512];
    /* cluster */
    struct simnode nodes[SIM_MAX_NODES];   /* slot i holds id i + 1 */
    int n_nodes;
    struct raft_config base_cfg;
    /* network */
    bool blocked[SIM_MAX_NODES][SIM_MAX_NODES];
    int drop_pct, dup_pct, max_delay;
    /* events */
    struct ev *heap;
    size_t n_heap, cap_heap;
    /* phases */
    uint64_t chaos_end, deadline;
    bool healed;
    uint64_t sentinel_min;      /* first sentinel proposal id after heal */
    bool live;
    uint64_t next_prop_id;
    uint64_t pending_cc_node;
    /* global knowledge for the invariants */
    uint64_t *g;                /* applied fingerprint per index */
    uint64_t *g_term;           /* term of the member that first applied it */
    uint64_t g_len, g_cap;
    uint64_t *leader_of_term;
    uint64_t lot_cap;
    struct lm_slot *lm;         /* (index, term) -> fingerprint, prev term */
    size_t lm_cap, lm_n;
    struct read_rec *reads;
    size_t n_reads, cap_reads;
    uint64_t max_prop[SIM_MAX_NODES];  /* newest proposal id each member applied */
    uint64_t removed[SIM_MAX_NODES];
    int n_removed;
    /* stats */
    uint64_t events, commits_seen, reads_done, snaps_installed, elections, crashes, ccs_applied;
    uint64_t early_crashes; /* leaders crashed after sending, before their Ready was durable */
    uint64_t early_sends;   /* Readies a leader sent before persisting */
    uint64_t solo_checks;   /* moments a lone voter offered a read index (check_solo_reads) */
    uint64_t applied_first; /* Readies applied before their entries were persisted (raft_ready_committed_durable) */
    uint64_t applied_first_crashes; /* members crashed between that apply and the persist */
    uint64_t commit_notices; /* MsgApp sent marked commit_only (not answered when accepted) */
    uint64_t sliced_readies; /* Readies whose entries stop short of the log's end (solo_ready_entries) */
    uint64_t rng2;          /* rnd2's stream (sim.c) */
    bool liveness_waived;   /* two voters at the deadline (sim.c, two_voters) */
};

struct lm_slot { uint64_t index, term, fp, prev_term; bool used; };

/* sim.c */
/* Totals a run adds to (every field is a count). */
struct sim_totals {
    uint64_t events;
    uint64_t early_sends;   /* Readies a leader sent before persisting (raft.h's exception) */
    uint64_t early_crashes; /* leaders crashed between those sends and the fsync */
    uint64_t solo_checks;   /* lone-voter read indexes checked */
    uint64_t applied_first; /* Readies applied while (before) their entries were persisted */
    uint64_t applied_first_crashes; /* members crashed in between */
    uint64_t commit_notices; /* commit-only MsgApp sent */
    uint64_t sliced_readies; /* a lone voter's Readies that left entries for the next */
    uint64_t liveness_waived; /* runs that ended with two voters short of the liveness deadline */
};

int sim_run(uint64_t seed, int verbose, char *why, size_t why_len, struct sim_totals *totals);
uint64_t sim_rand(struct sim *s);
void sim_fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_log(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t entry_fp(const struct raft_entry *e);

/* check.c */
void check_leaders(struct sim *s);
void check_persisted(struct sim *s, struct simnode *n, const struct raft_entry *e, uint64_t prev_term);
void check_applied(struct sim *s, struct simnode *n, uint64_t index, uint64_t fp, uint64_t term);
void check_snapshot(struct sim *s, struct simnode *n, uint64_t index, const uint64_t *sm);
void check_new_leader(struct sim *s, struct simnode *n, uint64_t term);
void check_read(struct sim *s, struct simnode *n, uint64_t read_id, uint64_t index);
void check_solo_reads(struct sim *s);
void check_free(struct sim *s);

#endif
