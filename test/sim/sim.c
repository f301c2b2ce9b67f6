/*
 * raft-sim's world: members, their durable storage, a network that drops,
 * duplicates, delays, reorders and partitions (asymmetrically too), crashes
 * that keep only what went through Ready, membership changes, leadership
 * transfers, snapshots, proposals and ReadIndex reads - all driven by one
 * seeded PRNG over simulated time, so a seed replays exactly.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/sim/sim.h"

#define TICK_MS 10
#define LIVENESS_MS 15000   /* after healing, a fresh write must apply everywhere within this */
#define BOOT_FP 0xB007B007B007ull

enum { EV_TICK, EV_READY, EV_DELIVER, EV_CHAOS };

/* ------------------------------------------------------------------ basics */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t sim_rand(struct sim *s) { return splitmix64(&s->rng); }

static uint64_t rnd(struct sim *s, uint64_t n) { return n ? sim_rand(s) % n : 0; }
static bool chance(struct sim *s, int pct) { return (int)rnd(s, 100) < pct; }

/* A second stream, for choices added after the regression seeds were
 * found: drawing them from sim_rand would change what every seed does. */
static uint64_t rnd2(struct sim *s, uint64_t n) { return splitmix64(&s->rng2) % n; }

void sim_fail(struct sim *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    s->failed = true;
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(s->why, sizeof(s->why), "t=%llums: ", (unsigned long long)s->now);
    vsnprintf(s->why + k, sizeof(s->why) - (size_t)k, fmt, ap);
    va_end(ap);
}

void sim_log(struct sim *s, const char *fmt, ...)
{
    if (!s->verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("[%6llu] ", (unsigned long long)s->now);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p)
        abort();
    return p;
}

static void *xmemdup(const void *p, size_t n)
{
    if (!n)
        return NULL;
    void *d = xcalloc(1, n);
    memcpy(d, p, n);
    return d;
}

/* An entry's identity: term, type and data (FNV-1a). */
uint64_t entry_fp(const struct raft_entry *e)
{
    uint64_t h = 1469598103934665603ull;
    const uint8_t *b = e->data;
    for (uint32_t i = 0; i < e->len; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h ^ (e->term * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)e->type << 61);
}

/* ------------------------------------------------------------------ events */

static void push_ev(struct sim *s, uint64_t t, int type, int node, struct netmsg *m)
{
    if (s->n_heap == s->cap_heap) {
        s->cap_heap = s->cap_heap ? s->cap_heap * 2 : 1024;
        s->heap = realloc(s->heap, s->cap_heap * sizeof(*s->heap));
        if (!s->heap)
            abort();
    }
    struct ev e = { t, s->seq++, type, node, node >= 0 ? s->nodes[node].incarnation : 0, m };
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        struct ev *pe = &s->heap[p];
        if (pe->t < e.t || (pe->t == e.t && pe->seq < e.seq))
            break;
        s->heap[i] = *pe;
        i = p;
    }
    s->heap[i] = e;
}

static bool ev_less(const struct ev *a, const struct ev *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static struct ev pop_ev(struct sim *s)
{
    struct ev top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->n_heap)
            break;
        if (c + 1 < s->n_heap && ev_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!ev_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->n_heap)
        s->heap[i] = last;
    return top;
}

static void free_netmsg(struct netmsg *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->m.n_entries; i++)
        free((void *)m->ents[i].data);
    free(m->ents);
    free(m->ctx);
    free(m->snap_sm);
    free(m);
}

/* ---------------------------------------------------------------- storage */

static void dlog_truncate(struct dlog *l, size_t keep)
{
    for (size_t i = keep; i < l->n; i++)
        free((void *)l->e[i].data);
    if (keep < l->n)
        l->n = keep;
}

static void dlog_push(struct dlog *l, const struct raft_entry *e)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->e = realloc(l->e, l->cap * sizeof(*l->e));
        if (!l->e)
            abort();
    }
    l->e[l->n] = *e;
    l->e[l->n].data = xmemdup(e->data, e->len);
    l->n++;
}

/* Drop durable entries at or below index (they are in the snapshot). */
static void dlog_drop_front(struct simnode *n, uint64_t upto)
{
    size_t k = 0;
    while (k < n->log.n && n->log.e[k].index <= upto)
        free((void *)n->log.e[k++].data);
    memmove(n->log.e, n->log.e + k, (n->log.n - k) * sizeof(*n->log.e));
    n->log.n -= k;
}

static uint64_t durable_term(const struct simnode *n, uint64_t index)
{
    if (index == n->snap.index)
        return n->snap.term;
    if (index < n->snap.index || index > n->snap.index + n->log.n)
        return UINT64_MAX;
    return n->log.e[index - n->snap.index - 1].term;
}

static void sm_set(struct simnode *n, uint64_t index, uint64_t fp)
{
    if (index >= n->smcap) {
        uint64_t c = n->smcap ? n->smcap : 256;
        while (c <= index)
            c *= 2;
        n->sm = realloc(n->sm, c * sizeof(*n->sm));
        if (!n->sm)
            abort();
        n->smcap = c;
    }
    n->sm[index] = fp;
}

/* ----------------------------------------------------------------- members */

