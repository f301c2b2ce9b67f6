/*
 * The Raft core: creation and restore, roles, raft_step's term rules and
 * the per-role message dispatch, ticks, proposals, and the local requests
 * (campaign, transfer, reports, compaction).  Replication lives in
 * replication.c, elections in election.c, ReadIndex in readindex.c,
 * membership in confchange.c, the Ready hand-off in ready.c.
 * No I/O, no clock, no globals.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

#define DEFAULT_INFLIGHT 256                 /* etcd's MaxInflightMsgs */
#define DEFAULT_MSG_BYTES (1u << 20)         /* 1 MiB per MsgApp */
#define DEFAULT_COMMITTED_BYTES (64u << 20)  /* bounds one Ready's apply batch */
#define DEFAULT_PENDING_READS 4096

/* ------------------------------------------------------------------ helpers */

struct progress *raft_progress(struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}

bool raft_is_voter(const struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->conf.n_voters; i++)
        if (r->conf.voters[i] == id)
            return true;
    return false;
}

bool raft_is_learner(const struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->conf.n_learners; i++)
        if (r->conf.learners[i] == id)
            return true;
    return false;
}

/* Only a voter that knows it is one may campaign. */
bool raft_promotable(const struct raft *r)
{
    return raft_is_voter(r, r->id);
}

uint32_t raft_quorum(const struct raft *r)
{
    return r->conf.n_voters / 2 + 1;
}

/* This member is the only voter: its own log is the quorum. */
bool raft_solo(const struct raft *r)
{
    return r->conf.n_voters == 1 && raft_is_voter(r, r->id);
}

bool committed_in_term(const struct raft *r)
{
    uint64_t t;
    return log_term(&r->log, r->log.committed, &t) && t == r->term;
}

int raft_grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < need)
        c *= 2;
    void *n = realloc(*p, c * size);
    if (!n)
        return -ENOMEM;
    *p = n;
    *cap = c;
    return 0;
}

static struct pmsg *new_pmsg(struct raft *r, const struct raft_message *m)
{
    if (raft_grow((void **)&r->msgs, &r->cap_msgs, r->n_msgs + 1, sizeof(*r->msgs)) < 0)
        return NULL;
    struct pmsg *p = &r->msgs[r->n_msgs++];
    memset(p, 0, sizeof(*p));
    p->m = *m;
    p->m.from = r->id;
    p->m.entries = NULL;
    p->m.n_entries = 0;
    p->m.snapshot = NULL;
    p->m.context = NULL;
    p->m.context_len = 0;
    p->ent_lo = 1;
    p->ent_hi = 0;
    /* Forwarded proposals, reads and transfer requests carry no term (etcd's "local" messages). */
    if (m->term == 0 && m->type != RAFT_MSG_PROP && m->type != RAFT_MSG_READ_INDEX &&
        m->type != RAFT_MSG_TRANSFER_LEADER)
        p->m.term = r->term;
    return p;
}

/* Queue m (from r) for the next Ready; ctx is copied. */
int send_msg(struct raft *r, const struct raft_message *m, const void *ctx, size_t ctx_len)
{
    struct pmsg *p = new_pmsg(r, m);
    if (!p)
        return -ENOMEM;
    if (ctx_len) {
        p->ctx = malloc(ctx_len);
        if (!p->ctx) {
            r->n_msgs--;
            return -ENOMEM;
        }
        memcpy(p->ctx, ctx, ctx_len);
        p->m.context = p->ctx;
        p->m.context_len = ctx_len;
    }
    return 0;
}

/* Queue a MsgApp whose entries [lo, hi] are taken from the log at raft_ready. */
int send_append_range(struct raft *r, const struct raft_message *m, uint64_t lo, uint64_t hi)
{
    struct pmsg *p = new_pmsg(r, m);
    if (!p)
        return -ENOMEM;
    if (lo <= hi) {
        p->ent_lo = lo;
        p->ent_hi = hi;
        p->ent_hi_term = log_at(&r->log, hi)->term;
    }
    return 0;
}

