/*
 * storage/mvcc: opening and closing the store, the schema, the key index,
 * the prepared statement cache, the result allocator, status, sync and
 * defragmentation.  Applying requests is mvcc_apply.c; reads are
 * mvcc_read.c; compaction mvcc_compact.c; snapshots mvcc_snapshot.c.
 *
 * Layout (etcd's: records by revision, an in-memory index by key):
 *   rev(main, sub, key, create_rev, version, lease, value), primary key
 *     (main, sub), on disk: a batch only appends, so it writes a few pages
 *     instead of one random page per put (docs/perf/mvcc.md).
 *   m.idx(key, main, sub, dead, lease), primary key (key, main, sub), in a
 *     shared in-memory database attached to every connection of the store,
 *     rebuilt from rev at open.  `dead` is the main revision from which the
 *     row is no longer what a read sees: the key's next revision, the row's
 *     own for a tombstone, NULL for a live newest row.  So the row a read at
 *     R sees is the one with main <= R < dead, and compaction at N drops
 *     exactly the rows with dead <= N (an index on dead finds them).
 *   state: one row: revision, compact revisions, consistent index and term.
 *   lease(id, ttl, remaining); record(ns, name, value) for membership/auth.
 * The store's rwlock keeps readers out of the index while the writer has a
 * transaction open, so a reader's index and its SQLite snapshot agree.
 */
#include "storage/mvcc_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/errors.h"

/* --- allocator ---------------------------------------------------------------- */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

#define ARENA_CHUNK (64 * 1024)

