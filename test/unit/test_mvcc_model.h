/*
 * A plain in-memory reference model of etcd's MVCC semantics, a random
 * request generator over it, and comparisons between model and store.
 * Shared (as static functions) by test_mvcc_model.c (randomized sequences)
 * and test_mvcc_crash.c (SIGKILL at random moments).  Written for
 * obviousness, not speed: every key keeps a list of its revisions and every
 * read walks them.
 */
#ifndef CAIRN_TEST_MVCC_MODEL_H
#define CAIRN_TEST_MVCC_MODEL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "base/crc32c.h"
#include "base/errors.h"
#include "storage/mvcc.h"

/* Each includer uses a different part of this file. */
#pragma GCC diagnostic ignored "-Wunused-function"

/* --- random numbers -------------------------------------------------------------- */

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}

static int rnd(struct rng *r, int n)
{
    return (int)(rng_next(r) % (uint64_t)n);
}

static bool chance(struct rng *r, int percent)
{
    return rnd(r, 100) < percent;
}

/* --- a bump allocator for requests and model responses ------------------------------ */

struct pool {
    void **blocks;
    size_t n, cap;
};

static void *pool_alloc(struct pool *p, size_t n)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->blocks = realloc(p->blocks, p->cap * sizeof(*p->blocks));
        assert_non_null(p->blocks);
    }
    void *b = calloc(1, n ? n : 1);
    assert_non_null(b);
    p->blocks[p->n++] = b;
    return b;
}

static void pool_reset(struct pool *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->blocks[i]);
    p->n = 0;
}

static void pool_free(struct pool *p)
{
    pool_reset(p);
    free(p->blocks);
    p->blocks = NULL;
    p->cap = 0;
}

/* --- the key universe: sorted by bytes, with prefixes of each other ------------------- */

#define NKEYS 24
static const char *const UKEYS[NKEYS] = {
    "a", "a/", "a/0", "a/00", "a/1", "a0", "b", "b/", "b/0", "b/00", "b/1", "b0",
    "c", "c/", "c/0", "c/00", "c/1", "c0", "d", "d/", "d/0", "d/00", "d/1", "d0",
};

static struct mvcc_buf ukey(int i)
{
    return (struct mvcc_buf){UKEYS[i], strlen(UKEYS[i])};
}

static int bcmp_(struct mvcc_buf a, struct mvcc_buf b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.data, b.data, n) : 0;
    return c ? c : a.len < b.len ? -1 : a.len > b.len;
}

/* Is universe key k inside (key, end) by etcd's range rules? */
static bool in_range(int k, struct mvcc_buf key, struct mvcc_buf end)
{
    struct mvcc_buf x = ukey(k);
    if (end.len == 0)
        return bcmp_(x, key) == 0;
    if (end.len == 1 && ((const char *)end.data)[0] == 0)
        return bcmp_(x, key) >= 0;
    return bcmp_(x, key) >= 0 && bcmp_(x, end) < 0;
}

/* --- the model ------------------------------------------------------------------------- */

struct mrow {
    int64_t main, sub, create, version, lease;
    bool tomb;
    char val[24];
    size_t vlen;
};

struct mkey {
    struct mrow *rows; /* in revision order */
    size_t n, cap;
};

struct mlease {
    int64_t id, ttl, remaining;
};

#define NRECS 8
struct mrec {
    bool present;
    char value[16];
};

struct model {
    struct mkey keys[NKEYS];
    int64_t rev, compact_rev;
    uint64_t ci;
    struct mlease leases[64];
    size_t nleases;
    struct mrec recs[NRECS]; /* ns "m" or "u" x names "0".."3" */
    /* the current request's write context */
    int64_t begin, sub;
    struct mvcc_event *events;
    size_t nevents, capevents;
};

static void model_init(struct model *m)
{
    memset(m, 0, sizeof(*m));
    m->rev = 1;
}

static void model_free(struct model *m)
{
    for (int k = 0; k < NKEYS; k++)
        free(m->keys[k].rows);
    free(m->events);
    memset(m, 0, sizeof(*m));
}

/* Deep copy (the crash test keeps the model across forks by copying nothing:
 * fork does that; this is for the model test's replay check). */
static int64_t view(const struct model *m)
{
    return m->begin + (m->sub > 0);
}

static const struct mrow *latest(const struct model *m, int k)
{
    const struct mkey *mk = &m->keys[k];
    return mk->n ? &mk->rows[mk->n - 1] : NULL;
}

static bool live(const struct model *m, int k)
{
    const struct mrow *r = latest(m, k);
    return r && !r->tomb;
}

static const struct mrow *visible(const struct model *m, int k, int64_t rev)
{
    const struct mkey *mk = &m->keys[k];
    for (size_t i = mk->n; i-- > 0;)
        if (mk->rows[i].main <= rev)
            return mk->rows[i].tomb ? NULL : &mk->rows[i];
    return NULL;
}

/* The revision from which row i of key k is no longer visible (INT64_MAX: never). */
static int64_t dead_of(const struct model *m, int k, size_t i)
{
    const struct mkey *mk = &m->keys[k];
    if (mk->rows[i].tomb)
        return mk->rows[i].main;
    return i + 1 < mk->n ? mk->rows[i + 1].main : INT64_MAX;
}

/* Forget the rows no read can see any more (dead at or below the compact
 * revision): what compaction drops.  Keeps dead_of() of the others intact,
 * since a row's successor is dropped only if the row itself is. */
