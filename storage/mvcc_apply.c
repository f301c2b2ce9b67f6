/*
 * storage/mvcc apply: executes committed requests against the store, in one
 * SQLite transaction per batch, with etcd's semantics (etcd's applierV3backend
 * and storeTxnWrite).  Every request is checked in full before it writes, so
 * a failing request writes nothing and needs no savepoint; only a storage
 * error aborts the batch.  Each write appends a row to the revision table
 * and a revision to the key index's working version; reads inside a txn see
 * the txn's earlier writes because they read that working version, and
 * values on the writer's connection inside its transaction.  After COMMIT
 * the working version is published for readers.
 */
#include "storage/mvcc_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/errors.h"

struct applier {
    struct mvcc_store *s;
    struct arena *a;
    struct state *st;          /* the batch's working state */
    struct mvcc_event *events; /* in the arena, grown by doubling */
    size_t n_events, cap_events;
    int64_t begin_rev;         /* the current entry's revision before it */
    int64_t sub;               /* operations written so far: the next sub revision */
};

/* The revision a read inside the current request sees. */
static int64_t view_rev(const struct applier *w)
{
    return w->begin_rev + (w->sub > 0);
}

/* Errors that belong to a request (it fails, the batch goes on). */
static bool request_error(int rc)
{
    switch (-rc) {
    case CAIRN_E_KEY_EMPTY:
    case CAIRN_E_VALUE_PROVIDED:
    case CAIRN_E_LEASE_PROVIDED:
    case CAIRN_E_DUPLICATE_KEY:
    case CAIRN_E_LEASE_NOT_FOUND:
    case CAIRN_E_KEY_NOT_FOUND:
    case CAIRN_E_COMPACTED:
    case CAIRN_E_FUTURE_REV:
    case CAIRN_E_LEASE_EXISTS:
    case CAIRN_E_LEASE_TTL_TOO_LARGE:
    case CAIRN_E_INVALID_ARGUMENT:
    case CAIRN_E_TOO_MANY_CHANGES:
    case CAIRN_E_REVISIONS_EXHAUSTED:
    case CAIRN_E_LEASE_TOO_MANY_KEYS:
        return true;
    default:
        return false;
    }
}

static int db_err(struct applier *w)
{
    return sql_err(sqlite3_errcode(w->s->c.db));
}

static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sql_err(rc);
}

/* --- rows ---------------------------------------------------------------------- */

/* A key's newest revision, as the request being applied sees it. */
struct prevrow {
    bool live;           /* the newest revision is a live value (not a tombstone) */
    struct keyrec *kr;   /* the key's index entry; NULL if it has none */
    struct krev r;       /* the newest revision, if any */
    struct mvcc_kv kv;   /* if live: the key-value, value included */
};

static struct view writer_view(const struct applier *w)
{
    return (struct view){.c = &w->s->c, .pend = &w->s->pend, .root = w->s->ix.root,
                         .lroot = w->s->ix.lroot, .rev = view_rev(w),
                         .compact_rev = w->st->compact_rev};
}

/* Events carry the old values of what a request overwrites or deletes
 * (mvcc_set_event_values); a request that needs them itself reads them anyway. */
static bool event_values(const struct applier *w)
{
    return !w->s->no_event_values;
}

static void kv_of(struct mvcc_buf key, const struct krev *r, struct mvcc_kv *kv)
{
    *kv = (struct mvcc_kv){.key = key, .create_revision = r->create, .mod_revision = r->main,
                           .version = r->version, .lease = r->lease};
}

/* The newest revision of key (a copy in the arena); with_value reads the
 * live value too (events and prev_kv need it). */
static int kv_latest(struct applier *w, struct mvcc_buf key, bool with_value, struct prevrow *p)
{
    memset(p, 0, sizeof(*p));
    p->kr = ix_get(w->s->ix.root, key.data, key.len);
    uint32_t n = p->kr ? kr_count(p->kr) : 0;
    if (n == 0)
        return 0;
    p->r = kr_revs(p->kr)[n - 1];
    p->live = p->r.version != 0;
    if (!p->live)
        return 0;
    kv_of(key, &p->r, &p->kv);
    if (!with_value)
        return 0;
    struct view v = writer_view(w);
    return view_value(&v, w->a, p->r.main, p->r.sub, &p->kv.value);
}

static int lease_exists(struct applier *w, int64_t id, bool *exists)
{
    sqlite3_stmt *st = conn_stmt(&w->s->c, ST_LEASE_GET);
    if (!st)
        return db_err(w);
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    *exists = rc == SQLITE_ROW;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_err(rc);
}

/* Store revision kv (sub revision sub) of its key: a row for the revision
 * table (inserted with the batch's others by flush_rows), a revision
 * appended in the index (kr: the key's entry).  kv's buffers must live in
 * the batch's arena. */
static int write_rev(struct applier *w, struct keyrec *kr, const struct mvcc_kv *kv, int64_t sub)
{
    struct pending *p = &w->s->pend;
    if (sub >= MVCC_MAX_CHANGES || kv->mod_revision > MVCC_MAX_REV)
        return -E2BIG; /* may_write let it through: a bug, not the request's fault */
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        struct pending_row *nv = realloc(p->v, cap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        p->v = nv;
        p->cap = cap;
    }
    p->v[p->n++] = (struct pending_row){.main = kv->mod_revision, .sub = (uint32_t)sub, .kv = *kv};
    struct krev r = {.main = kv->mod_revision, .sub = (uint32_t)sub, .create = kv->create_revision,
                     .version = kv->version, .lease = kv->lease};
    return ix_add_rev(&w->s->ix, kr, kv->key.data, kv->key.len, &r);
}

