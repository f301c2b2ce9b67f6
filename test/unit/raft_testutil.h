/*
 * Header-only helpers for raft/'s scenario tests: a few members in one
 * process with in-memory storage and a hand-driven network, so a test reads
 * like a transcript - campaign, deliver, look at the messages in flight,
 * drop some, tick, check roles and applied entries.  Include after cmocka.h.
 * The node loop here follows raft.h's Ready/Advance contract to the letter.
 */
#ifndef CAIRN_TEST_RAFT_TESTUTIL_H
#define CAIRN_TEST_RAFT_TESTUTIL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft.h"

#define TU static inline __attribute__((unused))
#define T_MAX 8
#define T_MAXQ 4096

struct tmsg {
    struct raft_message m;
    struct raft_entry *ents;
    void *ctx;
    struct raft_snapshot_meta snap;
    char *snap_data;          /* the applied string, moved out of band */
};

struct tnode {
    uint64_t id;
    struct raft *r;
    int up;
    /* durable storage */
    struct raft_hard_state hs;
    struct raft_snapshot_meta snap;
    char snap_data[8192];
    struct raft_entry log[2048];
    size_t nlog;
    /* state machine: the applied normal entries' data, joined with ',' */
    char applied[8192];
    uint64_t applied_index;
    char pending_snap[8192];
    uint64_t pending_snap_index;
    struct raft_conf_state conf;
    /* ReadIndex answers */
    uint64_t read_index[64];
    char read_ctx[64][16];
    int nreads;
};

struct tnet {
    struct tnode n[T_MAX + 1];        /* by id, 1-based */
    int count;
    struct raft_config cfg;
    struct tmsg q[T_MAXQ];
    int nq;
    int cut[T_MAX + 1][T_MAX + 1];
};

TU void t_free_msg(struct tmsg *t)
{
    for (size_t i = 0; i < t->m.n_entries; i++)
        free((void *)t->ents[i].data);
    free(t->ents);
    free(t->ctx);
    free(t->snap_data);
}

TU void t_persist(struct tnode *n, const struct raft_ready *rd)
{
    if (rd->snapshot) {
        assert_int_equal(rd->snapshot->index, n->pending_snap_index);
        for (size_t i = 0; i < n->nlog; i++)
            free((void *)n->log[i].data);
        n->nlog = 0;
        n->snap = *rd->snapshot;
        strcpy(n->snap_data, n->pending_snap);
        strcpy(n->applied, n->pending_snap);
        n->applied_index = rd->snapshot->index;
        n->conf = rd->snapshot->conf_state;
    }
    if (rd->n_entries) {
        uint64_t first = rd->entries[0].index;
        size_t keep = (size_t)(first - n->snap.index - 1);
        for (size_t i = keep; i < n->nlog; i++)
            free((void *)n->log[i].data);
        n->nlog = keep;
        for (size_t i = 0; i < rd->n_entries; i++) {
            struct raft_entry e = rd->entries[i];
            if (e.len) {
                void *d = malloc(e.len);
                memcpy(d, e.data, e.len);
                e.data = d;
            }
            n->log[n->nlog++] = e;
        }
    }
    if (rd->hard_state_changed)
        n->hs = rd->hard_state;
}

TU void t_send(struct tnet *net, struct tnode *from, const struct raft_message *m)
{
    assert_true(net->nq < T_MAXQ);
    struct tmsg *t = &net->q[net->nq++];
    memset(t, 0, sizeof(*t));
    t->m = *m;
    if (m->n_entries) {
        t->ents = calloc(m->n_entries, sizeof(*t->ents));
        for (size_t i = 0; i < m->n_entries; i++) {
            t->ents[i] = m->entries[i];
            if (m->entries[i].len) {
                void *d = malloc(m->entries[i].len);
                memcpy(d, m->entries[i].data, m->entries[i].len);
                t->ents[i].data = d;
            }
        }
        t->m.entries = t->ents;
    }
    if (m->context_len) {
        t->ctx = malloc(m->context_len);
        memcpy(t->ctx, m->context, m->context_len);
        t->m.context = t->ctx;
    }
    if (m->snapshot) {
        assert_int_equal(m->snapshot->index, from->snap.index); /* only a persisted snapshot is sent */
        t->snap = *m->snapshot;
        t->m.snapshot = &t->snap;
        t->snap_data = strdup(from->snap_data);
    }
}