static void model_prune(struct model *m)
{
    for (int k = 0; k < NKEYS; k++) {
        struct mkey *mk = &m->keys[k];
        size_t j = 0;
        for (size_t i = 0; i < mk->n; i++)
            if (dead_of(m, k, i) > m->compact_rev)
                mk->rows[j++] = mk->rows[i];
        mk->n = j;
    }
}

static struct mvcc_kv row_to_kv(int k, const struct mrow *r)
{
    struct mvcc_kv kv = {.key = ukey(k), .create_revision = r->create, .mod_revision = r->main,
                         .version = r->version, .lease = r->lease};
    kv.value = (struct mvcc_buf){r->val, r->vlen};
    return kv;
}

static struct mvcc_kv *kv_dup(struct pool *p, struct mvcc_kv kv)
{
    struct mvcc_kv *c = pool_alloc(p, sizeof(*c));
    char *v = pool_alloc(p, kv.value.len + 1);
    if (kv.value.len)
        memcpy(v, kv.value.data, kv.value.len);
    *c = kv;
    c->value.data = v;
    return c;
}

static void m_event(struct model *m, enum mvcc_event_type t, struct mvcc_kv kv, struct mvcc_kv *prev)
{
    if (m->nevents == m->capevents) {
        m->capevents = m->capevents ? m->capevents * 2 : 64;
        m->events = realloc(m->events, m->capevents * sizeof(*m->events));
        assert_non_null(m->events);
    }
    m->events[m->nevents++] = (struct mvcc_event){t, kv, prev};
}

static void m_append(struct model *m, int k, struct mrow r)
{
    struct mkey *mk = &m->keys[k];
    if (mk->n == mk->cap) {
        mk->cap = mk->cap ? mk->cap * 2 : 8;
        mk->rows = realloc(mk->rows, mk->cap * sizeof(*mk->rows));
        assert_non_null(mk->rows);
    }
    mk->rows[mk->n++] = r;
}

static bool lease_find(const struct model *m, int64_t id, size_t *at)
{
    for (size_t i = 0; i < m->nleases; i++)
        if (m->leases[i].id == id) {
            if (at)
                *at = i;
            return true;
        }
    return false;
}

static int key_of(struct mvcc_buf b)
{
    for (int k = 0; k < NKEYS; k++)
        if (bcmp_(ukey(k), b) == 0)
            return k;
    return -1;
}

/* Range over the model at the view (cur, compact). */
static int sort_key_cmp(const struct mvcc_kv *a, const struct mvcc_kv *b, int target)
{
    int64_t x = 0, y = 0;
    switch (target) {
    case MVCC_SORT_KEY:
        return bcmp_(a->key, b->key);
    case MVCC_SORT_VALUE: {
        int c = bcmp_(a->value, b->value);
        return c ? c : bcmp_(a->key, b->key);
    }
    case MVCC_SORT_VERSION:
        x = a->version, y = b->version;
        break;
    case MVCC_SORT_CREATE:
        x = a->create_revision, y = b->create_revision;
        break;
    case MVCC_SORT_MOD:
        x = a->mod_revision, y = b->mod_revision;
        break;
    }
    if (x != y)
        return x < y ? -1 : 1;
    return bcmp_(a->key, b->key);
}

static int m_range(const struct model *m, struct pool *p, const struct mvcc_range_req *q,
                   int64_t cur, struct mvcc_range_resp *out)
{
    memset(out, 0, sizeof(*out));
    if (q->key.len == 0)
        return -CAIRN_E_KEY_EMPTY;
    int64_t rev = q->revision > 0 ? q->revision : cur;
    if (rev > cur)
        return -CAIRN_E_FUTURE_REV;
    if (rev < m->compact_rev)
        return -CAIRN_E_COMPACTED;
    struct mvcc_kv *kvs = pool_alloc(p, NKEYS * sizeof(*kvs));
    size_t n = 0;
    for (int k = 0; k < NKEYS; k++) {
        const struct mrow *r;
        if (in_range(k, q->key, q->range_end) && (r = visible(m, k, rev)))
            kvs[n++] = *kv_dup(p, row_to_kv(k, r));
    }
    out->count = (int64_t)n;
    if (q->count_only)
        return 0;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        const struct mvcc_kv *kv = &kvs[i];
        if ((q->min_mod_revision && kv->mod_revision < q->min_mod_revision) ||
            (q->max_mod_revision && kv->mod_revision > q->max_mod_revision) ||
            (q->min_create_revision && kv->create_revision < q->min_create_revision) ||
            (q->max_create_revision && kv->create_revision > q->max_create_revision))
            continue;
        kvs[j++] = kvs[i];
    }
    n = j;
    bool desc = q->sort_order == MVCC_SORT_DESCEND;
    /* insertion sort: plain and stable */
    for (size_t i = 1; i < n; i++)
        for (size_t x = i; x > 0; x--) {
            int c = sort_key_cmp(&kvs[x - 1], &kvs[x], q->sort_target);
            if (desc ? c < 0 : c > 0) {
                struct mvcc_kv t = kvs[x];
                kvs[x] = kvs[x - 1];
                kvs[x - 1] = t;
            } else {
                break;
            }
        }
    if (q->limit > 0 && n > (size_t)q->limit) {
        n = (size_t)q->limit;
        out->more = true;
    }
    if (q->keys_only)
        for (size_t i = 0; i < n; i++)
            kvs[i].value = (struct mvcc_buf){"", 0};
    out->kvs = n ? kvs : NULL;
    out->n_kvs = n;
    return 0;
}