static struct simnode *node_of(struct sim *s, uint64_t id)
{
    if (id == 0 || id > (uint64_t)s->n_nodes)
        return NULL;
    return &s->nodes[id - 1];
}

static void schedule_ready(struct sim *s, struct simnode *n)
{
    if (n->up && !n->ready_sched && raft_has_ready(n->r)) {
        n->ready_sched = true;
        /* usually a quick fsync; sometimes a stall of up to 30 ticks, during
         * which the member keeps ticking and stepping but sends nothing and
         * applies nothing (committed conf changes wait unapplied) */
        uint64_t d = chance(s, 2) ? 20 + rnd(s, 300) : rnd(s, 3);
        push_ev(s, s->now + d, EV_READY, (int)(n->id - 1), NULL);
    }
}

static void node_start(struct sim *s, struct simnode *n)
{
    struct raft_config cfg = s->base_cfg;
    cfg.id = n->id;
    cfg.seed = s->seed * 1000003 + (uint64_t)n->incarnation;
    struct raft_restore rs = { .hard_state = n->hs, .snapshot = n->snap, .entries = n->log.e, .n_entries = n->log.n };
    int rc = raft_new(&cfg, &rs, &n->r);
    if (rc < 0) {
        sim_fail(s, "member %llu: raft_new failed: %d", (unsigned long long)n->id, rc);
        return;
    }
    n->up = true;
    n->incarnation++;
    n->applied = n->snap.index;
    for (uint64_t i = 1; i <= n->snap.index; i++)
        sm_set(n, i, n->snap_sm[i]);
    n->conf = n->snap.conf_state;
    n->ready_sched = false;
    n->leader_checked_term = 0;
    n->last_commit = n->hs.commit;
    n->hs_seen = n->hs;
    if (s->verbose > 1)
        sim_log(s, "start member %llu: term %llu commit %llu snapshot %llu, %zu entries, %u voters",
                (unsigned long long)n->id, (unsigned long long)n->hs.term, (unsigned long long)n->hs.commit,
                (unsigned long long)n->snap.index, n->log.n, n->snap.conf_state.n_voters);
    memset(n->pend, 0, sizeof(n->pend));
    push_ev(s, s->now + 1 + n->tick_offset, EV_TICK, (int)(n->id - 1), NULL);
}

static void node_crash(struct sim *s, struct simnode *n)
{
    raft_free(n->r);
    n->r = NULL;
    n->up = false;
    for (int i = 0; i < 4; i++) {
        free(n->pend[i].sm);
        n->pend[i].sm = NULL;
    }
    s->crashes++;
    sim_log(s, "crash member %llu", (unsigned long long)n->id);
}

static struct simnode *node_create(struct sim *s)
{
    struct simnode *n = &s->nodes[s->n_nodes++];
    memset(n, 0, sizeof(*n));
    n->id = (uint64_t)s->n_nodes;
    n->created = true;
    n->tick_offset = rnd(s, TICK_MS);
    return n;
}

/* -------------------------------------------------------------- the network */

static void net_send(struct sim *s, struct simnode *from, const struct raft_message *m, uint64_t *unreach,
                     uint64_t *snap_fail)
{
    struct simnode *to = node_of(s, m->to);
    if (!to) {
        sim_fail(s, "member %llu sent %s to unknown member %llu", (unsigned long long)from->id,
                 raft_msg_type_name((int)m->type), (unsigned long long)m->to);
        return;
    }
    bool snap = m->type == RAFT_MSG_SNAP;
    if (m->type == RAFT_MSG_APP && m->commit_only)
        s->commit_notices++;
    if (snap && (!m->snapshot || m->snapshot->index != from->snap.index)) {
        sim_fail(s, "member %llu sent a snapshot (%llu) it has not persisted (%llu)", (unsigned long long)from->id,
                 (unsigned long long)(m->snapshot ? m->snapshot->index : 0), (unsigned long long)from->snap.index);
        return;
    }
    if (s->blocked[from->id - 1][to->id - 1] || chance(s, s->drop_pct)) {
        if (s->blocked[from->id - 1][to->id - 1] && chance(s, 30))
            *unreach |= 1ull << (to->id - 1);
        if (snap)
            *snap_fail |= 1ull << (to->id - 1);
        return;
    }
    int copies = chance(s, s->dup_pct) ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        struct netmsg *nm = xcalloc(1, sizeof(*nm));
        nm->m = *m;
        if (m->n_entries) {
            nm->ents = xcalloc(m->n_entries, sizeof(*nm->ents));
            for (size_t i = 0; i < m->n_entries; i++) {
                nm->ents[i] = m->entries[i];
                nm->ents[i].data = xmemdup(m->entries[i].data, m->entries[i].len);
            }
            nm->m.entries = nm->ents;
        }
        nm->ctx = xmemdup(m->context, m->context_len);
        nm->m.context = nm->ctx;
        if (snap) {
            nm->snap = *m->snapshot;
            nm->m.snapshot = &nm->snap;
            nm->snap_sm = xmemdup(from->snap_sm, (from->snap.index + 1) * sizeof(uint64_t));
        }
        nm->from_inc = from->incarnation;
        push_ev(s, s->now + 1 + rnd(s, (uint64_t)s->max_delay), EV_DELIVER, (int)(to->id - 1), nm);
    }
}