void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK / 2 ? n : ARENA_CHUNK;
        struct arena_chunk *nc = malloc(sizeof(*nc) + cap);
        if (!nc)
            return NULL;
        nc->used = 0;
        nc->cap = cap;
        if (c && n > ARENA_CHUNK / 2) {
            /* a big one-off block: keep the current chunk as the one to fill */
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            a->head = nc;
        }
        c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void *arena_dup(struct arena *a, const void *p, size_t n)
{
    unsigned char *d = arena_alloc(a, n + 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

void arena_free(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

/* --- statements ----------------------------------------------------------------- */

/* Rows come from the in-memory key index i joined with the revision table r. */
#define KV_COLS "i.key, i.main, r.create_rev, r.version, r.lease, r.value"
#define KV_JOIN "m.idx i CROSS JOIN rev r ON r.main = i.main AND r.sub = i.sub"
#define REV_JOIN "rev r CROSS JOIN m.idx i ON i.key = r.key AND i.main = r.main AND i.sub = r.sub"

static const char *const stmt_sql[ST_COUNT_] = {
    [ST_BEGIN] = "BEGIN",
    [ST_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_STATE_GET] = "SELECT rev, compact_rev, compact_done, consistent_index, consistent_term "
                     "FROM state WHERE id = 1",
    [ST_STATE_SET] = "UPDATE state SET rev = ?1, compact_rev = ?2, compact_done = ?3, "
                     "consistent_index = ?4, consistent_term = ?5 WHERE id = 1",
    [ST_KV_LATEST] = "SELECT " KV_COLS ", i.sub, i.dead FROM " KV_JOIN " WHERE i.key = ?1 "
                     "ORDER BY i.main DESC, i.sub DESC LIMIT 1",
    [ST_KV_LATEST_AT] = "SELECT " KV_COLS ", i.sub, i.dead FROM " KV_JOIN
                        " WHERE i.key = ?1 AND i.main <= ?2 ORDER BY i.main DESC, i.sub DESC LIMIT 1",
    [ST_KV_SET_DEAD] = "UPDATE m.idx SET dead = ?4 WHERE key = ?1 AND main = ?2 AND sub = ?3",
    [ST_KV_INSERT] = "INSERT INTO rev(main, sub, key, create_rev, version, lease, value) "
                     "VALUES (?2, ?3, ?1, ?5, ?6, ?7, ?8)",
    [ST_IDX_INSERT] = "INSERT INTO m.idx(key, main, sub, dead, lease) VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_KV_LIVE_RANGE] = "SELECT " KV_COLS ", i.sub FROM " KV_JOIN " WHERE i.key >= ?1 AND i.key < ?2 "
                         "AND i.dead IS NULL ORDER BY i.key",
    [ST_KV_LIVE_FROM] = "SELECT " KV_COLS ", i.sub FROM " KV_JOIN " WHERE i.key >= ?1 "
                        "AND i.dead IS NULL ORDER BY i.key",
    [ST_LEASE_GET] = "SELECT id, ttl, remaining FROM lease WHERE id = ?1",
    [ST_LEASE_INSERT] = "INSERT INTO lease(id, ttl, remaining) VALUES (?1, ?2, 0)",
    [ST_LEASE_DELETE] = "DELETE FROM lease WHERE id = ?1",
    [ST_LEASE_CHECKPOINT] = "UPDATE lease SET remaining = ?2 WHERE id = ?1",
    [ST_LEASE_KEYS] = "SELECT key FROM m.idx WHERE lease = ?1 AND lease <> 0 AND dead IS NULL "
                      "ORDER BY key",
    [ST_LEASE_LIST] = "SELECT id, ttl, remaining FROM lease ORDER BY id",
    [ST_RECORD_PUT] = "INSERT OR REPLACE INTO record(ns, name, value) VALUES (?1, ?2, ?3)",
    [ST_RECORD_DELETE] = "DELETE FROM record WHERE ns = ?1 AND name = ?2",
    [ST_RECORD_GET] = "SELECT name, value FROM record WHERE ns = ?1 AND name = ?2",
    [ST_RECORD_LIST] = "SELECT name, value FROM record WHERE ns = ?1 ORDER BY name",
    [ST_COMPACT_FIND] = "SELECT key, main, sub FROM m.idx WHERE dead <= ?1 LIMIT ?2",
    [ST_COMPACT_DELETE] = "DELETE FROM rev WHERE main = ?2 AND sub = ?3",
    [ST_COMPACT_DELETE_IDX] = "DELETE FROM m.idx WHERE key = ?1 AND main = ?2 AND sub = ?3",
    [ST_HIST_KEY] = "SELECT " KV_COLS ", i.sub FROM " KV_JOIN " WHERE i.key = ?1 AND i.main >= ?2 "
                    "AND i.main <= ?3 AND (i.main, i.sub) > (?4, ?5) AND (i.dead IS NULL OR i.dead > ?6) "
                    "ORDER BY i.main, i.sub LIMIT ?7",
    [ST_HIST_RANGE] = "SELECT " KV_COLS ", i.sub FROM " REV_JOIN " WHERE r.key >= ?1 AND r.key < ?8 "
                      "AND r.main >= ?2 AND r.main <= ?3 AND (r.main, r.sub) > (?4, ?5) "
                      "AND (i.dead IS NULL OR i.dead > ?6) ORDER BY r.main, r.sub LIMIT ?7",
    [ST_HIST_FROM] = "SELECT " KV_COLS ", i.sub FROM " REV_JOIN " WHERE r.key >= ?1 "
                     "AND r.main >= ?2 AND r.main <= ?3 AND (r.main, r.sub) > (?4, ?5) "
                     "AND (i.dead IS NULL OR i.dead > ?6) ORDER BY r.main, r.sub LIMIT ?7",
    [ST_HASH] = "SELECT " KV_COLS ", i.sub FROM " REV_JOIN " WHERE r.main <= ?1 "
                "AND (i.dead IS NULL OR i.dead > ?2) ORDER BY r.main, r.sub",
    [ST_PAGES] = "SELECT (SELECT page_count FROM pragma_page_count), "
                 "(SELECT freelist_count FROM pragma_freelist_count), "
                 "(SELECT page_size FROM pragma_page_size)",
};

static const char schema_sql[] =
    "CREATE TABLE state ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " rev INTEGER NOT NULL, compact_rev INTEGER NOT NULL, compact_done INTEGER NOT NULL,"
    " consistent_index INTEGER NOT NULL, consistent_term INTEGER NOT NULL);"
    "INSERT INTO state VALUES (1, 1, 0, 0, 0, 0);"
    /* one row per key revision, in revision order: a batch appends */
    "CREATE TABLE rev ("
    " main INTEGER NOT NULL, sub INTEGER NOT NULL, key BLOB NOT NULL,"
    " create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL,"
    " value BLOB,"
    " PRIMARY KEY (main, sub)) WITHOUT ROWID;"
    "CREATE TABLE lease (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL,"
    " remaining INTEGER NOT NULL);"
    "CREATE TABLE record (ns BLOB NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY (ns, name)) WITHOUT ROWID;";

/* The key index lives in a shared in-memory database attached as "m" to
 * every connection of the store, rebuilt from rev at open. */
static const char index_sql[] =
    "CREATE TABLE m.idx (key BLOB NOT NULL, main INTEGER NOT NULL, sub INTEGER NOT NULL,"
    " dead INTEGER, lease INTEGER NOT NULL, PRIMARY KEY (key, main, sub)) WITHOUT ROWID;"
    /* compaction finds its rows */
    "CREATE INDEX m.idx_dead ON idx(dead) WHERE dead IS NOT NULL;"
    /* the keys attached to a lease: live rows with a lease only */
    "CREATE INDEX m.idx_lease ON idx(lease, key) WHERE lease <> 0 AND dead IS NULL;"
    /* dead: the next revision of the key, or the row's own for a tombstone */
    "INSERT INTO m.idx (key, main, sub, dead, lease)"
    " SELECT key, main, sub, CASE WHEN version = 0 THEN main"
    "  ELSE lead(main) OVER (PARTITION BY key ORDER BY main, sub) END, lease FROM rev;";

int sql_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return -CAIRN_E_CORRUPT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_CANTOPEN:
        return -ENOENT;
    default:
        return -CAIRN_E_IO;
    }
}

sqlite3_stmt *conn_stmt(struct conn *c, enum stmt_id id)
{
    sqlite3_stmt *st = c->st[id];
    if (!st) {
        if (sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
            SQLITE_OK)
            return NULL;
        c->st[id] = st;
        return st;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

int conn_exec(struct conn *c, enum stmt_id id)
{
    sqlite3_stmt *st = conn_stmt(c, id);
    if (!st)
        return sql_err(sqlite3_errcode(c->db));
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sql_err(rc);
}

static void fmt_err(char *err, size_t errlen, const char *fmt, const char *path, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, path, why);
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    return sql_err(sqlite3_exec(db, sql, NULL, NULL, NULL));
}

int conn_open(struct conn *c, const char *path, bool readonly, const struct mvcc_options *o,
              const char *index_uri, char *err, size_t errlen)
{
    int cache_mb = o && o->cache_mb > 0 ? o->cache_mb : 64;
    /* Reads straight from the mapping, no copy per page: twice the point
     * reads (docs/perf/mvcc.md).  SQLite caps it at its compile-time
     * maximum (2 GiB on Debian). */
    long long mmap_mb = !o || o->mmap_mb == 0 ? 2048 : o->mmap_mb < 0 ? 0 : o->mmap_mb;
    memset(c, 0, sizeof(*c));
    int rc, flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
    flags |= readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    c->path = strdup(path);
    if (!c->path)
        return -ENOMEM;
    rc = sqlite3_open_v2(path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        fmt_err(err, errlen, "%s: cannot open: %s", path,
                c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        rc = sql_err(rc);
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 0);
    /* A checkpoint or WAL recovery can hold a lock for a moment. */
    sqlite3_busy_timeout(c->db, 10000);
    char sql[128];
    snprintf(sql, sizeof(sql), "PRAGMA main.cache_size = -%d; PRAGMA main.mmap_size = %lld", cache_mb * 1024,
             mmap_mb * 1048576);
    if ((rc = exec_sql(c->db, sql)) < 0)
        goto sqlfail;
    if (index_uri) {
        sqlite3_stmt *at;
        if ((rc = sqlite3_prepare_v2(c->db, "ATTACH DATABASE ?1 AS m", -1, &at, NULL)) != SQLITE_OK) {
            rc = sql_err(rc);
            goto sqlfail;
        }
        sqlite3_bind_text(at, 1, index_uri, -1, SQLITE_STATIC);
        rc = sqlite3_step(at);
        sqlite3_finalize(at);
        if (rc != SQLITE_DONE) {
            rc = sql_err(rc);
            goto sqlfail;
        }
        /* Readers do not lock the shared index: they see the writer's rows as
         * it adds them, and keep to revisions of their own snapshot. */
        if (readonly && (rc = exec_sql(c->db, "PRAGMA read_uncommitted = 1")) < 0)
            goto sqlfail;
    }
    return 0;
sqlfail:
    fmt_err(err, errlen, "%s: %s", path, sqlite3_errmsg(c->db));
fail:
    conn_close(c);
    return rc;
}

void conn_close(struct conn *c)
{
    for (int i = 0; i < ST_COUNT_; i++)
        sqlite3_finalize(c->st[i]);
    for (int i = 0; i < RANGE_SHAPES; i++)
        sqlite3_finalize(c->range_st[i]);
    for (int i = 0; i < 3; i++)
        sqlite3_finalize(c->count_st[i]);
    if (c->db)
        sqlite3_close(c->db);
    free(c->path);
    memset(c, 0, sizeof(*c));
}

int state_get(struct conn *c, struct state *st)
{
    sqlite3_stmt *s = conn_stmt(c, ST_STATE_GET);
    if (!s)
        return sql_err(sqlite3_errcode(c->db));
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        return rc == SQLITE_DONE ? -CAIRN_E_CORRUPT : sql_err(rc);
    }
    st->rev = sqlite3_column_int64(s, 0);
    st->compact_rev = sqlite3_column_int64(s, 1);
    st->compact_done = sqlite3_column_int64(s, 2);
    st->ci = (uint64_t)sqlite3_column_int64(s, 3);
    st->term = (uint64_t)sqlite3_column_int64(s, 4);
    sqlite3_reset(s);
    return 0;
}

int state_put(struct conn *c, const struct state *st)
{
    sqlite3_stmt *q = conn_stmt(c, ST_STATE_SET);
    if (!q)
        return sql_err(sqlite3_errcode(c->db));
    sqlite3_bind_int64(q, 1, st->rev);
    sqlite3_bind_int64(q, 2, st->compact_rev);
    sqlite3_bind_int64(q, 3, st->compact_done);
    sqlite3_bind_int64(q, 4, (int64_t)st->ci);
    sqlite3_bind_int64(q, 5, (int64_t)st->term);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : sql_err(rc);
}

/* --- open ------------------------------------------------------------------------- */

static int pragma_int(sqlite3 *db, const char *sql, int64_t *v)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Create the schema in an empty database, or check the one there. */
int schema_init(struct conn *c, bool create, char *err, size_t errlen)
{
    int64_t app = 0, ver = 0, tables = 0;
    int rc = pragma_int(c->db, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = pragma_int(c->db, "PRAGMA user_version", &ver);
    if (rc == SQLITE_OK)
        rc = pragma_int(c->db, "SELECT count(*) FROM sqlite_schema", &tables);
    if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT) {
            fmt_err(err, errlen, "%s: not a Cairn MVCC database or corrupt: %s", c->path,
                    sqlite3_errmsg(c->db));
            return -CAIRN_E_CORRUPT;
        }
        fmt_err(err, errlen, "%s: %s", c->path, sqlite3_errmsg(c->db));
        return sql_err(rc);
    }
    if (app == 0 && ver == 0 && tables == 0 && !create) {
        fmt_err(err, errlen, "%s: %s", c->path, "empty: not a Cairn MVCC database");
        return -CAIRN_E_SCHEMA;
    }
    if (app == 0 && ver == 0 && tables == 0) {
        char sql[sizeof(schema_sql) + 256];
        /* auto_vacuum must be chosen before the first table exists. */
        if ((rc = exec_sql(c->db, "PRAGMA main.auto_vacuum = INCREMENTAL")) < 0 ||
            (rc = exec_sql(c->db, "PRAGMA main.journal_mode = WAL")) < 0)
            goto sqlfail;
        snprintf(sql, sizeof(sql),
                 "BEGIN IMMEDIATE; %s PRAGMA application_id = %d; PRAGMA user_version = %d; COMMIT",
                 schema_sql, MVCC_APP_ID, MVCC_SCHEMA_VERSION);
        if ((rc = exec_sql(c->db, sql)) < 0) {
            exec_sql(c->db, "ROLLBACK");
            goto sqlfail;
        }
        return 0;
    }
    if (app != MVCC_APP_ID) {
        char why[96];
        snprintf(why, sizeof(why), "application_id 0x%llx, expected 0x%x", (unsigned long long)app,
                 MVCC_APP_ID);
        fmt_err(err, errlen, "%s: not a Cairn MVCC database (%s)", c->path, why);
        return -CAIRN_E_SCHEMA;
    }
    if (ver != MVCC_SCHEMA_VERSION) {
        char why[96];
        snprintf(why, sizeof(why), "schema version %lld, this Cairn knows %d", (long long)ver,
                 MVCC_SCHEMA_VERSION);
        fmt_err(err, errlen, "%s: unsupported MVCC schema (%s)", c->path, why);
        return -CAIRN_E_SCHEMA;
    }
    return 0;
sqlfail:
    fmt_err(err, errlen, "%s: creating the schema: %s", c->path, sqlite3_errmsg(c->db));
    return rc;
}

/* Build the in-memory key index from the revision table (etcd rebuilds its
 * treeIndex the same way at start). */
static int index_build(struct mvcc_store *s)
{
    int rc = exec_sql(s->c.db, "BEGIN IMMEDIATE");
    if (rc < 0)
        return rc;
    if ((rc = exec_sql(s->c.db, index_sql)) < 0)
        goto fail;
    return exec_sql(s->c.db, "COMMIT");
fail:
    exec_sql(s->c.db, "ROLLBACK");
    return rc;
}

int mvcc_open(const char *dir, const struct mvcc_options *opts, struct mvcc_store **out,
              char *err, size_t errlen)
{
    static _Atomic unsigned long stores;
    int rc;
    char *path = NULL;
    struct mvcc_store *s = calloc(1, sizeof(*s));
    if (err && errlen)
        err[0] = 0;
    if (!s)
        return -ENOMEM;
    if (opts)
        s->opts = *opts;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        rc = -errno;
        fmt_err(err, errlen, "%s: cannot create directory: %s", dir, strerror(-rc));
        goto fail;
    }
    pthread_rwlockattr_t la;
    pthread_rwlockattr_init(&la);
    /* the applier must not starve behind a stream of readers */
    pthread_rwlockattr_setkind_np(&la, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    rc = -pthread_rwlock_init(&s->lock, &la);
    pthread_rwlockattr_destroy(&la);
    if (rc < 0)
        goto fail;
    s->lock_init = true;
    snprintf(s->index_uri, sizeof(s->index_uri), "file:cairn-mvcc-index-%ld-%lu?mode=memory&cache=shared",
             (long)getpid(), ++stores);
    if (!(s->dir = strdup(dir)) || asprintf(&path, "%s/%s", dir, MVCC_DB_NAME) < 0) {
        path = NULL;
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = conn_open(&s->c, path, false, &s->opts, s->index_uri, err, errlen)) < 0)
        goto fail;
    if ((rc = schema_init(&s->c, true, err, errlen)) < 0)
        goto fail;
    if ((rc = exec_sql(s->c.db, "PRAGMA main.journal_mode = WAL")) < 0 ||
        (rc = exec_sql(s->c.db, "PRAGMA main.synchronous = NORMAL")) < 0 ||
        /* 8 MiB of WAL per checkpoint: as fast as bigger ones with appends
         * only, and the batch that runs it waits ~15 ms, not ~50
         * (docs/perf/mvcc.md) */
        (rc = exec_sql(s->c.db, "PRAGMA wal_autocheckpoint = 2000")) < 0) {
        fmt_err(err, errlen, "%s: %s", path, sqlite3_errmsg(s->c.db));
        goto fail;
    }
    if ((rc = state_get(&s->c, &s->st)) < 0) {
        fmt_err(err, errlen, "%s: reading the state row: %s", path,
                rc == -CAIRN_E_CORRUPT ? "missing" : sqlite3_errmsg(s->c.db));
        goto fail;
    }
    if ((rc = index_build(s)) < 0) {
        fmt_err(err, errlen, "%s: building the key index: %s", path, sqlite3_errmsg(s->c.db));
        goto fail;
    }
    if (s->opts.finish_compaction) {
        bool done = false;
        while (!done)
            if ((rc = mvcc_compact_step(s, 0, &done)) < 0) {
                fmt_err(err, errlen, "%s: finishing compaction: %s", path, cairn_strerror(rc));
                goto fail;
            }
    }
    free(path);
    *out = s;
    return 0;
fail:
    free(path);
    mvcc_close(s);
    return rc;
}