/* ------------------------------------------------------------------- roles */

int rebuild_progress(struct raft *r)
{
    uint64_t ids[2 * RAFT_MAX_MEMBERS];
    bool learner[2 * RAFT_MAX_MEMBERS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        ids[n] = r->conf.voters[i];
        learner[n++] = false;
    }
    for (uint32_t i = 0; i < r->conf.n_learners; i++) {
        ids[n] = r->conf.learners[i];
        learner[n++] = true;
    }
    struct progress *np = calloc(n ? n : 1, sizeof(*np));
    if (!np)
        return -ENOMEM;
    bool *used = calloc(r->n_prs ? r->n_prs : 1, sizeof(bool));
    if (!used) {
        free(np);
        return -ENOMEM;
    }
    uint64_t last = log_last_index(&r->log);
    for (uint32_t i = 0; i < n; i++) {
        struct progress *old = NULL;
        for (uint32_t j = 0; j < r->n_prs; j++)
            if (r->prs[j].id == ids[i])
                old = &r->prs[j], used[j] = true;
        if (old) {
            np[i] = *old;
        } else {
            if (progress_init(&np[i], ids[i], r->cfg.max_inflight_msgs, r->cfg.max_inflight_bytes) < 0) {
                for (uint32_t k = 0; k < i; k++)
                    if (!raft_progress(r, np[k].id))
                        progress_free(&np[k]);
                free(np);
                free(used);
                return -ENOMEM;
            }
            progress_reset(&np[i], last + 1);
            if (ids[i] == r->id)
                np[i].match = last;
        }
        np[i].is_learner = learner[i];
    }
    for (uint32_t j = 0; j < r->n_prs; j++)
        if (!used[j])
            progress_free(&r->prs[j]);
    free(used);
    free(r->prs);
    r->prs = np;
    r->n_prs = n;
    return 0;
}

static void reset(struct raft *r, uint64_t term)
{
    if (term != r->term) {
        r->term = term;
        r->vote = RAFT_NONE;
    }
    r->lead = RAFT_NONE;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    election_reset_timeout(r);
    r->lead_transferee = RAFT_NONE;
    r->n_votes = 0;
    r->pending_conf_index = 0;
    r->uncommitted_bytes = 0;
    uint64_t last = log_last_index(&r->log);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        progress_reset(&r->prs[i], last + 1);
        if (r->prs[i].id == r->id)
            r->prs[i].match = last;
    }
    readindex_reset(r);
}

void become_follower(struct raft *r, uint64_t term, uint64_t lead)
{
    reset(r, term);
    r->role = RAFT_FOLLOWER;
    r->lead = lead;
}

void become_leader(struct raft *r)
{
    reset(r, r->term);
    r->role = RAFT_LEADER;
    r->lead = r->id;
    struct progress *self = raft_progress(r, r->id);
    if (self)
        progress_become_replicate(self);
    /* No conf change until everything this leader inherited is applied
     * (the fix for single-server changes across leader changes). */
    r->pending_conf_index = log_last_index(&r->log);
    if (log_append_owned(&r->log, r->term, RAFT_ENTRY_NORMAL, NULL, 0) == 0 && self) {
        self->match = log_last_index(&r->log);
        self->next = self->match + 1;
    }
    maybe_commit(r);
}

/* --------------------------------------------------------------- proposals */

