/*
 * storage/mvcc compaction: deletes, in short transactions, the rows a
 * Compact request made unreachable.  The request itself (mvcc_apply.c) only
 * stores the compact revision with its batch, so reads below it fail at once
 * and a crash mid-way leaves it scheduled.  Each step walks the key index
 * from where the last one stopped; per key, the revisions compaction drops
 * are a prefix of its list (etcd's keyIndex.compact: every revision whose
 * successor is at or below N, and a tombstone at or below N).  It deletes
 * their rows and publishes an index version without them; readers of older
 * versions keep theirs (and their SQLite snapshots keep the rows).
 */
#include "storage/mvcc_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/errors.h"

/* Keys a step may look at beyond its row budget: a pass over keys with
 * nothing to drop still moves on in bounded steps. */
#define COMPACT_SCAN_PER_ROW 32

struct victim {
    struct keyrec *kr;
    uint32_t drop; /* its first `drop` revisions */
};

bool mvcc_compact_pending(struct mvcc_store *s)
{
    return s->st.compact_done < s->st.compact_rev;
}

/* How many leading revisions of kr compaction at rev drops. */
static uint32_t droppable(const struct keyrec *kr, int64_t rev)
{
    uint32_t n = kr_count(kr), k = 0;
    while (k < n && kr_dead(kr, n, k) <= rev)
        k++;
    return k;
}

/* Where the next step starts: a copy of kr's key (kr NULL: the first key). */
static int next_cursor(const struct keyrec *kr, unsigned char **key, size_t *len)
{
    *key = NULL;
    *len = 0;
    if (!kr)
        return 0;
    if (!(*key = malloc(kr->klen ? kr->klen : 1)))
        return -ENOMEM;
    memcpy(*key, kr->key, kr->klen);
    *len = kr->klen;
    return 0;
}

static void set_cursor(struct mvcc_store *s, unsigned char *key, size_t len)
{
    free(s->ccur);
    s->ccur = key;
    s->ccur_len = len;
}

int mvcc_compact_step(struct mvcc_store *s, size_t max_rows, bool *done)
{
    struct state st = s->st;
    struct victim *v = NULL;
    size_t nv = 0, rows = 0, scanned = 0;
    struct keyrec *kr, *stop = NULL;
    struct ixiter it;
    unsigned char *cur = NULL;
    size_t cur_len = 0;
    int rc;
    *done = st.compact_done >= st.compact_rev;
    if (*done)
        return 0;
    if (s->ix.poisoned)
        return -CAIRN_E_IO;
    if (max_rows == 0)
        max_rows = MVCC_COMPACT_BATCH;
    if (s->ccur_rev != st.compact_rev) {
        /* a new compact revision: a new pass from the first key */
        set_cursor(s, NULL, 0);
        s->ccur_rev = st.compact_rev;
    }
    if (!(v = calloc(max_rows, sizeof(*v))))
        return -ENOMEM;
    /* The victims, before anything changes under the walk. */
    ix_seek(&it, s->ix.root, s->ccur, s->ccur_len);
    while ((kr = ix_next(&it))) {
        if (rows == max_rows || scanned++ == max_rows * COMPACT_SCAN_PER_ROW) {
            stop = kr; /* the next step starts here */
            break;
        }
        uint32_t k = droppable(kr, st.compact_rev);
        if (k == 0)
            continue;
        if (k > max_rows - rows) {
            v[nv++] = (struct victim){kr, (uint32_t)(max_rows - rows)};
            rows = max_rows;
            stop = kr; /* the rest of this key next time */
            break;
        }
        v[nv++] = (struct victim){kr, k};
        rows += k;
    }
    /* copied now: stop may be a victim, retired and freed by the publish */
    if ((rc = next_cursor(stop, &cur, &cur_len)) < 0)
        goto out;
    if (nv == 0 && stop) {
        set_cursor(s, cur, cur_len); /* only keys with nothing to drop so far */
        cur = NULL;
        goto out;
    }
    if ((rc = conn_exec(&s->c, ST_BEGIN_IMMEDIATE)) < 0)
        goto out;
    for (size_t i = 0; i < nv; i++) {
        const struct krev *r = kr_revs(v[i].kr);
        for (uint32_t j = 0; j < v[i].drop; j++) {
            sqlite3_stmt *q = conn_stmt(&s->c, ST_COMPACT_DELETE);
            if (!q) {
                rc = sql_err(sqlite3_errcode(s->c.db));
                goto fail;
            }
            sqlite3_bind_int64(q, 1, rev_id(r[j].main, r[j].sub));
            rc = sqlite3_step(q);
            sqlite3_reset(q);
            if (rc != SQLITE_DONE) {
                rc = sql_err(rc);
                goto fail;
            }
        }
        if ((rc = ix_drop_revs(&s->ix, v[i].kr, v[i].drop)) < 0)
            goto fail;
    }
    if (!stop) {
        st.compact_done = st.compact_rev;
        if ((rc = state_put(&s->c, &st)) < 0)
            goto fail;
    }
    if ((rc = ix_prepare(&s->ix)) < 0 || (rc = conn_exec(&s->c, ST_COMMIT)) < 0)
        goto fail;
    ix_publish(&s->ix, &st);
    s->st = st;
    *done = st.compact_done >= st.compact_rev;
    set_cursor(s, cur, cur_len);
    cur = NULL;
    goto out;
fail:
    conn_exec(&s->c, ST_ROLLBACK);
    ix_abort(&s->ix);
out:
    free(cur);
    free(v);
    return rc;
}
