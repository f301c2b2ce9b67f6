/*
 * storage/mvcc reads: the Range engine (shared with the applier, which reads
 * inside its own write transaction), and the reader handle's queries:
 * Range, History, HashKV, leases, records, status.  Every reader call runs in
 * one SQLite read transaction under the store's read lock, so its snapshot of
 * the revision table and the in-memory key index show the same committed
 * batch, never half of one.
 */
#include "storage/mvcc_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int bufcmp(struct mvcc_buf a, struct mvcc_buf b)
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
    return bufcmp(end, key) <= 0 ? RK_EMPTY : RK_BOUNDED;
}

/* A growable array inside an arena (the old copy is left to the arena). */
static void *grow(struct arena *a, void *arr, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap)
        return arr;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *na = arena_alloc(a, ncap * elem);
    if (!na)
        return NULL;
    if (n)
        memcpy(na, arr, n * elem);
    *cap = ncap;
    return na;
}

/* --- Range ------------------------------------------------------------------ */

enum { F_MINMOD = 1, F_MAXMOD = 2, F_MINCREATE = 4, F_MAXCREATE = 8 };

static const char *const sort_col[] = {"i.key", "r.version", "r.create_rev", "i.main", "r.value"};

static sqlite3_stmt *range_stmt(struct conn *c, enum range_kind kind, int target, int order,
                                int filters, bool keys_only)
{
    int idx = ((((int)kind * 5 + target) * 3 + order) * 16 + filters) * 2 + keys_only;
    sqlite3_stmt *st = c->range_st[idx];
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return st;
    }
    char sql[768];
    const char *dir = order == MVCC_SORT_DESCEND ? "DESC" : "ASC";
    char orderby[96];
    if (target == MVCC_SORT_KEY)
        snprintf(orderby, sizeof(orderby), "i.key %s", dir);
    else
        snprintf(orderby, sizeof(orderby), "%s %s, i.key %s", sort_col[target], dir, dir);
    /* the key index finds the visible revisions, the revision table has the rest */
    snprintf(sql, sizeof(sql),
             "SELECT i.key, i.main, r.create_rev, r.version, r.lease, %s "
             "FROM m.idx i CROSS JOIN rev r ON r.main = i.main AND r.sub = i.sub WHERE %s "
             "AND i.main <= ?3 AND (i.dead IS NULL OR i.dead > ?3)%s%s%s%s ORDER BY %s LIMIT ?8",
             keys_only ? "NULL" : "r.value",
             kind == RK_BOUNDED ? "i.key >= ?1 AND i.key < ?2" : "i.key >= ?1",
             filters & F_MINMOD ? " AND i.main >= ?4" : "", filters & F_MAXMOD ? " AND i.main <= ?5" : "",
             filters & F_MINCREATE ? " AND r.create_rev >= ?6" : "",
             filters & F_MAXCREATE ? " AND r.create_rev <= ?7" : "", orderby);
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        return NULL;
    c->range_st[idx] = st;
    return st;
}

static int range_count(struct conn *c, enum range_kind kind, const struct mvcc_range_req *req,
                       int64_t rev, int64_t *count)
{
    sqlite3_stmt *st = c->count_st[kind];
    if (!st) {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM m.idx WHERE %s AND main <= ?3 AND (dead IS NULL OR dead > ?3)",
                 kind == RK_BOUNDED ? "key >= ?1 AND key < ?2" : "key >= ?1");
        if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
            return sql_err(sqlite3_errcode(c->db));
        c->count_st[kind] = st;
    } else {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    bind_buf(st, 1, req->key);
    if (kind == RK_BOUNDED)
        bind_buf(st, 2, req->range_end);
    sqlite3_bind_int64(st, 3, rev);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : sql_err(rc);
}

static bool pass_filters(const struct mvcc_range_req *req, const struct mvcc_kv *kv)
{
    if (req->min_mod_revision && kv->mod_revision < req->min_mod_revision)
        return false;
    if (req->max_mod_revision && kv->mod_revision > req->max_mod_revision)
        return false;
    if (req->min_create_revision && kv->create_revision < req->min_create_revision)
        return false;
    if (req->max_create_revision && kv->create_revision > req->max_create_revision)
        return false;
    return true;
}

