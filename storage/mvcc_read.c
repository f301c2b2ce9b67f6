/*
 * storage/mvcc reads: the Range engine (shared with the applier, which reads
 * its working version inside its own write transaction), and the reader
 * handle's queries: Range, History, HashKV, leases, records, status.
 *
 * A reader call pins the newest published version of the key index, then
 * opens a SQLite read transaction and checks that its snapshot holds the
 * same batch (the state row's consistent index); if the writer committed in
 * between, it starts over.  So the keys and revisions it finds in the index
 * and the values it reads from SQLite describe one committed batch, and
 * neither side waits for the other: the writer keeps applying while a
 * reader reads, and the reader's snapshot and pinned version stay intact.
 */
#include "storage/mvcc_internal.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/crc32c.h"
#include "base/errors.h"

/* --- helpers ------------------------------------------------------------------ */

int bind_buf(sqlite3_stmt *st, int i, struct mvcc_buf b)
{
    static const char empty[1];
    return sqlite3_bind_blob(st, i, b.len ? b.data : empty, (int)b.len, SQLITE_STATIC);
}

int col_buf(struct arena *a, sqlite3_stmt *st, int i, struct mvcc_buf *out)
{
    const void *p = sqlite3_column_blob(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    void *d = arena_dup(a, p, n);
    if (!d)
        return -ENOMEM;
    out->data = d;
    out->len = n;
    return 0;
}

int row_kv(struct arena *a, sqlite3_stmt *st, struct mvcc_kv *kv, bool with_value)
{
    int rc = col_buf(a, st, 0, &kv->key);
    if (rc == 0 && with_value)
        rc = col_buf(a, st, 5, &kv->value);
    kv->mod_revision = sqlite3_column_int64(st, 1);
    kv->create_revision = sqlite3_column_int64(st, 2);
    kv->version = sqlite3_column_int64(st, 3);
    kv->lease = sqlite3_column_int64(st, 4);
    return rc;
}

int buf_cmp(struct mvcc_buf a, struct mvcc_buf b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.data, b.data, n) : 0;
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

enum range_kind range_kind(struct mvcc_buf key, struct mvcc_buf end)
{
    if (end.len == 0)
        return RK_SINGLE;
    if (end.len == 1 && ((const unsigned char *)end.data)[0] == 0)
        return RK_FROM;
    return buf_cmp(end, key) <= 0 ? RK_EMPTY : RK_BOUNDED;
}

static struct mvcc_buf kr_key(const struct keyrec *kr)
{
    return (struct mvcc_buf){kr->key, kr->klen};
}

int view_value(const struct view *v, struct arena *a, int64_t main, uint32_t sub,
               struct mvcc_buf *out)
{
    const struct pending *p = v->pend;
    if (p && p->n && main >= p->v[0].main) {
        size_t lo = 0, hi = p->n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (p->v[mid].main < main || (p->v[mid].main == main && p->v[mid].sub < sub))
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == p->n || p->v[lo].main != main || p->v[lo].sub != sub)
            return -CAIRN_E_CORRUPT;
        *out = p->v[lo].kv.value; /* lives as long as the batch's arena */
        return 0;
    }
    int rc;
    if (v->vc && (rc = vcache_get(v->vc, a, main, sub, out)) != 0)
        return rc < 0 ? rc : 0;
    struct conn *c = v->c;
    sqlite3_stmt *q = conn_stmt(c, ST_REV_VALUE);
    if (!q)
        return sql_err(sqlite3_errcode(c->db));
    sqlite3_bind_int64(q, 1, rev_id(main, sub));
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        rc = col_buf(a, q, 0, out);
    else
        rc = rc == SQLITE_DONE ? -CAIRN_E_CORRUPT : sql_err(rc); /* the index names a missing row */
    sqlite3_reset(q);
    if (rc == 0 && v->vc_fill)
        vcache_put(v->vc, main, sub, out->data, out->len);
    return rc;
}

/* --- Range ------------------------------------------------------------------ */