static void report_snap(struct sim *s, struct netmsg *nm, bool ok)
{
    struct simnode *from = node_of(s, nm->m.from);
    if (from && from->up && from->incarnation == nm->from_inc) {
        raft_report_snapshot(from->r, nm->m.to, ok);
        schedule_ready(s, from);
    }
}

static void deliver(struct sim *s, struct simnode *n, struct netmsg *nm)
{
    bool snap = nm->m.type == RAFT_MSG_SNAP;
    if (!n->up) {
        if (snap)
            report_snap(s, nm, false);
        return;
    }
    if (snap) {
        /* the out-of-band data arrives before the metadata is stepped in */
        int slot = 0;
        for (int i = 1; i < 4; i++)
            if (n->pend[i].index < n->pend[slot].index)
                slot = i;
        free(n->pend[slot].sm);
        n->pend[slot].index = nm->snap.index;
        n->pend[slot].sm = nm->snap_sm;
        nm->snap_sm = NULL;
    }
    int rc = raft_step(n->r, &nm->m);
    if (rc < 0)
        sim_fail(s, "member %llu: raft_step(%s from %llu) failed: %d", (unsigned long long)n->id,
                 raft_msg_type_name((int)nm->m.type), (unsigned long long)nm->m.from, rc);
    if (snap)
        report_snap(s, nm, true);
    schedule_ready(s, n);
}

/* ------------------------------------------------------------------ Ready */

static void note_removed(struct sim *s, uint64_t id)
{
    for (int i = 0; i < s->n_removed; i++)
        if (s->removed[i] == id)
            return;
    s->removed[s->n_removed++] = id;
}

static uint64_t prop_id_of(const struct raft_entry *e)
{
    uint64_t id = 0;
    if (e->type != RAFT_ENTRY_NORMAL || e->len < 8)
        return 0;
    memcpy(&id, e->data, 8);
    return id;
}

static void apply_entry(struct sim *s, struct simnode *n, const struct raft_entry *e, uint64_t term)
{
    if (e->index != n->applied + 1) {
        sim_fail(s, "member %llu was given index %llu to apply after %llu", (unsigned long long)n->id,
                 (unsigned long long)e->index, (unsigned long long)n->applied);
        return;
    }
    uint64_t fp = entry_fp(e);
    check_applied(s, n, e->index, fp, term);
    sm_set(n, e->index, fp);
    n->applied = e->index;
    s->commits_seen++;
    uint64_t pid = prop_id_of(e);
    if (pid > s->max_prop[n->id - 1])
        s->max_prop[n->id - 1] = pid;
    if (e->type == RAFT_ENTRY_CONF_CHANGE) {
        struct raft_conf_change cc;
        struct raft_conf_state cs;
        int rc = raft_apply_conf_change(n->r, e, &cc, &cs);
        n->conf = cs;
        if (rc == 0) {
            s->ccs_applied++;
            if (cc.type == RAFT_CC_REMOVE)
                note_removed(s, cc.node_id);
            if (n->id == 1 || s->verbose > 1)
                sim_log(s, "member %llu applied conf change %u of %llu at %llu: %u voters, %u learners",
                        (unsigned long long)n->id, cc.type, (unsigned long long)cc.node_id,
                        (unsigned long long)e->index, cs.n_voters, cs.n_learners);
        } else if (rc != -CAIRN_E_INVALID_ARGUMENT) {
            sim_fail(s, "member %llu: raft_apply_conf_change at %llu failed: %d", (unsigned long long)n->id,
                     (unsigned long long)e->index, rc);
        }
    }
}

