/*
 * storage/mvcc internals shared by mvcc*.c: the schema, the per-connection
 * prepared statement cache, the result allocator, and the read engine that
 * both the applier (inside its write transaction, on the index's working
 * version) and readers (on a published version) use.  Nothing here is part
 * of the interface.
 */
#ifndef CAIRN_STORAGE_MVCC_INTERNAL_H
#define CAIRN_STORAGE_MVCC_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "base/arena.h"
#include "storage/mvcc.h"
#include "storage/mvcc_index.h"

/* 'CAIR': PRAGMA application_id, so a foreign SQLite file is told apart. */
#define MVCC_APP_ID 0x43414952
#define MVCC_SCHEMA_VERSION 3
#define MVCC_SCHEMA_V2 2 /* upgraded at open: rev keyed by (main, sub) WITHOUT ROWID */
#define MVCC_DB_NAME "mvcc.db"
/* etcd's lease.MaxLeaseTTL */
#define MVCC_MAX_LEASE_TTL 9000000000LL
/* etcd's CompactionBatchLimit */
#define MVCC_COMPACT_BATCH 1000

/*
 * A row of rev is keyed by its revision packed into the rowid: the main
 * revision above MVCC_SUB_BITS, the sub revision below (mvcc.h's limits
 * follow from it).  A rowid table, not a WITHOUT ROWID one keyed by
 * (main, sub): its interior pages hold rowids only, not whole rows, and an
 * append fills a new rightmost page without rebalancing its neighbours
 * (docs/storage-mvcc.md, "Layout").
 */
#define MVCC_SUB_BITS 20
_Static_assert(MVCC_MAX_CHANGES == 1 << MVCC_SUB_BITS && MVCC_MAX_REV == (INT64_MAX >> MVCC_SUB_BITS),
               "mvcc.h's limits, and mvcc.c's REV_TABLE_SQL (id >> 20, id & 1048575), are MVCC_SUB_BITS's");
static inline int64_t rev_id(int64_t main, int64_t sub)
{
    return (int64_t)((uint64_t)main << MVCC_SUB_BITS | (uint64_t)sub);
}

/* --- connections ---------------------------------------------------------- */

enum stmt_id {
    ST_BEGIN, ST_BEGIN_IMMEDIATE, ST_COMMIT, ST_ROLLBACK,
    ST_STATE_GET, ST_STATE_SET,
    ST_REV_INSERT, ST_REV_INSERT4, ST_REV_INSERT16, ST_REV_INSERT64, /* 1, 4, 16, 64 rows */
    ST_REV_VALUE,         /* the value of one revision */
    ST_REV_ALL,           /* every row but values, in revision order: the index at open */
    ST_LEASE_GET, ST_LEASE_INSERT, ST_LEASE_DELETE, ST_LEASE_CHECKPOINT,
    ST_LEASE_LIST,
    ST_RECORD_PUT, ST_RECORD_DELETE, ST_RECORD_GET, ST_RECORD_LIST,
    ST_COMPACT_DELETE,
    ST_HIST_RANGE, ST_HIST_FROM,
    ST_HASH,
    ST_PAGE_COUNT,
    ST_FREELIST_COUNT,
    ST_PAGE_SIZE,
    ST_COUNT_
};

struct conn {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st[ST_COUNT_];
};

/* Open a connection (not shared-cache: each has its own WAL snapshot). */
int conn_open(struct conn *c, const char *path, bool readonly, const struct mvcc_options *o,
              char *err, size_t errlen);
void conn_close(struct conn *c);
/* The cached statement id, reset and unbound; NULL on error (message in db). */
sqlite3_stmt *conn_stmt(struct conn *c, enum stmt_id id);
/* Map a SQLite result code to a Cairn error. */
int sql_err(int rc);
int conn_exec(struct conn *c, enum stmt_id id);

/* The state row (struct state is in mvcc_index.h: each version carries it). */
int state_get(struct conn *c, struct state *st);
int state_put(struct conn *c, const struct state *st);
/* Create the schema in an empty database (if create) or check the one there;
 * errors name the file. */
int schema_init(struct conn *c, bool create, const struct mvcc_options *o, char *err, size_t errlen);
/* The state row and the page counts. */
int status_read(struct conn *c, struct mvcc_status *st);