/* Insert the batch's rows, in order, 64, 16, 4 or 1 per statement. */
static int flush_rows(struct applier *w)
{
    static const struct {
        enum stmt_id id;
        size_t n;
    } sizes[] = {{ST_REV_INSERT64, 64}, {ST_REV_INSERT16, 16}, {ST_REV_INSERT4, 4}, {ST_REV_INSERT, 1}};
    const struct pending *p = &w->s->pend;
    size_t i = 0, k = 0;
    while (i < p->n) {
        while (sizes[k].n > p->n - i)
            k++;
        sqlite3_stmt *st = conn_stmt(&w->s->c, sizes[k].id);
        if (!st)
            return db_err(w);
        for (size_t j = 0; j < sizes[k].n; j++) {
            const struct pending_row *r = &p->v[i + j];
            int b = (int)j * 6;
            sqlite3_bind_int64(st, b + 1, rev_id(r->main, r->sub));
            bind_buf(st, b + 2, r->kv.key);
            sqlite3_bind_int64(st, b + 3, r->kv.create_revision);
            sqlite3_bind_int64(st, b + 4, r->kv.version);
            sqlite3_bind_int64(st, b + 5, r->kv.lease);
            if (r->kv.version != 0)
                bind_buf(st, b + 6, r->kv.value);
        }
        int rc = step_done(st);
        if (rc < 0)
            return rc;
        i += sizes[k].n;
    }
    return 0;
}

static int add_event(struct applier *w, enum mvcc_event_type type, const struct mvcc_kv *kv,
                     struct mvcc_kv *prev)
{
    if (!(w->events = arena_grow(w->a, w->events, w->n_events, &w->cap_events, sizeof(*w->events))))
        return -ENOMEM;
    struct mvcc_event *e = &w->events[w->n_events++];
    e->type = type;
    e->kv = *kv;
    e->prev_kv = prev;
    return 0;
}

static struct mvcc_kv *kv_copy(struct applier *w, const struct mvcc_kv *kv)
{
    struct mvcc_kv *c = arena_zalloc(w->a, sizeof(*c));
    if (c)
        *c = *kv;
    return c;
}

static int buf_copy(struct applier *w, struct mvcc_buf in, struct mvcc_buf *out)
{
    void *d = arena_dup(w->a, in.data, in.len);
    if (!d)
        return -ENOMEM;
    out->data = d;
    out->len = in.len;
    return 0;
}

/*
 * Whether the request may change `changes` more keys: rev_id numbers at
 * most MVCC_MAX_CHANGES in one revision, and revisions up to MVCC_MAX_REV.
 * Asked before the first of them is written, since a refused request must
 * have written nothing (a txn asks for all of its changes at once).
 */
static int may_write(const struct applier *w, size_t changes)
{
    if (changes == 0)
        return 0;
    if (w->begin_rev >= MVCC_MAX_REV)
        return -CAIRN_E_REVISIONS_EXHAUSTED;
    if (changes > MVCC_MAX_CHANGES - (size_t)w->sub)
        return -CAIRN_E_TOO_MANY_CHANGES;
    return 0;
}

/*
 * The lease a put attaches its key to, or 0 when it attaches none (no
 * lease, ignore_lease, or the key is on that lease already).  A lease's
 * revoke deletes every key of it in one revision, which holds at most
 * MVCC_MAX_CHANGES changes: a lease with more keys could never be revoked,
 * and its keys would outlive it.  So a put that would give a lease more
 * is refused (etcd has no such limit).
 */
static int64_t attaches_to(const struct mvcc_put_req *r, const struct prevrow *p)
{
    int64_t lease = r->ignore_lease ? 0 : r->lease; /* ignore_lease keeps the key where it is */
    return lease && !(p->live && p->kv.lease == lease) ? lease : 0;
}

/* Whether lease may take `adding` more keys (a txn counts its puts first). */
static int lease_room(const struct applier *w, int64_t lease, int64_t adding)
{
    if (lease && ix_lease_count(&w->s->ix, lease) > MVCC_MAX_CHANGES - adding)
        return -CAIRN_E_LEASE_TOO_MANY_KEYS;
    return 0;
}

/* Delete one live key at the current write revision. */
static int delete_one(struct applier *w, struct prevrow *p, struct mvcc_kv **prev_out)
{
    int64_t rev = w->begin_rev + 1;
    struct mvcc_kv tomb = {.key = p->kv.key, .mod_revision = rev};
    int rc = write_rev(w, p->kr, &tomb, w->sub++);
    if (rc < 0)
        return rc;
    if (p->kv.lease && (rc = ix_lease_del(&w->s->ix, p->kv.lease, p->kv.key.data, p->kv.key.len)) < 0)
        return rc;
    struct mvcc_kv *prev = kv_copy(w, &p->kv);
    if (!prev)
        return -ENOMEM;
    if (prev_out)
        *prev_out = prev;
    return add_event(w, MVCC_EVENT_DELETE, &tomb, prev);
}