static void process_ready(struct sim *s, struct simnode *n)
{
    while (n->up && !s->failed && raft_has_ready(n->r)) {
        struct raft_ready rd;
        uint64_t unreach = 0, snap_fail = 0;
        /* the daemon resizes a lone voter's slice between Readies: so does this, 1-4 */
        if (s->base_cfg.solo_ready_entries)
            raft_set_solo_ready_entries(n->r, 1 + (uint32_t)(s->events % 4));
        if (raft_ready(n->r, &rd) < 0) {
            sim_fail(s, "member %llu: raft_ready failed", (unsigned long long)n->id);
            return;
        }
        if (rd.n_entries) {
            struct raft_status st;
            raft_status(n->r, &st);
            if (rd.entries[rd.n_entries - 1].index < st.last_index)
                s->sliced_readies++;
        }
        /* The leader's exception to the durability rule (raft.h): it may send
         * before persisting when this Ready keeps its term and vote.  A crash
         * now - the messages gone, this Ready's entries not yet durable - is
         * exactly what that exception must survive, so the chaos phase
         * sometimes crashes the leader here. */
        bool early = rd.role == RAFT_LEADER && !rd.snapshot &&
                     (!rd.hard_state_changed ||
                      (rd.hard_state.term == n->hs.term && rd.hard_state.vote == n->hs.vote));
        if (early) {
            s->early_sends++;
            for (size_t i = 0; i < rd.n_msgs && !s->failed; i++)
                net_send(s, n, &rd.msgs[i], &unreach, &snap_fail);
            if (!s->healed && rd.n_entries && chance(s, 2)) {
                s->early_crashes++;
                node_crash(s, n);
                return;
            }
        }
        /* The daemon's leader applies a Ready's committed entries while
         * another thread persists its new ones, when
         * raft_ready_committed_durable says every committed entry is on this
         * member's disk already (raft.h's apply rule).  Check that claim
         * against the durable log; half the time apply first here too, and
         * now and then crash before persisting. */
        bool applied_first = false;
        if (raft_ready_committed_durable(&rd)) {
            for (size_t i = 0; i < rd.n_committed; i++) {
                if (durable_term(n, rd.committed[i].index) != rd.committed[i].term) {
                    sim_fail(s, "member %llu: committed entry %llu (term %llu) said durable, but the disk has "
                             "term %llu there", (unsigned long long)n->id, (unsigned long long)rd.committed[i].index,
                             (unsigned long long)rd.committed[i].term,
                             (unsigned long long)durable_term(n, rd.committed[i].index));
                    return;
                }
            }
            applied_first = rnd2(s, 2) == 0;
        }
        if (applied_first) {
            s->applied_first++;
            for (size_t i = 0; i < rd.n_committed && !s->failed; i++)
                apply_entry(s, n, &rd.committed[i], rd.hard_state.term);
            if (!s->healed && rd.n_entries && rnd2(s, 20) == 0) {
                s->applied_first_crashes++;
                node_crash(s, n);
                return;
            }
        }
        /* 1. install and persist a received snapshot */
        if (rd.snapshot) {
            struct pend_snap *ps = NULL;
            for (int i = 0; i < 4; i++)
                if (n->pend[i].sm && n->pend[i].index == rd.snapshot->index)
                    ps = &n->pend[i];
            if (!ps) {
                sim_fail(s, "member %llu: Ready has snapshot %llu but no data arrived for it",
                         (unsigned long long)n->id, (unsigned long long)rd.snapshot->index);
                return;
            }
            check_snapshot(s, n, rd.snapshot->index, ps->sm);
            free(n->snap_sm);
            n->snap = *rd.snapshot;
            n->snap_sm = ps->sm;
            ps->sm = NULL;
            ps->index = 0;
            dlog_truncate(&n->log, 0);
            for (uint64_t i = 1; i <= n->snap.index; i++)
                sm_set(n, i, n->snap_sm[i]);
            n->applied = n->snap.index;
            n->conf = n->snap.conf_state;
            s->snaps_installed++;
            sim_log(s, "member %llu installed snapshot %llu", (unsigned long long)n->id,
                    (unsigned long long)n->snap.index);
        }
        /* 2. persist entries (log matching checked on the way) */
        if (rd.n_entries) {
            uint64_t first = rd.entries[0].index;
            if (first <= n->snap.index || first > n->snap.index + n->log.n + 1) {
                sim_fail(s, "member %llu: Ready entries start at %llu, storage holds %llu..%llu",
                         (unsigned long long)n->id, (unsigned long long)first,
                         (unsigned long long)n->snap.index + 1, (unsigned long long)(n->snap.index + n->log.n));
                return;
            }
            if (first <= n->hs_seen.commit) {
                sim_fail(s, "member %llu overwrites committed index %llu (commit %llu)", (unsigned long long)n->id,
                         (unsigned long long)first, (unsigned long long)n->hs_seen.commit);
                return;
            }
            dlog_truncate(&n->log, first - n->snap.index - 1);
            for (size_t i = 0; i < rd.n_entries; i++) {
                check_persisted(s, n, &rd.entries[i], durable_term(n, rd.entries[i].index - 1));
                dlog_push(&n->log, &rd.entries[i]);
            }
        }
        /* 3. hard state */
        if (rd.hard_state_changed) {
            if (rd.hard_state.commit < n->hs_seen.commit || rd.hard_state.term < n->hs_seen.term)
                sim_fail(s, "member %llu: hard state went backwards", (unsigned long long)n->id);
            if (rd.hard_state.commit > n->snap.index + n->log.n)
                sim_fail(s, "member %llu: commit %llu beyond its durable log", (unsigned long long)n->id,
                         (unsigned long long)rd.hard_state.commit);
            n->hs_seen = rd.hard_state;
        }
        /* must_sync 0: only the commit index moved and raft allows writing it
         * without fsync.  Like a WAL, the write becomes durable at the next
         * fsync (or when the OS flushes it); a crash before that loses it. */
        if (rd.must_sync || (rd.hard_state_changed && chance(s, 30)))
            n->hs = n->hs_seen;
        if (rd.role == RAFT_LEADER && rd.hard_state.term > n->leader_checked_term) {
            n->leader_checked_term = rd.hard_state.term;
            check_new_leader(s, n, rd.hard_state.term);
        }
        /* 4. durable now; 5. send (unless sent early) */
        for (size_t i = 0; i < rd.n_msgs && !s->failed && !early; i++)
            net_send(s, n, &rd.msgs[i], &unreach, &snap_fail);
        /* 6. apply */
        for (size_t i = 0; i < rd.n_committed && !s->failed && !applied_first; i++)
            apply_entry(s, n, &rd.committed[i], rd.hard_state.term);
        /* 7. reads: served once applied covers the index */
        for (size_t i = 0; i < rd.n_reads && !s->failed; i++) {
            uint64_t id = 0;
            if (rd.reads[i].context_len == 8)
                memcpy(&id, rd.reads[i].context, 8);
            check_read(s, n, id, rd.reads[i].index);
        }
        raft_advance(n->r, &rd);
        for (int i = 0; i < SIM_MAX_NODES; i++) {
            if (unreach & (1ull << i))
                raft_report_unreachable(n->r, (uint64_t)i + 1);
            if (snap_fail & (1ull << i))
                raft_report_snapshot(n->r, (uint64_t)i + 1, 0);
        }
    }
    n->ready_sched = false;
}