/* Rows the applier has written in its batch but not yet inserted: they go
 * to the revision table together, in multi-row statements, before COMMIT
 * (a quarter cheaper than one statement per row, docs/perf/mvcc.md). */
struct pending_row {
    int64_t main;
    uint32_t sub;
    struct mvcc_kv kv; /* key and value point into the batch's arena; version 0: tombstone */
};
struct pending {
    struct pending_row *v; /* in (main, sub) order */
    size_t n, cap;
};

struct mvcc_store {
    struct conn c;
    char *dir;
    struct mvcc_options opts;
    struct state st; /* as committed */
    struct pending pend; /* the batch's rows, kept allocated between batches */
    /* The key index: versions published after each commit, read by readers
     * without a lock; the writer changes only its working version. */
    struct ix ix;
    /* The compaction pass for compact revision ccur_rev: keys below ccur
     * are done (ccur NULL: start from the first key). */
    int64_t ccur_rev;
    unsigned char *ccur;
    size_t ccur_len;
    struct vcache *vc; /* the value cache, or NULL */
    bool no_event_values; /* mvcc_set_event_values(false) */
    int wal_frames;       /* SQLite's WAL after the last commit (wal_hook) */
};

struct mvcc_reader {
    struct conn c;
    struct mvcc_store *s;
    struct ixpin pin;         /* the index version a call in progress reads */
    bool keep;                /* mvcc_reader_keep: hold the read between calls */
    bool held;                /* a read transaction and pin are open from an earlier call */
    const struct ixver *held_ver; /* ... on this version, whose state is held_st */
    struct state held_st;
    int64_t held_since;       /* when the held read began (CLOCK_MONOTONIC_COARSE, ns) */
    void (*hook)(void *arg);  /* tests: see mvcc_reader_test_hook */
    void *hook_arg;
};

/*
 * For tests of concurrency only: fn(arg) is called in every Range of this
 * reader once its keys are chosen from the index and before their values
 * are read, with the reader's version pinned and its read transaction open,
 * so a test can park a reader in the middle of a read.  NULL removes it.
 */
void mvcc_reader_test_hook(struct mvcc_reader *r, void (*fn)(void *arg), void *arg);

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

/* What a read sees: an index version and the SQLite snapshot holding the
 * same batch (readers), or the writer's working version and transaction. */
struct view {
    struct conn *c;                    /* values and rows come from its snapshot */
    const struct pending *pend;        /* the writer's rows not in c yet; NULL for readers */
    const struct ixnode *root, *lroot; /* key index, lease index */
    int64_t rev, compact_rev;          /* current and compact revision of the view */
    struct vcache *vc;                 /* readers: values are looked up here first */
    bool vc_fill;                      /* ... and what SQLite gave is added */
    void (*hook)(void *arg);           /* see mvcc_reader_test_hook */
    void *hook_arg;
};

/* The value of revision (main, sub), in the arena (or in the batch's arena
 * for a pending row). */
int view_value(const struct view *v, struct arena *a, int64_t main, uint32_t sub,
               struct mvcc_buf *out);

/*
 * kv_range: Range on view v, into out, with memory from a.  Checks the
 * revision bounds (-CAIRN_E_FUTURE_REV, -CAIRN_E_COMPACTED).
 */
int kv_range(const struct view *v, struct arena *a, const struct mvcc_range_req *req,
             struct mvcc_range_resp *out);

/* Byte-string order (memcmp, then length). */
int buf_cmp(struct mvcc_buf a, struct mvcc_buf b);

/* --- the value cache (mvcc_vcache.c) ------------------------------------------ */

struct vcache;
/* A cache holding at most budget bytes, table included; *out NULL if the
 * budget is too small to be worth one.  0 or -ENOMEM. */
int vcache_new(size_t budget, struct vcache **out);
void vcache_free(struct vcache *vc);
/* The value of (main, sub), copied into a: 1 if cached, 0 if not, -ENOMEM.
 * Thread-safe, as is vcache_put. */
int vcache_get(struct vcache *vc, struct arena *a, int64_t main, uint32_t sub, struct mvcc_buf *out);
/* Keep a copy of a committed revision's value (if it fits). */
void vcache_put(struct vcache *vc, int64_t main, uint32_t sub, const void *p, size_t len);
/* Its counters into st's value_cache_* fields (untouched when vc is NULL). */
void vcache_stats(struct vcache *vc, struct mvcc_status *st);

#endif