/* --- Put ---------------------------------------------------------------------------- */

static int put_static_check(const struct mvcc_put_req *r)
{
    if (r->key.len == 0)
        return -CAIRN_E_KEY_EMPTY;
    if (r->ignore_value && r->value.len)
        return -CAIRN_E_VALUE_PROVIDED;
    if (r->ignore_lease && r->lease)
        return -CAIRN_E_LEASE_PROVIDED;
    return 0;
}

/* etcd's checkPut: the lease exists; ignore_* needs an existing key. */
static int put_state_check(struct applier *w, const struct mvcc_put_req *r)
{
    int rc;
    if (r->lease) {
        bool ok;
        if ((rc = lease_exists(w, r->lease, &ok)) < 0)
            return rc;
        if (!ok)
            return -CAIRN_E_LEASE_NOT_FOUND;
    }
    if (r->ignore_value || r->ignore_lease) {
        struct prevrow p;
        if ((rc = kv_latest(w, r->key, false, &p)) < 0)
            return rc;
        if (!p.live)
            return -CAIRN_E_KEY_NOT_FOUND;
    }
    return 0;
}

static int do_put(struct applier *w, const struct mvcc_put_req *r, struct mvcc_response *resp)
{
    struct prevrow p;
    struct mvcc_buf key;
    int rc;
    /* the old value: for the response, for ignore_value, and for watchers' events */
    bool old_value = r->prev_kv || r->ignore_value || event_values(w);
    if ((rc = buf_copy(w, r->key, &key)) < 0 || (rc = kv_latest(w, key, old_value, &p)) < 0)
        return rc;
    if ((r->ignore_value || r->ignore_lease) && !p.live)
        return -CAIRN_E_KEY_NOT_FOUND; /* checked before; kept as a guard */
    if ((rc = may_write(w, 1)) < 0 || (rc = lease_room(w, attaches_to(r, &p), 1)) < 0)
        return rc;
    int64_t rev = w->begin_rev + 1;
    struct mvcc_kv kv = {
        .key = key,
        .create_revision = p.live ? p.kv.create_revision : rev,
        .mod_revision = rev,
        .version = p.live ? p.kv.version + 1 : 1,
        .lease = r->ignore_lease ? p.kv.lease : r->lease,
    };
    if (r->ignore_value)
        kv.value = p.kv.value;
    else if ((rc = buf_copy(w, r->value, &kv.value)) < 0)
        return rc;
    if ((rc = write_rev(w, p.kr, &kv, w->sub++)) < 0)
        return rc;
    /* the lease index lists live keys under their lease */
    int64_t old_lease = p.live ? p.kv.lease : 0;
    if (old_lease != kv.lease) {
        if (old_lease && (rc = ix_lease_del(&w->s->ix, old_lease, key.data, key.len)) < 0)
            return rc;
        if (kv.lease && (rc = ix_lease_add(&w->s->ix, kv.lease, key.data, key.len)) < 0)
            return rc;
    }
    struct mvcc_kv *prev = p.live ? kv_copy(w, &p.kv) : NULL;
    if (p.live && !prev)
        return -ENOMEM;
    resp->revision = rev;
    resp->put.prev_kv = r->prev_kv ? prev : NULL;
    return add_event(w, MVCC_EVENT_PUT, &kv, prev);
}

/* --- DeleteRange ---------------------------------------------------------------------- */

/* The live keys of a range, in key order, before any of them is deleted;
 * with their values if with_values.  rows NULL: only count them (*n). */
static int live_rows(struct applier *w, struct mvcc_buf key, struct mvcc_buf end, bool with_values,
                     struct prevrow **rows, size_t *n)
{
    enum range_kind kind = range_kind(key, end);
    size_t cap = 0;
    int rc;
    if (rows)
        *rows = NULL;
    *n = 0;
    if (kind == RK_EMPTY)
        return 0;
    if (kind == RK_SINGLE) {
        struct prevrow p;
        struct mvcc_buf k = key;
        if ((rows && (rc = buf_copy(w, key, &k)) < 0) || (rc = kv_latest(w, k, rows && with_values, &p)) < 0)
            return rc;
        if (!p.live)
            return 0;
        if (!rows) {
            *n = 1;
            return 0;
        }
        if (!(*rows = arena_zalloc(w->a, sizeof(p))))
            return -ENOMEM;
        **rows = p;
        *n = 1;
        return 0;
    }
    struct ixiter it;
    struct keyrec *kr;
    ix_seek(&it, w->s->ix.root, key.data, key.len);
    while ((kr = ix_next(&it))) {
        struct mvcc_buf k = {kr->key, kr->klen};
        if (kind == RK_BOUNDED && buf_cmp(k, end) >= 0)
            break;
        uint32_t nr = kr_count(kr);
        if (nr == 0 || kr_revs(kr)[nr - 1].version == 0)
            continue;
        if (!rows) {
            (*n)++;
            continue;
        }
        if (!(*rows = arena_grow(w->a, *rows, *n, &cap, sizeof(**rows))))
            return -ENOMEM;
        struct prevrow *p = &(*rows)[(*n)++];
        memset(p, 0, sizeof(*p));
        p->live = true;
        p->kr = kr;
        p->r = kr_revs(kr)[nr - 1];
        if ((rc = buf_copy(w, k, &k)) < 0)
            return rc;
        kv_of(k, &p->r, &p->kv);
    }
    /* values once the index walk is over */
    struct view v = writer_view(w);
    for (size_t i = 0; rows && with_values && i < *n; i++) {
        struct prevrow *p = &(*rows)[i];
        if ((rc = view_value(&v, w->a, p->r.main, p->r.sub, &p->kv.value)) < 0)
            return rc;
    }
    return 0;
}

