/*
 * Leader election: pre-vote and vote campaigns, granting votes (the
 * up-to-date check of the Raft paper, §5.4.1), counting answers, and
 * becoming leader.  Timeouts are ticked in raft.c.
 */
#include <string.h>

#include "raft/raft_internal.h"

static const char transfer_ctx[8] = { 't', 'r', 'a', 'n', 's', 'f', 'e', 'r' };

enum { POLL_PENDING, POLL_WON, POLL_LOST };

static int poll_votes(struct raft *r, uint64_t id, bool granted)
{
    bool seen = false;
    for (uint32_t i = 0; i < r->n_votes; i++)
        if (r->votes[i] == id)
            seen = true;
    if (!seen && raft_is_voter(r, id) && r->n_votes < RAFT_MAX_MEMBERS) {
        r->votes[r->n_votes] = id;
        r->granted[r->n_votes++] = granted;
    }
    uint32_t yes = 0, no = 0;
    for (uint32_t i = 0; i < r->n_votes; i++)
        r->granted[i] ? yes++ : no++;
    uint32_t q = raft_quorum(r);
    if (yes >= q)
        return POLL_WON;
    if (no > r->conf.n_voters - q)
        return POLL_LOST;
    return POLL_PENDING;
}

int election_campaign(struct raft *r, bool pre, bool transfer)
{
    uint64_t vote_term;
    if (pre) {
        /* Pre-candidate: ask without bumping our term, so a member that
         * cannot win never disrupts the cluster by raising terms. */
        r->role = RAFT_PRECANDIDATE;
        r->lead = RAFT_NONE;
        r->n_votes = 0;
        vote_term = r->term + 1;
    } else {
        become_follower(r, r->term + 1, RAFT_NONE);
        r->role = RAFT_CANDIDATE;
        r->vote = r->id;
        vote_term = r->term;
    }
    if (poll_votes(r, r->id, true) == POLL_WON) {
        if (pre)
            return election_campaign(r, false, transfer);
        become_leader(r);
        bcast_append(r);
        return 0;
    }
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        uint64_t id = r->conf.voters[i];
        if (id == r->id)
            continue;
        struct raft_message m = {
            .type = pre ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE, .to = id, .term = vote_term,
            .index = log_last_index(&r->log), .log_term = log_last_term(&r->log),
        };
        int rc = send_msg(r, &m, transfer ? transfer_ctx : NULL, transfer ? sizeof(transfer_ctx) : 0);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int election_hup(struct raft *r, bool transfer)
{
    if (r->role == RAFT_LEADER || !raft_promotable(r))
        return 0;
    /* Our view of the configuration may be stale until those are applied. */
    if (has_unapplied_conf_change(r))
        return 0;
    return election_campaign(r, r->cfg.pre_vote && !transfer, transfer);
}

int election_step_vote_req(struct raft *r, const struct raft_message *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE;
    bool can_vote = r->vote == m->from || (r->vote == RAFT_NONE && r->lead == RAFT_NONE) ||
                    (pre && m->term > r->term);
    struct raft_message resp = { .type = pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, .to = m->from };
    if (can_vote && log_is_up_to_date(&r->log, m->index, m->log_term)) {
        /* Answer in the candidate's term: a pre-vote grant must not look stale. */
        resp.term = m->term;
        if (!pre) {
            r->election_elapsed = 0;
            r->vote = m->from;
        }
    } else {
        resp.term = r->term;
        resp.reject = 1;
    }
    return send_msg(r, &resp, NULL, 0);
}

int election_step_vote_resp(struct raft *r, const struct raft_message *m)
{
    bool want_pre = r->role == RAFT_PRECANDIDATE;
    if ((m->type == RAFT_MSG_PREVOTE_RESP) != want_pre)
        return 0;
    switch (poll_votes(r, m->from, !m->reject)) {
    case POLL_WON:
        if (want_pre)
            return election_campaign(r, false, false);
        become_leader(r);
        bcast_append(r);
        return 0;
    case POLL_LOST:
        become_follower(r, r->term, RAFT_NONE);
        return 0;
    default:
        return 0;
    }
}
