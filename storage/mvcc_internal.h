/*
 * storage/mvcc internals shared by mvcc*.c: the schema, the per-connection
 * prepared statement cache, the result allocator, and the read engine that
 * both the applier (inside its write transaction) and readers use.
 * Nothing here is part of the interface.
 */
#ifndef CAIRN_STORAGE_MVCC_INTERNAL_H
#define CAIRN_STORAGE_MVCC_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "storage/mvcc.h"

/* 'CAIR': PRAGMA application_id, so a foreign SQLite file is told apart. */
#define MVCC_APP_ID 0x43414952
#define MVCC_SCHEMA_VERSION 2
#define MVCC_DB_NAME "mvcc.db"
/* etcd's lease.MaxLeaseTTL */
#define MVCC_MAX_LEASE_TTL 9000000000LL
/* etcd's CompactionBatchLimit */
#define MVCC_COMPACT_BATCH 1000

/* --- allocator: every result is a chain of chunks freed at once ---------- */

struct arena_chunk;
struct arena {
    struct arena_chunk *head;
};

void *arena_alloc(struct arena *a, size_t n);        /* zeroed, 16-aligned; NULL on ENOMEM */
void *arena_dup(struct arena *a, const void *p, size_t n); /* copy plus a NUL byte */
void arena_free(struct arena *a);

/* --- connections ---------------------------------------------------------- */

enum stmt_id {
    ST_BEGIN, ST_BEGIN_IMMEDIATE, ST_COMMIT, ST_ROLLBACK,
    ST_STATE_GET, ST_STATE_SET,
    ST_KV_LATEST,         /* newest row of a key */
    ST_KV_LATEST_AT,      /* newest row of a key at or below a revision */
    ST_KV_SET_DEAD,
    ST_KV_INSERT,
    ST_IDX_INSERT,
    ST_KV_LIVE_RANGE,     /* live rows in [key, end) */
    ST_KV_LIVE_FROM,      /* live rows >= key */
    ST_LEASE_GET, ST_LEASE_INSERT, ST_LEASE_DELETE, ST_LEASE_CHECKPOINT, ST_LEASE_KEYS,
    ST_LEASE_LIST,
    ST_RECORD_PUT, ST_RECORD_DELETE, ST_RECORD_GET, ST_RECORD_LIST,
    ST_COMPACT_FIND, ST_COMPACT_DELETE, ST_COMPACT_DELETE_IDX,
    ST_HIST_KEY, ST_HIST_RANGE, ST_HIST_FROM,
    ST_HASH,
    ST_PAGES,
    ST_COUNT_
};

/* Range statements vary by shape (sort, filters, bounds); each shape is
 * prepared once per connection, on first use. */
#define RANGE_SHAPES (5 * 3 * 16 * 3 * 2)

struct conn {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st[ST_COUNT_];
    sqlite3_stmt *range_st[RANGE_SHAPES];
    sqlite3_stmt *count_st[3];
};

/* Open a connection; index_uri (or NULL) is the store's in-memory key
 * index, attached as "m". */
int conn_open(struct conn *c, const char *path, bool readonly, const struct mvcc_options *o,
              const char *index_uri, char *err, size_t errlen);
void conn_close(struct conn *c);
/* The cached statement id, reset and unbound; NULL on error (message in db). */
sqlite3_stmt *conn_stmt(struct conn *c, enum stmt_id id);
/* Map a SQLite result code to a Cairn error. */
int sql_err(int rc);
int conn_exec(struct conn *c, enum stmt_id id);

/* The state row. */
struct state {
    int64_t rev, compact_rev, compact_done;
    uint64_t ci, term;
};
int state_get(struct conn *c, struct state *st);
int state_put(struct conn *c, const struct state *st);
/* Create the schema in an empty database (if create) or check the one there;
 * errors name the file. */
int schema_init(struct conn *c, bool create, char *err, size_t errlen);
/* The state row and the page counts. */
int status_read(struct conn *c, struct mvcc_status *st);

struct mvcc_store {
    struct conn c;
    char *dir;
    char index_uri[96];
    /* Guards the shared in-memory key index: the writer holds it for each
     * transaction (apply batch, compaction step), readers for each call, so
     * a reader sees the index exactly as of the batch its snapshot has. */
    pthread_rwlock_t lock;
    bool lock_init;
    struct mvcc_options opts;
    struct state st; /* as committed */
};

struct mvcc_reader {
    struct conn c;
    struct mvcc_store *s;
};

/* --- read engine (mvcc_read.c) ---------------------------------------------- */

/* Bind a buffer; SQLite needs a non-NULL pointer for an empty blob. */
int bind_buf(sqlite3_stmt *st, int i, struct mvcc_buf b);
/* Copy a column to the arena as a buffer. */
int col_buf(struct arena *a, sqlite3_stmt *st, int i, struct mvcc_buf *out);
/* Fill kv from a row laid out as (key, main, create_rev, version, lease, value). */
int row_kv(struct arena *a, sqlite3_stmt *st, struct mvcc_kv *kv, bool with_value);

/* Which of the three range forms a (key, range_end) pair is. */
enum range_kind { RK_SINGLE = 0, RK_BOUNDED = 1, RK_FROM = 2, RK_EMPTY = 3 };
enum range_kind range_kind(struct mvcc_buf key, struct mvcc_buf end);

/*
 * kv_range: Range at the view (cur_rev, compact_rev) of connection c, into
 * out, with memory from a.  Checks the revision bounds (sets *compact_rev_out
 * with COMPACTED).
 */
int kv_range(struct conn *c, struct arena *a, const struct mvcc_range_req *req, int64_t cur_rev,
             int64_t compact_rev, struct mvcc_range_resp *out);

#endif