static int do_delete(struct applier *w, const struct mvcc_delete_req *r,
                     struct mvcc_response *resp)
{
    struct prevrow *rows;
    size_t n;
    /* the old values: for the response and for watchers' events (see do_put) */
    int rc = live_rows(w, r->key, r->range_end, r->prev_kv || event_values(w), &rows, &n);
    if (rc < 0 || (rc = may_write(w, n)) < 0)
        return rc;
    struct mvcc_kv *prevs = NULL;
    if (r->prev_kv && n && !(prevs = arena_zalloc(w->a, n * sizeof(*prevs))))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct mvcc_kv *prev;
        if ((rc = delete_one(w, &rows[i], &prev)) < 0)
            return rc;
        if (prevs)
            prevs[i] = *prev;
    }
    resp->del.deleted = (int64_t)n;
    resp->del.prev_kvs = prevs;
    resp->del.n_prev_kvs = prevs ? n : 0;
    resp->revision = view_rev(w);
    return 0;
}

/* --- Txn -------------------------------------------------------------------------------- */

/* etcd's checkRequestOp, recursively: request shapes only. */
static int txn_static_check(const struct mvcc_txn_req *t)
{
    for (size_t i = 0; i < t->n_compares; i++) {
        if (t->compares[i].key.len == 0)
            return -CAIRN_E_KEY_EMPTY;
        if ((unsigned)t->compares[i].target > MVCC_CMP_LEASE ||
            (unsigned)t->compares[i].result > MVCC_CMP_NOT_EQUAL)
            return -CAIRN_E_INVALID_ARGUMENT;
    }
    for (int branch = 0; branch < 2; branch++) {
        const struct mvcc_request *ops = branch ? t->failure : t->success;
        size_t n = branch ? t->n_failure : t->n_success;
        for (size_t i = 0; i < n; i++) {
            int rc = 0;
            switch (ops[i].type) {
            case MVCC_REQ_RANGE:
                rc = ops[i].range.key.len ? 0 : -CAIRN_E_KEY_EMPTY;
                break;
            case MVCC_REQ_PUT:
                rc = put_static_check(&ops[i].put);
                break;
            case MVCC_REQ_DELETE_RANGE:
                rc = ops[i].del.key.len ? 0 : -CAIRN_E_KEY_EMPTY;
                break;
            case MVCC_REQ_TXN:
                rc = txn_static_check(&ops[i].txn);
                break;
            default:
                rc = -CAIRN_E_INVALID_ARGUMENT;
            }
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* Key sets and delete intervals for etcd's checkIntervals. */
struct keyset {
    const struct mvcc_buf *k;
    size_t n, cap;
};
struct ivl {
    struct mvcc_buf key, end;
};
struct ivlset {
    struct ivl *v;
    size_t n, cap;
};

static bool buf_eq(struct mvcc_buf a, struct mvcc_buf b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static bool keyset_has(const struct keyset *s, struct mvcc_buf k)
{
    for (size_t i = 0; i < s->n; i++)
        if (buf_eq(s->k[i], k))
            return true;
    return false;
}

/* Add k unless present: a set, like etcd's map. */
static int keyset_add(struct arena *a, struct keyset *s, struct mvcc_buf k)
{
    if (keyset_has(s, k))
        return 0;
    struct mvcc_buf *nk = arena_grow(a, (void *)s->k, s->n, &s->cap, sizeof(*nk));
    if (!nk)
        return -ENOMEM;
    nk[s->n++] = k;
    s->k = nk;
    return 0;
}

static int ivl_add(struct arena *a, struct ivlset *s, struct ivl iv)
{
    if (!(s->v = arena_grow(a, s->v, s->n, &s->cap, sizeof(*s->v))))
        return -ENOMEM;
    s->v[s->n++] = iv;
    return 0;
}

/* Does a delete interval cover key k?  ("\0" as range_end: every key >= key.) */
static bool ivl_hit(const struct ivlset *s, struct mvcc_buf k)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct ivl *iv = &s->v[i];
        switch (range_kind(iv->key, iv->end)) {
        case RK_SINGLE:
            if (buf_eq(iv->key, k))
                return true;
            break;
        case RK_FROM:
            if (buf_cmp(k, iv->key) >= 0)
                return true;
            break;
        case RK_BOUNDED:
            if (buf_cmp(k, iv->key) >= 0 && buf_cmp(k, iv->end) < 0)
                return true;
            break;
        case RK_EMPTY:
            break;
        }
    }
    return false;
}

/*
 * etcd's checkIntervals: a put may not share its key with another put or a
 * delete of the txn (then/else branches of one nested txn excepted, since
 * only one runs).  Returns -CAIRN_E_DUPLICATE_KEY.
 */
static int check_intervals(struct arena *a, const struct mvcc_request *ops, size_t n,
                           struct keyset *puts, struct ivlset *dels)
{
    int rc;
    memset(puts, 0, sizeof(*puts));
    memset(dels, 0, sizeof(*dels));
    for (size_t i = 0; i < n; i++)
        if (ops[i].type == MVCC_REQ_DELETE_RANGE &&
            (rc = ivl_add(a, dels, (struct ivl){ops[i].del.key, ops[i].del.range_end})) < 0)
            return rc;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != MVCC_REQ_TXN)
            continue;
        const struct mvcc_txn_req *t = &ops[i].txn;
        struct keyset pt, pe;
        struct ivlset dt, de;
        if ((rc = check_intervals(a, t->success, t->n_success, &pt, &dt)) < 0 ||
            (rc = check_intervals(a, t->failure, t->n_failure, &pe, &de)) < 0)
            return rc;
        for (size_t j = 0; j < pt.n; j++) {
            if (keyset_has(puts, pt.k[j]) || ivl_hit(dels, pt.k[j]))
                return -CAIRN_E_DUPLICATE_KEY;
            if ((rc = keyset_add(a, puts, pt.k[j])) < 0)
                return rc;
        }
        for (size_t j = 0; j < pe.n; j++) {
            if ((keyset_has(puts, pe.k[j]) && !keyset_has(&pt, pe.k[j])) || ivl_hit(dels, pe.k[j]))
                return -CAIRN_E_DUPLICATE_KEY;
            if ((rc = keyset_add(a, puts, pe.k[j])) < 0)
                return rc;
        }
        for (size_t j = 0; j < dt.n; j++)
            if ((rc = ivl_add(a, dels, dt.v[j])) < 0)
                return rc;
        for (size_t j = 0; j < de.n; j++)
            if ((rc = ivl_add(a, dels, de.v[j])) < 0)
                return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != MVCC_REQ_PUT)
            continue;
        struct mvcc_buf k = ops[i].put.key;
        if (keyset_has(puts, k) || ivl_hit(dels, k))
            return -CAIRN_E_DUPLICATE_KEY;
        if ((rc = keyset_add(a, puts, k)) < 0)
            return rc;
    }
    return 0;
}

