/*
 * storage/mvcc: opening and closing the store, the schema, loading the key
 * index, the prepared statement cache, the result allocator, status, sync
 * and defragmentation.  Applying requests is mvcc_apply.c; reads are
 * mvcc_read.c; compaction mvcc_compact.c; snapshots mvcc_snapshot.c; the
 * key index itself mvcc_index.c.
 *
 * Layout (etcd's: records by revision, an in-memory index by key):
 *   rev(main, sub, key, create_rev, version, lease, value), primary key
 *     (main, sub), on disk: a batch only appends, so it writes a few pages
 *     instead of one random page per put (docs/perf/mvcc.md).
 *   state: one row: revision, compact revisions, consistent index and term.
 *   lease(id, ttl, remaining); record(ns, name, value) for membership/auth.
 *   In memory (mvcc_index.h): every key with its revisions (main, sub,
 *     create, version, lease), and the (lease, key) pairs of live keys,
 *     rebuilt from rev at open.  The writer publishes a version of it after
 *     each commit; a reader pairs a version with a SQLite read transaction
 *     that sees the same batch (mvcc_read.c), so neither waits for the other.
 */
#include "storage/mvcc_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/deadline.h"
#include "base/errors.h"

/* --- statements ----------------------------------------------------------------- */

static const char *const stmt_sql[ST_COUNT_] = {
    [ST_BEGIN] = "BEGIN",
    [ST_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_STATE_GET] = "SELECT rev, compact_rev, compact_done, consistent_index, consistent_term "
                     "FROM state WHERE id = 1",
    [ST_STATE_SET] = "UPDATE state SET rev = ?1, compact_rev = ?2, compact_done = ?3, "
                     "consistent_index = ?4, consistent_term = ?5 WHERE id = 1",
    /* ST_REV_INSERT* are made by rev_insert_sql */
    [ST_REV_VALUE] = "SELECT value FROM rev WHERE id = ?1",
    [ST_REV_ALL] = "SELECT key, main, sub, create_rev, version, lease FROM rev ORDER BY id",
    [ST_LEASE_GET] = "SELECT id, ttl, remaining FROM lease WHERE id = ?1",
    [ST_LEASE_INSERT] = "INSERT INTO lease(id, ttl, remaining) VALUES (?1, ?2, 0)",
    [ST_LEASE_DELETE] = "DELETE FROM lease WHERE id = ?1",
    [ST_LEASE_CHECKPOINT] = "UPDATE lease SET remaining = ?2 WHERE id = ?1",
    [ST_LEASE_LIST] = "SELECT id, ttl, remaining FROM lease ORDER BY id",
    [ST_RECORD_PUT] = "INSERT OR REPLACE INTO record(ns, name, value) VALUES (?1, ?2, ?3)",
    [ST_RECORD_DELETE] = "DELETE FROM record WHERE ns = ?1 AND name = ?2",
    [ST_RECORD_GET] = "SELECT name, value FROM record WHERE ns = ?1 AND name = ?2",
    [ST_RECORD_LIST] = "SELECT name, value FROM record WHERE ns = ?1 ORDER BY name",
    [ST_COMPACT_DELETE] = "DELETE FROM rev WHERE id = ?1",
    /* rows come as (key, main, create_rev, version, lease, value, sub); ids
     * (rev_id) from ?2 to ?3 and after ?4 */
    [ST_HIST_RANGE] = "SELECT key, main, create_rev, version, lease, value, sub FROM rev "
                      "WHERE key >= ?1 AND key < ?5 AND id >= ?2 AND id <= ?3 AND id > ?4 ORDER BY id",
    [ST_HIST_FROM] = "SELECT key, main, create_rev, version, lease, value, sub FROM rev "
                     "WHERE key >= ?1 AND id >= ?2 AND id <= ?3 AND id > ?4 ORDER BY id",
    /* ids up to ?1 */
    [ST_HASH] = "SELECT key, main, create_rev, version, lease, value, sub FROM rev "
                "WHERE id <= ?1 ORDER BY id",
    /* PRAGMA statements, not the pragma_* table functions: those prepare a
     * statement of their own on every run (three per status, after every
     * apply batch: 26k instructions a batch) */
    [ST_PAGE_COUNT] = "PRAGMA main.page_count",
    [ST_FREELIST_COUNT] = "PRAGMA main.freelist_count",
    [ST_PAGE_SIZE] = "PRAGMA main.page_size",
};

/* one row per key revision, in revision order (id: rev_id(main, sub)): a
 * batch appends; main and sub are there for SQL, computed, not stored */