TU void t_apply(struct tnode *n, const struct raft_entry *e)
{
    assert_int_equal(e->index, n->applied_index + 1);
    n->applied_index = e->index;
    if (e->type == RAFT_ENTRY_CONF_CHANGE) {
        struct raft_conf_state cs;
        raft_apply_conf_change(n->r, e, NULL, &cs);
        n->conf = cs;
    } else if (e->len) {
        size_t l = strlen(n->applied);
        assert_true(l + e->len + 2 < sizeof(n->applied));
        if (l)
            n->applied[l++] = ',';
        memcpy(n->applied + l, e->data, e->len);
        n->applied[l + e->len] = 0;
    }
}

/* Finish a Ready of member id: persist, queue messages, apply, record reads, advance. */
TU void t_finish(struct tnet *net, uint64_t id, struct raft_ready *rd)
{
    struct tnode *n = &net->n[id];
    t_persist(n, rd);
    for (size_t i = 0; i < rd->n_msgs; i++)
        t_send(net, n, &rd->msgs[i]);
    for (size_t i = 0; i < rd->n_committed; i++)
        t_apply(n, &rd->committed[i]);
    for (size_t i = 0; i < rd->n_reads && n->nreads < 64; i++) {
        n->read_index[n->nreads] = rd->reads[i].index;
        snprintf(n->read_ctx[n->nreads], 16, "%.*s", (int)rd->reads[i].context_len,
                 (const char *)rd->reads[i].context);
        n->nreads++;
    }
    assert_int_equal(raft_advance(n->r, rd), 0);
}

/* Run n's Ready loop (t_finish each Ready). */
TU void t_ready(struct tnet *net, uint64_t id)
{
    struct tnode *n = &net->n[id];
    while (n->up && raft_has_ready(n->r)) {
        struct raft_ready rd;
        assert_int_equal(raft_ready(n->r, &rd), 0);
        t_finish(net, id, &rd);
    }
}

TU void t_ready_all(struct tnet *net)
{
    for (int i = 1; i <= net->count; i++)
        t_ready(net, (uint64_t)i);
}

TU void t_start(struct tnet *net, uint64_t id)
{
    struct tnode *n = &net->n[id];
    struct raft_config c = net->cfg;
    c.id = id;
    c.seed = id * 7919;
    struct raft_restore rs = { .hard_state = n->hs, .snapshot = n->snap, .entries = n->log, .n_entries = n->nlog };
    assert_int_equal(raft_new(&c, &rs, &n->r), 0);
    n->up = 1;
    strcpy(n->applied, n->snap_data);
    n->applied_index = n->snap.index;
    n->conf = n->snap.conf_state;
}

/* A cluster of `voters` voters and `learners` learners, bootstrapped from snapshot {1, 1}. */
TU struct tnet *t_new_cfg(int voters, int learners, struct raft_config cfg)
{
    struct tnet *net = calloc(1, sizeof(*net));
    net->cfg = cfg;
    struct raft_snapshot_meta boot = { .index = 1, .term = 1 };
    for (int i = 1; i <= voters; i++)
        boot.conf_state.voters[boot.conf_state.n_voters++] = (uint64_t)i;
    for (int i = voters + 1; i <= voters + learners; i++)
        boot.conf_state.learners[boot.conf_state.n_learners++] = (uint64_t)i;
    net->count = voters + learners;
    for (int i = 1; i <= net->count; i++) {
        struct tnode *n = &net->n[i];
        n->id = (uint64_t)i;
        n->snap = boot;
        n->hs = (struct raft_hard_state){ 1, 0, 1 };
        t_start(net, (uint64_t)i);
    }
    return net;
}

TU struct tnet *t_new(int voters, int learners, int pre_vote, int check_quorum)
{
    struct raft_config cfg = { .election_tick = 10, .heartbeat_tick = 1, .pre_vote = pre_vote,
                               .check_quorum = check_quorum, .max_inflight_msgs = 256 };
    return t_new_cfg(voters, learners, cfg);
}

/* A member that joins later: empty storage, not in anyone's configuration yet. */
TU uint64_t t_add_empty(struct tnet *net)
{
    uint64_t id = (uint64_t)++net->count;
    net->n[id].id = id;
    t_start(net, id);
    return id;
}

TU void t_crash(struct tnet *net, uint64_t id)
{
    raft_free(net->n[id].r);
    net->n[id].r = NULL;
    net->n[id].up = 0;
}

TU void t_free(struct tnet *net)
{
    for (int i = 1; i <= net->count; i++) {
        raft_free(net->n[i].r);
        for (size_t k = 0; k < net->n[i].nlog; k++)
            free((void *)net->n[i].log[k].data);
    }
    for (int i = 0; i < net->nq; i++)
        t_free_msg(&net->q[i]);
    free(net);
}

