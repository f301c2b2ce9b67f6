/*
 * raftmsg: converts Raft messages between raft/raft.h's structs and
 * peer.proto's protobuf-c types.  Outgoing messages come from raft and are
 * trusted (a bad one is a programming error: -EINVAL); incoming ones come
 * from the network and every field raft relies on is checked here.
 * Conversions borrow memory instead of copying: see raftmsg.h for who owns
 * what.
 */
#include "daemon/raftmsg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The one place the two type enums meet.  Indexed by raft type. */
static const Cairnpeer__MessageType type_map[RAFT_MSG_TYPE_MAX + 1] = {
    [RAFT_MSG_APP] = CAIRNPEER__MESSAGE_TYPE__MSG_APP,
    [RAFT_MSG_APP_RESP] = CAIRNPEER__MESSAGE_TYPE__MSG_APP_RESP,
    [RAFT_MSG_VOTE] = CAIRNPEER__MESSAGE_TYPE__MSG_VOTE,
    [RAFT_MSG_VOTE_RESP] = CAIRNPEER__MESSAGE_TYPE__MSG_VOTE_RESP,
    [RAFT_MSG_PREVOTE] = CAIRNPEER__MESSAGE_TYPE__MSG_PRE_VOTE,
    [RAFT_MSG_PREVOTE_RESP] = CAIRNPEER__MESSAGE_TYPE__MSG_PRE_VOTE_RESP,
    [RAFT_MSG_HEARTBEAT] = CAIRNPEER__MESSAGE_TYPE__MSG_HEARTBEAT,
    [RAFT_MSG_HEARTBEAT_RESP] = CAIRNPEER__MESSAGE_TYPE__MSG_HEARTBEAT_RESP,
    [RAFT_MSG_SNAP] = CAIRNPEER__MESSAGE_TYPE__MSG_SNAP,
    [RAFT_MSG_PROP] = CAIRNPEER__MESSAGE_TYPE__MSG_PROP,
    [RAFT_MSG_READ_INDEX] = CAIRNPEER__MESSAGE_TYPE__MSG_READ_INDEX,
    [RAFT_MSG_READ_INDEX_RESP] = CAIRNPEER__MESSAGE_TYPE__MSG_READ_INDEX_RESP,
    [RAFT_MSG_TRANSFER_LEADER] = CAIRNPEER__MESSAGE_TYPE__MSG_TRANSFER_LEADER,
    [RAFT_MSG_TIMEOUT_NOW] = CAIRNPEER__MESSAGE_TYPE__MSG_TIMEOUT_NOW,
};

Cairnpeer__MessageType raftmsg_type_to_pb(uint32_t raft_type)
{
    if (raft_type > RAFT_MSG_TYPE_MAX)
        return CAIRNPEER__MESSAGE_TYPE__MSG_UNKNOWN;
    return type_map[raft_type];
}

uint32_t raftmsg_type_from_pb(Cairnpeer__MessageType pb_type)
{
    /* MSG_UNKNOWN maps to nothing; the local-only types are in no slot. */
    if (pb_type == CAIRNPEER__MESSAGE_TYPE__MSG_UNKNOWN)
        return 0;
    for (uint32_t t = RAFT_MSG_APP; t <= RAFT_MSG_TYPE_MAX; t++)
        if (type_map[t] == pb_type)
            return t;
    return 0;
}

/* Make b->mem hold at least size bytes; the old content is not kept. */
static int buf_reserve(struct raftmsg_buf *b, size_t size)
{
    if (size <= b->cap)
        return 0;
    void *p = malloc(size);
    if (!p)
        return -ENOMEM;
    free(b->mem);
    b->mem = p;
    b->cap = size;
    return 0;
}

void raftmsg_buf_release(struct raftmsg_buf *b)
{
    free(b->mem);
    memset(b, 0, sizeof(*b));
}

static int entry_type_valid(uint32_t type)
{
    return type == RAFT_ENTRY_NORMAL || type == RAFT_ENTRY_CONF_CHANGE;
}

/* raft's conf state as a ConfState that borrows its ID arrays. */
static void conf_to_pb(const struct raft_conf_state *cs, Cairnpeer__ConfState *pb)
{
    cairnpeer__conf_state__init(pb);
    pb->n_voters = cs->n_voters;
    pb->voters = cs->n_voters ? (uint64_t *)cs->voters : NULL;
    pb->n_learners = cs->n_learners;
    pb->learners = cs->n_learners ? (uint64_t *)cs->learners : NULL;
}