#define REV_TABLE_SQL(name)                                                                    \
    "CREATE TABLE " #name " ("                                                                 \
    " id INTEGER PRIMARY KEY, key BLOB NOT NULL,"                                              \
    " create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL,"          \
    " value BLOB,"                                                                             \
    " main INTEGER GENERATED ALWAYS AS (id >> 20) VIRTUAL,"                                    \
    " sub INTEGER GENERATED ALWAYS AS (id & 1048575) VIRTUAL)"

static const char schema_sql[] =
    "CREATE TABLE state ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " rev INTEGER NOT NULL, compact_rev INTEGER NOT NULL, compact_done INTEGER NOT NULL,"
    " consistent_index INTEGER NOT NULL, consistent_term INTEGER NOT NULL);"
    "INSERT INTO state VALUES (1, 1, 0, 0, 0, 0);"
    REV_TABLE_SQL(rev) ";"
    "CREATE TABLE lease (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL,"
    " remaining INTEGER NOT NULL);"
    "CREATE TABLE record (ns BLOB NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY (ns, name)) WITHOUT ROWID;";

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

/* INSERT INTO rev of n rows, parameters (id, key, create_rev, version,
 * lease, value) per row. */
static char *rev_insert_sql(int n)
{
    static const char head[] = "INSERT INTO rev(id, key, create_rev, version, lease, value) VALUES ";
    static const char row[] = "(?,?,?,?,?,?)";
    char *sql = malloc(sizeof(head) + (size_t)n * sizeof(row));
    if (sql) {
        size_t at = sizeof(head) - 1;
        memcpy(sql, head, at);
        for (int i = 0; i < n; i++) {
            if (i)
                sql[at++] = ',';
            memcpy(sql + at, row, sizeof(row) - 1);
            at += sizeof(row) - 1;
        }
        sql[at] = 0;
    }
    return sql;
}