/* Take message i out of the queue; the caller frees it (t_free_msg). */
TU struct tmsg t_take(struct tnet *net, int i)
{
    struct tmsg t = net->q[i];
    memmove(&net->q[i], &net->q[i + 1], (size_t)(net->nq - i - 1) * sizeof(net->q[0]));
    net->nq--;
    return t;
}

TU void t_remove_msg(struct tnet *net, int i)
{
    struct tmsg t = t_take(net, i);
    t_free_msg(&t);
}

/* Deliver message i (out of the queue), then run the receiver's Ready. */
TU void t_deliver_one(struct tnet *net, int i)
{
    struct tmsg t = t_take(net, i);
    struct tnode *to = &net->n[t.m.to];
    if (to->up && !net->cut[t.m.from][t.m.to]) {
        if (t.m.type == RAFT_MSG_SNAP) {
            strcpy(to->pending_snap, t.snap_data);
            to->pending_snap_index = t.snap.index;
        }
        assert_int_equal(raft_step(to->r, &t.m), 0);
        if (t.m.type == RAFT_MSG_SNAP && net->n[t.m.from].up) {
            raft_report_snapshot(net->n[t.m.from].r, t.m.to, 1);
            t_ready(net, t.m.from);
        }
        t_ready(net, t.m.to);
    }
    t_free_msg(&t);
}

/* Deliver everything in flight, and what that produces, until quiet (bounded). */
TU void t_stabilize(struct tnet *net)
{
    t_ready_all(net);
    for (int rounds = 0; net->nq && rounds < 100000; rounds++)
        t_deliver_one(net, 0);
    assert_int_equal(net->nq, 0);
}

/* Drop every message in flight (optionally only those of one type; 0 = all). */
TU void t_drop(struct tnet *net, uint32_t type)
{
    for (int i = net->nq - 1; i >= 0; i--)
        if (!type || net->q[i].m.type == type)
            t_remove_msg(net, i);
}

/* Deliver only the in-flight messages of type (and what they trigger stays queued). */
TU void t_deliver_type(struct tnet *net, uint32_t type)
{
    int orig = net->nq, i = 0;
    for (int k = 0; k < orig; k++) {
        if (net->q[i].m.type == type)
            t_deliver_one(net, i);
        else
            i++;
    }
}

/* The messages in flight as "1->2 MsgVote t2, 1->3 MsgVote t2" for transcript checks. */
TU const char *t_msgs(struct tnet *net)
{
    static char buf[8192];
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < net->nq && o < sizeof(buf) - 100; i++) {
        const struct raft_message *m = &net->q[i].m;
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%llu->%llu %s t%llu", i ? ", " : "",
                              (unsigned long long)m->from, (unsigned long long)m->to,
                              raft_msg_type_name((int)m->type), (unsigned long long)m->term);
        if (m->reject)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, " reject");
    }
    return buf;
}

/* How many in-flight messages have this type (and sender, unless 0). */
TU int t_count(struct tnet *net, uint32_t type, uint64_t from)
{
    int c = 0;
    for (int i = 0; i < net->nq; i++)
        if (net->q[i].m.type == type && (!from || net->q[i].m.from == from))
            c++;
    return c;
}

TU void t_tick(struct tnet *net, uint64_t id, int ticks)
{
    for (int i = 0; i < ticks; i++) {
        assert_int_equal(raft_tick(net->n[id].r), 0);
        t_ready(net, id);
    }
}

/* Cut id off from everyone (both ways) or reconnect everything. */
TU void t_isolate(struct tnet *net, uint64_t id)
{
    for (int i = 1; i <= T_MAX; i++)
        net->cut[id][i] = net->cut[i][id] = 1;
}

TU void t_heal(struct tnet *net)
{
    memset(net->cut, 0, sizeof(net->cut));
}

TU struct raft_status t_status(struct tnet *net, uint64_t id)
{
    struct raft_status st;
    raft_status(net->n[id].r, &st);
    return st;
}

TU int t_role(struct tnet *net, uint64_t id) { return t_status(net, id).role; }

TU int t_propose(struct tnet *net, uint64_t id, const char *s)
{
    int rc = raft_propose(net->n[id].r, s, strlen(s));
    t_ready(net, id);
    return rc;
}

/* Elect id: campaign and deliver everything. */
TU void t_elect(struct tnet *net, uint64_t id)
{
    assert_int_equal(raft_campaign(net->n[id].r), 0);
    t_stabilize(net);
    assert_int_equal(t_role(net, id), RAFT_LEADER);
}

#endif
