/*
 * Replication: what a leader sends each peer (entries, or a snapshot when
 * they are compacted away), heartbeats, commit by quorum (current term
 * only), handling append responses, and the follower's side of MsgApp and
 * MsgSnap: the consistency check, reject hints, installing a snapshot.
 */
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

/*
 * Send p what it lacks, as entries or, when they are compacted away, as a
 * snapshot.  Returns true if a message was queued.
 */
bool maybe_send_append(struct raft *r, struct progress *p, bool send_if_empty)
{
    if (p->id == r->id || progress_paused(p))
        return false;
    uint64_t prev = p->next - 1, prev_term;
    if (p->next <= r->log.snap_index || !log_term(&r->log, prev, &prev_term)) {
        /* Only a peer we heard from lately is worth a snapshot (etcd's rule). */
        if (!p->recent_active || r->snap.index == 0)
            return false;
        struct raft_message m = { .type = RAFT_MSG_SNAP, .to = p->id };
        if (send_msg(r, &m, NULL, 0) < 0)
            return false;
        progress_become_snapshot(p, r->snap.index);
        return true;
    }
    uint64_t last = log_last_index(&r->log);
    uint64_t lo = p->next, hi = lo - 1, bytes = 0;
    uint64_t max = r->cfg.max_msg_bytes;
    while (hi < last) {
        uint64_t len = log_at(&r->log, hi + 1)->len;
        if (hi >= lo && bytes + len > max)
            break;
        bytes += len;
        hi++;
        if (p->ins_max_bytes && p->state == RAFT_PROGRESS_REPLICATE &&
            p->ins_bytes + bytes >= p->ins_max_bytes)
            break;
    }
    if (hi < lo && !send_if_empty)
        return false;
    struct raft_message m = {
        .type = RAFT_MSG_APP, .to = p->id, .index = prev, .log_term = prev_term,
        .commit = r->log.committed,
        /* A commit notice to a follower known to hold prev: its answer
         * (index == match) would change nothing here, so it is not sent.
         * At one write in flight that halves the acks a leader takes. */
        .commit_only = hi < lo && p->state == RAFT_PROGRESS_REPLICATE && p->match == prev,
    };
    if (send_append_range(r, &m, lo, hi) < 0)
        return false;
    p->commit_sent = m.commit;
    if (p->state == RAFT_PROGRESS_REPLICATE) {
        if (hi >= lo) {
            p->next = hi + 1;
            progress_ins_add(p, hi, bytes);
        }
    } else if (p->state == RAFT_PROGRESS_PROBE) {
        p->probe_sent = true;
    }
    return true;
}

void bcast_append(struct raft *r)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        maybe_send_append(r, &r->prs[i], true);
}

/*
 * Tell every peer a new commit index.  A peer whose entries are all sent
 * and still unacknowledged hears it when it acknowledges them
 * (leader_on_app_resp), by a notice it need not answer, instead of now, by
 * one its log could not yet be known to match, which it would answer.  At
 * one write in flight on three members that saves the leader an ack per
 * write.  Not while a membership change is unapplied: a peer it removes
 * would leave the leader's progress before its ack came, and never hear
 * that its removal committed.
 */
void bcast_commit(struct raft *r)
{
    uint64_t last = log_last_index(&r->log);
    bool later_ok = r->pending_conf_index <= r->log.applied;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct progress *p = &r->prs[i];
        if (later_ok && p->state == RAFT_PROGRESS_REPLICATE && p->next - 1 == last && p->match < last)
            continue;
        maybe_send_append(r, p, true);
    }
}

