/*
 * The hand-off to the caller: raft_ready gathers what must be persisted,
 * sent, applied and answered; raft_advance takes it back.  Messages queued
 * during steps are materialised here, when the log can no longer change
 * under them.  Also the read-only introspection calls.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

int raft_has_ready(const struct raft *r)
{
    if (r->in_ready)
        return 0;
    if (r->n_msgs || r->n_read_states || r->snap_to_install)
        return 1;
    if (r->log.stabled < log_last_index(&r->log))
        return 1;
    uint64_t from = r->log.applied > r->log.snap_index ? r->log.applied : r->log.snap_index;
    if (r->log.committed > from)
        return 1;
    if (r->term != r->prev_hs.term || r->vote != r->prev_hs.vote || r->log.committed != r->prev_hs.commit)
        return 1;
    return r->lead != r->prev_lead || r->role != r->prev_role;
}

void free_pmsg(struct pmsg *p)
{
    free(p->ctx);
    if (p->own_ents) {
        for (size_t i = 0; i < p->m.n_entries; i++)
            free((void *)p->own_ents[i].data);
        free(p->own_ents);
    }
}

void raft_set_solo_ready_entries(struct raft *r, uint32_t n)
{
    r->cfg.solo_ready_entries = n;
}

int raft_ready(struct raft *r, struct raft_ready *rd)
{
    if (r->in_ready)
        return -EBUSY;
    /* the only allocation first, so a failure leaves everything as it was */
    if (raft_grow((void **)&r->rd_msgs, &r->cap_rd_msgs, r->n_msgs, sizeof(*r->rd_msgs)) < 0)
        return -ENOMEM;
    memset(rd, 0, sizeof(*rd));
    rd->hard_state = (struct raft_hard_state){ r->term, r->vote, r->log.committed };
    rd->hard_state_changed = memcmp(&rd->hard_state, &r->prev_hs, sizeof(rd->hard_state)) != 0;
    rd->lead = r->lead;
    rd->role = r->role;
    rd->soft_state_changed = r->lead != r->prev_lead || r->role != r->prev_role;
    if (r->snap_to_install)
        rd->snapshot = &r->snap;
    uint64_t last = log_last_index(&r->log);
    if (r->log.stabled < last) {
        rd->entries = log_slice(&r->log, r->log.stabled + 1);
        rd->n_entries = last - r->log.stabled;
        /* A lone voter commits what it persists, so a burst of proposals
         * written in one Ready is applied in the next, with nothing to
         * write beside it.  Handed out a slice at a time, the burst
         * becomes a pipeline: each Ready applies the slice the one before
         * made durable and asks for the next to be written, and a caller
         * that writes while it applies (raft_ready_committed_durable)
         * does both at once.  The rest stays unstable for the next Ready. */
        if (r->cfg.solo_ready_entries && rd->n_entries > r->cfg.solo_ready_entries &&
            r->role == RAFT_LEADER && raft_solo(r))
            rd->n_entries = r->cfg.solo_ready_entries;
    }
    uint64_t from = (r->log.applied > r->log.snap_index ? r->log.applied : r->log.snap_index) + 1;
    if (r->log.committed >= from) {
        uint64_t hi = from, bytes = log_at(&r->log, from)->len;
        while (hi < r->log.committed && bytes + log_at(&r->log, hi + 1)->len <= r->cfg.max_committed_bytes)
            bytes += log_at(&r->log, ++hi)->len;
        rd->committed = log_slice(&r->log, from);
        rd->n_committed = hi - from + 1;
    }
    rd->must_sync = rd->n_entries || rd->snapshot || r->term != r->prev_hs.term || r->vote != r->prev_hs.vote;

    /* Hand the queued messages over, materialising MsgApp entries now that
     * the log cannot change until raft_advance. */
    struct pmsg *tmp = r->rd_pmsgs;
    size_t tcap = r->cap_rd_pmsgs;
    r->rd_pmsgs = r->msgs;
    r->cap_rd_pmsgs = r->cap_msgs;
    r->n_rd_pmsgs = r->n_msgs;
    r->msgs = tmp;
    r->cap_msgs = tcap;
    r->n_msgs = 0;
    size_t n = 0;
    for (size_t i = 0; i < r->n_rd_pmsgs; i++) {
        struct pmsg *p = &r->rd_pmsgs[i];
        struct raft_message *m = &r->rd_msgs[n];
        *m = p->m;
        if (p->ent_lo <= p->ent_hi) {
            /* The log changed under this message (we stepped down): drop it. */
            if (p->ent_lo <= r->log.snap_index || !log_match_term(&r->log, p->ent_hi, p->ent_hi_term))
                continue;
            m->entries = log_slice(&r->log, p->ent_lo);
            m->n_entries = p->ent_hi - p->ent_lo + 1;
        }
        if (m->type == RAFT_MSG_SNAP) {
            if (r->snap.index == 0)
                continue;
            m->snapshot = &r->snap;
        }
        n++;
    }
    rd->msgs = r->rd_msgs;
    rd->n_msgs = n;

    struct raft_read_state *rt = r->rd_reads;
    uint32_t rcap = r->cap_rd_reads;
    r->rd_reads = r->read_states;
    r->cap_rd_reads = r->cap_read_states;
    r->n_rd_reads = r->n_read_states;
    r->read_states = rt;
    r->cap_read_states = rcap;
    r->n_read_states = 0;
    rd->reads = r->rd_reads;
    rd->n_reads = r->n_rd_reads;
    r->in_ready = true;
    return 0;
}