sqlite3_stmt *conn_stmt(struct conn *c, enum stmt_id id)
{
    sqlite3_stmt *st = c->st[id];
    if (!st) {
        static const int rows[ST_COUNT_] = {[ST_REV_INSERT] = 1, [ST_REV_INSERT4] = 4,
                                            [ST_REV_INSERT16] = 16, [ST_REV_INSERT64] = 64};
        char *made = rows[id] ? rev_insert_sql(rows[id]) : NULL;
        const char *sql = rows[id] ? made : stmt_sql[id];
        int rc = sql ? sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL)
                     : SQLITE_NOMEM;
        free(made);
        if (rc != SQLITE_OK)
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

/* Reads straight from the mapping, no copy per page: twice the point
 * reads (docs/perf/mvcc.md).  SQLite caps it at its compile-time maximum
 * (2 GiB on Debian). */
static long long mmap_mb_of(const struct mvcc_options *o)
{
    return !o || o->mmap_mb == 0 ? 2048 : o->mmap_mb < 0 ? 0 : o->mmap_mb;
}

int conn_open(struct conn *c, const char *path, bool readonly, const struct mvcc_options *o,
              char *err, size_t errlen)
{
    int cache_mb = o && o->cache_mb > 0 ? o->cache_mb : 64;
    long long mmap_mb = mmap_mb_of(o);
    memset(c, 0, sizeof(*c));
    int rc, flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
    flags |= readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    c->path = strdup(path);
    if (!c->path)
        return -ENOMEM;
    /* "unix-excl": the store belongs to this process alone.  It locks the
     * file once against other processes and keeps the WAL index in this
     * process's memory, so a read transaction takes no fcntl() lock (two
     * system calls per point read before; docs/performance.md). */
    rc = sqlite3_open_v2(path, &c->db, flags, "unix-excl");
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

/* The first n columns of sql's first row, as integers. */
static int query_ints(sqlite3 *db, const char *sql, int64_t *v, int n)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        for (int i = 0; i < n; i++)
            v[i] = sqlite3_column_int64(st, i);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *v)
{
    return query_ints(db, sql, v, 1);
}

/* An upgrade's reports to mvcc_options' on_upgrade (struct mvcc_upgrade). */
struct upgrade_report {
    const struct mvcc_options *o;
    struct mvcc_upgrade u;
    int64_t t0, last;
};

static void upgrade_tell(struct upgrade_report *r, enum mvcc_upgrade_phase phase)
{
    r->last = mono_now_ns();
    r->u.elapsed_ns = r->last - r->t0;
    r->u.phase = phase;
    if (r->o && r->o->on_upgrade)
        r->o->on_upgrade(r->o->on_upgrade_arg, &r->u);
}

/* SQLite's progress handler while the rows are copied: a report a second. */
static int upgrade_progress(void *arg)
{
    struct upgrade_report *r = arg;
    if (mono_now_ns() - r->last >= 1000000000)
        upgrade_tell(r, MVCC_UPGRADE_RUNNING);
    return 0; /* go on */
}

/*
 * Schema 2 to 3, the copy: rev was a WITHOUT ROWID table keyed by (main,
 * sub); its rows move to the rowid table, in one transaction, so a crash
 * leaves either schema whole.  Rows that schema 3 cannot number are refused
 * before anything changes.  On failure the transaction is rolled back and
 * err says why.
 */
static int upgrade_copy(struct conn *c, struct upgrade_report *rep, char *err, size_t errlen)
{
    int64_t rows[2] = {0, 0}; /* all, and those schema 3 cannot number */
    char sql[1024];
    int rc = exec_sql(c->db, "BEGIN IMMEDIATE");
    if (rc < 0)
        goto sqlfail;
    snprintf(sql, sizeof sql,
             "SELECT count(*), count(*) FILTER (WHERE sub < 0 OR sub >= %d OR main < 0 OR main > %lld) FROM rev",
             MVCC_MAX_CHANGES, (long long)MVCC_MAX_REV);
    if ((rc = query_ints(c->db, sql, rows, 2)) != SQLITE_OK) {
        rc = sql_err(rc);
        goto sqlfail;
    }
    if (rows[1]) {
        exec_sql(c->db, "ROLLBACK");
        if (err && errlen)
            snprintf(err, errlen,
                     "%s: cannot upgrade the MVCC schema from version 2: %lld rows lie past revision %lld or past "
                     "the %d changes of one revision, which version %d cannot store; the file is left as it was",
                     c->path, (long long)rows[1], (long long)MVCC_MAX_REV, MVCC_MAX_CHANGES, MVCC_SCHEMA_VERSION);
        return -CAIRN_E_SCHEMA;
    }
    rep->u.rows = rows[0];
    upgrade_tell(rep, MVCC_UPGRADE_BEGIN);
    if (rep->o && rep->o->on_upgrade)
        sqlite3_progress_handler(c->db, 10000, upgrade_progress, rep);
    snprintf(sql, sizeof sql,
             "%s; INSERT INTO rev_v3(id, key, create_rev, version, lease, value)"
             " SELECT (main << %d) | sub, key, create_rev, version, lease, value FROM rev ORDER BY main, sub;"
             " DROP TABLE rev; ALTER TABLE rev_v3 RENAME TO rev; PRAGMA user_version = %d; COMMIT",
             REV_TABLE_SQL(rev_v3), MVCC_SUB_BITS, MVCC_SCHEMA_VERSION);
    if ((rc = exec_sql(c->db, sql)) == 0)
        return 0;
sqlfail:
    fmt_err(err, errlen, "%s: upgrading the MVCC schema from version 2: %s", c->path, sqlite3_errmsg(c->db));
    sqlite3_progress_handler(c->db, 0, NULL, NULL); /* no report after a failure */
    exec_sql(c->db, "ROLLBACK");
    return rc;
}

/*
 * Schema 2 to 3: the copy, then the pages freed are given back to the file
 * system before the store opens.  The caller hears of it through
 * mvcc_options' on_upgrade.
 *
 * Debian builds SQLite with secure_delete on: dropping the old table would
 * write zeros over each of its pages first (2.9 of 10 s for 1M keys,
 * docs/storage-mvcc.md).  The vacuum writes over those pages or cuts them
 * off the file anyway, so the copy runs with it off.
 */
static int schema_upgrade_v2(struct conn *c, const struct mvcc_options *o, char *err, size_t errlen)
{
    struct upgrade_report rep = {.o = o, .u = {.path = c->path, .from = MVCC_SCHEMA_V2, .to = MVCC_SCHEMA_VERSION},
                                 .t0 = mono_now_ns()};
    int64_t secure = 0;
    pragma_int(c->db, "PRAGMA main.secure_delete", &secure);
    exec_sql(c->db, "PRAGMA main.secure_delete = 0");
    int rc = upgrade_copy(c, &rep, err, errlen);
    exec_sql(c->db, secure ? "PRAGMA main.secure_delete = 1" : "PRAGMA main.secure_delete = 0");
    if (rc == 0 && (rc = exec_sql(c->db, "PRAGMA main.incremental_vacuum")) < 0) /* reported on: seconds for 1M keys */
        fmt_err(err, errlen, "%s: upgraded the MVCC schema from version 2, then: %s", c->path, sqlite3_errmsg(c->db));
    sqlite3_progress_handler(c->db, 0, NULL, NULL);
    if (rc == 0)
        upgrade_tell(&rep, MVCC_UPGRADE_DONE);
    return rc;
}

/* Create the schema in an empty database, or check the one there. */
int schema_init(struct conn *c, bool create, const struct mvcc_options *o, char *err, size_t errlen)
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
    if (ver == MVCC_SCHEMA_V2 && create)
        return schema_upgrade_v2(c, o, err, errlen);
    /* a version 2 file read as it is (a snapshot checked or restored) is
     * upgraded when a store opens it */
    if (ver != MVCC_SCHEMA_VERSION && !(ver == MVCC_SCHEMA_V2 && !create)) {
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

/* Build the in-memory key index from the revision table, one pass in
 * revision order (etcd rebuilds its treeIndex the same way at start). */
static int index_build(struct mvcc_store *s)
{
    struct ixbuild *b = ix_build_new();
    sqlite3_stmt *q = conn_stmt(&s->c, ST_REV_ALL);
    int rc;
    if (!b)
        return -ENOMEM;
    if (!q) {
        ix_build_abort(b);
        return sql_err(sqlite3_errcode(s->c.db));
    }
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct krev r = {
            .main = sqlite3_column_int64(q, 1),
            .sub = (uint32_t)sqlite3_column_int64(q, 2),
            .create = sqlite3_column_int64(q, 3),
            .version = sqlite3_column_int64(q, 4),
            .lease = sqlite3_column_int64(q, 5),
        };
        const void *key = sqlite3_column_blob(q, 0);
        if ((rc = ix_build_row(b, key, (size_t)sqlite3_column_bytes(q, 0), &r)) < 0)
            break;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        ix_build_abort(b);
        return rc < 0 ? rc : sql_err(rc);
    }
    return ix_build_finish(b, &s->ix, &s->st);
}

/*
 * After each of the writer's commits.  A checkpoint of MVCC_WAL_FRAMES_DUE
 * pages holds the committing thread for ~15 ms (~50 for bigger ones), so
 * with checkpoint_elsewhere the caller's checkpointer runs it, and this
 * one only past the backstop, should that thread fall behind.
 */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct mvcc_store *s = arg;
    s->wal_frames = frames;
    if (frames >= (s->opts.checkpoint_elsewhere ? MVCC_WAL_FRAMES_MAX : MVCC_WAL_FRAMES_DUE))
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL); /* as SQLite's own: the result can wait for the next */
    return SQLITE_OK;
}