/* A key visible at the read revision, with the revision it shows. */
struct hit {
    const struct keyrec *kr;
    const struct krev *r;
    struct mvcc_buf value; /* read early only to sort by value */
};

/* The revision of kr a read at rev sees: NULL if none or a tombstone. */
static const struct krev *visible_at(const struct keyrec *kr, int64_t rev)
{
    long i = kr_at(kr, kr_count(kr), rev);
    if (i < 0 || kr_revs(kr)[i].version == 0)
        return NULL;
    return &kr_revs(kr)[i];
}

static bool pass_filters(const struct mvcc_range_req *req, const struct krev *r)
{
    if (req->min_mod_revision && r->main < req->min_mod_revision)
        return false;
    if (req->max_mod_revision && r->main > req->max_mod_revision)
        return false;
    if (req->min_create_revision && r->create < req->min_create_revision)
        return false;
    if (req->max_create_revision && r->create > req->max_create_revision)
        return false;
    return true;
}

static int cmp_i64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

/* etcd's sort: by the target, ties by key, both in the requested direction. */
static int hit_cmp(const void *pa, const void *pb, void *arg)
{
    const struct hit *a = pa, *b = pb;
    const struct mvcc_range_req *req = arg;
    int c = 0;
    switch (req->sort_target) {
    case MVCC_SORT_KEY:
        break;
    case MVCC_SORT_VERSION:
        c = cmp_i64(a->r->version, b->r->version);
        break;
    case MVCC_SORT_CREATE:
        c = cmp_i64(a->r->create, b->r->create);
        break;
    case MVCC_SORT_MOD:
        c = cmp_i64(a->r->main, b->r->main);
        break;
    case MVCC_SORT_VALUE:
        c = buf_cmp(a->value, b->value);
        break;
    }
    if (c == 0)
        c = buf_cmp(kr_key(a->kr), kr_key(b->kr));
    return req->sort_order == MVCC_SORT_DESCEND ? -c : c;
}

/* Every key of the range visible at rev, in key order. */
static int collect(const struct view *v, struct arena *a, const struct mvcc_range_req *req,
                   enum range_kind kind, int64_t rev, struct hit **out, size_t *n)
{
    size_t cap = 0;
    const struct krev *r;
    *out = NULL;
    *n = 0;
    if (kind == RK_SINGLE) {
        const struct keyrec *kr = ix_get(v->root, req->key.data, req->key.len);
        if (kr && (r = visible_at(kr, rev))) {
            if (!(*out = arena_zalloc(a, sizeof(**out))))
                return -ENOMEM;
            **out = (struct hit){.kr = kr, .r = r};
            *n = 1;
        }
        return 0;
    }
    struct ixiter it;
    const struct keyrec *kr;
    ix_seek(&it, v->root, req->key.data, req->key.len);
    while ((kr = ix_next(&it))) {
        if (kind == RK_BOUNDED && buf_cmp(kr_key(kr), req->range_end) >= 0)
            break;
        if (!(r = visible_at(kr, rev)))
            continue;
        if (!(*out = arena_grow(a, *out, *n, &cap, sizeof(**out))))
            return -ENOMEM;
        (*out)[(*n)++] = (struct hit){.kr = kr, .r = r};
    }
    return 0;
}

/* A range with more hits than this leaves the value cache as it is: one
 * scan of a prefix would otherwise push out the keys point reads keep hot. */
#define VC_FILL_MAX 16