void mvcc_close(struct mvcc_store *s)
{
    if (!s)
        return;
    conn_close(&s->c);
    if (s->lock_init)
        pthread_rwlock_destroy(&s->lock);
    free(s->dir);
    free(s);
}

const char *mvcc_path(const struct mvcc_store *s)
{
    return s->c.path;
}

int mvcc_sync(struct mvcc_store *s)
{
    /* synchronous=NORMAL syncs the WAL before a checkpoint copies it back */
    int rc = sqlite3_wal_checkpoint_v2(s->c.db, NULL, SQLITE_CHECKPOINT_FULL, NULL, NULL);
    return sql_err(rc);
}

/* --- status and size ---------------------------------------------------------- */

static int db_pages(struct conn *c, struct mvcc_status *st)
{
    sqlite3_stmt *p = conn_stmt(c, ST_PAGES);
    if (!p)
        return sql_err(sqlite3_errcode(c->db));
    int rc = sqlite3_step(p);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(p);
        return sql_err(rc);
    }
    int64_t pages = sqlite3_column_int64(p, 0), free_pages = sqlite3_column_int64(p, 1);
    int64_t psize = sqlite3_column_int64(p, 2);
    st->db_size = pages * psize;
    st->db_size_in_use = (pages - free_pages) * psize;
    sqlite3_reset(p);
    return 0;
}

int status_read(struct conn *c, struct mvcc_status *st)
{
    struct state s;
    int rc = state_get(c, &s);
    if (rc < 0)
        return rc;
    memset(st, 0, sizeof(*st));
    st->revision = s.rev;
    st->compact_revision = s.compact_rev;
    st->compact_done = s.compact_done;
    st->consistent_index = s.ci;
    st->consistent_term = s.term;
    return db_pages(c, st);
}

int mvcc_store_status(struct mvcc_store *s, struct mvcc_status *st)
{
    return status_read(&s->c, st);
}

int mvcc_defrag_step(struct mvcc_store *s, int64_t max_pages, int64_t *remaining)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA incremental_vacuum(%lld)",
             (long long)(max_pages > 0 ? max_pages : 1));
    int rc = exec_sql(s->c.db, sql);
    if (rc == 0 && remaining) {
        int64_t free_pages = 0;
        if (pragma_int(s->c.db, "PRAGMA freelist_count", &free_pages) != SQLITE_OK)
            rc = sql_err(sqlite3_errcode(s->c.db));
        *remaining = free_pages;
    }
    return rc;
}

int mvcc_vacuum(struct mvcc_store *s)
{
    return exec_sql(s->c.db, "VACUUM");
}