static int leader_append(struct raft *r, const struct raft_entry *ents, size_t n, bool local)
{
    if (!raft_progress(r, r->id) || !raft_is_voter(r, r->id))
        return -CAIRN_E_PROPOSAL_DROPPED;
    if (r->lead_transferee)
        return -CAIRN_E_LEADER_TRANSFER;
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += ents[i].len;
    if (r->cfg.max_uncommitted_bytes && r->uncommitted_bytes && r->uncommitted_bytes + bytes > r->cfg.max_uncommitted_bytes)
        return -CAIRN_E_PROPOSAL_DROPPED;
    for (size_t i = 0; i < n; i++)
        if (local && ents[i].type == RAFT_ENTRY_CONF_CHANGE && r->pending_conf_index > r->log.applied)
            return -CAIRN_E_PROPOSAL_DROPPED;
    for (size_t i = 0; i < n; i++) {
        uint32_t type = ents[i].type, len = ents[i].len;
        if (type == RAFT_ENTRY_CONF_CHANGE) {
            /* A forwarded change while one is pending becomes a no-op entry (etcd's way). */
            if (r->pending_conf_index > r->log.applied) {
                type = RAFT_ENTRY_NORMAL;
                len = 0;
            }
        }
        void *d = NULL;
        if (len) {
            d = malloc(len);
            if (!d)
                return -ENOMEM;
            memcpy(d, ents[i].data, len);
        }
        int rc = log_append_owned(&r->log, r->term, type, d, len);
        if (rc < 0) {
            free(d);
            return rc;
        }
        if (type == RAFT_ENTRY_CONF_CHANGE)
            r->pending_conf_index = log_last_index(&r->log);
        r->uncommitted_bytes += len;
    }
    struct progress *self = raft_progress(r, r->id);
    progress_maybe_update(self, log_last_index(&r->log));
    maybe_commit(r);
    bcast_append(r);
    return 0;
}

static int propose_entries(struct raft *r, const struct raft_entry *ents, size_t n)
{
    if (r->in_ready)
        return -EBUSY;
    if (r->role == RAFT_LEADER)
        return leader_append(r, ents, n, true);
    if (r->role != RAFT_FOLLOWER || r->lead == RAFT_NONE)
        return -CAIRN_E_NO_LEADER;
    struct raft_message m = { .type = RAFT_MSG_PROP, .to = r->lead };
    struct pmsg *p = new_pmsg(r, &m);
    if (!p)
        return -ENOMEM;
    p->own_ents = calloc(n, sizeof(*p->own_ents));
    if (!p->own_ents)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        p->own_ents[i].type = ents[i].type;
        p->own_ents[i].len = ents[i].len;
        if (ents[i].len) {
            void *d = malloc(ents[i].len);
            if (!d)
                goto nomem;
            memcpy(d, ents[i].data, ents[i].len);
            p->own_ents[i].data = d;
        }
    }
    p->m.entries = p->own_ents;
    p->m.n_entries = n;
    return 0;
nomem:
    if (p->own_ents)
        for (size_t i = 0; i < n; i++)
            free((void *)p->own_ents[i].data);
    free(p->own_ents);
    r->n_msgs--;
    return -ENOMEM;
}

int raft_propose(struct raft *r, const void *data, size_t len)
{
    struct raft_buf b = { data, len };
    return raft_propose_batch(r, &b, 1);
}

int raft_propose_batch(struct raft *r, const struct raft_buf *bufs, size_t n)
{
    struct raft_entry small[64], *ents = small;
    if (n == 0)
        return -EINVAL;
    if (n > 64 && !(ents = calloc(n, sizeof(*ents))))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (bufs[i].len > UINT32_MAX) {
            if (ents != small)
                free(ents);
            return -CAIRN_E_REQUEST_TOO_LARGE;
        }
        ents[i] = (struct raft_entry){ .type = RAFT_ENTRY_NORMAL, .len = (uint32_t)bufs[i].len,
                                       .data = bufs[i].data };
    }
    int rc = propose_entries(r, ents, n);
    if (ents != small)
        free(ents);
    return rc;
}

int propose_conf_entry(struct raft *r, const void *data, size_t len)
{
    struct raft_entry e = { .type = RAFT_ENTRY_CONF_CHANGE, .len = (uint32_t)len, .data = data };
    return propose_entries(r, &e, 1);
}

/* --------------------------------------------------------------- stepping */

static void leader_transfer(struct raft *r, uint64_t to)
{
    struct progress *p = raft_progress(r, to);
    if (!p || p->is_learner || to == r->id)
        return;
    if (r->lead_transferee == to)
        return;
    r->lead_transferee = to;
    r->election_elapsed = 0; /* the attempt lasts one election timeout */
    if (p->match == log_last_index(&r->log))
        send_timeout_now(r, to);
    else
        maybe_send_append(r, p, true);
}