int kv_range(const struct view *view, struct arena *a, const struct mvcc_range_req *req,
             struct mvcc_range_resp *out)
{
    struct view vv = *view, *v = &vv;
    memset(out, 0, sizeof(*out));
    if (req->key.len == 0)
        return -CAIRN_E_KEY_EMPTY;
    int64_t rev = req->revision > 0 ? req->revision : v->rev;
    if (rev > v->rev)
        return -CAIRN_E_FUTURE_REV;
    if (rev < v->compact_rev)
        return -CAIRN_E_COMPACTED;
    if ((unsigned)req->sort_order > MVCC_SORT_DESCEND || (unsigned)req->sort_target > MVCC_SORT_VALUE)
        return -CAIRN_E_INVALID_ARGUMENT;
    enum range_kind kind = range_kind(req->key, req->range_end);
    if (kind == RK_EMPTY)
        return 0;
    struct hit *h;
    size_t n;
    int rc = collect(v, a, req, kind, rev, &h, &n);
    if (rc < 0)
        return rc;
    out->count = (int64_t)n; /* etcd: before the limit and the min/max filters */
    if (req->count_only)
        return 0;
    v->vc_fill = v->vc && n <= VC_FILL_MAX;
    if (req->min_mod_revision || req->max_mod_revision || req->min_create_revision ||
        req->max_create_revision) {
        size_t j = 0;
        for (size_t i = 0; i < n; i++)
            if (pass_filters(req, h[i].r))
                h[j++] = h[i];
        n = j;
    }
    struct mvcc_range_req order = *req;
    if (order.sort_order == MVCC_SORT_NONE)
        order.sort_order = MVCC_SORT_ASCEND; /* etcd: keys ascend; another target sorts ascending */
    if (order.sort_target == MVCC_SORT_VALUE)
        for (size_t i = 0; i < n; i++)
            if ((rc = view_value(v, a, h[i].r->main, h[i].r->sub, &h[i].value)) < 0)
                return rc;
    if (order.sort_target != MVCC_SORT_KEY && n > 1)
        qsort_r(h, n, sizeof(*h), hit_cmp, &order);
    else if (order.sort_order == MVCC_SORT_DESCEND)
        for (size_t i = 0; i < n / 2; i++) {
            struct hit t = h[i];
            h[i] = h[n - 1 - i];
            h[n - 1 - i] = t;
        }
    if (req->limit > 0 && n > (size_t)req->limit) {
        n = (size_t)req->limit;
        out->more = true;
    }
    if (v->hook)
        v->hook(v->hook_arg);
    if (n && !(out->kvs = arena_zalloc(a, n * sizeof(*out->kvs))))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct mvcc_kv *kv = &out->kvs[i];
        const struct krev *r = h[i].r;
        if (!(kv->key.data = arena_dup(a, h[i].kr->key, h[i].kr->klen)))
            return -ENOMEM;
        kv->key.len = h[i].kr->klen;
        kv->mod_revision = r->main;
        kv->create_revision = r->create;
        kv->version = r->version;
        kv->lease = r->lease;
        if (req->keys_only)
            continue;
        if (h[i].value.data)
            kv->value = h[i].value;
        else if ((rc = view_value(v, a, r->main, r->sub, &kv->value)) < 0)
            return rc;
    }
    out->n_kvs = n;
    return 0;
}

/* --- reader handle ------------------------------------------------------------ */

int mvcc_reader_open(struct mvcc_store *s, struct mvcc_reader **out)
{
    struct mvcc_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int rc = conn_open(&r->c, s->c.path, true, &s->opts, NULL, 0);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->s = s;
    ix_pin_register(&s->ix, &r->pin);
    *out = r;
    return 0;
}

void mvcc_reader_close(struct mvcc_reader *r)
{
    if (!r)
        return;
    mvcc_reader_idle(r);
    ix_pin_unregister(&r->s->ix, &r->pin);
    conn_close(&r->c);
    free(r);
}

void mvcc_reader_test_hook(struct mvcc_reader *r, void (*fn)(void *arg), void *arg)
{
    r->hook = fn;
    r->hook_arg = arg;
}

/*
 * Start a read: pin the newest index version, open a read transaction, and
 * keep the pair only if the transaction's snapshot is that version's batch
 * (same consistent index).  Otherwise the writer committed in between (and
 * publishes right after its commit): drop both and try again.  Compaction
 * steps between the two only delete rows that the version already treats as
 * compacted, so they cannot make the pair disagree.
 *
 * A handle with mvcc_reader_keep holds the pair after a call; the next call
 * reuses it if the writer has published nothing since (the held version is
 * still the newest), and so reads exactly what a fresh pair would.  That
 * saves the BEGIN, the state row and the COMMIT: a fifth of a point get's
 * instructions.  The held version cannot be freed and reused at the same
 * address while it is pinned, so comparing pointers is exact.
 */
