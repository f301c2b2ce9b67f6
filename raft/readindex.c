/*
 * ReadIndex, the safe kind: the leader notes its commit index for a read,
 * confirms it is still leader with a heartbeat round acknowledged by a
 * quorum, then answers.  A new leader answers nothing until it has
 * committed an entry of its own term (before that its commit index may
 * trail what earlier leaders committed).  Followers forward to the leader.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

static void free_req(struct read_req *q)
{
    free(q->ctx);
    q->ctx = NULL;
}

void readindex_free(struct raft *r)
{
    for (uint32_t i = 0; i < r->n_reads; i++)
        free_req(&r->reads[i]);
    for (uint32_t i = 0; i < r->n_early; i++)
        free_req(&r->early[i]);
    free(r->reads);
    free(r->early);
    r->reads = r->early = NULL;
    r->n_reads = r->n_early = 0;
}

/* Leadership lost: pending reads are dropped (their callers time out). */
void readindex_reset(struct raft *r)
{
    for (uint32_t i = 0; i < r->n_reads; i++)
        free_req(&r->reads[i]);
    for (uint32_t i = 0; i < r->n_early; i++)
        free_req(&r->early[i]);
    r->n_reads = r->n_early = 0;
}

int readindex_add_state(struct raft *r, uint64_t index, const void *ctx, size_t len)
{
    if (r->n_read_states >= r->cap_read_states) {
        uint32_t c = r->cap_read_states ? r->cap_read_states * 2 : 16;
        void *p = realloc(r->read_states, c * sizeof(*r->read_states));
        if (!p)
            return -ENOMEM;
        r->read_states = p;
        r->cap_read_states = c;
    }
    void *copy = NULL;
    if (len) {
        if (!(copy = malloc(len)))
            return -ENOMEM;
        memcpy(copy, ctx, len);
    }
    r->read_states[r->n_read_states++] = (struct raft_read_state){ index, copy, len };
    return 0;
}

/* Answer a read confirmed at index: locally, or to the follower that asked. */
static int respond(struct raft *r, uint64_t from, uint64_t index, const void *ctx, size_t len)
{
    if (from == r->id)
        return readindex_add_state(r, index, ctx, len);
    struct raft_message m = { .type = RAFT_MSG_READ_INDEX_RESP, .to = from, .index = index };
    return send_msg(r, &m, ctx, len);
}

static int push(struct read_req **arr, uint32_t *n, uint32_t max, uint64_t from, const void *ctx, size_t len)
{
    if (*n >= max)
        return -CAIRN_E_TOO_MANY_REQUESTS;
    if (*n == 0 || (*n >= 8 && (*n & (*n - 1)) == 0)) {
        uint32_t c = *n ? *n * 2 : 8;
        void *p = realloc(*arr, c * sizeof(**arr));
        if (!p)
            return -ENOMEM;
        *arr = p;
    }
    struct read_req *q = &(*arr)[*n];
    memset(q, 0, sizeof(*q));
    q->from = from;
    if (len) {
        if (!(q->ctx = malloc(len)))
            return -ENOMEM;
        memcpy(q->ctx, ctx, len);
    }
    q->ctx_len = len;
    (*n)++;
    return 0;
}

uint64_t raft_solo_read_index(const struct raft *r)
{
    return r->role == RAFT_LEADER && raft_solo(r) && committed_in_term(r) ? r->log.committed : 0;
}

/* Start the quorum round for a read (leader, own-term entry committed). */
static int start_round(struct raft *r, uint64_t from, const void *ctx, size_t len)
{
    if (raft_solo(r))
        return respond(r, from, r->log.committed, ctx, len);
    for (uint32_t i = 0; i < r->n_reads; i++)
        if (r->reads[i].ctx_len == len && (len == 0 || memcmp(r->reads[i].ctx, ctx, len) == 0))
            return 0; /* duplicate ctx: the first request will answer */
    int rc = push(&r->reads, &r->n_reads, r->cfg.max_pending_reads, from, ctx, len);
    if (rc < 0)
        return rc;
    struct read_req *q = &r->reads[r->n_reads - 1];
    q->index = r->log.committed;
    q->acks[q->n_acks++] = r->id;
    bcast_heartbeat(r, ctx, len);
    return 0;
}

int readindex_request(struct raft *r, uint64_t from, const void *ctx, size_t len)
{
    if (!committed_in_term(r))
        return push(&r->early, &r->n_early, r->cfg.max_pending_reads, from, ctx, len);
    return start_round(r, from, ctx, len);
}

void readindex_on_commit_in_term(struct raft *r)
{
    if (r->role != RAFT_LEADER)
        return;
    struct read_req *early = r->early;
    uint32_t n = r->n_early;
    r->early = NULL;
    r->n_early = 0;
    for (uint32_t i = 0; i < n; i++) {
        start_round(r, early[i].from, early[i].ctx, early[i].ctx_len);
        free_req(&early[i]);
    }
    free(early);
}

/*
 * A heartbeat ack carrying ctx.  Heartbeats for a read go out after every
 * earlier read was registered, so an ack for read k vouches for reads 0..k.
 */
void readindex_on_ack(struct raft *r, uint64_t from, const void *ctx, size_t len)
{
    if (!raft_is_voter(r, from))
        return;
    uint32_t k;
    for (k = 0; k < r->n_reads; k++)
        if (r->reads[k].ctx_len == len && memcmp(r->reads[k].ctx, ctx, len) == 0)
            break;
    if (k == r->n_reads)
        return;
    struct read_req *q = &r->reads[k];
    bool seen = false;
    for (uint32_t i = 0; i < q->n_acks; i++)
        if (q->acks[i] == from)
            seen = true;
    if (!seen && q->n_acks < RAFT_MAX_MEMBERS)
        q->acks[q->n_acks++] = from;
    uint32_t votes = 0;
    for (uint32_t i = 0; i < q->n_acks; i++)
        if (raft_is_voter(r, q->acks[i]))
            votes++;
    if (votes < raft_quorum(r))
        return;
    for (uint32_t i = 0; i <= k; i++) {
        respond(r, r->reads[i].from, r->reads[i].index, r->reads[i].ctx, r->reads[i].ctx_len);
        free_req(&r->reads[i]);
    }
    memmove(r->reads, r->reads + k + 1, (r->n_reads - k - 1) * sizeof(*r->reads));
    r->n_reads -= k + 1;
}

int raft_read_index(struct raft *r, const void *ctx, size_t ctx_len)
{
    if (r->in_ready)
        return -EBUSY;
    if (ctx_len && !ctx)
        return -EINVAL;
    if (r->role == RAFT_LEADER)
        return readindex_request(r, r->id, ctx, ctx_len);
    if (r->role != RAFT_FOLLOWER || r->lead == RAFT_NONE)
        return -CAIRN_E_NO_LEADER;
    struct raft_message m = { .type = RAFT_MSG_READ_INDEX, .to = r->lead };
    return send_msg(r, &m, ctx, ctx_len);
}