int mvcc_open(const char *dir, const struct mvcc_options *opts, struct mvcc_store **out,
              char *err, size_t errlen)
{
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
    if (!(s->dir = strdup(dir)) || asprintf(&path, "%s/%s", dir, MVCC_DB_NAME) < 0) {
        path = NULL;
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = conn_open(&s->c, path, false, &s->opts, err, errlen)) < 0)
        goto fail;
    if ((rc = schema_init(&s->c, true, &s->opts, err, errlen)) < 0)
        goto fail;
    if ((rc = exec_sql(s->c.db, "PRAGMA main.journal_mode = WAL")) < 0 ||
        (rc = exec_sql(s->c.db, "PRAGMA main.synchronous = NORMAL")) < 0) {
        fmt_err(err, errlen, "%s: %s", path, sqlite3_errmsg(s->c.db));
        goto fail;
    }
    sqlite3_wal_hook(s->c.db, wal_hook, s); /* in place of SQLite's automatic checkpoints */
    if ((rc = state_get(&s->c, &s->st)) < 0) {
        fmt_err(err, errlen, "%s: reading the state row: %s", path,
                rc == -CAIRN_E_CORRUPT ? "missing" : sqlite3_errmsg(s->c.db));
        goto fail;
    }
    if ((rc = index_build(s)) < 0) {
        fmt_err(err, errlen, "%s: building the key index: %s", path,
                rc == -ENOMEM ? strerror(ENOMEM) : sqlite3_errmsg(s->c.db));
        goto fail;
    }
    /* The build read every page of the store through the mapping, and every
     * page read stays in the process's RSS (317 MB of 449 with 1M keys)
     * though nothing needs it resident.  Changing mmap_size makes SQLite
     * unmap and map afresh, so only what later reads touch is resident. */
    if (mmap_mb_of(&s->opts) > 0) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA main.mmap_size = %lld", mmap_mb_of(&s->opts) * 1048576);
        if ((rc = exec_sql(s->c.db, "PRAGMA main.mmap_size = 0")) < 0 || (rc = exec_sql(s->c.db, sql)) < 0) {
            fmt_err(err, errlen, "%s: mapping the store again: %s", path, sqlite3_errmsg(s->c.db));
            goto fail;
        }
    }
    if ((rc = vcache_new(s->opts.value_cache_bytes, &s->vc)) < 0) {
        fmt_err(err, errlen, "%s: the value cache: %s", path, strerror(-rc));
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
    ix_destroy(&s->ix);
    vcache_free(s->vc);
    free(s->pend.v);
    conn_close(&s->c);
    free(s->ccur);
    free(s->dir);
    free(s);
}