/* One key: a single seek to its newest row at or below rev. */
static int range_single(struct conn *c, struct arena *a, const struct mvcc_range_req *req,
                        int64_t rev, struct mvcc_range_resp *out)
{
    sqlite3_stmt *st = conn_stmt(c, ST_KV_LATEST_AT);
    if (!st)
        return sql_err(sqlite3_errcode(c->db));
    bind_buf(st, 1, req->key);
    sqlite3_bind_int64(st, 2, rev);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        rc = 0;
        goto out;
    }
    if (rc != SQLITE_ROW) {
        rc = sql_err(rc);
        goto out;
    }
    rc = 0;
    if (sqlite3_column_type(st, 7) != SQLITE_NULL && sqlite3_column_int64(st, 7) <= rev)
        goto out; /* deleted, or superseded within the same revision */
    out->count = 1;
    if (req->count_only)
        goto out;
    struct mvcc_kv kv = {0};
    if ((rc = row_kv(a, st, &kv, !req->keys_only)) < 0)
        goto out;
    if (!pass_filters(req, &kv))
        goto out;
    if (!(out->kvs = arena_alloc(a, sizeof(kv)))) {
        rc = -ENOMEM;
        goto out;
    }
    out->kvs[0] = kv;
    out->n_kvs = 1;
out:
    sqlite3_reset(st);
    return rc;
}

int kv_range(struct conn *c, struct arena *a, const struct mvcc_range_req *req, int64_t cur_rev,
             int64_t compact_rev, struct mvcc_range_resp *out)
{
    memset(out, 0, sizeof(*out));
    if (req->key.len == 0)
        return -CAIRN_E_KEY_EMPTY;
    int64_t rev = req->revision > 0 ? req->revision : cur_rev;
    if (rev > cur_rev)
        return -CAIRN_E_FUTURE_REV;
    if (rev < compact_rev)
        return -CAIRN_E_COMPACTED;
    if ((unsigned)req->sort_order > MVCC_SORT_DESCEND || (unsigned)req->sort_target > MVCC_SORT_VALUE)
        return -CAIRN_E_INVALID_ARGUMENT;
    enum range_kind kind = range_kind(req->key, req->range_end);
    if (kind == RK_EMPTY)
        return 0;
    if (kind == RK_SINGLE)
        return range_single(c, a, req, rev, out);
    if (req->count_only)
        return range_count(c, kind, req, rev, &out->count);

    int filters = (req->min_mod_revision ? F_MINMOD : 0) | (req->max_mod_revision ? F_MAXMOD : 0) |
                  (req->min_create_revision ? F_MINCREATE : 0) |
                  (req->max_create_revision ? F_MAXCREATE : 0);
    int order = req->sort_order;
    if (order == MVCC_SORT_NONE)
        order = MVCC_SORT_ASCEND; /* etcd: keys ascend; another target sorts ascending */
    sqlite3_stmt *st = range_stmt(c, kind, req->sort_target, order, filters, req->keys_only);
    if (!st)
        return sql_err(sqlite3_errcode(c->db));
    bind_buf(st, 1, req->key);
    if (kind == RK_BOUNDED)
        bind_buf(st, 2, req->range_end);
    sqlite3_bind_int64(st, 3, rev);
    sqlite3_bind_int64(st, 4, req->min_mod_revision);
    sqlite3_bind_int64(st, 5, req->max_mod_revision);
    sqlite3_bind_int64(st, 6, req->min_create_revision);
    sqlite3_bind_int64(st, 7, req->max_create_revision);
    sqlite3_bind_int64(st, 8, req->limit > 0 ? req->limit + 1 : -1);
    size_t cap = 0, n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!(out->kvs = grow(a, out->kvs, n, &cap, sizeof(*out->kvs)))) {
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = row_kv(a, st, &out->kvs[n], !req->keys_only)) < 0)
            goto out;
        n++;
    }
    if (rc != SQLITE_DONE) {
        rc = sql_err(rc);
        goto out;
    }
    rc = 0;
    if (req->limit > 0 && n > (size_t)req->limit) {
        n = (size_t)req->limit;
        out->more = true;
    }
    out->n_kvs = n;
    if (out->more || filters)
        rc = range_count(c, kind, req, rev, &out->count);
    else
        out->count = (int64_t)n;