static int cmp_i64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

/* etcd's compareKV. */
static bool compare_kv(const struct mvcc_compare *c, const struct mvcc_kv *kv)
{
    int r = 0;
    switch (c->target) {
    case MVCC_CMP_VALUE:
        r = buf_cmp(kv->value, c->value);
        break;
    case MVCC_CMP_CREATE:
        r = cmp_i64(kv->create_revision, c->number);
        break;
    case MVCC_CMP_MOD:
        r = cmp_i64(kv->mod_revision, c->number);
        break;
    case MVCC_CMP_VERSION:
        r = cmp_i64(kv->version, c->number);
        break;
    case MVCC_CMP_LEASE:
        r = cmp_i64(kv->lease, c->number);
        break;
    }
    switch (c->result) {
    case MVCC_CMP_EQUAL:
        return r == 0;
    case MVCC_CMP_NOT_EQUAL:
        return r != 0;
    case MVCC_CMP_GREATER:
        return r > 0;
    case MVCC_CMP_LESS:
        return r < 0;
    }
    return true;
}

/* etcd's applyCompare: every key in the range must satisfy it. */
static int apply_compare(struct applier *w, const struct mvcc_compare *c, bool *ok)
{
    /* only a value compare needs the values */
    struct mvcc_range_req rr = {.key = c->key, .range_end = c->range_end,
                                .keys_only = c->target != MVCC_CMP_VALUE};
    struct mvcc_range_resp out;
    struct view v = writer_view(w);
    int rc = kv_range(&v, w->a, &rr, &out);
    if (rc < 0)
        return rc;
    if (out.n_kvs == 0) {
        static const struct mvcc_kv zero;
        *ok = c->target == MVCC_CMP_VALUE ? false : compare_kv(c, &zero);
        return 0;
    }
    *ok = true;
    for (size_t i = 0; i < out.n_kvs && *ok; i++)
        *ok = compare_kv(c, &out.kvs[i]);
    return 0;
}

/* The branch every txn of the tree takes, in depth-first order (etcd's txnPath). */
struct path {
    bool *v;
    size_t n, cap;
};

static int path_build(struct applier *w, const struct mvcc_txn_req *t, struct path *p)
{
    bool ok = true;
    int rc;
    for (size_t i = 0; i < t->n_compares && ok; i++)
        if ((rc = apply_compare(w, &t->compares[i], &ok)) < 0)
            return rc;
    if (!(p->v = arena_grow(w->a, p->v, p->n, &p->cap, sizeof(*p->v))))
        return -ENOMEM;
    p->v[p->n++] = ok;
    const struct mvcc_request *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    for (size_t i = 0; i < n; i++)
        if (ops[i].type == MVCC_REQ_TXN && (rc = path_build(w, &ops[i].txn, p)) < 0)
            return rc;
    return 0;
}

