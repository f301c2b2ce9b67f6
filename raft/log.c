/*
 * The in-memory Raft log: every entry after the compaction point, with
 * owned copies of their data.  The "unstable" part is everything after
 * `stabled`, handed to the caller in the next Ready; compaction (after the
 * application snapshots) drops the front.  No I/O: durability is the caller's.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

void log_init(struct rlog *l, uint64_t snap_index, uint64_t snap_term)
{
    memset(l, 0, sizeof(*l));
    l->snap_index = snap_index;
    l->snap_term = snap_term;
    l->committed = snap_index;
    l->applied = snap_index;
    l->stabled = snap_index;
}

static void free_range(struct rlog *l, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        struct raft_entry *e = &l->ents[l->head + i];
        l->bytes -= e->len;
        free((void *)e->data);
    }
}

void log_free(struct rlog *l)
{
    free_range(l, 0, l->n);
    free(l->ents);
    memset(l, 0, sizeof(*l));
}

uint64_t log_last_index(const struct rlog *l) { return l->snap_index + l->n; }
uint64_t log_first_index(const struct rlog *l) { return l->snap_index + 1; }

uint64_t log_last_term(const struct rlog *l)
{
    return l->n ? l->ents[l->head + l->n - 1].term : l->snap_term;
}

const struct raft_entry *log_at(const struct rlog *l, uint64_t i)
{
    if (i <= l->snap_index || i > log_last_index(l))
        return NULL;
    return &l->ents[l->head + (i - l->snap_index - 1)];
}

const struct raft_entry *log_slice(const struct rlog *l, uint64_t lo)
{
    return log_at(l, lo);
}

bool log_term(const struct rlog *l, uint64_t i, uint64_t *t)
{
    if (i == l->snap_index) {
        *t = l->snap_term;
        return true;
    }
    const struct raft_entry *e = log_at(l, i);
    if (!e)
        return false;
    *t = e->term;
    return true;
}

bool log_match_term(const struct rlog *l, uint64_t i, uint64_t t)
{
    uint64_t have;
    return log_term(l, i, &have) && have == t;
}

/* The Raft paper's §5.4.1 comparison: later last term wins, then longer log. */
bool log_is_up_to_date(const struct rlog *l, uint64_t last_index, uint64_t term)
{
    uint64_t lt = log_last_term(l);
    return term > lt || (term == lt && last_index >= log_last_index(l));
}

/*
 * Room for `extra` more entries at the end.  Compaction leaves a gap at the
 * front; slide down into it when it is at least a quarter of the array (so
 * each slide buys many appends), otherwise grow by doubling.
 */
static int reserve(struct rlog *l, size_t extra)
{
    if (l->head + l->n + extra <= l->cap)
        return 0;
    if (l->head >= l->cap / 4 && l->n + extra <= l->cap) {
        memmove(l->ents, l->ents + l->head, l->n * sizeof(*l->ents));
        l->head = 0;
        return 0;
    }
    if (l->head > 0) { /* a small gap: reclaim it as part of growing */
        memmove(l->ents, l->ents + l->head, l->n * sizeof(*l->ents));
        l->head = 0;
    }
    size_t cap = l->cap ? l->cap * 2 : 64;
    while (cap < l->n + extra)
        cap *= 2;
    struct raft_entry *p = realloc(l->ents, cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    l->ents = p;
    l->cap = cap;
    return 0;
}

/* Drop entries with index >= from (uncommitted suffix replaced by a leader). */
static void truncate_from(struct rlog *l, uint64_t from)
{
    assert(from > l->snap_index && from > l->committed);
    size_t keep = from - l->snap_index - 1;
    if (keep >= l->n)
        return;
    free_range(l, keep, l->n);
    l->n = keep;
    if (l->stabled >= from)
        l->stabled = from - 1;
}

int log_append_owned(struct rlog *l, uint64_t term, uint32_t type, void *data, uint32_t len)
{
    int rc = reserve(l, 1);
    if (rc < 0)
        return rc;
    struct raft_entry *e = &l->ents[l->head + l->n];
    e->term = term;
    e->index = log_last_index(l) + 1;
    e->type = type;
    e->len = len;
    e->data = data;
    l->n++;
    l->bytes += len;
    return 0;
}

int log_append(struct rlog *l, const struct raft_entry *ents, size_t n)
{
    if (n == 0)
        return 0;
    assert(ents[0].index > l->snap_index && ents[0].index <= log_last_index(l) + 1);
    truncate_from(l, ents[0].index);
    int rc = reserve(l, n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        void *d = NULL;
        if (ents[i].len) {
            d = malloc(ents[i].len);
            if (!d)
                return -ENOMEM;
            memcpy(d, ents[i].data, ents[i].len);
        }
        rc = log_append_owned(l, ents[i].term, ents[i].type, d, ents[i].len);
        assert(rc == 0); /* reserved above */
    }
    return 0;
}

/* First entry of ents that is new or conflicts with the log; 0 if none. */
static uint64_t find_conflict(const struct rlog *l, const struct raft_entry *ents, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!log_match_term(l, ents[i].index, ents[i].term))
            return ents[i].index;
    return 0;
}

int log_maybe_append(struct rlog *l, uint64_t prev, uint64_t prev_term, uint64_t commit,
                     const struct raft_entry *ents, size_t n, uint64_t *last_new)
{
    if (!log_match_term(l, prev, prev_term))
        return 1;
    uint64_t ln = prev + n;
    uint64_t ci = find_conflict(l, ents, n);
    if (ci) {
        /* A conflict at or below commit means a peer broke the protocol; refuse. */
        if (ci <= l->committed)
            return -CAIRN_E_MALFORMED;
        int rc = log_append(l, ents + (ci - prev - 1), n - (ci - prev - 1));
        if (rc < 0)
            return rc;
    }
    log_commit_to(l, commit < ln ? commit : ln);
    *last_new = ln;
    return 0;
}

uint64_t log_find_conflict_by_term(const struct rlog *l, uint64_t index, uint64_t term)
{
    if (index > log_last_index(l))
        return index;
    for (uint64_t i = index; i > l->snap_index; i--) {
        const struct raft_entry *e = log_at(l, i);
        if (e->term <= term)
            return i;
    }
    return l->snap_index;
}

void log_commit_to(struct rlog *l, uint64_t c)
{
    if (c > l->committed) {
        assert(c <= log_last_index(l));
        l->committed = c;
    }
}

void log_restore(struct rlog *l, uint64_t index, uint64_t term)
{
    free_range(l, 0, l->n);
    l->n = 0;
    l->head = 0;
    l->snap_index = index;
    l->snap_term = term;
    l->committed = index;
    l->stabled = index;
    /* applied moves to index when the caller advances the Ready carrying the snapshot */
}

void log_compact(struct rlog *l, uint64_t index)
{
    if (index <= l->snap_index)
        return;
    assert(index <= l->applied && index <= log_last_index(l));
    uint64_t t = log_at(l, index)->term;
    size_t drop = index - l->snap_index;
    free_range(l, 0, drop);
    l->head += drop;
    l->n -= drop;
    if (l->n == 0)
        l->head = 0;
    l->snap_index = index;
    l->snap_term = t;
}