#define KEEP_MAX_NS 100000000LL /* a held read is this young at most: WAL checkpoints get past it */

static int64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* no system call, a few ms coarse */
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* What a call reads: index version ver through r's connection. */
static struct view view_of(struct mvcc_reader *r, const struct ixver *ver)
{
    return (struct view){.c = &r->c, .root = ver->root, .lroot = ver->lroot, .rev = ver->st.rev,
                         .compact_rev = ver->st.compact_rev, .hook = r->hook, .hook_arg = r->hook_arg,
                         .vc = r->s->vc};
}

static int read_begin(struct mvcc_reader *r, struct view *v, struct state *st)
{
    if (r->held) {
        /* Reused only while young too: what a checkpoint copies back from
         * the WAL (a defragmentation's pages, say) publishes no new version,
         * and a snapshot held on by back-to-back reads would stop it. */
        const struct ixver *ver = atomic_load(&r->s->ix.cur);
        if (ver == r->held_ver && coarse_ns() - r->held_since < KEEP_MAX_NS) {
            *st = r->held_st;
            *v = view_of(r, ver);
            return 0;
        }
        mvcc_reader_idle(r);
    }
    for (unsigned tries = 0;; tries++) {
        const struct ixver *ver = ix_pin(&r->s->ix, &r->pin);
        int rc = conn_exec(&r->c, ST_BEGIN);
        if (rc == 0 && (rc = state_get(&r->c, st)) < 0)
            conn_exec(&r->c, ST_COMMIT);
        if (rc < 0) {
            ix_unpin(&r->pin);
            return rc;
        }
        if (st->ci == ver->st.ci && st->rev == ver->st.rev) {
            *v = view_of(r, ver);
            r->held_ver = ver;
            r->held_st = *st;
            r->held_since = coarse_ns();
            return 0;
        }
        conn_exec(&r->c, ST_COMMIT);
        ix_unpin(&r->pin);
        /* the writer is between its commit and its publish: let it run */
        if (tries >= 2)
            sched_yield();
    }
}

/* End a read: with mvcc_reader_keep and no error, hold it for the next call. */
static int read_end(struct mvcc_reader *r, int rc)
{
    r->held = true; /* read_begin left the pair open */
    if (r->keep && rc == 0)
        return 0;
    int rc2 = mvcc_reader_idle(r);
    return rc < 0 ? rc : rc2;
}

void mvcc_reader_keep(struct mvcc_reader *r, bool keep)
{
    r->keep = keep;
    if (!keep)
        mvcc_reader_idle(r);
}

int mvcc_reader_idle(struct mvcc_reader *r)
{
    if (!r->held)
        return 0;
    r->held = false;
    r->held_ver = NULL;
    int rc = conn_exec(&r->c, ST_COMMIT);
    ix_unpin(&r->pin);
    return rc;
}

int mvcc_reader_status(struct mvcc_reader *r, struct mvcc_status *st)
{
    mvcc_reader_idle(r);
    int rc = conn_exec(&r->c, ST_BEGIN);
    if (rc < 0)
        return rc;
    rc = status_read(&r->c, st);
    int rc2 = conn_exec(&r->c, ST_COMMIT);
    if (rc == 0) {
        /* the newest published version: it may be a batch ahead of the SQL snapshot, fine for a count */
        st->keys = ix_pin(&r->s->ix, &r->pin)->keys;
        ix_unpin(&r->pin);
        vcache_stats(r->s->vc, st);
    }
    return rc < 0 ? rc : rc2;
}

/*
 * Ends the read; on success moves the arena inside itself so that freeing the
 * result (which lives in it) frees everything, and returns that arena for the
 * result's priv_.  On failure frees the arena and returns NULL with *rc set.
 */