/* etcd's checkRequests with checkPut and checkRange, along the path. */
static int path_check(struct applier *w, const struct mvcc_txn_req *t, const struct path *p,
                      size_t *pi, bool puts)
{
    bool ok = p->v[(*pi)++];
    const struct mvcc_request *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    int rc;
    for (size_t i = 0; i < n; i++) {
        if (puts && ops[i].type == MVCC_REQ_PUT && (rc = put_state_check(w, &ops[i].put)) < 0)
            return rc;
        if (!puts && ops[i].type == MVCC_REQ_RANGE && ops[i].range.revision > 0) {
            if (ops[i].range.revision > view_rev(w))
                return -CAIRN_E_FUTURE_REV;
            if (ops[i].range.revision < w->st->compact_rev)
                return -CAIRN_E_COMPACTED;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (ops[i].type == MVCC_REQ_TXN && (rc = path_check(w, &ops[i].txn, p, pi, puts)) < 0)
            return rc;
    return 0;
}

/* Keys a txn's puts attach to each lease (struct lease_add), for lease_room. */
struct lease_adds {
    struct lease_add {
        int64_t lease, n;
    } *v;
    size_t n, cap;
};

static int count_attach(struct applier *w, struct lease_adds *la, const struct mvcc_put_req *r)
{
    struct prevrow p;
    if (!r->lease || r->ignore_lease)
        return 0; /* attaches nothing: no lookup */
    int rc = kv_latest(w, r->key, false, &p);
    if (rc < 0)
        return rc;
    int64_t lease = attaches_to(r, &p);
    if (!lease)
        return 0;
    for (size_t i = 0; i < la->n; i++)
        if (la->v[i].lease == lease) {
            la->v[i].n++;
            return 0;
        }
    if (!(la->v = arena_grow(w->a, la->v, la->n, &la->cap, sizeof(*la->v))))
        return -ENOMEM;
    la->v[la->n++] = (struct lease_add){lease, 1};
    return 0;
}

/* What the chosen path of a txn changes, before any of it is written: how
 * many keys (for may_write: one per put, the live keys of each delete's
 * range as they are before the txn; its deletes may overlap, an upper bound
 * then), and how many keys its puts attach to each lease (for lease_room). */
static int path_changes(struct applier *w, const struct mvcc_txn_req *t, const struct path *p, size_t *pi,
                        size_t *changes, struct lease_adds *la)
{
    bool ok = p->v[(*pi)++];
    const struct mvcc_request *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    int rc;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type == MVCC_REQ_PUT) {
            (*changes)++;
            if ((rc = count_attach(w, la, &ops[i].put)) < 0)
                return rc;
        } else if (ops[i].type == MVCC_REQ_DELETE_RANGE) {
            size_t k;
            if ((rc = live_rows(w, ops[i].del.key, ops[i].del.range_end, false, NULL, &k)) < 0)
                return rc;
            *changes += k;
        } else if (ops[i].type == MVCC_REQ_TXN && (rc = path_changes(w, &ops[i].txn, p, pi, changes, la)) < 0) {
            return rc;
        }
    }
    return 0;
}

static int do_range(struct applier *w, const struct mvcc_range_req *r, struct mvcc_response *resp)
{
    struct view v = writer_view(w);
    resp->revision = view_rev(w);
    return kv_range(&v, w->a, r, &resp->range);
}

static int txn_exec(struct applier *w, const struct mvcc_txn_req *t, const struct path *p,
                    size_t *pi, struct mvcc_response *resp)
{
    bool ok = p->v[(*pi)++];
    const struct mvcc_request *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    int rc = 0;
    resp->txn.succeeded = ok;
    resp->txn.n_responses = n;
    if (n && !(resp->txn.responses = arena_zalloc(w->a, n * sizeof(*resp->txn.responses))))
        return -ENOMEM;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct mvcc_response *sub = &resp->txn.responses[i];
        sub->type = ops[i].type;
        switch (ops[i].type) {
        case MVCC_REQ_RANGE:
            rc = do_range(w, &ops[i].range, sub);
            break;
        case MVCC_REQ_PUT:
            rc = do_put(w, &ops[i].put, sub);
            break;
        case MVCC_REQ_DELETE_RANGE:
            rc = do_delete(w, &ops[i].del, sub);
            break;
        case MVCC_REQ_TXN:
            rc = txn_exec(w, &ops[i].txn, p, pi, sub);
            break;
        default:
            rc = -CAIRN_E_INVALID_ARGUMENT;
        }
    }
    /* Everything was checked first: an error now is the storage's, never the request's. */
    if (rc < 0 && request_error(rc))
        rc = -CAIRN_E_CORRUPT;
    return rc;
}

static int do_txn(struct applier *w, const struct mvcc_txn_req *t, struct mvcc_response *resp)
{
    struct keyset puts;
    struct ivlset dels;
    struct path p = {0};
    size_t pi;
    int rc;
    struct mvcc_request self = {.type = MVCC_REQ_TXN, .txn = *t};
    if ((rc = txn_static_check(t)) < 0 || (rc = check_intervals(w->a, &self, 1, &puts, &dels)) < 0)
        return rc;
    if ((rc = path_build(w, t, &p)) < 0)
        return rc;
    pi = 0;
    if ((rc = path_check(w, t, &p, &pi, true)) < 0)
        return rc;
    pi = 0;
    if ((rc = path_check(w, t, &p, &pi, false)) < 0)
        return rc;
    size_t changes = 0;
    struct lease_adds la = {0};
    pi = 0;
    if ((rc = path_changes(w, t, &p, &pi, &changes, &la)) < 0 || (rc = may_write(w, changes)) < 0)
        return rc;
    for (size_t i = 0; i < la.n; i++)
        if ((rc = lease_room(w, la.v[i].lease, la.v[i].n)) < 0)
            return rc;
    pi = 0;
    if ((rc = txn_exec(w, t, &p, &pi, resp)) < 0)
        return rc;
    resp->revision = view_rev(w);
    return 0;
}