/* ------------------------------------------------------------------ chaos */

static struct simnode *find_leader(struct sim *s)
{
    struct simnode *best = NULL;
    uint64_t best_term = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        struct simnode *n = &s->nodes[i];
        if (!n->up)
            continue;
        struct raft_basic_status st;
        raft_basic_status(n->r, &st);
        if (st.role == RAFT_LEADER && st.term >= best_term) {
            best = n;
            best_term = st.term;
        }
    }
    return best;
}

static struct simnode *random_up(struct sim *s)
{
    int up[SIM_MAX_NODES], k = 0;
    for (int i = 0; i < s->n_nodes; i++)
        if (s->nodes[i].up)
            up[k++] = i;
    return k ? &s->nodes[up[rnd(s, (uint64_t)k)]] : NULL;
}

static bool ok_proposal_error(int rc)
{
    return rc == 0 || rc == -CAIRN_E_NO_LEADER || rc == -CAIRN_E_LEADER_TRANSFER ||
           rc == -CAIRN_E_PROPOSAL_DROPPED;
}

static void do_propose(struct sim *s, struct simnode *n)
{
    uint8_t buf[64];
    uint64_t id = ++s->next_prop_id;
    size_t len = 8 + rnd(s, 40);
    memcpy(buf, &id, 8);
    for (size_t i = 8; i < len; i++)
        buf[i] = (uint8_t)sim_rand(s);
    int rc = raft_propose(n->r, buf, len);
    if (!ok_proposal_error(rc))
        sim_fail(s, "member %llu: raft_propose failed: %d", (unsigned long long)n->id, rc);
    schedule_ready(s, n);
}

/* Several proposals in one call: one MsgProp when forwarded, all or none. */
static void do_propose_batch(struct sim *s, struct simnode *n, int count)
{
    uint8_t buf[16][48];
    struct raft_buf bufs[16];
    for (int k = 0; k < count && k < 16; k++) {
        uint64_t id = ++s->next_prop_id;
        size_t len = 8 + rnd(s, 40);
        memcpy(buf[k], &id, 8);
        for (size_t i = 8; i < len; i++)
            buf[k][i] = (uint8_t)sim_rand(s);
        bufs[k] = (struct raft_buf){ buf[k], len };
    }
    int rc = raft_propose_batch(n->r, bufs, (size_t)(count < 16 ? count : 16));
    if (!ok_proposal_error(rc))
        sim_fail(s, "member %llu: raft_propose_batch failed: %d", (unsigned long long)n->id, rc);
    schedule_ready(s, n);
}

static void do_read(struct sim *s, struct simnode *n)
{
    if (s->n_reads == s->cap_reads) {
        s->cap_reads = s->cap_reads ? s->cap_reads * 2 : 64;
        s->reads = realloc(s->reads, s->cap_reads * sizeof(*s->reads));
        if (!s->reads)
            abort();
    }
    uint64_t id = s->n_reads + 1;
    int rc = raft_read_index(n->r, &id, 8);
    if (rc == 0) {
        s->reads[s->n_reads++] = (struct read_rec){ id, (int)(n->id - 1), s->g_len, false };
    } else if (rc != -CAIRN_E_NO_LEADER && rc != -CAIRN_E_TOO_MANY_REQUESTS) {
        sim_fail(s, "member %llu: raft_read_index failed: %d", (unsigned long long)n->id, rc);
    }
    schedule_ready(s, n);
}

static void do_conf_change(struct sim *s)
{
    struct simnode *l = find_leader(s);
    if (!l)
        return;
    struct raft_status st;
    raft_status(l->r, &st);
    uint32_t type;
    uint64_t target;
    int what = (int)rnd(s, 4);
    if (what == 0 && s->n_nodes < SIM_MAX_NODES) {
        struct simnode *nn = node_create(s);
        node_start(s, nn);
        type = chance(s, 70) ? RAFT_CC_ADD_LEARNER : RAFT_CC_ADD_VOTER;
        target = nn->id;
    } else if (what == 1 && st.conf.n_learners) {
        type = RAFT_CC_PROMOTE;
        target = st.conf.learners[rnd(s, st.conf.n_learners)];
    } else if (what == 2 && st.conf.n_voters > 3) {
        type = RAFT_CC_REMOVE;
        target = st.conf.voters[rnd(s, st.conf.n_voters)];
    } else if (what == 3 && st.conf.n_learners) {
        type = RAFT_CC_REMOVE;
        target = st.conf.learners[rnd(s, st.conf.n_learners)];
    } else {
        return;
    }
    /* through a follower sometimes: forwarded, and turned into a no-op by a
     * leader that still has a change pending */
    struct simnode *via = chance(s, 25) && random_up(s) ? random_up(s) : l;
    int rc = raft_propose_conf_change(via->r, type, target, "peer", 4);
    sim_log(s, "member %llu proposes conf change %u of %llu: %d", (unsigned long long)via->id, type,
            (unsigned long long)target, rc);
    if (!ok_proposal_error(rc))
        sim_fail(s, "raft_propose_conf_change failed: %d", rc);
    schedule_ready(s, via);
}