static void m_put(struct model *m, struct pool *p, const struct mvcc_put_req *q,
                  struct mvcc_response *resp)
{
    int k = key_of(q->key);
    assert_true(k >= 0);
    bool was = live(m, k);
    struct mrow prev = was ? *latest(m, k) : (struct mrow){0};
    struct mrow r = {.main = m->begin + 1, .sub = m->sub++};
    r.create = was ? prev.create : r.main;
    r.version = was ? prev.version + 1 : 1;
    r.lease = q->ignore_lease ? prev.lease : q->lease;
    if (q->ignore_value) {
        memcpy(r.val, prev.val, prev.vlen);
        r.vlen = prev.vlen;
    } else {
        assert_true(q->value.len < sizeof(r.val));
        memcpy(r.val, q->value.data, q->value.len);
        r.vlen = q->value.len;
    }
    m_append(m, k, r);
    struct mvcc_kv *pk = was ? kv_dup(p, row_to_kv(k, &prev)) : NULL;
    m_event(m, MVCC_EVENT_PUT, *kv_dup(p, row_to_kv(k, &r)), pk);
    resp->revision = r.main;
    resp->put.prev_kv = q->prev_kv ? pk : NULL;
}

static void m_delete(struct model *m, struct pool *p, const struct mvcc_delete_req *q,
                     struct mvcc_response *resp)
{
    struct mvcc_kv *prevs = pool_alloc(p, NKEYS * sizeof(*prevs));
    size_t n = 0;
    for (int k = 0; k < NKEYS; k++) {
        if (!in_range(k, q->key, q->range_end) || !live(m, k))
            continue;
        struct mrow prev = *latest(m, k);
        struct mrow t = {.main = m->begin + 1, .sub = m->sub++, .tomb = true};
        m_append(m, k, t);
        struct mvcc_kv *pk = kv_dup(p, row_to_kv(k, &prev));
        m_event(m, MVCC_EVENT_DELETE, (struct mvcc_kv){.key = ukey(k), .mod_revision = t.main}, pk);
        prevs[n++] = *pk;
    }
    resp->del.deleted = (int64_t)n;
    if (q->prev_kv && n) {
        resp->del.prev_kvs = prevs;
        resp->del.n_prev_kvs = n;
    }
    resp->revision = view(m);
}

/* etcd's checkIntervals, written over the universe: sets as bitmasks. */
static bool m_intervals(const struct mvcc_request *ops, size_t n, uint32_t *puts, uint32_t *dels)
{
    *puts = *dels = 0;
    for (size_t i = 0; i < n; i++)
        if (ops[i].type == MVCC_REQ_DELETE_RANGE)
            for (int k = 0; k < NKEYS; k++)
                if (in_range(k, ops[i].del.key, ops[i].del.range_end))
                    *dels |= 1u << k;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != MVCC_REQ_TXN)
            continue;
        uint32_t pt, dt, pe, de;
        if (!m_intervals(ops[i].txn.success, ops[i].txn.n_success, &pt, &dt) ||
            !m_intervals(ops[i].txn.failure, ops[i].txn.n_failure, &pe, &de))
            return false;
        if ((pt & *puts) || (pt & *dels))
            return false;
        *puts |= pt;
        if ((pe & *puts & ~pt) || (pe & *dels))
            return false;
        *puts |= pe;
        *dels |= dt | de;
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != MVCC_REQ_PUT)
            continue;
        uint32_t bit = 1u << key_of(ops[i].put.key);
        if ((*puts & bit) || (*dels & bit))
            return false;
        *puts |= bit;
    }
    return true;
}

static int m_put_static(const struct mvcc_put_req *q)
{
    if (q->key.len == 0)
        return -CAIRN_E_KEY_EMPTY;
    if (q->ignore_value && q->value.len)
        return -CAIRN_E_VALUE_PROVIDED;
    if (q->ignore_lease && q->lease)
        return -CAIRN_E_LEASE_PROVIDED;
    return 0;
}

static int m_put_state(const struct model *m, const struct mvcc_put_req *q)
{
    if (q->lease && !lease_find(m, q->lease, NULL))
        return -CAIRN_E_LEASE_NOT_FOUND;
    if ((q->ignore_value || q->ignore_lease) && !live(m, key_of(q->key)))
        return -CAIRN_E_KEY_NOT_FOUND;
    return 0;
}