static struct arena *finish_result(struct mvcc_reader *r, int *rc, struct arena *a)
{
    int r_rc = read_end(r, *rc);
    struct arena *keep = r_rc == 0 ? arena_zalloc(a, sizeof(*keep)) : NULL;
    if (!keep) {
        arena_free(a);
        *rc = r_rc < 0 ? r_rc : -ENOMEM;
        return NULL;
    }
    *keep = *a;
    return keep;
}

int mvcc_range(struct mvcc_reader *r, const struct mvcc_range_req *req,
               struct mvcc_range_result **out, int64_t *compact_rev)
{
    struct state st;
    struct view v;
    struct arena a = {0};
    struct mvcc_range_result *res;
    int rc = read_begin(r, &v, &st);
    if (rc < 0)
        return rc;
    if (!(res = arena_zalloc(&a, sizeof(*res)))) {
        rc = -ENOMEM;
        goto out;
    }
    res->revision = v.rev;
    res->compact_revision = v.compact_rev;
    if (compact_rev)
        *compact_rev = v.compact_rev;
    rc = kv_range(&v, &a, req, &res->resp);
out:;
    struct arena *keep = finish_result(r, &rc, &a);
    if (!keep)
        return rc;
    res->priv_ = keep;
    *out = res;
    return 0;
}

static void free_self_arena(void *priv)
{
    if (priv) {
        struct arena a = *(struct arena *)priv;
        arena_free(&a);
    }
}

void mvcc_range_result_free(struct mvcc_range_result *res)
{
    if (res)
        free_self_arena(res->priv_);
}

/* --- History -------------------------------------------------------------------- */

/* Does compaction keep the stored row (key, main, sub), as of view v?  The
 * row is in v's batch, so the index has it. */
static int row_kept(const struct view *v, struct mvcc_buf key, int64_t main, int64_t sub, bool *kept)
{
    if (main > v->compact_rev) {
        *kept = true; /* dead >= main */
        return 0;
    }
    const struct keyrec *kr = ix_get(v->root, key.data, key.len);
    if (!kr)
        return -CAIRN_E_CORRUPT;
    uint32_t n = kr_count(kr);
    const struct krev *r = kr_revs(kr);
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (r[mid].main < main || (r[mid].main == main && r[mid].sub < sub))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == n || r[lo].main != main || r[lo].sub != sub)
        return -CAIRN_E_CORRUPT;
    *kept = kr_dead(kr, n, lo) > v->compact_rev;
    return 0;
}

struct hist_q {
    int64_t lo, hi;             /* main revision window */
    int64_t after_main, after_sub;
    int64_t limit;
};

static bool after(const struct hist_q *q, int64_t main, int64_t sub)
{
    return main > q->after_main || (main == q->after_main && sub > q->after_sub);
}

/* The largest row id that after() excludes (-1: none; the last: every row). */
static int64_t after_id(const struct hist_q *q)
{
    if (q->after_main < 0)
        return -1;
    if (q->after_main > MVCC_MAX_REV)
        return INT64_MAX;
    if (q->after_sub < 0)
        return rev_id(q->after_main, 0) - 1;
    return rev_id(q->after_main, q->after_sub < MVCC_MAX_CHANGES ? q->after_sub : MVCC_MAX_CHANGES - 1);
}