static void do_transfer(struct sim *s)
{
    struct simnode *l = find_leader(s);
    if (!l)
        return;
    struct raft_status st;
    raft_status(l->r, &st);
    uint64_t to = st.conf.voters[rnd(s, st.conf.n_voters)];
    /* ask through a follower sometimes: the request is forwarded */
    struct simnode *via = chance(s, 30) ? random_up(s) : l;
    int rc = raft_transfer_leader(via->r, to);
    sim_log(s, "transfer leadership %llu -> %llu (via %llu): %d", (unsigned long long)l->id,
            (unsigned long long)to, (unsigned long long)via->id, rc);
    schedule_ready(s, via);
}

static void do_compact(struct sim *s, struct simnode *n)
{
    if (n->applied <= n->snap.index + 3)
        return;
    struct raft_snapshot_meta meta = { .index = n->applied, .term = durable_term(n, n->applied), .conf_state = n->conf };
    int rc = raft_compact(n->r, &meta, rnd(s, 3) ? rnd(s, 20) : 0);
    if (rc == -CAIRN_E_SNAPSHOT_TOO_OLD)
        return; /* a newer snapshot arrived from the leader and awaits install */
    if (rc < 0) {
        sim_fail(s, "member %llu: raft_compact(%llu) failed: %d", (unsigned long long)n->id,
                 (unsigned long long)meta.index, rc);
        return;
    }
    free(n->snap_sm);
    n->snap_sm = xcalloc(n->applied + 1, sizeof(uint64_t));
    memcpy(n->snap_sm, n->sm, (n->applied + 1) * sizeof(uint64_t));
    n->snap = meta;
    dlog_drop_front(n, meta.index);
}

/* Cut the network in two (or some links one way); with lead, isolate the
 * leader with fewer than a quorum so it piles up entries that cannot commit. */
static void partition(struct sim *s, bool asym, struct simnode *lead)
{
    memset(s->blocked, 0, sizeof(s->blocked));
    if (asym) {
        int pairs = 1 + (int)rnd(s, 4);
        for (int k = 0; k < pairs; k++) {
            int a = (int)rnd(s, (uint64_t)s->n_nodes), b = (int)rnd(s, (uint64_t)s->n_nodes);
            s->blocked[a][b] = true;
        }
        sim_log(s, "asymmetric partition (%d links cut one way)", pairs);
        return;
    }
    uint32_t side = 0;
    if (lead) {
        side = 1u << (lead->id - 1);
        if (chance(s, 60)) {
            int other = (int)rnd(s, (uint64_t)s->n_nodes);
            side |= 1u << other;
        }
    } else {
        for (int i = 0; i < s->n_nodes; i++)
            if (chance(s, 50))
                side |= 1u << i;
    }
    for (int a = 0; a < s->n_nodes; a++)
        for (int b = 0; b < s->n_nodes; b++)
            s->blocked[a][b] = ((side >> a) & 1) != ((side >> b) & 1);
    sim_log(s, "partition, side A mask %#x", side);
}

static void heal(struct sim *s)
{
    memset(s->blocked, 0, sizeof(s->blocked));
    s->drop_pct = s->dup_pct = 0;
    s->max_delay = 5;
    for (int i = 0; i < s->n_nodes; i++) {
        struct simnode *n = &s->nodes[i];
        bool removed = false;
        for (int k = 0; k < s->n_removed; k++)
            removed |= s->removed[k] == n->id;
        if (removed) {
            /* like a transport that refuses removed members: they are gone */
            if (n->up)
                node_crash(s, n);
            n->halted = true;
        } else if (!n->up) {
            node_start(s, n);
        }
    }
    s->healed = true;
    s->sentinel_min = s->next_prop_id + 1;
    s->deadline = s->now + LIVENESS_MS;
    sim_log(s, "heal: network whole, every member up");
}