/* One ID list of a received configuration: bounded, no 0, no repeats. */
static int ids_from_pb(const uint64_t *in, size_t n, uint64_t *out, uint32_t *n_out)
{
    if (n > RAFT_MAX_MEMBERS)
        return -CAIRN_E_MALFORMED;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == RAFT_NONE)
            return -CAIRN_E_MALFORMED;
        for (size_t j = 0; j < i; j++)
            if (in[j] == in[i])
                return -CAIRN_E_MALFORMED;
        out[i] = in[i];
    }
    *n_out = (uint32_t)n;
    return 0;
}

/* A received configuration (NULL means empty); no ID may be both voter and learner. */
static int conf_from_pb(const Cairnpeer__ConfState *pb, struct raft_conf_state *cs)
{
    memset(cs, 0, sizeof(*cs));
    if (!pb)
        return 0;
    int rc = ids_from_pb(pb->voters, pb->n_voters, cs->voters, &cs->n_voters);
    if (rc == 0)
        rc = ids_from_pb(pb->learners, pb->n_learners, cs->learners, &cs->n_learners);
    for (uint32_t i = 0; rc == 0 && i < cs->n_learners; i++)
        for (uint32_t j = 0; j < cs->n_voters; j++)
            if (cs->learners[i] == cs->voters[j])
                rc = -CAIRN_E_MALFORMED;
    if (rc != 0)
        memset(cs, 0, sizeof(*cs));
    return rc;
}

int raftmsg_to_pb(const struct raft_message *m, Cairnpeer__Message *pb, struct raftmsg_buf *b)
{
    cairnpeer__message__init(pb);
    pb->type = raftmsg_type_to_pb(m->type);
    if (pb->type == CAIRNPEER__MESSAGE_TYPE__MSG_UNKNOWN)
        return -EINVAL;
    if (m->n_entries > RAFTMSG_MAX_ENTRIES || (m->n_entries && !m->entries) ||
        m->context_len > RAFTMSG_MAX_CONTEXT || (m->context_len && !m->context))
        return -EINVAL;
    if (m->type == RAFT_MSG_SNAP && !m->snapshot)
        return -EINVAL;
    pb->to = m->to;
    pb->from = m->from;
    pb->term = m->term;
    pb->log_term = m->log_term;
    pb->index = m->index;
    pb->commit = m->commit;
    pb->reject = m->reject != 0;
    pb->reject_hint = m->reject_hint;
    pb->commit_only = m->type == RAFT_MSG_APP && m->commit_only;
    /* raft carries a rejected MsgAppResp's hint term in log_term; the wire
     * has a field of its own for it. */
    if (m->type == RAFT_MSG_APP_RESP && m->reject) {
        pb->reject_hint_term = m->log_term;
        pb->log_term = 0;
    }
    if (m->context_len) {
        pb->context.data = (uint8_t *)m->context;
        pb->context.len = m->context_len;
    }
    if (m->type == RAFT_MSG_SNAP) {
        const struct raft_snapshot_meta *s = m->snapshot;
        if (s->conf_state.n_voters > RAFT_MAX_MEMBERS || s->conf_state.n_learners > RAFT_MAX_MEMBERS)
            return -EINVAL;
        cairnpeer__snapshot_metadata__init(&b->snap_pb);
        conf_to_pb(&s->conf_state, &b->conf_pb);
        b->snap_pb.conf_state = &b->conf_pb;
        b->snap_pb.index = s->index;
        b->snap_pb.term = s->term;
        pb->snapshot = &b->snap_pb;
    }
    if (m->n_entries == 0)
        return 0;

    /* One block: the pointer array, then the entries it points to. */
    size_t n = m->n_entries;
    int rc = buf_reserve(b, n * (sizeof(Cairnpeer__Entry *) + sizeof(Cairnpeer__Entry)));
    if (rc != 0)
        return rc;
    Cairnpeer__Entry **ptrs = b->mem;
    Cairnpeer__Entry *ents = (Cairnpeer__Entry *)(ptrs + n);
    for (size_t i = 0; i < n; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (!entry_type_valid(e->type) || (e->len && !e->data))
            return -EINVAL;
        cairnpeer__entry__init(&ents[i]);
        ents[i].term = e->term;
        ents[i].index = e->index;
        ents[i].type = e->type == RAFT_ENTRY_CONF_CHANGE ? CAIRNPEER__ENTRY_TYPE__ENTRY_CONF_CHANGE
                                                         : CAIRNPEER__ENTRY_TYPE__ENTRY_NORMAL;
        ents[i].data.data = (uint8_t *)e->data;
        ents[i].data.len = e->len;
        ptrs[i] = &ents[i];
    }
    pb->entries = ptrs;
    pb->n_entries = n;
    return 0;
}