void bcast_heartbeat(struct raft *r, const void *ctx, size_t ctx_len)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct progress *p = &r->prs[i];
        if (p->id == r->id)
            continue;
        /* Never tell a peer to commit past what it is known to hold. */
        uint64_t c = p->match < r->log.committed ? p->match : r->log.committed;
        struct raft_message m = { .type = RAFT_MSG_HEARTBEAT, .to = p->id, .commit = c };
        send_msg(r, &m, ctx, ctx_len);
    }
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * Advance commit to the highest index a quorum of voters holds - but only
 * if that entry is of the current term (Raft paper, figure 8: an older
 * term's entry is committed indirectly, never by counting replicas).
 *
 * The leader counts its own log only as far as the caller made it durable
 * (log.stabled, moved by raft_advance).  With other voters that changes
 * nothing: their acks are stepped after the Ready that carried the entries
 * was persisted.  A lone voter, though, would otherwise commit an entry the
 * moment it appends it, and the early-sent messages of that Ready (raft.h's
 * durability rule) would carry that commit index to its learners before the
 * entry is on its disk: a crash then loses an entry a learner applied
 * (raft-sim found it, with seeds that start with one voter).
 */
bool maybe_commit(struct raft *r)
{
    uint64_t m[RAFT_MAX_MEMBERS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        struct progress *p = raft_progress(r, r->conf.voters[i]);
        uint64_t match = p ? p->match : 0;
        if (r->conf.voters[i] == r->id && match > r->log.stabled)
            match = r->log.stabled;
        m[n++] = match;
    }
    if (n == 0)
        return false;
    qsort(m, n, sizeof(m[0]), cmp_u64_desc);
    uint64_t mci = m[raft_quorum(r) - 1], t;
    if (mci <= r->log.committed || !log_term(&r->log, mci, &t) || t != r->term)
        return false;
    for (uint64_t i = r->log.committed + 1; i <= mci; i++) {
        uint64_t len = log_at(&r->log, i)->len;
        r->uncommitted_bytes = r->uncommitted_bytes > len ? r->uncommitted_bytes - len : 0;
    }
    bool first = !committed_in_term(r);
    log_commit_to(&r->log, mci);
    if (first)
        readindex_on_commit_in_term(r);
    return true;
}

void send_timeout_now(struct raft *r, uint64_t to)
{
    struct raft_message m = { .type = RAFT_MSG_TIMEOUT_NOW, .to = to };
    send_msg(r, &m, NULL, 0);
}

void leader_on_app_resp(struct raft *r, const struct raft_message *m, struct progress *p)
{
    if (m->reject) {
        uint64_t hint = m->reject_hint;
        if (m->log_term > 0)
            hint = log_find_conflict_by_term(&r->log, m->reject_hint, m->log_term);
        if (progress_maybe_decr_to(p, m->index, hint)) {
            if (p->state == RAFT_PROGRESS_REPLICATE)
                progress_become_probe(p);
            maybe_send_append(r, p, true);
        }
        return;
    }
    if (m->index > log_last_index(&r->log))
        return; /* acks what we never sent: not from this term's log */
    bool was_paused = progress_paused(p);
    if (!progress_maybe_update(p, m->index))
        return;
    if (p->state == RAFT_PROGRESS_PROBE) {
        progress_become_replicate(p);
    } else if (p->state == RAFT_PROGRESS_SNAPSHOT && p->match >= p->pending_snapshot) {
        progress_become_probe(p);
        progress_become_replicate(p);
    } else if (p->state == RAFT_PROGRESS_REPLICATE) {
        progress_ins_free_to(p, m->index);
    }
    if (maybe_commit(r))
        bcast_commit(r);
    else if (was_paused)
        maybe_send_append(r, p, false);
    while (maybe_send_append(r, p, false))
        ;
    /* A commit index bcast_commit left this peer to hear now. */
    if (p->state == RAFT_PROGRESS_REPLICATE && p->commit_sent < r->log.committed && p->next - 1 == p->match)
        maybe_send_append(r, p, true);
    if (m->from == r->lead_transferee && p->match == log_last_index(&r->log))
        send_timeout_now(r, m->from);
}

int follower_append(struct raft *r, const struct raft_message *m)
{
    struct raft_message resp = { .type = RAFT_MSG_APP_RESP, .to = m->from };
    if (m->index < r->log.committed) {
        resp.index = r->log.committed;
        return send_msg(r, &resp, NULL, 0);
    }
    uint64_t last_new;
    int rc = log_maybe_append(&r->log, m->index, m->log_term, m->commit, m->entries, m->n_entries, &last_new);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (m->commit_only)
            return 0; /* the leader knows we hold m->index: nothing to tell it */
        resp.index = last_new;
        return send_msg(r, &resp, NULL, 0);
    }
    /* Reject with a hint: the last index whose term is <= the leader's
     * prev term, so the leader can skip a whole term per round trip. */
    uint64_t last = log_last_index(&r->log);
    uint64_t hint = log_find_conflict_by_term(&r->log, m->index < last ? m->index : last, m->log_term);
    uint64_t ht = 0;
    log_term(&r->log, hint, &ht);
    resp.index = m->index;
    resp.reject = 1;
    resp.reject_hint = hint;
    resp.log_term = ht;
    return send_msg(r, &resp, NULL, 0);
}

int follower_snapshot(struct raft *r, const struct raft_message *m)
{
    const struct raft_snapshot_meta *s = m->snapshot;
    struct raft_message resp = { .type = RAFT_MSG_APP_RESP, .to = m->from };
    if (s->index <= r->log.committed) {
        resp.index = r->log.committed;
        return send_msg(r, &resp, NULL, 0);
    }
    if (log_match_term(&r->log, s->index, s->term)) {
        /* We hold the entries already: just learn they are committed. */
        log_commit_to(&r->log, s->index);
        resp.index = r->log.committed;
        return send_msg(r, &resp, NULL, 0);
    }
    log_restore(&r->log, s->index, s->term);
    r->snap = *s;
    r->snap_to_install = true;
    r->conf = s->conf_state;
    int rc = rebuild_progress(r);
    if (rc < 0)
        return rc;
    resp.index = log_last_index(&r->log);
    return send_msg(r, &resp, NULL, 0);
}