int raft_ready_committed_durable(const struct raft_ready *rd)
{
    if (!rd->n_committed || rd->snapshot)
        return 0;
    return !rd->n_entries || rd->committed[rd->n_committed - 1].index < rd->entries[0].index;
}

int raft_advance(struct raft *r, struct raft_ready *rd)
{
    if (!r->in_ready || !rd)
        return -EINVAL;
    if (rd->snapshot) {
        r->snap_to_install = false;
        if (r->log.applied < rd->snapshot->index)
            r->log.applied = rd->snapshot->index;
    }
    if (rd->n_entries) {
        uint64_t li = rd->entries[rd->n_entries - 1].index;
        if (li > r->log.stabled)
            r->log.stabled = li;
    }
    if (rd->n_committed)
        r->log.applied = rd->committed[rd->n_committed - 1].index;
    r->prev_hs = rd->hard_state;
    r->prev_lead = rd->lead;
    r->prev_role = rd->role;
    for (size_t i = 0; i < r->n_rd_pmsgs; i++)
        free_pmsg(&r->rd_pmsgs[i]);
    r->n_rd_pmsgs = 0;
    for (uint32_t i = 0; i < r->n_rd_reads; i++)
        free((void *)r->rd_reads[i].context);
    r->n_rd_reads = 0;
    r->in_ready = false;
    bool stabilized = rd->n_entries > 0;
    memset(rd, 0, sizeof(*rd));
    /* the leader's own entries now count toward commit (maybe_commit) */
    if (stabilized && r->role == RAFT_LEADER && maybe_commit(r))
        bcast_commit(r);
    return 0;
}

/* ------------------------------------------------------------- introspection */

void raft_basic_status(const struct raft *r, struct raft_basic_status *st)
{
    *st = (struct raft_basic_status){ r->id, r->role, r->term, r->vote, r->lead, r->log.committed, r->log.applied };
}

void raft_status(const struct raft *r, struct raft_status *st)
{
    memset(st, 0, sizeof(*st));
    st->id = r->id;
    st->role = r->role;
    st->term = r->term;
    st->vote = r->vote;
    st->lead = r->lead;
    st->commit = r->log.committed;
    st->applied = r->log.applied;
    st->first_index = log_first_index(&r->log);
    st->last_index = log_last_index(&r->log);
    st->snapshot_index = r->snap.index;
    st->lead_transferee = r->lead_transferee;
    st->log_bytes = r->log.bytes;
    st->conf = r->conf;
    if (r->role != RAFT_LEADER)
        return;
    for (uint32_t i = 0; i < r->n_prs && i < 2 * RAFT_MAX_MEMBERS; i++) {
        const struct progress *p = &r->prs[i];
        st->progress[i] = (struct raft_progress_status){
            .id = p->id, .match = p->match, .next = p->next, .state = p->state,
            .is_learner = p->is_learner, .recent_active = p->recent_active,
            .paused = progress_paused(p), .inflight = p->ins_count,
            .inflight_bytes = p->ins_bytes, .pending_snapshot = p->pending_snapshot,
        };
        st->n_progress++;
    }
}

void raft_conf_state(const struct raft *r, struct raft_conf_state *cs)
{
    *cs = r->conf;
}

const char *raft_role_name(int role)
{
    static const char *const names[] = { "follower", "pre-candidate", "candidate", "leader" };
    return role >= 0 && role <= RAFT_LEADER ? names[role] : "?";
}

const char *raft_msg_type_name(int type)
{
    static const char *const names[] = {
        "?", "MsgApp", "MsgAppResp", "MsgVote", "MsgVoteResp", "MsgPreVote", "MsgPreVoteResp",
        "MsgHeartbeat", "MsgHeartbeatResp", "MsgSnap", "MsgProp", "MsgReadIndex",
        "MsgReadIndexResp", "MsgTransferLeader", "MsgTimeoutNow",
    };
    return type >= 1 && type <= RAFT_MSG_TYPE_MAX ? names[type] : "?";
}
