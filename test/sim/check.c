/*
 * raft-sim's invariants, checked as the simulation runs: election safety
 * (one leader per term), log matching, committed entries never change or
 * vanish (state machine safety across members and across crashes), leader
 * completeness, and linearizable ReadIndex.  Each failure names the member,
 * index and term involved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/sim/sim.h"

static void grow_u64(uint64_t **p, uint64_t *cap, uint64_t need)
{
    if (need < *cap)
        return;
    uint64_t c = *cap ? *cap : 256;
    while (c <= need)
        c *= 2;
    *p = realloc(*p, c * sizeof(**p));
    if (!*p)
        abort();
    memset(*p + *cap, 0, (c - *cap) * sizeof(**p));
    *cap = c;
}

/* Election safety: at most one leader per term, ever. */
void check_leaders(struct sim *s)
{
    for (int i = 0; i < s->n_nodes; i++) {
        struct simnode *n = &s->nodes[i];
        if (!n->up)
            continue;
        struct raft_basic_status st;
        raft_basic_status(n->r, &st);
        if (st.role != RAFT_LEADER)
            continue;
        grow_u64(&s->leader_of_term, &s->lot_cap, st.term);
        uint64_t *l = &s->leader_of_term[st.term];
        if (*l && *l != n->id) {
            sim_fail(s, "election safety: members %llu and %llu are both leader of term %llu",
                     (unsigned long long)*l, (unsigned long long)n->id, (unsigned long long)st.term);
            return;
        }
        if (!*l) {
            *l = n->id;
            s->elections++;
            struct raft_conf_state cs;
            raft_conf_state(n->r, &cs);
            char v[128] = "";
            for (uint32_t k = 0; k < cs.n_voters; k++)
                snprintf(v + strlen(v), sizeof(v) - strlen(v), " %llu", (unsigned long long)cs.voters[k]);
            sim_log(s, "member %llu is leader of term %llu (commit %llu, applied %llu, voters%s)",
                    (unsigned long long)n->id, (unsigned long long)st.term, (unsigned long long)st.commit,
                    (unsigned long long)st.applied, v);
        }
    }
}

static struct lm_slot *lm_find(struct sim *s, uint64_t index, uint64_t term, bool insert)
{
    if (insert && (s->lm_n + 1) * 2 > s->lm_cap) {
        size_t oc = s->lm_cap, nc = oc ? oc * 2 : 4096;
        struct lm_slot *old = s->lm, *nw = calloc(nc, sizeof(*nw));
        if (!nw)
            abort();
        s->lm = nw;
        s->lm_cap = nc;
        s->lm_n = 0;
        for (size_t i = 0; i < oc; i++)
            if (old[i].used)
                *lm_find(s, old[i].index, old[i].term, true) = old[i], s->lm_n++;
        free(old);
    }
    if (!s->lm_cap)
        return NULL;
    uint64_t h = (index * 0x9E3779B97F4A7C15ull) ^ (term * 0xC2B2AE3D27D4EB4Full);
    for (size_t i = h % s->lm_cap;; i = (i + 1) % s->lm_cap) {
        if (!s->lm[i].used)
            return insert ? &s->lm[i] : NULL;
        if (s->lm[i].index == index && s->lm[i].term == term)
            return &s->lm[i];
    }
}

/*
 * Log matching, checked inductively as entries are persisted: two entries
 * with the same index and term hold the same data and follow entries of
 * the same term - so by induction the logs agree on the whole prefix.
 */
void check_persisted(struct sim *s, struct simnode *n, const struct raft_entry *e, uint64_t prev_term)
{
    uint64_t fp = entry_fp(e);
    struct lm_slot *sl = lm_find(s, e->index, e->term, false);
    if (sl) {
        if (sl->fp != fp || sl->prev_term != prev_term)
            sim_fail(s, "log matching: member %llu persisted entry %llu/term %llu that differs from another "
                     "member's (data %s, previous term %llu vs %llu)",
                     (unsigned long long)n->id, (unsigned long long)e->index, (unsigned long long)e->term,
                     sl->fp == fp ? "same" : "different", (unsigned long long)prev_term,
                     (unsigned long long)sl->prev_term);
        return;
    }
    sl = lm_find(s, e->index, e->term, true);
    *sl = (struct lm_slot){ e->index, e->term, fp, prev_term, true };
    s->lm_n++;
}