static int m_txn_static(const struct mvcc_txn_req *t)
{
    for (size_t i = 0; i < t->n_compares; i++)
        if (t->compares[i].key.len == 0)
            return -CAIRN_E_KEY_EMPTY;
    for (int b = 0; b < 2; b++) {
        const struct mvcc_request *ops = b ? t->failure : t->success;
        size_t n = b ? t->n_failure : t->n_success;
        for (size_t i = 0; i < n; i++) {
            int rc = 0;
            if (ops[i].type == MVCC_REQ_RANGE && !ops[i].range.key.len)
                rc = -CAIRN_E_KEY_EMPTY;
            if (ops[i].type == MVCC_REQ_PUT)
                rc = m_put_static(&ops[i].put);
            if (ops[i].type == MVCC_REQ_DELETE_RANGE && !ops[i].del.key.len)
                rc = -CAIRN_E_KEY_EMPTY;
            if (ops[i].type == MVCC_REQ_TXN)
                rc = m_txn_static(&ops[i].txn);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static bool m_compare(const struct model *m, const struct mvcc_compare *c)
{
    bool any = false;
    for (int k = 0; k < NKEYS; k++) {
        const struct mrow *r;
        if (!in_range(k, c->key, c->range_end) || !(r = visible(m, k, m->rev)))
            continue;
        any = true;
        struct mvcc_kv kv = row_to_kv(k, r);
        int64_t x = 0;
        int cmp;
        switch (c->target) {
        case MVCC_CMP_VALUE:
            cmp = bcmp_(kv.value, c->value);
            break;
        default:
            x = c->target == MVCC_CMP_VERSION ? kv.version
                : c->target == MVCC_CMP_CREATE ? kv.create_revision
                : c->target == MVCC_CMP_MOD    ? kv.mod_revision
                                               : kv.lease;
            cmp = x < c->number ? -1 : x > c->number;
        }
        bool ok = c->result == MVCC_CMP_EQUAL       ? cmp == 0
                  : c->result == MVCC_CMP_NOT_EQUAL ? cmp != 0
                  : c->result == MVCC_CMP_GREATER   ? cmp > 0
                                                    : cmp < 0;
        if (!ok)
            return false;
    }
    if (any)
        return true;
    if (c->target == MVCC_CMP_VALUE)
        return false;
    int cmp = 0 < c->number ? -1 : 0 > c->number;
    return c->result == MVCC_CMP_EQUAL       ? cmp == 0
           : c->result == MVCC_CMP_NOT_EQUAL ? cmp != 0
           : c->result == MVCC_CMP_GREATER   ? cmp > 0
                                             : cmp < 0;
}

static bool m_txn_ok(const struct model *m, const struct mvcc_txn_req *t)
{
    for (size_t i = 0; i < t->n_compares; i++)
        if (!m_compare(m, &t->compares[i]))
            return false;
    return true;
}

/* Checks along the path (compares decided on the state before the txn). */
static int m_txn_check(const struct model *m, const struct mvcc_txn_req *t, bool puts)
{
    bool ok = m_txn_ok(m, t);
    const struct mvcc_request *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    for (size_t i = 0; i < n; i++) {
        int rc = 0;
        if (puts && ops[i].type == MVCC_REQ_PUT)
            rc = m_put_state(m, &ops[i].put);
        if (!puts && ops[i].type == MVCC_REQ_RANGE && ops[i].range.revision > 0)
            rc = ops[i].range.revision > m->rev           ? -CAIRN_E_FUTURE_REV
                 : ops[i].range.revision < m->compact_rev ? -CAIRN_E_COMPACTED
                                                          : 0;
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n; i++)
        if (ops[i].type == MVCC_REQ_TXN) {
            int rc = m_txn_check(m, &ops[i].txn, puts);
            if (rc)
                return rc;
        }
    return 0;
}

/* Decide every path first (state before the txn), then execute. */
static void m_txn_paths(const struct model *m, const struct mvcc_txn_req *t, bool *path, size_t *np)
{
    bool ok = m_txn_ok(m, t);
    path[(*np)++] = ok;
    const struct mvcc_request *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    for (size_t i = 0; i < n; i++)
        if (ops[i].type == MVCC_REQ_TXN)
            m_txn_paths(m, &ops[i].txn, path, np);
}

static void m_txn_exec(struct model *m, struct pool *p, const struct mvcc_txn_req *t,
                       const bool *path, size_t *pi, struct mvcc_response *resp)
{
    bool ok = path[(*pi)++];
    const struct mvcc_request *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    resp->txn.succeeded = ok;
    resp->txn.n_responses = n;
    resp->txn.responses = n ? pool_alloc(p, n * sizeof(struct mvcc_response)) : NULL;
    for (size_t i = 0; i < n; i++) {
        struct mvcc_response *r = &resp->txn.responses[i];
        r->type = ops[i].type;
        switch (ops[i].type) {
        case MVCC_REQ_RANGE:
            r->revision = view(m);
            assert_int_equal(m_range(m, p, &ops[i].range, view(m), &r->range), 0);
            break;
        case MVCC_REQ_PUT:
            m_put(m, p, &ops[i].put, r);
            break;
        case MVCC_REQ_DELETE_RANGE:
            m_delete(m, p, &ops[i].del, r);
            break;
        case MVCC_REQ_TXN:
            m_txn_exec(m, p, &ops[i].txn, path, pi, r);
            break;
        default:
            fail();
        }
    }
}

static int m_txn(struct model *m, struct pool *p, const struct mvcc_txn_req *t,
                 struct mvcc_response *resp)
{
    int rc = m_txn_static(t);
    if (rc)
        return rc;
    uint32_t puts, dels;
    struct mvcc_request self = {.type = MVCC_REQ_TXN, .txn = *t};
    if (!m_intervals(&self, 1, &puts, &dels))
        return -CAIRN_E_DUPLICATE_KEY;
    if ((rc = m_txn_check(m, t, true)) || (rc = m_txn_check(m, t, false)))
        return rc;
    bool path[256];
    size_t np = 0, pi = 0;
    m_txn_paths(m, t, path, &np);
    m_txn_exec(m, p, t, path, &pi, resp);
    resp->revision = view(m);
    return 0;
}

static int m_request(struct model *m, struct pool *p, const struct mvcc_request *q,
                     struct mvcc_response *resp)
{
    int rc;
    resp->type = q->type;
    resp->revision = view(m);
    switch (q->type) {
    case MVCC_REQ_NOOP:
        return 0;
    case MVCC_REQ_RANGE:
        return m_range(m, p, &q->range, view(m), &resp->range);
    case MVCC_REQ_PUT:
        if ((rc = m_put_static(&q->put)) || (rc = m_put_state(m, &q->put)))
            return rc;
        m_put(m, p, &q->put, resp);
        return 0;
    case MVCC_REQ_DELETE_RANGE:
        if (!q->del.key.len)
            return -CAIRN_E_KEY_EMPTY;
        m_delete(m, p, &q->del, resp);
        return 0;
    case MVCC_REQ_TXN:
        return m_txn(m, p, &q->txn, resp);
    case MVCC_REQ_COMPACT:
        if (q->compact.revision <= m->compact_rev)
            return -CAIRN_E_COMPACTED;
        if (q->compact.revision > m->rev)
            return -CAIRN_E_FUTURE_REV;
        m->compact_rev = resp->compact_revision = q->compact.revision;
        model_prune(m);
        return 0;
    case MVCC_REQ_LEASE_GRANT:
        if (q->lease_grant.id == 0)
            return -CAIRN_E_LEASE_NOT_FOUND;
        if (q->lease_grant.ttl > 9000000000LL)
            return -CAIRN_E_LEASE_TTL_TOO_LARGE;
        if (lease_find(m, q->lease_grant.id, NULL))
            return -CAIRN_E_LEASE_EXISTS;
        assert_true(m->nleases < 64);
        m->leases[m->nleases++] = (struct mlease){q->lease_grant.id, q->lease_grant.ttl, 0};
        resp->lease_grant.id = q->lease_grant.id;
        resp->lease_grant.ttl = q->lease_grant.ttl;
        return 0;
    case MVCC_REQ_LEASE_REVOKE: {
        size_t at = 0;
        if (!lease_find(m, q->lease_revoke.id, &at))
            return -CAIRN_E_LEASE_NOT_FOUND;
        for (int k = 0; k < NKEYS; k++) {
            if (!live(m, k) || latest(m, k)->lease != q->lease_revoke.id)
                continue;
            struct mvcc_response ignore = {0};
            m_delete(m, p, &(struct mvcc_delete_req){.key = ukey(k)}, &ignore);
        }
        m->leases[at] = m->leases[--m->nleases];
        resp->revision = view(m);
        return 0;
    }
    case MVCC_REQ_LEASE_CHECKPOINT:
        for (size_t i = 0; i < q->lease_checkpoint.n; i++) {
            size_t at = 0;
            if (lease_find(m, q->lease_checkpoint.checkpoints[i].id, &at))
                m->leases[at].remaining = q->lease_checkpoint.checkpoints[i].remaining_ttl;
        }
        return 0;
    case MVCC_REQ_RECORD_PUT:
    case MVCC_REQ_RECORD_DELETE: {
        int i = (((const char *)q->record.ns.data)[0] == 'u') * 4 +
                (((const char *)q->record.name.data)[0] - '0');
        if (q->type == MVCC_REQ_RECORD_PUT) {
            m->recs[i].present = true;
            snprintf(m->recs[i].value, sizeof(m->recs[i].value), "%.*s", (int)q->record.value.len,
                     (const char *)q->record.value.data);
        } else {
            resp->record.deleted = m->recs[i].present;
            m->recs[i].present = false;
        }
        return 0;
    }
    }
    fail();
    return 0;
}

/* Apply one entry to the model, like mvcc_apply does for one entry. */
static void model_apply(struct model *m, struct pool *p, const struct mvcc_entry *e,
                        struct mvcc_applied *out)
{
    memset(out, 0, sizeof(*out));
    out->index = e->index;
    out->first_event = m->nevents;
    if (e->index <= m->ci) {
        out->skipped = true;
        return;
    }
    m->begin = m->rev;
    m->sub = 0;
    int rc = m_request(m, p, &e->req, &out->resp);
    if (rc) {
        assert_int_equal(m->sub, 0);
        memset(&out->resp, 0, sizeof(out->resp));
        out->resp.type = e->req.type;
        out->resp.err = rc;
        out->resp.revision = m->rev;
        if (rc == -CAIRN_E_COMPACTED)
            out->resp.compact_revision = m->compact_rev;
    }
    if (m->sub > 0)
        m->rev = m->begin + 1;
    out->n_events = m->nevents - out->first_event;
    m->ci = e->index;
}

/* --- generator ---------------------------------------------------------------------- */

static struct mvcc_buf gen_str(struct pool *p, const char *s)
{
    size_t n = strlen(s);
    char *c = pool_alloc(p, n + 1);
    memcpy(c, s, n);
    return (struct mvcc_buf){c, n};
}

/* A key range: single key, prefix, [a, b), from-key, or an empty range. */
static void gen_range(struct rng *r, struct pool *p, struct mvcc_buf *key, struct mvcc_buf *end)
{
    int k = rnd(r, NKEYS);
    *key = ukey(k);
    switch (rnd(r, 6)) {
    case 0:
    case 1:
        *end = (struct mvcc_buf){NULL, 0};
        break;
    case 2: { /* prefix */
        char *e = pool_alloc(p, key->len + 1);
        memcpy(e, key->data, key->len);
        e[key->len - 1]++;
        *end = (struct mvcc_buf){e, key->len};
        break;
    }
    case 3:
        *end = (struct mvcc_buf){"", 1};
        break;
    default:
        *end = ukey(rnd(r, NKEYS)); /* may be <= key: empty */
    }
}

static int64_t gen_lease(struct rng *r, const struct model *m)
{
    if (m->nleases && chance(r, 70))
        return m->leases[rnd(r, (int)m->nleases)].id;
    return 1 + rnd(r, 12);
}

static void gen_range_req(struct rng *r, struct pool *p, const struct model *m, struct mvcc_range_req *q)
{
    memset(q, 0, sizeof(*q));
    gen_range(r, p, &q->key, &q->range_end);
    if (chance(r, 40)) {
        int64_t lo = m->compact_rev > 2 ? m->compact_rev - 2 : 0;
        q->revision = lo + rnd(r, (int)(m->rev - lo + 2));
    }
    if (chance(r, 30))
        q->limit = rnd(r, 4);
    if (chance(r, 30)) {
        q->sort_order = rnd(r, 3);
        q->sort_target = rnd(r, 5);
    }
    q->keys_only = chance(r, 10);
    q->count_only = chance(r, 10);
    if (chance(r, 15))
        q->min_mod_revision = rnd(r, (int)m->rev + 1);
    if (chance(r, 15))
        q->max_mod_revision = rnd(r, (int)m->rev + 1);
    if (chance(r, 10))
        q->min_create_revision = rnd(r, (int)m->rev + 1);
    if (chance(r, 10))
        q->max_create_revision = rnd(r, (int)m->rev + 1);
}

static void gen_put(struct rng *r, struct pool *p, const struct model *m, struct mvcc_put_req *q)
{
    char v[16];
    memset(q, 0, sizeof(*q));
    q->key = ukey(rnd(r, NKEYS));
    snprintf(v, sizeof(v), "v%d", rnd(r, 1000));
    q->value = chance(r, 5) ? (struct mvcc_buf){"", 0} : gen_str(p, v);
    if (chance(r, 20))
        q->lease = gen_lease(r, m);
    q->prev_kv = chance(r, 30);
    if (chance(r, 8)) {
        q->ignore_value = true;
        q->value = chance(r, 90) ? (struct mvcc_buf){"", 0} : q->value;
    }
    if (chance(r, 8)) {
        q->ignore_lease = true;
        q->lease = chance(r, 90) ? 0 : q->lease;
    }
}

static void gen_txn(struct rng *r, struct pool *p, const struct model *m, struct mvcc_txn_req *t, int depth);

static void gen_ops(struct rng *r, struct pool *p, const struct model *m, struct mvcc_request **ops,
                    size_t *n, int depth)
{
    *n = (size_t)rnd(r, 4);
    *ops = pool_alloc(p, (*n ? *n : 1) * sizeof(**ops));
    for (size_t i = 0; i < *n; i++) {
        struct mvcc_request *o = &(*ops)[i];
        int w = rnd(r, 10);
        if (w < 3) {
            o->type = MVCC_REQ_RANGE;
            gen_range_req(r, p, m, &o->range);
        } else if (w < 7) {
            o->type = MVCC_REQ_PUT;
            gen_put(r, p, m, &o->put);
        } else if (w < 9 || depth >= 2) {
            o->type = MVCC_REQ_DELETE_RANGE;
            gen_range(r, p, &o->del.key, &o->del.range_end);
            o->del.prev_kv = chance(r, 50);
        } else {
            o->type = MVCC_REQ_TXN;
            gen_txn(r, p, m, &o->txn, depth + 1);
        }
    }
}

static void gen_txn(struct rng *r, struct pool *p, const struct model *m, struct mvcc_txn_req *t, int depth)
{
    memset(t, 0, sizeof(*t));
    t->n_compares = (size_t)rnd(r, 3);
    struct mvcc_compare *c = pool_alloc(p, (t->n_compares + 1) * sizeof(*c));
    for (size_t i = 0; i < t->n_compares; i++) {
        c[i].target = rnd(r, 5);
        c[i].result = rnd(r, 4);
        if (chance(r, 70)) {
            c[i].key = ukey(rnd(r, NKEYS));
        } else {
            gen_range(r, p, &c[i].key, &c[i].range_end);
        }
        char v[16];
        snprintf(v, sizeof(v), "v%d", rnd(r, 1000));
        c[i].value = gen_str(p, v);
        c[i].number = c[i].target == MVCC_CMP_LEASE ? gen_lease(r, m) * chance(r, 50)
                      : c[i].target == MVCC_CMP_VERSION ? rnd(r, 4)
                                                        : rnd(r, (int)m->rev + 2);
    }
    t->compares = c;
    struct mvcc_request *ops;
    gen_ops(r, p, m, &ops, &t->n_success, depth);
    t->success = ops;
    gen_ops(r, p, m, &ops, &t->n_failure, depth);
    t->failure = ops;
}

/* One random request.  Compaction targets a recent revision often. */
static void gen_request(struct rng *r, struct pool *p, const struct model *m, struct mvcc_request *q)
{
    memset(q, 0, sizeof(*q));
    int w = rnd(r, 100);
    if (w < 30) {
        q->type = MVCC_REQ_PUT;
        gen_put(r, p, m, &q->put);
    } else if (w < 40) {
        q->type = MVCC_REQ_DELETE_RANGE;
        gen_range(r, p, &q->del.key, &q->del.range_end);
        q->del.prev_kv = chance(r, 50);
    } else if (w < 60) {
        q->type = MVCC_REQ_TXN;
        gen_txn(r, p, m, &q->txn, 0);
    } else if (w < 66) {
        q->type = MVCC_REQ_RANGE;
        gen_range_req(r, p, m, &q->range);
    } else if (w < 71) {
        q->type = MVCC_REQ_COMPACT;
        int64_t span = m->rev - m->compact_rev;
        q->compact.revision = m->compact_rev + rnd(r, (int)(span > 0 ? span : 1) + 2) - 1;
    } else if (w < 78) {
        q->type = MVCC_REQ_LEASE_GRANT;
        q->lease_grant.id = chance(r, 3) ? 0 : 1 + rnd(r, 12);
        q->lease_grant.ttl = chance(r, 3) ? 9000000001LL : rnd(r, 100);
    } else if (w < 83) {
        q->type = MVCC_REQ_LEASE_REVOKE;
        q->lease_revoke.id = gen_lease(r, m);
    } else if (w < 86) {
        q->type = MVCC_REQ_LEASE_CHECKPOINT;
        struct mvcc_lease_checkpoint *cp = pool_alloc(p, 2 * sizeof(*cp));
        cp[0] = (struct mvcc_lease_checkpoint){gen_lease(r, m), rnd(r, 50)};
        cp[1] = (struct mvcc_lease_checkpoint){gen_lease(r, m), rnd(r, 50)};
        q->lease_checkpoint.checkpoints = cp;
        q->lease_checkpoint.n = 1 + (size_t)rnd(r, 2);
    } else if (w < 92) {
        q->type = chance(r, 70) ? MVCC_REQ_RECORD_PUT : MVCC_REQ_RECORD_DELETE;
        char name[2] = {(char)('0' + rnd(r, 4)), 0}, v[16];
        q->record.ns = gen_str(p, chance(r, 50) ? "m" : "u");
        q->record.name = gen_str(p, name);
        snprintf(v, sizeof(v), "r%d", rnd(r, 100));
        q->record.value = gen_str(p, v);
    } else if (w < 95) {
        q->type = MVCC_REQ_NOOP;
    } else {
        /* bad shapes: empty keys, provided values */
        q->type = MVCC_REQ_PUT;
        gen_put(r, p, m, &q->put);
        if (chance(r, 50))
            q->put.key = (struct mvcc_buf){"", 0};
        else
            q->put.ignore_value = true;
    }
}

/* --- comparisons ------------------------------------------------------------------------ */

static void kv_eq(const struct mvcc_kv *a, const struct mvcc_kv *b)
{
    assert_int_equal(a->key.len, b->key.len);
    assert_memory_equal(a->key.data, b->key.data, a->key.len);
    assert_int_equal(a->value.len, b->value.len);
    if (a->value.len)
        assert_memory_equal(a->value.data, b->value.data, a->value.len);
    assert_int_equal(a->create_revision, b->create_revision);
    assert_int_equal(a->mod_revision, b->mod_revision);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->lease, b->lease);
}

static void kvp_eq(const struct mvcc_kv *a, const struct mvcc_kv *b)
{
    assert_int_equal(a == NULL, b == NULL);
    if (a)
        kv_eq(a, b);
}

static void range_eq(const struct mvcc_range_resp *a, const struct mvcc_range_resp *b)
{
    assert_int_equal(a->count, b->count);
    assert_int_equal(a->more, b->more);
    assert_int_equal(a->n_kvs, b->n_kvs);
    for (size_t i = 0; i < a->n_kvs; i++)
        kv_eq(&a->kvs[i], &b->kvs[i]);
}

static void resp_eq(const struct mvcc_response *a, const struct mvcc_response *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->err, b->err);
    assert_int_equal(a->revision, b->revision);
    if (a->err) {
        if (a->err == -CAIRN_E_COMPACTED)
            assert_int_equal(a->compact_revision, b->compact_revision);
        return;
    }
    switch (a->type) {
    case MVCC_REQ_RANGE:
        range_eq(&a->range, &b->range);
        break;
    case MVCC_REQ_PUT:
        kvp_eq(a->put.prev_kv, b->put.prev_kv);
        break;
    case MVCC_REQ_DELETE_RANGE:
        assert_int_equal(a->del.deleted, b->del.deleted);
        assert_int_equal(a->del.n_prev_kvs, b->del.n_prev_kvs);
        for (size_t i = 0; i < a->del.n_prev_kvs; i++)
            kv_eq(&a->del.prev_kvs[i], &b->del.prev_kvs[i]);
        break;
    case MVCC_REQ_TXN:
        assert_int_equal(a->txn.succeeded, b->txn.succeeded);
        assert_int_equal(a->txn.n_responses, b->txn.n_responses);
        for (size_t i = 0; i < a->txn.n_responses; i++)
            resp_eq(&a->txn.responses[i], &b->txn.responses[i]);
        break;
    case MVCC_REQ_COMPACT:
        assert_int_equal(a->compact_revision, b->compact_revision);
        break;
    case MVCC_REQ_LEASE_GRANT:
        assert_int_equal(a->lease_grant.id, b->lease_grant.id);
        assert_int_equal(a->lease_grant.ttl, b->lease_grant.ttl);
        break;
    case MVCC_REQ_RECORD_DELETE:
        assert_int_equal(a->record.deleted, b->record.deleted);
        break;
    default:
        break;
    }
}

static void event_eq(const struct mvcc_event *a, const struct mvcc_event *b)
{
    assert_int_equal(a->type, b->type);
    kv_eq(&a->kv, &b->kv);
    kvp_eq(a->prev_kv, b->prev_kv);
}

/* The whole stored state equals the model: history (every row compaction
 * keeps), status, leases, records, and HashKV computed independently. */
static void model_hash(const struct model *m, int64_t rev, uint32_t *out);

/* Rows physically in the database file (db_path: a finished compaction
 * must have deleted exactly what it drops logically). */
static int64_t physical_rows(const char *db_path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t n = -1;
    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM rev", -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void check_store(const struct model *m, struct mvcc_reader *rd, const char *db_path)
{
    struct mvcc_status st;
    assert_int_equal(mvcc_reader_status(rd, &st), 0);
    assert_int_equal(st.revision, m->rev);
    assert_int_equal(st.compact_revision, m->compact_rev);
    assert_int_equal(st.consistent_index, m->ci);
    /* rows in revision order */
    struct mvcc_history_req q = {.key = {"", 1}, .range_end = {"", 1}, .limit = 97};
    size_t total = 0;
    int64_t want_total = 0;
    for (int k = 0; k < NKEYS; k++)
        for (size_t i = 0; i < m->keys[k].n; i++)
            want_total += dead_of(m, k, i) > m->compact_rev;
    for (;;) {
        struct mvcc_history_result *h;
        assert_int_equal(mvcc_history(rd, &q, &h), 0);
        for (size_t i = 0; i < h->n_rows; i++) {
            const struct mvcc_history_row *row = &h->rows[i];
            int k = key_of(row->kv.key);
            assert_true(k >= 0);
            const struct mkey *mk = &m->keys[k];
            size_t j;
            for (j = 0; j < mk->n; j++)
                if (mk->rows[j].main == row->kv.mod_revision && mk->rows[j].sub == row->sub_revision)
                    break;
            assert_true(j < mk->n);
            assert_true(dead_of(m, k, j) > m->compact_rev);
            assert_int_equal(row->tombstone, mk->rows[j].tomb);
            if (!row->tombstone) {
                struct mvcc_kv want = row_to_kv(k, &mk->rows[j]);
                kv_eq(&row->kv, &want);
            }
        }
        total += h->n_rows;
        bool more = h->more;
        q.after_main = h->next_main;
        q.after_sub = h->next_sub;
        mvcc_history_result_free(h);
        if (!more)
            break;
    }
    assert_int_equal(total, want_total);
    if (db_path)
        assert_int_equal(physical_rows(db_path), want_total);
    struct mvcc_lease_list *l;
    assert_int_equal(mvcc_lease_list(rd, &l), 0);
    assert_int_equal(l->n, m->nleases);
    for (size_t i = 0; i < l->n; i++) {
        size_t at = 0;
        assert_true(lease_find(m, l->leases[i].id, &at));
        assert_int_equal(l->leases[i].ttl, m->leases[at].ttl);
        assert_int_equal(l->leases[i].remaining_ttl, m->leases[at].remaining);
    }
    mvcc_lease_list_free(l);
    for (int ns = 0; ns < 2; ns++) {
        struct mvcc_record_list *rl;
        struct mvcc_buf nsb = {ns ? "u" : "m", 1};
        assert_int_equal(mvcc_record_list(rd, nsb, (struct mvcc_buf){NULL, 0}, &rl), 0);
        size_t want = 0;
        for (int i = 0; i < 4; i++)
            want += m->recs[ns * 4 + i].present;
        assert_int_equal(rl->n, want);
        for (size_t i = 0; i < rl->n; i++) {
            const struct mrec *mr = &m->recs[ns * 4 + (((const char *)rl->records[i].name.data)[0] - '0')];
            assert_true(mr->present);
            assert_int_equal(rl->records[i].value.len, strlen(mr->value));
            assert_memory_equal(rl->records[i].value.data, mr->value, strlen(mr->value));
        }
        mvcc_record_list_free(rl);
    }
    uint32_t h1, h2;
    assert_int_equal(mvcc_hash_kv(rd, 0, &h1, NULL, NULL), 0);
    model_hash(m, m->rev, &h2);
    assert_int_equal(h1, h2);
}

static uint32_t mh_i64(uint32_t crc, int64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)v >> (56 - 8 * i));
    return crc32c_extend(crc, b, 8);
}