static void chaos(struct sim *s)
{
    if (!s->healed && s->now >= s->chaos_end)
        heal(s);
    if (s->healed) {
        struct simnode *l = find_leader(s);
        if (l)
            do_propose(s, l);
        else if (chance(s, 30) && random_up(s))
            do_propose(s, random_up(s));
        push_ev(s, s->now + 20, EV_CHAOS, -1, NULL);
        return;
    }
    int roll = (int)rnd(s, 1000);
    struct simnode *n = random_up(s), *l = find_leader(s);
    if (roll < 500) {
        /* bursts of proposals, to the leader or through a follower */
        struct simnode *to = (l && chance(s, 50)) ? l : n;
        if (to && chance(s, 30))
            do_propose_batch(s, to, 2 + (int)rnd(s, 8));
        else
            for (int k = 1 + (int)rnd(s, 5); to && k > 0; k--)
                do_propose(s, to);
    } else if (roll < 580) {
        if (n)
            do_read(s, n);
    } else if (roll < 600) {
        if (n)
            node_crash(s, n);
    } else if (roll < 620) {
        if (l)
            node_crash(s, l);
    } else if (roll < 660) {
        for (int i = 0; i < s->n_nodes; i++)
            if (!s->nodes[i].up && !s->nodes[i].halted) {
                sim_log(s, "restart member %llu", (unsigned long long)s->nodes[i].id);
                node_start(s, &s->nodes[i]);
                break;
            }
    } else if (roll < 680) {
        partition(s, false, NULL);
    } else if (roll < 695) {
        partition(s, true, NULL);
    } else if (roll < 715) {
        if (l)
            partition(s, false, l);
    } else if (roll < 745) {
        memset(s->blocked, 0, sizeof(s->blocked));
        sim_log(s, "network healed");
    } else if (roll < 765) {
        s->drop_pct = (int)rnd(s, 25);
        s->dup_pct = (int)rnd(s, 10);
        s->max_delay = 2 + (int)rnd(s, 40);
    } else if (roll < 785) {
        do_conf_change(s);
    } else if (roll < 800) {
        do_transfer(s);
    } else if (roll < 840) {
        if (n)
            do_compact(s, n);
    }
    push_ev(s, s->now + 1 + rnd(s, 10), EV_CHAOS, -1, NULL);
}

/* After healing: has a write proposed since then been applied by every member? */
static void check_liveness(struct sim *s)
{
    struct simnode *l = find_leader(s);
    if (!l)
        return;
    struct raft_conf_state cs;
    raft_conf_state(l->r, &cs);
    for (uint32_t i = 0; i < cs.n_voters + cs.n_learners; i++) {
        uint64_t id = i < cs.n_voters ? cs.voters[i] : cs.learners[i - cs.n_voters];
        struct simnode *n = node_of(s, id);
        if (!n || !n->up || s->max_prop[id - 1] < s->sentinel_min)
            return;
    }
    s->live = true;
    sim_log(s, "live: a post-heal write applied on all %u members (leader %llu)", cs.n_voters + cs.n_learners,
            (unsigned long long)l->id);
}

/* ------------------------------------------------------------------- a run */

/*
 * Is the configuration two voters (the leader's, or else any member's)?
 * Seeds that start with a lone voter can grow to that.  Neither voter can
 * lead without the other, so the leader steps down (check-quorum) whenever
 * the other stalls longer than an election timeout, as the simulated disks
 * sometimes do, healed or not, and each new term starts its catch-up over:
 * such a cluster is safe but not live here, and is not held to the
 * liveness deadline.  Safety is checked all the same.
 */
static bool two_voters(struct sim *s)
{
    struct simnode *l = find_leader(s);
    for (int i = 0; i < s->n_nodes && !l; i++)
        if (s->nodes[i].up && s->nodes[i].r)
            l = &s->nodes[i];
    if (!l)
        return false;
    struct raft_conf_state cs;
    raft_conf_state(l->r, &cs);
    return cs.n_voters == 2;
}

/* Each member's Raft state, and the leader's view of its peers (with -v). */
static void log_members(struct sim *s)
{
    for (int i = 0; i < s->n_nodes; i++) {
        struct simnode *n = &s->nodes[i];
        if (!n->up || !n->r)
            continue;
        struct raft_status st;
        raft_status(n->r, &st);
        sim_log(s, "member %llu: %s, term %llu, lead %llu, commit %llu, applied %llu, last %llu, snapshot %llu, "
                "%u voters %u learners", (unsigned long long)n->id, raft_role_name(st.role),
                (unsigned long long)st.term, (unsigned long long)st.lead, (unsigned long long)st.commit,
                (unsigned long long)st.applied, (unsigned long long)st.last_index,
                (unsigned long long)st.snapshot_index, st.conf.n_voters, st.conf.n_learners);
        for (uint32_t k = 0; k < st.n_progress; k++) {
            const struct raft_progress_status *p = &st.progress[k];
            sim_log(s, "  progress of %llu: match %llu, next %llu, state %d, learner %d, active %d, paused %d, "
                    "inflight %u, pending snapshot %llu", (unsigned long long)p->id, (unsigned long long)p->match,
                    (unsigned long long)p->next, p->state, p->is_learner, p->recent_active, p->paused,
                    p->inflight, (unsigned long long)p->pending_snapshot);
        }
    }
}