/* One key's history, from the index. */
static int history_key(const struct view *v, struct arena *a, struct mvcc_buf key,
                       const struct hist_q *q, struct mvcc_history_result *res)
{
    const struct keyrec *kr = ix_get(v->root, key.data, key.len);
    size_t cap = 0;
    if (!kr)
        return 0;
    uint32_t n = kr_count(kr);
    const struct krev *r = kr_revs(kr);
    for (uint32_t i = 0; i < n; i++) {
        if (r[i].main < q->lo || r[i].main > q->hi || !after(q, r[i].main, r[i].sub) ||
            kr_dead(kr, n, i) <= v->compact_rev)
            continue;
        if (res->n_rows == (size_t)q->limit) {
            res->more = true;
            break;
        }
        if (!(res->rows = arena_grow(a, res->rows, res->n_rows, &cap, sizeof(*res->rows))))
            return -ENOMEM;
        struct mvcc_history_row *row = &res->rows[res->n_rows++];
        row->kv = (struct mvcc_kv){.mod_revision = r[i].main, .create_revision = r[i].create,
                                   .version = r[i].version, .lease = r[i].lease};
        row->sub_revision = r[i].sub;
        row->tombstone = r[i].version == 0;
        if (!(row->kv.key.data = arena_dup(a, kr->key, kr->klen)))
            return -ENOMEM;
        row->kv.key.len = kr->klen;
        int rc;
        if (!row->tombstone && (rc = view_value(v, a, r[i].main, r[i].sub, &row->kv.value)) < 0)
            return rc;
    }
    return 0;
}

/* A key range's history: the revision table in revision order, filtered
 * by the key range and by what compaction keeps. */
static int history_scan(const struct view *v, struct arena *a, const struct mvcc_history_req *req,
                        enum range_kind kind, const struct hist_q *q, struct mvcc_history_result *res)
{
    sqlite3_stmt *st = conn_stmt(v->c, kind == RK_BOUNDED ? ST_HIST_RANGE : ST_HIST_FROM);
    size_t cap = 0;
    int rc;
    if (!st)
        return sql_err(sqlite3_errcode(v->c->db));
    if (q->lo > q->hi)
        return 0; /* hi is at most the store's revision, which rev_id can number */
    bind_buf(st, 1, req->key);
    sqlite3_bind_int64(st, 2, rev_id(q->lo, 0));
    sqlite3_bind_int64(st, 3, rev_id(q->hi, MVCC_MAX_CHANGES - 1));
    sqlite3_bind_int64(st, 4, after_id(q));
    if (kind == RK_BOUNDED)
        bind_buf(st, 5, req->range_end);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct mvcc_buf key = {sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0)};
        bool kept;
        if ((rc = row_kept(v, key, sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 6), &kept)) < 0)
            goto out;
        if (!kept)
            continue;
        if (res->n_rows == (size_t)q->limit) {
            res->more = true;
            break;
        }
        if (!(res->rows = arena_grow(a, res->rows, res->n_rows, &cap, sizeof(*res->rows)))) {
            rc = -ENOMEM;
            goto out;
        }
        struct mvcc_history_row *row = &res->rows[res->n_rows++];
        if ((rc = row_kv(a, st, &row->kv, true)) < 0)
            goto out;
        row->sub_revision = sqlite3_column_int64(st, 6);
        row->tombstone = row->kv.version == 0;
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_err(rc);
out:
    sqlite3_reset(st);
    return rc;
}

int mvcc_history(struct mvcc_reader *r, const struct mvcc_history_req *req,
                 struct mvcc_history_result **out)
{
    struct state st;
    struct view v;
    struct arena a = {0};
    struct mvcc_history_result *res = NULL;
    if (req->key.len == 0)
        return -CAIRN_E_KEY_EMPTY;
    int rc = read_begin(r, &v, &st);
    if (rc < 0)
        return rc;
    if (!(res = arena_zalloc(&a, sizeof(*res)))) {
        rc = -ENOMEM;
        goto out;
    }
    res->revision = v.rev;
    res->compact_revision = v.compact_rev;
    enum range_kind kind = range_kind(req->key, req->range_end);
    struct hist_q q = {
        .lo = req->min_revision > 0 ? req->min_revision : 0,
        .hi = req->max_revision > 0 && req->max_revision < v.rev ? req->max_revision : v.rev,
        .after_main = req->after_main,
        .after_sub = req->after_main || req->after_sub ? req->after_sub : -1,
        .limit = req->limit > 0 ? req->limit : 1000,
    };
    if (kind == RK_SINGLE)
        rc = history_key(&v, &a, req->key, &q, res);
    else if (kind != RK_EMPTY)
        rc = history_scan(&v, &a, req, kind, &q, res);
    if (rc == 0 && res->n_rows) {
        res->next_main = res->rows[res->n_rows - 1].kv.mod_revision;
        res->next_sub = res->rows[res->n_rows - 1].sub_revision;
    }
out:;
    struct arena *keep = finish_result(r, &rc, &a);
    if (!keep)
        return rc;
    res->priv_ = keep;
    *out = res;
    return 0;
}