int raftmsg_from_pb(const Cairnpeer__Message *pb, struct raft_message *m, struct raftmsg_buf *b)
{
    memset(m, 0, sizeof(*m));
    m->type = raftmsg_type_from_pb(pb->type);
    if (m->type == 0)
        return -CAIRN_E_MALFORMED;
    if (pb->n_entries > RAFTMSG_MAX_ENTRIES || pb->context.len > RAFTMSG_MAX_CONTEXT)
        return -CAIRN_E_MALFORMED;
    if ((pb->n_entries && !pb->entries) || (pb->context.len && !pb->context.data))
        return -CAIRN_E_MALFORMED;
    m->to = pb->to;
    m->from = pb->from;
    m->term = pb->term;
    m->log_term = pb->log_term;
    m->index = pb->index;
    m->commit = pb->commit;
    m->reject = pb->reject ? 1 : 0;
    m->reject_hint = pb->reject_hint;
    m->commit_only = m->type == RAFT_MSG_APP && pb->commit_only && pb->n_entries == 0;
    if (m->type == RAFT_MSG_APP_RESP && m->reject)
        m->log_term = pb->reject_hint_term;
    if (pb->context.len) {
        m->context = pb->context.data;
        m->context_len = pb->context.len;
    }
    if (m->type == RAFT_MSG_SNAP) {
        if (!pb->snapshot)
            return -CAIRN_E_MALFORMED;
        memset(&b->snap, 0, sizeof(b->snap));
        int rc = conf_from_pb(pb->snapshot->conf_state, &b->snap.conf_state);
        if (rc != 0)
            return rc;
        b->snap.index = pb->snapshot->index;
        b->snap.term = pb->snapshot->term;
        m->snapshot = &b->snap;
    }
    /* A snapshot on any other type is ignored: raft.h wants NULL there. */
    if (pb->n_entries == 0)
        return 0;

    size_t n = pb->n_entries;
    int rc = buf_reserve(b, n * sizeof(struct raft_entry));
    if (rc != 0)
        return rc;
    struct raft_entry *ents = b->mem;
    for (size_t i = 0; i < n; i++) {
        const Cairnpeer__Entry *e = pb->entries[i];
        if (!e || !entry_type_valid((uint32_t)e->type) || e->data.len > UINT32_MAX ||
            (e->data.len && !e->data.data))
            return -CAIRN_E_MALFORMED;
        ents[i].term = e->term;
        ents[i].index = e->index;
        ents[i].type = (uint32_t)e->type;
        ents[i].len = (uint32_t)e->data.len;
        ents[i].data = e->data.len ? e->data.data : NULL;
    }
    m->entries = ents;
    m->n_entries = n;
    return 0;
}

int raftmsg_conf_encode(const struct raft_conf_state *cs, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (cs->n_voters > RAFT_MAX_MEMBERS || cs->n_learners > RAFT_MAX_MEMBERS)
        return -EINVAL;
    Cairnpeer__ConfState pb;
    conf_to_pb(cs, &pb);
    size_t n = cairnpeer__conf_state__get_packed_size(&pb);
    /* An empty configuration packs to zero bytes; still hand back a buffer. */
    uint8_t *p = malloc(n ? n : 1);
    if (!p)
        return -ENOMEM;
    cairnpeer__conf_state__pack(&pb, p);
    *out = p;
    *len = n;
    return 0;
}

int raftmsg_conf_decode(const void *data, size_t len, struct raft_conf_state *cs)
{
    memset(cs, 0, sizeof(*cs));
    Cairnpeer__ConfState *pb = cairnpeer__conf_state__unpack(NULL, len, data);
    if (!pb)
        return -CAIRN_E_MALFORMED;
    int rc = conf_from_pb(pb, cs);
    cairnpeer__conf_state__free_unpacked(pb, NULL);
    return rc;
}
