/*
 * Membership changes, one at a time (single-server changes), effective
 * when the application applies the committed entry.  Raft owns the entry
 * payload format so the daemon can store entries opaquely.  A leader that
 * removes itself hands leadership to its most caught-up voter and steps down.
 */
#include <errno.h>
#include <string.h>

#include "raft/raft_internal.h"

#define CC_MAGIC 0xCA
#define CC_VERSION 1
#define CC_HEADER 12

int raft_conf_change_encode(const struct raft_conf_change *cc, void *buf, size_t cap)
{
    if (!cc || cc->type < RAFT_CC_ADD_VOTER || cc->type > RAFT_CC_REMOVE || cc->node_id == RAFT_NONE ||
        (cc->context_len && !cc->context) || cc->context_len > (1u << 20))
        return -EINVAL;
    if (cap < CC_HEADER + cc->context_len)
        return -ENOSPC;
    uint8_t *b = buf;
    b[0] = CC_MAGIC;
    b[1] = CC_VERSION;
    b[2] = (uint8_t)cc->type;
    b[3] = 0;
    for (int i = 0; i < 8; i++)
        b[4 + i] = (uint8_t)(cc->node_id >> (8 * i));
    if (cc->context_len)
        memcpy(b + CC_HEADER, cc->context, cc->context_len);
    return (int)(CC_HEADER + cc->context_len);
}

int raft_conf_change_decode(const void *data, size_t len, struct raft_conf_change *cc)
{
    const uint8_t *b = data;
    if (!b || len < CC_HEADER || b[0] != CC_MAGIC || b[1] != CC_VERSION || b[3] != 0 ||
        b[2] < RAFT_CC_ADD_VOTER || b[2] > RAFT_CC_REMOVE)
        return -CAIRN_E_MALFORMED;
    memset(cc, 0, sizeof(*cc));
    cc->type = b[2];
    for (int i = 0; i < 8; i++)
        cc->node_id |= (uint64_t)b[4 + i] << (8 * i);
    if (cc->node_id == RAFT_NONE)
        return -CAIRN_E_MALFORMED;
    cc->context_len = len - CC_HEADER;
    cc->context = cc->context_len ? b + CC_HEADER : NULL;
    return 0;
}

int raft_propose_conf_change(struct raft *r, uint32_t type, uint64_t node_id, const void *ctx, size_t ctx_len)
{
    uint8_t small[256];
    struct raft_conf_change cc = { type, node_id, ctx, ctx_len };
    if (r->in_ready)
        return -EBUSY;
    if (ctx_len > sizeof(small) - CC_HEADER)
        return -CAIRN_E_REQUEST_TOO_LARGE;
    int n = raft_conf_change_encode(&cc, small, sizeof(small));
    if (n < 0)
        return n;
    return propose_conf_entry(r, small, (size_t)n);
}

bool has_unapplied_conf_change(const struct raft *r)
{
    for (uint64_t i = r->log.applied + 1; i <= r->log.committed; i++) {
        const struct raft_entry *e = log_at(&r->log, i);
        if (e && e->type == RAFT_ENTRY_CONF_CHANGE)
            return true;
    }
    return false;
}

static bool del(uint64_t *ids, uint32_t *n, uint64_t id)
{
    for (uint32_t i = 0; i < *n; i++)
        if (ids[i] == id) {
            ids[i] = ids[--*n];
            return true;
        }
    return false;
}

/* The new configuration, or an error leaving *c as it was. */
static int change(struct raft_conf_state *c, const struct raft_conf_change *cc)
{
    struct raft_conf_state n = *c;
    bool voter = false, learner = false;
    for (uint32_t i = 0; i < n.n_voters; i++)
        voter |= n.voters[i] == cc->node_id;
    for (uint32_t i = 0; i < n.n_learners; i++)
        learner |= n.learners[i] == cc->node_id;
    switch (cc->type) {
    case RAFT_CC_PROMOTE:
        if (!learner)
            return -CAIRN_E_INVALID_ARGUMENT;
        /* fall through */
    case RAFT_CC_ADD_VOTER:
        if (voter)
            return 0;
        if (n.n_voters >= RAFT_MAX_MEMBERS)
            return -CAIRN_E_INVALID_ARGUMENT;
        del(n.learners, &n.n_learners, cc->node_id);
        n.voters[n.n_voters++] = cc->node_id;
        break;
    case RAFT_CC_ADD_LEARNER:
        if (voter)
            return -CAIRN_E_INVALID_ARGUMENT; /* no demotions */
        if (learner)
            return 0;
        if (n.n_learners >= RAFT_MAX_MEMBERS)
            return -CAIRN_E_INVALID_ARGUMENT;
        n.learners[n.n_learners++] = cc->node_id;
        break;
    case RAFT_CC_REMOVE:
        if (voter && n.n_voters == 1)
            return -CAIRN_E_INVALID_ARGUMENT; /* never remove the last voter */
        if (!del(n.voters, &n.n_voters, cc->node_id))
            del(n.learners, &n.n_learners, cc->node_id);
        break;
    default:
        return -CAIRN_E_MALFORMED;
    }
    *c = n;
    return 0;
}

int raft_apply_conf_change(struct raft *r, const struct raft_entry *e, struct raft_conf_change *out,
                           struct raft_conf_state *cs)
{
    struct raft_conf_change cc;
    int rc = -CAIRN_E_MALFORMED;
    if (!e || e->type != RAFT_ENTRY_CONF_CHANGE)
        goto out;
    if ((rc = raft_conf_change_decode(e->data, e->len, &cc)) < 0)
        goto out;
    if (out)
        *out = cc;
    struct raft_conf_state before = r->conf;
    if ((rc = change(&r->conf, &cc)) < 0)
        goto out;
    if ((rc = rebuild_progress(r)) < 0) {
        r->conf = before;
        goto out;
    }
    if (r->role == RAFT_LEADER) {
        if (r->lead_transferee && !raft_is_voter(r, r->lead_transferee))
            r->lead_transferee = RAFT_NONE;
        if (!raft_is_voter(r, r->id)) {
            /* Removed leader: hand over to the most caught-up voter, step down. */
            struct progress *best = NULL;
            for (uint32_t i = 0; i < r->n_prs; i++) {
                struct progress *p = &r->prs[i];
                if (!p->is_learner && p->id != r->id && (!best || p->match > best->match))
                    best = p;
            }
            if (best && best->match == log_last_index(&r->log)) {
                struct raft_message m = { .type = RAFT_MSG_TIMEOUT_NOW, .to = best->id };
                send_msg(r, &m, NULL, 0);
            }
            become_follower(r, r->term, RAFT_NONE);
        } else if (maybe_commit(r)) {
            /* a removal can shrink the quorum and commit at once */
            bcast_append(r);
        } else {
            for (uint32_t i = 0; i < r->n_prs; i++)
                maybe_send_append(r, &r->prs[i], false);
        }
    }
    rc = 0;
out:
    if (cs)
        *cs = r->conf;
    return rc;
}