static int step_leader(struct raft *r, const struct raft_message *m)
{
    struct progress *p;
    switch (m->type) {
    case RAFT_MSG_PROP:
        if (m->n_entries)
            leader_append(r, m->entries, m->n_entries, false);
        return 0; /* a remote proposal that is dropped is the proposer's timeout */
    case RAFT_MSG_READ_INDEX:
        readindex_request(r, m->from, m->context, m->context_len);
        return 0;
    case RAFT_MSG_TRANSFER_LEADER:
        leader_transfer(r, m->index);
        return 0;
    default:
        break;
    }
    if (!(p = raft_progress(r, m->from)))
        return 0;
    switch (m->type) {
    case RAFT_MSG_APP_RESP:
        p->recent_active = true;
        leader_on_app_resp(r, m, p);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        p->recent_active = true;
        p->probe_sent = false;
        if (p->state == RAFT_PROGRESS_REPLICATE && progress_ins_full(p))
            progress_ins_free_first(p);
        if (p->match < log_last_index(&r->log))
            maybe_send_append(r, p, true);
        if (m->context_len)
            readindex_on_ack(r, m->from, m->context, m->context_len);
        break;
    default:
        break;
    }
    return 0;
}

static int step_follower(struct raft *r, const struct raft_message *m)
{
    switch (m->type) {
    case RAFT_MSG_PROP:
        if (r->lead == RAFT_NONE || !m->n_entries)
            return 0;
        {
            /* Forward a peer's proposal on: our leader may be newer than theirs. */
            struct raft_message f = { .type = RAFT_MSG_PROP, .to = r->lead };
            struct pmsg *p = new_pmsg(r, &f);
            if (!p)
                return -ENOMEM;
            p->own_ents = calloc(m->n_entries, sizeof(*p->own_ents));
            if (!p->own_ents) {
                r->n_msgs--;
                return -ENOMEM;
            }
            for (size_t i = 0; i < m->n_entries; i++) {
                p->own_ents[i] = (struct raft_entry){ .type = m->entries[i].type, .len = m->entries[i].len };
                if (m->entries[i].len && (p->own_ents[i].data = malloc(m->entries[i].len)))
                    memcpy((void *)p->own_ents[i].data, m->entries[i].data, m->entries[i].len);
                else
                    p->own_ents[i].len = 0;
            }
            p->m.entries = p->own_ents;
            p->m.n_entries = m->n_entries;
        }
        return 0;
    case RAFT_MSG_APP:
        r->election_elapsed = 0;
        r->lead = m->from;
        return follower_append(r, m);
    case RAFT_MSG_HEARTBEAT: {
        r->election_elapsed = 0;
        r->lead = m->from;
        uint64_t last = log_last_index(&r->log);
        log_commit_to(&r->log, m->commit < last ? m->commit : last);
        struct raft_message resp = { .type = RAFT_MSG_HEARTBEAT_RESP, .to = m->from };
        return send_msg(r, &resp, m->context, m->context_len);
    }
    case RAFT_MSG_SNAP:
        r->election_elapsed = 0;
        r->lead = m->from;
        return follower_snapshot(r, m);
    case RAFT_MSG_TRANSFER_LEADER:
        if (r->lead != RAFT_NONE) {
            struct raft_message f = { .type = RAFT_MSG_TRANSFER_LEADER, .to = r->lead, .index = m->index };
            return send_msg(r, &f, NULL, 0);
        }
        return 0;
    case RAFT_MSG_TIMEOUT_NOW:
        /* Leadership transfer: campaign at once, skipping pre-vote. */
        return election_hup(r, true);
    case RAFT_MSG_READ_INDEX_RESP:
        return readindex_add_state(r, m->index, m->context, m->context_len);
    default:
        return 0;
    }
}