out:
    sqlite3_reset(st);
    return rc;
}

/* --- reader handle ------------------------------------------------------------ */

int mvcc_reader_open(struct mvcc_store *s, struct mvcc_reader **out)
{
    struct mvcc_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int rc = conn_open(&r->c, s->c.path, true, &s->opts, s->index_uri, NULL, 0);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->s = s;
    *out = r;
    return 0;
}

void mvcc_reader_close(struct mvcc_reader *r)
{
    if (!r)
        return;
    conn_close(&r->c);
    free(r);
}

/* Start a read transaction and read the state row in it. */
static int read_begin(struct mvcc_reader *r, struct state *st)
{
    pthread_rwlock_rdlock(&r->s->lock);
    int rc = conn_exec(&r->c, ST_BEGIN);
    if (rc < 0) {
        pthread_rwlock_unlock(&r->s->lock);
        return rc;
    }
    if ((rc = state_get(&r->c, st)) < 0) {
        conn_exec(&r->c, ST_COMMIT);
        pthread_rwlock_unlock(&r->s->lock);
    }
    return rc;
}

static int read_end(struct mvcc_reader *r, int rc)
{
    int rc2 = conn_exec(&r->c, ST_COMMIT);
    pthread_rwlock_unlock(&r->s->lock);
    return rc < 0 ? rc : rc2;
}



int mvcc_reader_status(struct mvcc_reader *r, struct mvcc_status *st)
{
    struct state ignore;
    int rc = read_begin(r, &ignore);
    if (rc < 0)
        return rc;
    return read_end(r, status_read(&r->c, st));
}

/*
 * Ends the read; on success moves the arena inside itself so that freeing the
 * result (which lives in it) frees everything, and returns that arena for the
 * result's priv_.  On failure frees the arena and returns NULL with *rc set.
 */