void mvcc_history_result_free(struct mvcc_history_result *res)
{
    if (res)
        free_self_arena(res->priv_);
}

/* --- HashKV ------------------------------------------------------------------------ */

static uint32_t crc_i64(uint32_t crc, int64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)v >> (56 - 8 * i));
    return crc32c_extend(crc, b, 8);
}

static uint32_t crc_blob(uint32_t crc, const void *p, int n)
{
    crc = crc_i64(crc, n);
    return n ? crc32c_extend(crc, p, (size_t)n) : crc;
}

int mvcc_hash_kv(struct mvcc_reader *r, int64_t rev, uint32_t *hash, int64_t *cur_rev,
                 int64_t *compact_rev)
{
    struct state st;
    struct view v;
    sqlite3_stmt *q = NULL;
    int rc = read_begin(r, &v, &st);
    if (rc < 0)
        return rc;
    if (cur_rev)
        *cur_rev = v.rev;
    if (compact_rev)
        *compact_rev = v.compact_rev;
    if (rev <= 0)
        rev = v.rev;
    if (rev > v.rev) {
        rc = -CAIRN_E_FUTURE_REV;
        goto out;
    }
    if (rev < v.compact_rev) {
        rc = -CAIRN_E_COMPACTED;
        goto out;
    }
    if (!(q = conn_stmt(&r->c, ST_HASH))) {
        rc = sql_err(sqlite3_errcode(r->c.db));
        goto out;
    }
    sqlite3_bind_int64(q, 1, rev_id(rev, MVCC_MAX_CHANGES - 1));
    uint32_t crc = crc32c_extend(0, "kv", 2);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct mvcc_buf key = {sqlite3_column_blob(q, 0), (size_t)sqlite3_column_bytes(q, 0)};
        bool kept;
        if ((rc = row_kept(&v, key, sqlite3_column_int64(q, 1), sqlite3_column_int64(q, 6), &kept)) < 0)
            goto out;
        if (!kept)
            continue;
        crc = crc_i64(crc, sqlite3_column_int64(q, 1));
        crc = crc_i64(crc, sqlite3_column_int64(q, 6));
        crc = crc_blob(crc, key.data, (int)key.len);
        crc = crc_i64(crc, sqlite3_column_int64(q, 2));
        crc = crc_i64(crc, sqlite3_column_int64(q, 3));
        crc = crc_i64(crc, sqlite3_column_int64(q, 4));
        crc = crc_blob(crc, sqlite3_column_blob(q, 5), sqlite3_column_bytes(q, 5));
    }
    rc = rc == SQLITE_DONE ? 0 : sql_err(rc);
    if (rc == 0)
        *hash = crc;
out:
    if (q)
        sqlite3_reset(q);
    return read_end(r, rc);
}

/* --- leases ------------------------------------------------------------------------ */

static int lease_rows(struct conn *c, struct arena *a, sqlite3_stmt *q, struct mvcc_lease_list *l)
{
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (!(l->leases = arena_grow(a, l->leases, l->n, &cap, sizeof(*l->leases))))
            return -ENOMEM;
        struct mvcc_lease *le = &l->leases[l->n++];
        le->id = sqlite3_column_int64(q, 0);
        le->ttl = sqlite3_column_int64(q, 1);
        le->remaining_ttl = sqlite3_column_int64(q, 2);
    }
    (void)c;
    return rc == SQLITE_DONE ? 0 : sql_err(rc);
}