static int step_candidate(struct raft *r, const struct raft_message *m)
{
    switch (m->type) {
    case RAFT_MSG_APP:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAP:
        /* A leader exists in our term: give up the election. */
        become_follower(r, m->term, m->from);
        return step_follower(r, m);
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_PREVOTE_RESP:
        return election_step_vote_resp(r, m);
    default:
        return 0;
    }
}

static bool is_local_type(uint32_t t)
{
    return t == RAFT_MSG_PROP || t == RAFT_MSG_READ_INDEX || t == RAFT_MSG_TRANSFER_LEADER;
}

static bool msg_valid(const struct raft_message *m)
{
    if (m->type < RAFT_MSG_APP || m->type > RAFT_MSG_TYPE_MAX || m->from == RAFT_NONE)
        return false;
    if (m->n_entries && !m->entries)
        return false;
    if (m->context_len && !m->context)
        return false;
    if (m->type == RAFT_MSG_SNAP && (!m->snapshot || m->snapshot->index == 0 ||
                                     m->snapshot->conf_state.n_voters > RAFT_MAX_MEMBERS ||
                                     m->snapshot->conf_state.n_learners > RAFT_MAX_MEMBERS))
        return false;
    if (m->type == RAFT_MSG_APP) {
        for (size_t i = 0; i < m->n_entries; i++) {
            if (m->entries[i].index != m->index + 1 + i || m->entries[i].term > m->term ||
                (m->entries[i].len && !m->entries[i].data))
                return false;
            if (m->entries[i].term < (i ? m->entries[i - 1].term : m->log_term))
                return false;
        }
    }
    if (m->type == RAFT_MSG_PROP)
        for (size_t i = 0; i < m->n_entries; i++)
            if (m->entries[i].len && !m->entries[i].data)
                return false;
    return true;
}

int raft_step(struct raft *r, const struct raft_message *m)
{
    if (r->in_ready)
        return -EBUSY;
    if (!m || !msg_valid(m))
        return -CAIRN_E_MALFORMED;
    if (m->to != r->id)
        return -CAIRN_E_CLUSTER_MISMATCH; /* misrouted: the transport's bug, not a peer's */
    if (m->term == 0 && is_local_type(m->type)) {
        /* no term: handled below by role */
    } else if (m->term > r->term) {
        if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
            bool force = m->context_len == 8 && memcmp(m->context, "transfer", 8) == 0;
            bool in_lease = r->cfg.check_quorum && r->lead != RAFT_NONE &&
                            r->election_elapsed < r->cfg.election_tick;
            /* Leader lease: a member that heard from a live leader ignores
             * disruptive candidates (a removed or partitioned member). */
            if (!force && in_lease)
                return 0;
        }
        if (m->type == RAFT_MSG_PREVOTE || (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject)) {
            /* a pre-vote never changes anyone's term */
        } else if (m->type == RAFT_MSG_APP || m->type == RAFT_MSG_HEARTBEAT || m->type == RAFT_MSG_SNAP) {
            become_follower(r, m->term, m->from);
        } else {
            become_follower(r, m->term, RAFT_NONE);
        }
    } else if (m->term < r->term) {
        if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
            (m->type == RAFT_MSG_APP || m->type == RAFT_MSG_HEARTBEAT)) {
            /* Tell a stale leader our term so it steps down (else, with
             * check-quorum, it could keep a partitioned member from ever
             * winning a pre-vote). */
            struct raft_message resp = { .type = RAFT_MSG_APP_RESP, .to = m->from };
            return send_msg(r, &resp, NULL, 0);
        }
        if (m->type == RAFT_MSG_PREVOTE) {
            struct raft_message resp = { .type = RAFT_MSG_PREVOTE_RESP, .to = m->from,
                                         .term = r->term, .reject = 1 };
            return send_msg(r, &resp, NULL, 0);
        }
        return 0;
    }

    if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE)
        return election_step_vote_req(r, m);
    switch (r->role) {
    case RAFT_LEADER: return step_leader(r, m);
    case RAFT_FOLLOWER: return step_follower(r, m);
    default: return step_candidate(r, m);
    }
}