/* --- leases, compaction, records ---------------------------------------------------------- */

static int do_lease_grant(struct applier *w, const struct mvcc_lease_grant_req *r,
                          struct mvcc_response *resp)
{
    bool exists;
    int rc;
    if (r->id == 0)
        return -CAIRN_E_LEASE_NOT_FOUND; /* etcd: NoLease cannot be granted */
    if (r->ttl > MVCC_MAX_LEASE_TTL)
        return -CAIRN_E_LEASE_TTL_TOO_LARGE;
    if ((rc = lease_exists(w, r->id, &exists)) < 0)
        return rc;
    if (exists)
        return -CAIRN_E_LEASE_EXISTS;
    int64_t ttl = r->ttl < w->s->opts.min_lease_ttl ? w->s->opts.min_lease_ttl : r->ttl;
    sqlite3_stmt *st = conn_stmt(&w->s->c, ST_LEASE_INSERT);
    if (!st)
        return db_err(w);
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_int64(st, 2, ttl);
    if ((rc = step_done(st)) < 0)
        return rc;
    resp->lease_grant.id = r->id;
    resp->lease_grant.ttl = ttl;
    resp->revision = view_rev(w);
    return 0;
}

/* Revoke: delete every attached key, in key order, in one revision. */
static int do_lease_revoke(struct applier *w, const struct mvcc_lease_revoke_req *r,
                           struct mvcc_response *resp)
{
    bool exists;
    int rc;
    if ((rc = lease_exists(w, r->id, &exists)) < 0)
        return rc;
    if (!exists || r->id == 0)
        return -CAIRN_E_LEASE_NOT_FOUND;
    /* Refused before the keys are copied: a lease from an older store too
     * big to revoke is proposed again every few seconds.  The lease index
     * lists live keys only, so its count is the number of changes. */
    if ((rc = may_write(w, (size_t)ix_lease_count(&w->s->ix, r->id))) < 0)
        return rc;
    /* the keys first: deleting them changes the lease index */
    unsigned char prefix[8];
    ix_lease_prefix(r->id, prefix);
    struct ixiter it;
    struct keyrec *lk;
    struct mvcc_buf *keys = NULL;
    size_t n = 0, cap = 0;
    ix_seek(&it, w->s->ix.lroot, prefix, sizeof(prefix));
    while ((lk = ix_next(&it)) && lk->klen >= 8 && memcmp(lk->key, prefix, 8) == 0) {
        if (!(keys = arena_grow(w->a, keys, n, &cap, sizeof(*keys))))
            return -ENOMEM;
        if ((rc = buf_copy(w, (struct mvcc_buf){lk->key + 8, lk->klen - 8}, &keys[n++])) < 0)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        struct prevrow p;
        if ((rc = kv_latest(w, keys[i], event_values(w), &p)) < 0)
            return rc;
        if (p.live && (rc = delete_one(w, &p, NULL)) < 0)
            return rc;
    }
    sqlite3_stmt *st = conn_stmt(&w->s->c, ST_LEASE_DELETE);
    if (!st)
        return db_err(w);
    sqlite3_bind_int64(st, 1, r->id);
    if ((rc = step_done(st)) < 0)
        return rc;
    resp->revision = view_rev(w);
    return 0;
}

static int do_lease_checkpoint(struct applier *w, const struct mvcc_lease_checkpoint_req *r,
                               struct mvcc_response *resp)
{
    for (size_t i = 0; i < r->n; i++) {
        sqlite3_stmt *st = conn_stmt(&w->s->c, ST_LEASE_CHECKPOINT);
        if (!st)
            return db_err(w);
        sqlite3_bind_int64(st, 1, r->checkpoints[i].id);
        sqlite3_bind_int64(st, 2, r->checkpoints[i].remaining_ttl);
        int rc = step_done(st);
        if (rc < 0)
            return rc;
    }
    resp->revision = view_rev(w);
    return 0;
}

static int do_compact(struct applier *w, const struct mvcc_compact_req *r,
                      struct mvcc_response *resp)
{
    resp->revision = view_rev(w);
    if (r->revision <= w->st->compact_rev) {
        resp->compact_revision = w->st->compact_rev;
        return -CAIRN_E_COMPACTED;
    }
    if (r->revision > w->st->rev)
        return -CAIRN_E_FUTURE_REV;
    /* Stored with the batch: scheduled first, deleted later by mvcc_compact_step. */
    w->st->compact_rev = r->revision;
    resp->compact_revision = r->revision;
    return 0;
}

static int do_record(struct applier *w, const struct mvcc_request *req, struct mvcc_response *resp)
{
    const struct mvcc_record_req *r = &req->record;
    bool put = req->type == MVCC_REQ_RECORD_PUT;
    if (r->ns.len == 0 || r->name.len == 0)
        return -CAIRN_E_INVALID_ARGUMENT;
    sqlite3_stmt *st = conn_stmt(&w->s->c, put ? ST_RECORD_PUT : ST_RECORD_DELETE);
    if (!st)
        return db_err(w);
    bind_buf(st, 1, r->ns);
    bind_buf(st, 2, r->name);
    if (put)
        bind_buf(st, 3, r->value);
    int rc = step_done(st);
    if (rc < 0)
        return rc;
    if (!put)
        resp->record.deleted = sqlite3_changes(w->s->c.db);
    resp->revision = view_rev(w);
    return 0;
}

