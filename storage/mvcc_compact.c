/*
 * storage/mvcc compaction: deletes, in short transactions, the rows a
 * Compact request made unreachable.  The request itself (mvcc_apply.c) only
 * stores the compact revision with its batch, so reads below it fail at once
 * and a crash mid-way leaves it scheduled; rows with dead <= compact
 * revision are exactly what etcd's keyIndex.compact drops (see mvcc.c).
 * Each step deletes them from the revision table and the key index under
 * the store's write lock.
 */
#include "storage/mvcc_internal.h"

#include <errno.h>
#include <string.h>

#include "base/errors.h"

struct victim {
    struct mvcc_buf key;
    int64_t main, sub;
};

bool mvcc_compact_pending(struct mvcc_store *s)
{
    return s->st.compact_done < s->st.compact_rev;
}

int mvcc_compact_step(struct mvcc_store *s, size_t max_rows, bool *done)
{
    struct arena a = {0};
    struct state st = s->st;
    struct victim *v = NULL;
    sqlite3_stmt *q;
    size_t n = 0;
    int rc;
    *done = st.compact_done >= st.compact_rev;
    if (*done)
        return 0;
    if (max_rows == 0)
        max_rows = MVCC_COMPACT_BATCH;
    if (!(v = arena_alloc(&a, max_rows * sizeof(*v))))
        return -ENOMEM;
    pthread_rwlock_wrlock(&s->lock);
    if ((rc = conn_exec(&s->c, ST_BEGIN_IMMEDIATE)) < 0)
        goto unlock;
    /* Collect first: SQLite does not promise a scan survives deletes under it. */
    if (!(q = conn_stmt(&s->c, ST_COMPACT_FIND))) {
        rc = sql_err(sqlite3_errcode(s->c.db));
        goto fail;
    }
    sqlite3_bind_int64(q, 1, st.compact_rev);
    sqlite3_bind_int64(q, 2, (int64_t)max_rows);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if ((rc = col_buf(&a, q, 0, &v[n].key)) < 0)
            break;
        v[n].main = sqlite3_column_int64(q, 1);
        v[n].sub = sqlite3_column_int64(q, 2);
        n++;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        rc = rc < 0 ? rc : sql_err(rc);
        goto fail;
    }
    for (size_t i = 0; i < 2 * n; i++) {
        const struct victim *x = &v[i / 2];
        if (!(q = conn_stmt(&s->c, i % 2 ? ST_COMPACT_DELETE_IDX : ST_COMPACT_DELETE))) {
            rc = sql_err(sqlite3_errcode(s->c.db));
            goto fail;
        }
        if (i % 2)
            bind_buf(q, 1, x->key);
        sqlite3_bind_int64(q, 2, x->main);
        sqlite3_bind_int64(q, 3, x->sub);
        rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc != SQLITE_DONE) {
            rc = sql_err(rc);
            goto fail;
        }
    }
    if (n < max_rows) {
        st.compact_done = st.compact_rev;
        if ((rc = state_put(&s->c, &st)) < 0)
            goto fail;
    }
    if ((rc = conn_exec(&s->c, ST_COMMIT)) < 0)
        goto fail;
    s->st = st;
    *done = st.compact_done >= st.compact_rev;
    goto unlock;
fail:
    conn_exec(&s->c, ST_ROLLBACK);
unlock:
    pthread_rwlock_unlock(&s->lock);
    arena_free(&a);
    return rc;
}