static int lease_query(struct mvcc_reader *r, bool one, int64_t id, struct mvcc_lease_list **out)
{
    struct state st;
    struct view v;
    struct arena a = {0};
    struct mvcc_lease_list *l;
    sqlite3_stmt *q = NULL;
    int rc = read_begin(r, &v, &st);
    if (rc < 0)
        return rc;
    if (!(l = arena_zalloc(&a, sizeof(*l)))) {
        rc = -ENOMEM;
        goto out;
    }
    if (!(q = conn_stmt(&r->c, one ? ST_LEASE_GET : ST_LEASE_LIST))) {
        rc = sql_err(sqlite3_errcode(r->c.db));
        goto out;
    }
    if (one)
        sqlite3_bind_int64(q, 1, id);
    rc = lease_rows(&r->c, &a, q, l);
    sqlite3_reset(q);
    if (rc < 0 || !one)
        goto out;
    if (l->n == 0) {
        rc = -CAIRN_E_LEASE_NOT_FOUND;
        goto out;
    }
    /* the live keys attached to it: the lease index of the same version */
    unsigned char prefix[8];
    ix_lease_prefix(id, prefix);
    struct ixiter it;
    const struct keyrec *kr;
    size_t cap = 0;
    struct mvcc_lease *le = &l->leases[0];
    ix_seek(&it, v.lroot, prefix, sizeof(prefix));
    while ((kr = ix_next(&it)) && kr->klen >= 8 && memcmp(kr->key, prefix, 8) == 0) {
        struct mvcc_buf *k;
        if (!(le->keys = arena_grow(&a, le->keys, le->n_keys, &cap, sizeof(*le->keys))) ||
            !((k = &le->keys[le->n_keys])->data = arena_dup(&a, kr->key + 8, kr->klen - 8))) {
            rc = -ENOMEM;
            break;
        }
        k->len = kr->klen - 8;
        le->n_keys++;
    }
out:;
    struct arena *keep = finish_result(r, &rc, &a);
    if (!keep)
        return rc;
    l->priv_ = keep;
    *out = l;
    return 0;
}

int mvcc_lease_list(struct mvcc_reader *r, struct mvcc_lease_list **out)
{
    return lease_query(r, false, 0, out);
}

int mvcc_lease_get(struct mvcc_reader *r, int64_t id, struct mvcc_lease_list **out)
{
    return lease_query(r, true, id, out);
}

void mvcc_lease_list_free(struct mvcc_lease_list *l)
{
    if (l)
        free_self_arena(l->priv_);
}

/* --- records ----------------------------------------------------------------------- */

int mvcc_record_list(struct mvcc_reader *r, struct mvcc_buf ns, struct mvcc_buf name,
                     struct mvcc_record_list **out)
{
    struct state st;
    struct view v;
    struct arena a = {0};
    struct mvcc_record_list *l;
    sqlite3_stmt *q = NULL;
    int rc = read_begin(r, &v, &st);
    if (rc < 0)
        return rc;
    if (!(l = arena_zalloc(&a, sizeof(*l)))) {
        rc = -ENOMEM;
        goto out;
    }
    if (!(q = conn_stmt(&r->c, name.len ? ST_RECORD_GET : ST_RECORD_LIST))) {
        rc = sql_err(sqlite3_errcode(r->c.db));
        goto out;
    }
    bind_buf(q, 1, ns);
    if (name.len)
        bind_buf(q, 2, name);
    size_t cap = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (!(l->records = arena_grow(&a, l->records, l->n, &cap, sizeof(*l->records))) ||
            col_buf(&a, q, 0, &l->records[l->n].name) < 0 ||
            col_buf(&a, q, 1, &l->records[l->n].value) < 0) {
            rc = -ENOMEM;
            break;
        }
        l->n++;
    }
    rc = rc == SQLITE_DONE ? 0 : rc < 0 ? rc : sql_err(rc);
    sqlite3_reset(q);
out:;
    struct arena *keep = finish_result(r, &rc, &a);
    if (!keep)
        return rc;
    l->priv_ = keep;
    *out = l;
    return 0;
}

void mvcc_record_list_free(struct mvcc_record_list *l)
{
    if (l)
        free_self_arena(l->priv_);
}