static struct arena *finish_result(struct mvcc_reader *r, int *rc, struct arena *a)
{
    int r_rc = read_end(r, *rc);
    struct arena *keep = r_rc == 0 ? arena_alloc(a, sizeof(*keep)) : NULL;
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
    struct arena a = {0};
    struct mvcc_range_result *res;
    int rc = read_begin(r, &st);
    if (rc < 0)
        return rc;
    if (!(res = arena_alloc(&a, sizeof(*res)))) {
        rc = -ENOMEM;
        goto out;
    }
    res->revision = st.rev;
    res->compact_revision = st.compact_rev;
    if (compact_rev)
        *compact_rev = st.compact_rev;
    rc = kv_range(&r->c, &a, req, st.rev, st.compact_rev, &res->resp);
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

int mvcc_history(struct mvcc_reader *r, const struct mvcc_history_req *req,
                 struct mvcc_history_result **out)
{
    struct state st;
    struct arena a = {0};
    struct mvcc_history_result *res = NULL;
    sqlite3_stmt *q = NULL;
    if (req->key.len == 0)
        return -CAIRN_E_KEY_EMPTY;
    int rc = read_begin(r, &st);
    if (rc < 0)
        return rc;
    if (!(res = arena_alloc(&a, sizeof(*res)))) {
        rc = -ENOMEM;
        goto out;
    }
    res->revision = st.rev;
    res->compact_revision = st.compact_rev;
    enum range_kind kind = range_kind(req->key, req->range_end);
    if (kind == RK_EMPTY)
        goto out;
    static const enum stmt_id ids[] = {ST_HIST_KEY, ST_HIST_RANGE, ST_HIST_FROM};
    if (!(q = conn_stmt(&r->c, ids[kind]))) {
        rc = sql_err(sqlite3_errcode(r->c.db));
        goto out;
    }
    int64_t limit = req->limit > 0 ? req->limit : 1000;
    bind_buf(q, 1, req->key);
    sqlite3_bind_int64(q, 2, req->min_revision > 0 ? req->min_revision : 0);
    sqlite3_bind_int64(q, 3, req->max_revision > 0 ? req->max_revision : INT64_MAX);
    sqlite3_bind_int64(q, 4, req->after_main);
    sqlite3_bind_int64(q, 5, req->after_main || req->after_sub ? req->after_sub : -1);
    sqlite3_bind_int64(q, 6, st.compact_rev);
    sqlite3_bind_int64(q, 7, limit + 1);
    if (kind == RK_BOUNDED)
        bind_buf(q, 8, req->range_end);
    size_t cap = 0, n = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (n == (size_t)limit) {
            res->more = true;
            break;
        }
        if (!(res->rows = grow(&a, res->rows, n, &cap, sizeof(*res->rows)))) {
            rc = -ENOMEM;
            goto out;
        }
        struct mvcc_history_row *row = &res->rows[n++];
        if ((rc = row_kv(&a, q, &row->kv, true)) < 0)
            goto out;
        row->sub_revision = sqlite3_column_int64(q, 6);
        row->tombstone = row->kv.version == 0;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        rc = sql_err(rc);
        goto out;
    }
    rc = 0;
    res->n_rows = n;
    if (n) {
        res->next_main = res->rows[n - 1].kv.mod_revision;
        res->next_sub = res->rows[n - 1].sub_revision;
    }
out:
    if (q)
        sqlite3_reset(q);
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
    sqlite3_stmt *q = NULL;
    int rc = read_begin(r, &st);
    if (rc < 0)
        return rc;
    if (cur_rev)
        *cur_rev = st.rev;
    if (compact_rev)
        *compact_rev = st.compact_rev;
    if (rev <= 0)
        rev = st.rev;
    if (rev > st.rev) {
        rc = -CAIRN_E_FUTURE_REV;
        goto out;
    }
    if (rev < st.compact_rev) {
        rc = -CAIRN_E_COMPACTED;
        goto out;
    }
    if (!(q = conn_stmt(&r->c, ST_HASH))) {
        rc = sql_err(sqlite3_errcode(r->c.db));
        goto out;
    }
    sqlite3_bind_int64(q, 1, rev);
    sqlite3_bind_int64(q, 2, st.compact_rev);
    uint32_t crc = crc32c_extend(0, "kv", 2);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        crc = crc_i64(crc, sqlite3_column_int64(q, 1));
        crc = crc_i64(crc, sqlite3_column_int64(q, 6));
        crc = crc_blob(crc, sqlite3_column_blob(q, 0), sqlite3_column_bytes(q, 0));
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
        if (!(l->leases = grow(a, l->leases, l->n, &cap, sizeof(*l->leases))))
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
    struct arena a = {0};
    struct mvcc_lease_list *l;
    sqlite3_stmt *q = NULL;
    int rc = read_begin(r, &st);
    if (rc < 0)
        return rc;
    if (!(l = arena_alloc(&a, sizeof(*l)))) {
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
    if (!(q = conn_stmt(&r->c, ST_LEASE_KEYS))) {
        rc = sql_err(sqlite3_errcode(r->c.db));
        goto out;
    }
    sqlite3_bind_int64(q, 1, id);
    size_t cap = 0;
    struct mvcc_lease *le = &l->leases[0];
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (!(le->keys = grow(&a, le->keys, le->n_keys, &cap, sizeof(*le->keys))) ||
            col_buf(&a, q, 0, &le->keys[le->n_keys]) < 0) {
            rc = -ENOMEM;
            break;
        }
        le->n_keys++;
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
    struct arena a = {0};
    struct mvcc_record_list *l;
    sqlite3_stmt *q = NULL;
    int rc = read_begin(r, &st);
    if (rc < 0)
        return rc;
    if (!(l = arena_alloc(&a, sizeof(*l)))) {
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
        if (!(l->records = grow(&a, l->records, l->n, &cap, sizeof(*l->records))) ||
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