/* ------------------------------------------------------------------ ticking */

static bool quorum_active(struct raft *r)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        struct progress *p = raft_progress(r, r->conf.voters[i]);
        if (p && (p->id == r->id || p->recent_active))
            n++;
    }
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id != r->id)
            r->prs[i].recent_active = false;
    return n >= raft_quorum(r);
}

int raft_tick(struct raft *r)
{
    if (r->in_ready)
        return -EBUSY;
    if (r->role != RAFT_LEADER) {
        r->election_elapsed++;
        if (raft_promotable(r) && r->election_elapsed >= r->randomized_timeout) {
            r->election_elapsed = 0;
            return election_hup(r, false);
        }
        return 0;
    }
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    if (r->election_elapsed >= r->cfg.election_tick) {
        r->election_elapsed = 0;
        if (r->cfg.check_quorum && !quorum_active(r)) {
            become_follower(r, r->term, RAFT_NONE);
            return 0;
        }
        r->lead_transferee = RAFT_NONE; /* a transfer that took this long failed */
    }
    if (r->heartbeat_elapsed >= r->cfg.heartbeat_tick) {
        r->heartbeat_elapsed = 0;
        if (r->n_reads)
            bcast_heartbeat(r, r->reads[r->n_reads - 1].ctx, r->reads[r->n_reads - 1].ctx_len);
        else
            bcast_heartbeat(r, NULL, 0);
    }
    return 0;
}

/* ------------------------------------------------------------- public calls */

int raft_campaign(struct raft *r)
{
    if (r->in_ready)
        return -EBUSY;
    if (r->role == RAFT_LEADER || !raft_promotable(r))
        return -EINVAL;
    return election_hup(r, false);
}

int raft_transfer_leader(struct raft *r, uint64_t to)
{
    if (r->in_ready)
        return -EBUSY;
    if (!raft_is_voter(r, to))
        return -EINVAL;
    if (r->role == RAFT_LEADER) {
        leader_transfer(r, to);
        return 0;
    }
    if (r->lead == RAFT_NONE)
        return -CAIRN_E_NO_LEADER;
    struct raft_message f = { .type = RAFT_MSG_TRANSFER_LEADER, .to = r->lead, .index = to };
    return send_msg(r, &f, NULL, 0);
}

int raft_report_snapshot(struct raft *r, uint64_t id, int ok)
{
    if (r->in_ready)
        return -EBUSY;
    struct progress *p;
    if (r->role != RAFT_LEADER || !(p = raft_progress(r, id)) || p->state != RAFT_PROGRESS_SNAPSHOT)
        return 0;
    /* On success, wait for the follower's ack before sending more (probe);
     * on failure, probe so the next attempt starts over. */
    if (!ok)
        p->pending_snapshot = 0;
    progress_become_probe(p);
    p->probe_sent = ok ? true : false;
    return 0;
}

int raft_report_unreachable(struct raft *r, uint64_t id)
{
    if (r->in_ready)
        return -EBUSY;
    struct progress *p;
    if (r->role == RAFT_LEADER && (p = raft_progress(r, id)) && p->state == RAFT_PROGRESS_REPLICATE)
        progress_become_probe(p);
    return 0;
}

int raft_compact(struct raft *r, const struct raft_snapshot_meta *meta, uint64_t keep)
{
    if (r->in_ready)
        return -EBUSY;
    if (!meta || meta->conf_state.n_voters > RAFT_MAX_MEMBERS || meta->conf_state.n_learners > RAFT_MAX_MEMBERS)
        return -EINVAL;
    if (meta->index <= r->snap.index)
        return -CAIRN_E_SNAPSHOT_TOO_OLD;
    if (meta->index > r->log.applied || !log_match_term(&r->log, meta->index, meta->term))
        return -EINVAL;
    r->snap = *meta;
    if (meta->index > keep)
        log_compact(&r->log, meta->index - keep);
    return 0;
}