static void setup(struct sim *s)
{
    /* one seed in eight starts with a lone voter (its reads need no round;
     * conf changes may add voters); the draw is made either way, so the
     * other seeds run as they did before */
    int voters = 3 + 2 * (int)rnd(s, 3);
    if (s->seed % 8 == 5)
        voters = 1;
    int learners = (int)rnd(s, 3);
    s->base_cfg = (struct raft_config){
        .election_tick = 10,
        .heartbeat_tick = 1,
        .pre_vote = chance(s, 50),
        .check_quorum = chance(s, 50),
        .max_inflight_msgs = 2 + (uint32_t)rnd(s, 15),
        .max_inflight_bytes = chance(s, 50) ? 0 : 256 + rnd(s, 4096),
        .max_msg_bytes = 32 + rnd(s, 512),
        .max_committed_bytes = chance(s, 50) ? 0 : 64 + rnd(s, 1024),
        .max_pending_reads = 64,
        /* from the seed, not a draw, so the other draws stay as they were;
         * lone voters (seed % 8 == 5) get each of 0-3 in turn */
        .solo_ready_entries = (uint32_t)((s->seed / 8) % 4),
    };
    s->max_delay = 2 + (int)rnd(s, 10);
    s->chaos_end = 30000 + rnd(s, 120000);
    struct raft_snapshot_meta boot = { .index = 1, .term = 1 };
    for (int i = 0; i < voters; i++)
        boot.conf_state.voters[boot.conf_state.n_voters++] = (uint64_t)i + 1;
    for (int i = 0; i < learners; i++)
        boot.conf_state.learners[boot.conf_state.n_learners++] = (uint64_t)(voters + i) + 1;
    check_applied(s, &s->nodes[0], 1, BOOT_FP, 0);
    for (int i = 0; i < voters + learners; i++) {
        struct simnode *n = node_create(s);
        n->snap = boot;
        n->snap_sm = xcalloc(2, sizeof(uint64_t));
        n->snap_sm[1] = BOOT_FP;
        n->hs = (struct raft_hard_state){ 1, 0, 1 };
        node_start(s, n);
    }
    sim_log(s, "seed %llu: %d voters, %d learners, pre-vote %d, check-quorum %d, inflight %u msgs/%llu bytes, "
            "chaos until %llums", (unsigned long long)s->seed, voters, learners, s->base_cfg.pre_vote,
            s->base_cfg.check_quorum, s->base_cfg.max_inflight_msgs,
            (unsigned long long)s->base_cfg.max_inflight_bytes, (unsigned long long)s->chaos_end);
    push_ev(s, 5, EV_CHAOS, -1, NULL);
}

static void teardown(struct sim *s)
{
    for (int i = 0; i < s->n_nodes; i++) {
        struct simnode *n = &s->nodes[i];
        raft_free(n->r);
        dlog_truncate(&n->log, 0);
        free(n->log.e);
        free(n->snap_sm);
        free(n->sm);
        for (int k = 0; k < 4; k++)
            free(n->pend[k].sm);
    }
    while (s->n_heap)
        free_netmsg(pop_ev(s).msg);
    free(s->heap);
    check_free(s);
}

int sim_run(uint64_t seed, int verbose, char *why, size_t why_len, struct sim_totals *totals)
{
    struct sim *s = xcalloc(1, sizeof(*s));
    s->seed = seed;
    s->rng = seed * 0x2545F4914F6CDD1Dull + 7;
    s->rng2 = seed * 0xD1B54A32D192ED03ull + 11;
    s->verbose = verbose;
    setup(s);
    while (!s->failed && !s->live && s->n_heap) {
        struct ev e = pop_ev(s);
        s->now = e.t;
        s->events++;
        struct simnode *n = e.node >= 0 ? &s->nodes[e.node] : NULL;
        switch (e.type) {
        case EV_TICK:
            if (n->up && e.inc == n->incarnation) {
                raft_tick(n->r);
                schedule_ready(s, n);
                push_ev(s, s->now + TICK_MS, EV_TICK, e.node, NULL);
            }
            break;
        case EV_READY:
            if (n->up)
                process_ready(s, n);
            break;
        case EV_DELIVER:
            deliver(s, n, e.msg);
            break;
        case EV_CHAOS:
            chaos(s);
            break;
        }
        free_netmsg(e.msg);
        if (s->failed)
            break;
        check_leaders(s);
        check_solo_reads(s);
        if (s->healed && !s->failed) {
            check_liveness(s);
            if (!s->live && s->now > s->deadline) {
                struct simnode *l = find_leader(s);
                log_members(s);
                if (two_voters(s)) {
                    sim_log(s, "liveness not required: two voters");
                    s->live = true;
                    s->liveness_waived = true;
                } else {
                    sim_fail(s, "liveness: no write applied on every member within %dms of healing (leader %llu)",
                             LIVENESS_MS, (unsigned long long)(l ? l->id : 0));
                }
            }
        }
    }
    if (verbose)
        printf("seed %llu: %llu events, %llu applies, %llu reads, %llu elections, %llu crashes, %llu snapshots "
               "installed, %llu conf changes, sim time %llums\n",
               (unsigned long long)seed, (unsigned long long)s->events, (unsigned long long)s->commits_seen,
               (unsigned long long)s->reads_done, (unsigned long long)s->elections,
               (unsigned long long)s->crashes, (unsigned long long)s->snaps_installed,
               (unsigned long long)s->ccs_applied, (unsigned long long)s->now);
    int rc = s->failed ? -1 : 0;
    if (s->failed)
        snprintf(why, why_len, "%s", s->why);
    if (totals) {
        totals->events += s->events;
        totals->early_sends += s->early_sends;
        totals->early_crashes += s->early_crashes;
        totals->solo_checks += s->solo_checks;
        totals->applied_first += s->applied_first;
        totals->applied_first_crashes += s->applied_first_crashes;
        totals->commit_notices += s->commit_notices;
        totals->sliced_readies += s->sliced_readies;
        totals->liveness_waived += s->liveness_waived;
    }
    teardown(s);
    free(s);
    return rc;
}