struct hrow {
    int k;
    const struct mrow *r;
};

static int hrow_cmp(const void *a, const void *b)
{
    const struct mrow *x = ((const struct hrow *)a)->r, *y = ((const struct hrow *)b)->r;
    if (x->main != y->main)
        return x->main < y->main ? -1 : 1;
    return x->sub < y->sub ? -1 : x->sub > y->sub;
}

static void model_hash(const struct model *m, int64_t rev, uint32_t *out)
{
    size_t n = 0, cap = 0;
    for (int k = 0; k < NKEYS; k++)
        cap += m->keys[k].n;
    struct hrow *rows = calloc(cap + 1, sizeof(*rows));
    assert_non_null(rows);
    for (int k = 0; k < NKEYS; k++)
        for (size_t i = 0; i < m->keys[k].n; i++)
            if (m->keys[k].rows[i].main <= rev && dead_of(m, k, i) > m->compact_rev)
                rows[n++] = (struct hrow){k, &m->keys[k].rows[i]};
    qsort(rows, n, sizeof(*rows), hrow_cmp);
    uint32_t crc = crc32c_extend(0, "kv", 2);
    for (size_t i = 0; i < n; i++) {
        const struct mrow *r = rows[i].r;
        const char *key = UKEYS[rows[i].k];
        crc = mh_i64(crc, r->main);
        crc = mh_i64(crc, r->sub);
        crc = mh_i64(crc, (int64_t)strlen(key));
        crc = crc32c_extend(crc, key, strlen(key));
        crc = mh_i64(crc, r->create);
        crc = mh_i64(crc, r->version);
        crc = mh_i64(crc, r->lease);
        crc = mh_i64(crc, (int64_t)r->vlen);
        if (r->vlen)
            crc = crc32c_extend(crc, r->val, r->vlen);
    }
    free(rows);
    *out = crc;
}

#endif