/* --------------------------------------------------------------- lifecycle */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void election_reset_timeout(struct raft *r)
{
    r->randomized_timeout = r->cfg.election_tick + (int)(splitmix64(&r->rng) % (uint64_t)r->cfg.election_tick);
}

int raft_new(const struct raft_config *cfg, const struct raft_restore *rs, struct raft **out)
{
    static const struct raft_restore none;
    int rc = -EINVAL;
    if (!cfg || !out || cfg->id == RAFT_NONE || cfg->heartbeat_tick < 1 || cfg->election_tick <= cfg->heartbeat_tick)
        return -EINVAL;
    if (!rs)
        rs = &none;
    const struct raft_snapshot_meta *s = &rs->snapshot;
    if (s->conf_state.n_voters > RAFT_MAX_MEMBERS || s->conf_state.n_learners > RAFT_MAX_MEMBERS ||
        (s->index == 0) != (s->term == 0) || (rs->n_entries && !rs->entries))
        return -EINVAL;
    struct raft *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->cfg = *cfg;
    if (!r->cfg.max_inflight_msgs)
        r->cfg.max_inflight_msgs = DEFAULT_INFLIGHT;
    if (!r->cfg.max_msg_bytes)
        r->cfg.max_msg_bytes = DEFAULT_MSG_BYTES;
    if (!r->cfg.max_committed_bytes)
        r->cfg.max_committed_bytes = DEFAULT_COMMITTED_BYTES;
    if (!r->cfg.max_pending_reads)
        r->cfg.max_pending_reads = DEFAULT_PENDING_READS;
    r->id = cfg->id;
    r->rng = cfg->seed ^ (cfg->id * 0xD6E8FEB86659FD93ull);
    log_init(&r->log, s->index, s->term);
    r->snap = *s;
    r->conf = s->conf_state;
    uint64_t prev = s->index, prev_term = s->term;
    for (size_t i = 0; i < rs->n_entries; i++) {
        const struct raft_entry *e = &rs->entries[i];
        if (e->index <= s->index)
            continue;
        if (e->index != prev + 1 || e->term < prev_term || (e->len && !e->data))
            goto fail;
        if ((rc = log_append(&r->log, e, 1)) < 0)
            goto fail;
        prev = e->index;
        prev_term = e->term;
    }
    rc = -EINVAL;
    r->log.stabled = log_last_index(&r->log);
    uint64_t commit = rs->hard_state.commit > s->index ? rs->hard_state.commit : s->index;
    if (commit > log_last_index(&r->log))
        goto fail;
    r->log.committed = commit;
    r->term = rs->hard_state.term > log_last_term(&r->log) ? rs->hard_state.term : log_last_term(&r->log);
    r->vote = rs->hard_state.term == r->term ? rs->hard_state.vote : RAFT_NONE;
    if ((rc = rebuild_progress(r)) < 0)
        goto fail;
    become_follower(r, r->term, RAFT_NONE);
    r->prev_hs = rs->hard_state;
    r->prev_lead = RAFT_NONE;
    r->prev_role = RAFT_FOLLOWER;
    *out = r;
    return 0;
fail:
    raft_free(r);
    return rc;
}

void raft_free(struct raft *r)
{
    if (!r)
        return;
    log_free(&r->log);
    for (uint32_t i = 0; i < r->n_prs; i++)
        progress_free(&r->prs[i]);
    free(r->prs);
    for (size_t i = 0; i < r->n_msgs; i++)
        free_pmsg(&r->msgs[i]);
    for (size_t i = 0; i < r->n_rd_pmsgs; i++)
        free_pmsg(&r->rd_pmsgs[i]);
    free(r->msgs);
    free(r->rd_pmsgs);
    free(r->rd_msgs);
    for (uint32_t i = 0; i < r->n_read_states; i++)
        free((void *)r->read_states[i].context);
    for (uint32_t i = 0; i < r->n_rd_reads; i++)
        free((void *)r->rd_reads[i].context);
    free(r->read_states);
    free(r->rd_reads);
    readindex_free(r);
    free(r);
}