/* --- entries and batches ------------------------------------------------------------------ */

static int apply_request(struct applier *w, const struct mvcc_request *req,
                         struct mvcc_response *resp)
{
    int rc;
    resp->type = req->type;
    resp->revision = view_rev(w);
    switch (req->type) {
    case MVCC_REQ_NOOP:
        return 0;
    case MVCC_REQ_RANGE:
        return do_range(w, &req->range, resp);
    case MVCC_REQ_PUT:
        if ((rc = put_static_check(&req->put)) < 0 || (rc = put_state_check(w, &req->put)) < 0)
            return rc;
        return do_put(w, &req->put, resp);
    case MVCC_REQ_DELETE_RANGE:
        if (req->del.key.len == 0)
            return -CAIRN_E_KEY_EMPTY;
        return do_delete(w, &req->del, resp);
    case MVCC_REQ_TXN:
        return do_txn(w, &req->txn, resp);
    case MVCC_REQ_COMPACT:
        return do_compact(w, &req->compact, resp);
    case MVCC_REQ_LEASE_GRANT:
        return do_lease_grant(w, &req->lease_grant, resp);
    case MVCC_REQ_LEASE_REVOKE:
        return do_lease_revoke(w, &req->lease_revoke, resp);
    case MVCC_REQ_LEASE_CHECKPOINT:
        return do_lease_checkpoint(w, &req->lease_checkpoint, resp);
    case MVCC_REQ_RECORD_PUT:
    case MVCC_REQ_RECORD_DELETE:
        return do_record(w, req, resp);
    }
    return -CAIRN_E_INVALID_ARGUMENT;
}

int mvcc_apply(struct mvcc_store *s, const struct mvcc_entry *entries, size_t n,
               struct mvcc_result **out)
{
    struct arena a = {0};
    struct state st = s->st;
    struct applier w = {.s = s, .a = &a, .st = &st};
    struct mvcc_result *res = arena_zalloc(&a, sizeof(*res));
    struct arena *keep = arena_zalloc(&a, sizeof(*keep));
    bool applied = false;
    int rc;
    *out = NULL;
    if (!res || !keep || (n && !(res->entries = arena_zalloc(&a, n * sizeof(*res->entries))))) {
        arena_free(&a);
        return -ENOMEM;
    }
    if (s->ix.poisoned) {
        arena_free(&a);
        return -CAIRN_E_IO; /* a failed batch could not be undone in the index: reopen */
    }
    if ((rc = conn_exec(&s->c, ST_BEGIN_IMMEDIATE)) < 0) {
        arena_free(&a);
        return rc;
    }
    s->pend.n = 0;
    for (size_t i = 0; i < n; i++) {
        struct mvcc_applied *ap = &res->entries[i];
        ap->index = entries[i].index;
        ap->first_event = w.n_events;
        if (entries[i].index <= st.ci) {
            ap->skipped = true;
            continue;
        }
        w.begin_rev = st.rev;
        w.sub = 0;
        rc = apply_request(&w, &entries[i].req, &ap->resp);
        if (rc < 0 && !request_error(rc))
            goto fail;
        if (rc < 0) {
            /* checks come before writes, so a failed request wrote nothing */
            if (w.sub != 0) {
                rc = -CAIRN_E_CORRUPT;
                goto fail;
            }
            ap->resp.err = rc;
            if (rc == -CAIRN_E_COMPACTED)
                ap->resp.compact_revision = st.compact_rev;
            ap->resp.revision = st.rev;
        }
        if (w.sub > 0)
            st.rev = w.begin_rev + 1;
        ap->n_events = w.n_events - ap->first_event;
        st.ci = entries[i].index;
        st.term = entries[i].term;
        applied = true;
    }
    if (applied && ((rc = flush_rows(&w)) < 0 || (rc = state_put(&s->c, &st)) < 0 ||
                    (rc = ix_prepare(&s->ix)) < 0))
        goto fail;
    if ((rc = conn_exec(&s->c, ST_COMMIT)) < 0)
        goto fail;
    /* readers see the batch from here on (their snapshots have it now) */
    if (applied)
        ix_publish(&s->ix, &st);
    s->st = st;
    res->n_entries = n;
    res->events = w.events;
    res->n_events = w.n_events;
    res->revision = st.rev;
    res->consistent_index = st.ci;
    res->event_values = !s->no_event_values;
    *keep = a;
    res->priv_ = keep;
    *out = res;
    return 0;
fail:
    conn_exec(&s->c, ST_ROLLBACK);
    ix_abort(&s->ix);
    arena_free(&a);
    return rc;
}

void mvcc_set_event_values(struct mvcc_store *s, bool on)
{
    s->no_event_values = !on;
}

void mvcc_result_free(struct mvcc_result *r)
{
    if (r && r->priv_) {
        struct arena a = *(struct arena *)r->priv_;
        arena_free(&a);
    }
}