/* State machine safety: every member applies the same entry at each index. */
void check_applied(struct sim *s, struct simnode *n, uint64_t index, uint64_t fp, uint64_t term)
{
    if (index >= s->g_cap) {
        uint64_t cap = s->g_cap;
        grow_u64(&s->g, &cap, index);
        grow_u64(&s->g_term, &s->g_cap, index);
    }
    if (index <= s->g_len) {
        if (s->g[index] != fp)
            sim_fail(s, "state machine safety: member %llu applied a different entry at index %llu than "
                     "another member did (a committed entry changed)",
                     (unsigned long long)n->id, (unsigned long long)index);
        return;
    }
    if (index != s->g_len + 1) {
        sim_fail(s, "member %llu applied index %llu but the cluster has only applied up to %llu",
                 (unsigned long long)n->id, (unsigned long long)index, (unsigned long long)s->g_len);
        return;
    }
    s->g[index] = fp;
    s->g_term[index] = term;
    s->g_len = index;
    if (s->verbose > 1)
        sim_log(s, "member %llu first to apply index %llu (at term %llu)", (unsigned long long)n->id,
                (unsigned long long)index, (unsigned long long)term);
}

/* A snapshot a member installs must agree with what was applied elsewhere. */
void check_snapshot(struct sim *s, struct simnode *n, uint64_t index, const uint64_t *sm)
{
    for (uint64_t i = 1; i <= index && !s->failed; i++)
        check_applied(s, n, i, sm[i], 0);
}

/*
 * Leader completeness: a leader of term T holds every entry that was known
 * applied by a member at a term <= T (such an entry was committed in a term
 * <= T).  Checked once per member and term, on its durable log, which at
 * that point is all of its log (nothing leaves before it is durable).
 */
void check_new_leader(struct sim *s, struct simnode *n, uint64_t term)
{
    uint64_t last = n->snap.index + n->log.n;
    for (uint64_t i = 1; i <= s->g_len; i++) {
        if (s->g_term[i] > term)
            continue;
        if (i > last) {
            sim_fail(s, "leader completeness: member %llu became leader of term %llu without committed "
                     "index %llu (its log ends at %llu): a committed entry was lost",
                     (unsigned long long)n->id, (unsigned long long)term, (unsigned long long)i,
                     (unsigned long long)last);
            return;
        }
        uint64_t fp = i <= n->snap.index ? n->snap_sm[i] : entry_fp(&n->log.e[i - n->snap.index - 1]);
        if (fp != s->g[i]) {
            sim_fail(s, "leader completeness: member %llu, leader of term %llu, holds a different entry at "
                     "committed index %llu (first applied by a member at term %llu; this leader's entry has "
                     "term %llu; its snapshot is at %llu)", (unsigned long long)n->id, (unsigned long long)term,
                     (unsigned long long)i, (unsigned long long)s->g_term[i],
                     (unsigned long long)(i <= n->snap.index ? 0 : n->log.e[i - n->snap.index - 1].term),
                     (unsigned long long)n->snap.index);
            return;
        }
    }
}

/* Linearizable reads: the read index covers every write applied before the read began. */
void check_read(struct sim *s, struct simnode *n, uint64_t read_id, uint64_t index)
{
    for (size_t i = 0; i < s->n_reads; i++) {
        struct read_rec *rr = &s->reads[i];
        if (rr->id != read_id)
            continue;
        if (rr->node != (int)(n->id - 1))
            sim_fail(s, "read %llu answered on member %llu, asked on another", (unsigned long long)read_id,
                     (unsigned long long)n->id);
        else if (index < rr->min_index)
            sim_fail(s, "linearizability: read %llu on member %llu got read index %llu but index %llu was "
                     "applied before the read began (a stale read)",
                     (unsigned long long)read_id, (unsigned long long)n->id, (unsigned long long)index,
                     (unsigned long long)rr->min_index);
        /* a duplicated request or answer may answer a read twice: the
         * caller ignores the second, but it must be linearizable too */
        if (!rr->done)
            s->reads_done++;
        rr->done = true;
        return;
    }
    sim_fail(s, "member %llu got an answer for unknown read %llu", (unsigned long long)n->id,
             (unsigned long long)read_id);
}

/*
 * A lone voter's read point (raft_solo_read_index), taken at any moment,
 * covers every entry applied anywhere: no other member can have committed
 * past it.
 */
void check_solo_reads(struct sim *s)
{
    for (int i = 0; i < s->n_nodes; i++) {
        struct simnode *n = &s->nodes[i];
        if (!n->up || !n->r)
            continue;
        uint64_t solo = raft_solo_read_index(n->r);
        if (solo == 0)
            continue;
        s->solo_checks++;
        if (solo < s->g_len)
            sim_fail(s, "linearizability: member %llu offers read index %llu as the only voter, but index %llu "
                     "was applied before (a stale read)", (unsigned long long)n->id, (unsigned long long)solo,
                     (unsigned long long)s->g_len);
    }
}

void check_free(struct sim *s)
{
    free(s->g);
    free(s->g_term);
    free(s->leader_of_term);
    free(s->lm);
    free(s->reads);
}