const char *mvcc_path(const struct mvcc_store *s)
{
    return s->c.path;
}

struct mvcc_options mvcc_options_of(const struct mvcc_store *s)
{
    return s->opts;
}

/* A passive checkpoint on connection db: 1 at the WAL's end, 0 held back (readers, or another connection's checkpoint). */
static int checkpoint(sqlite3 *db)
{
    int log = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
    if (rc == SQLITE_BUSY)
        return 0;
    if (rc != SQLITE_OK)
        return sql_err(rc);
    return copied >= log; /* SQLite truncates the file to the store's size when it gets there */
}

/*
 * The committed batches are all in the WAL file: syncing it makes them
 * durable.  A FULL checkpoint would also do, but it waits for every reader
 * still on an older snapshot; a passive one copies what it can (syncing what
 * it copies) and the WAL sync does the rest.  Any connection's handle on the
 * WAL file will do: fdatasync writes out the file's pages, whoever wrote them.
 */
static int sync_wal(sqlite3 *db)
{
    int rc = checkpoint(db);
    if (rc < 0)
        return rc;
    sqlite3_file *wal = NULL;
    rc = sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc != SQLITE_OK)
        return sql_err(rc);
    if (!wal || !wal->pMethods)
        return -CAIRN_E_IO; /* not reached: every connection here has read, which opens it */
    return sql_err(wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL));
}

int mvcc_checkpoint(struct mvcc_store *s)
{
    return checkpoint(s->c.db);
}

int mvcc_sync(struct mvcc_store *s)
{
    return sync_wal(s->c.db);
}

int mvcc_wal_frames(const struct mvcc_store *s)
{
    return s->wal_frames;
}

struct mvcc_checkpointer {
    struct conn c;
};

int mvcc_checkpointer_open(struct mvcc_store *s, struct mvcc_checkpointer **out)
{
    struct mvcc_checkpointer *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    struct mvcc_options o = s->opts;
    o.cache_mb = 1; /* a checkpoint copies from the WAL to the file: no page cache to speak of */
    int rc = conn_open(&k->c, s->c.path, false, &o, NULL, 0);
    /* A read opens the connection's handle on the WAL, which the first
     * checkpoint would not (the connection does not know the journal mode
     * until it has read), and sync_wal needs. */
    struct state st;
    if (rc == 0 && (rc = state_get(&k->c, &st)) < 0)
        conn_close(&k->c);
    if (rc < 0) {
        free(k);
        return rc;
    }
    *out = k;
    return 0;
}

int mvcc_checkpointer_run(struct mvcc_checkpointer *k)
{
    return checkpoint(k->c.db);
}

int mvcc_checkpointer_sync(struct mvcc_checkpointer *k)
{
    return sync_wal(k->c.db);
}

void mvcc_checkpointer_close(struct mvcc_checkpointer *k)
{
    if (!k)
        return;
    conn_close(&k->c);
    free(k);
}

/* --- status and size ---------------------------------------------------------- */

static int stmt_int(struct conn *c, int id, int64_t *out)
{
    sqlite3_stmt *p = conn_stmt(c, id);
    if (!p)
        return sql_err(sqlite3_errcode(c->db));
    int rc = sqlite3_step(p);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(p, 0);
    sqlite3_reset(p);
    return rc == SQLITE_ROW ? 0 : sql_err(rc);
}

static int db_pages(struct conn *c, struct mvcc_status *st)
{
    int64_t pages = 0, free_pages = 0, psize = 0;
    int rc;
    if ((rc = stmt_int(c, ST_PAGE_COUNT, &pages)) < 0 || (rc = stmt_int(c, ST_FREELIST_COUNT, &free_pages)) < 0 ||
        (rc = stmt_int(c, ST_PAGE_SIZE, &psize)) < 0)
        return rc;
    st->db_size = pages * psize;
    st->db_size_in_use = (pages - free_pages) * psize;
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
    int rc = status_read(&s->c, st);
    if (rc == 0) {
        st->keys = s->ix.keys; /* between applies the working count is the published one */
        vcache_stats(s->vc, st);
    }
    return rc;
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
