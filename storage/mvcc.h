/*
 * storage/mvcc: Cairn's state machine.  Every revision of every key, with
 * etcd v3's MVCC semantics, stored in one SQLite database (<dir>/mvcc.db),
 * with a key index in memory rebuilt at open (docs/storage-mvcc.md).
 * One writer (the daemon's applier thread, through struct mvcc_store) and any
 * number of read-only handles (struct mvcc_reader, one per reader thread).
 * It knows nothing of Raft, protobuf or the network, and starts no threads.
 *
 * Concurrency.  Readers and the writer never wait for each other.  Each
 * reader call reads exactly one committed batch: a version of the in-memory
 * key index that the writer published after that batch's commit, paired
 * with the reader's own SQLite read transaction on the same batch (WAL
 * mode).  Batches, compaction steps, snapshots and syncs go on while a call
 * is in progress, and the call still sees its batch whole.  A long call
 * costs memory, not writes: until it returns, the index versions it may
 * use are not freed and SQLite's WAL cannot be checkpointed past its
 * snapshot (the WAL file grows meanwhile).
 *
 * Durability.  The database runs in WAL journal mode with synchronous=NORMAL:
 * a commit is atomic and survives a process crash, but the last commits may
 * be lost on power failure.  That is safe because the Raft WAL (fsynced
 * before entries are applied) holds every committed entry, and each apply
 * batch stores the consistent index in the same SQLite transaction as the data
 * it produced: after a power loss the store is an older but consistent state,
 * and the applier re-applies the entries above its consistent index.  The one
 * rule for the caller: call mvcc_sync() (or mvcc_checkpointer_sync()) before
 * purging Raft log entries (or WAL files) at or below the store's consistent
 * index.
 *
 * Revisions are etcd's: the store starts at revision 1; every request that
 * writes gets main revision +1, its operations sub revisions 0, 1, 2, ...; a
 * request that writes nothing does not move the revision.  Two limits follow
 * from how rows are numbered on disk: a request changes at most
 * MVCC_MAX_CHANGES keys (a larger delete, lease revoke or txn is refused
 * with CAIRN_E_TOO_MANY_CHANGES and writes nothing), and the revision stops
 * at MVCC_MAX_REV (later writes are refused with CAIRN_E_REVISIONS_EXHAUSTED;
 * 8.8 x 10^12 revisions: four years at 70,000 writes a second).  Since a
 * lease's revoke deletes its keys in one revision, a lease holds at most
 * MVCC_MAX_CHANGES keys: a put (or a txn's puts) that would attach more is
 * refused with CAIRN_E_LEASE_TOO_MANY_KEYS.
 *
 * Memory.  Byte strings in requests are borrowed for the duration of the call.
 * Every result (struct mvcc_result, mvcc_range_result, ...) is one allocation
 * tree owned by the caller and released with its own _free function; all
 * pointers inside it stay valid until then.  Returned byte strings are
 * NUL-terminated one byte past len for convenience (len excludes it).
 *
 * Errors are 0 or negative: -CAIRN_E_xxx from base/errors.h or -errno.
 */
#ifndef CAIRN_STORAGE_MVCC_H
#define CAIRN_STORAGE_MVCC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The limits above (storage/mvcc_internal.h: MVCC_SUB_BITS) */
#define MVCC_MAX_CHANGES (1 << 20)
#define MVCC_MAX_REV ((INT64_C(1) << 43) - 1)

struct mvcc_store;  /* the writer: opaque, owned by one thread */
struct mvcc_reader; /* a read-only handle: opaque, owned by one thread */

/* A borrowed or returned byte string.  data may be NULL when len is 0. */
struct mvcc_buf {
    const void *data;
    size_t len;
};

/* etcd's mvccpb.KeyValue. */
struct mvcc_kv {
    struct mvcc_buf key;
    struct mvcc_buf value;   /* empty with keys_only */
    int64_t create_revision; /* main revision of the put that created the key */
    int64_t mod_revision;    /* main revision of the last write */
    int64_t version;         /* writes since creation (1 after the create); 0 for a tombstone */
    int64_t lease;           /* 0: none */
};

/* --- opening -------------------------------------------------------------- */

/*
 * A schema upgrade mvcc_open makes before the store opens (storage has no
 * logger: the caller reports it).  It copies every revision once: about
 * 8 s for 1M keys of 256 bytes on the machine of docs/performance.md.
 */
enum mvcc_upgrade_phase {
    MVCC_UPGRADE_BEGIN,   /* the rows are counted and checked; the copy starts */
    MVCC_UPGRADE_RUNNING, /* about once a second while it copies and gives space back */
    MVCC_UPGRADE_DONE,    /* committed: the last call */
};

struct mvcc_upgrade {
    enum mvcc_upgrade_phase phase;
    const char *path;   /* the database file */
    int from, to;       /* schema versions */
    int64_t rows;       /* revisions to copy */
    int64_t elapsed_ns; /* since the upgrade began */
};

/* Called with BEGIN and DONE once each, and RUNNING about once a second
 * between them.  A failed upgrade gets no DONE: mvcc_open returns its error.  Runs on mvcc_open's
 * thread, inside SQLite's work on the store: it must not call into it. */
typedef void (*mvcc_upgrade_fn)(void *arg, const struct mvcc_upgrade *u);

struct mvcc_options {
    int64_t min_lease_ttl;  /* grants below are raised to it (etcd: 1.5 x election timeout); 0: none */
    int cache_mb;           /* SQLite page cache per connection, MiB; 0: 64 */
    int mmap_mb;            /* read through mmap up to this size, MiB; 0: 2048; < 0: off */
    bool finish_compaction; /* mvcc_open runs an interrupted compaction to completion */
    /* Values that reader calls read, kept in memory by revision (shared by
     * the store's readers; a hot key's read then skips SQLite), within this
     * many bytes; 0: no cache.  Values over 1/64 of it are not kept. */
    size_t value_cache_bytes;
    /* The writer's commits leave checkpoints of SQLite's WAL to the
     * caller, who runs them on a thread of its own through a
     * struct mvcc_checkpointer when mvcc_wal_frames says one is due.  As a
     * backstop the writer still checkpoints past MVCC_WAL_FRAMES_MAX. */
    bool checkpoint_elsewhere;
    mvcc_upgrade_fn on_upgrade; /* optional: told of a schema upgrade (struct mvcc_upgrade) */
    void *on_upgrade_arg;
};

/* SQLite's own checkpoint size, 2000 pages (8 MiB): as fast per page as
 * bigger ones with appends only (docs/perf/mvcc.md). */
#define MVCC_WAL_FRAMES_DUE 2000
#define MVCC_WAL_FRAMES_MAX (4 * MVCC_WAL_FRAMES_DUE)

/*
 * mvcc_open: open the store in dir (created if missing, with the schema on
 * first open).  opts may be NULL for defaults.  On success *out is the store,
 * which the caller closes with mvcc_close.  On failure returns -CAIRN_E_SCHEMA
 * (foreign file, unknown or newer schema), -CAIRN_E_CORRUPT (not a database),
 * -CAIRN_E_IO or -errno, and writes a message naming the file into err
 * (errlen bytes, may be NULL/0).
 */
int mvcc_open(const char *dir, const struct mvcc_options *opts, struct mvcc_store **out,
              char *err, size_t errlen);

/* mvcc_close: close the store (checkpointing SQLite's WAL).  NULL is ignored.
 * Every reader of the store must be closed first. */
void mvcc_close(struct mvcc_store *s);

/* mvcc_path: the database file's path, owned by the store. */
const char *mvcc_path(const struct mvcc_store *s);

/* mvcc_options_of: the options s was opened with (to reopen it alike after
 * mvcc_restore replaced its files). */
struct mvcc_options mvcc_options_of(const struct mvcc_store *s);

/* mvcc_sync: make every applied batch durable (fsyncs SQLite's WAL after a
 * checkpoint of what readers allow; it does not wait for readers).  Call it
 * before the Raft log is purged at or below the consistent index. */
int mvcc_sync(struct mvcc_store *s);

/* mvcc_checkpoint: a passive checkpoint of SQLite's WAL (never waits for
 * readers).  Returns 1 when it reached the WAL's end, so the database file
 * holds every page and has the store's size (pages a defragmentation gave
 * back leave the file only then); 0 when a reader's older snapshot held it
 * back (try again once readers moved on), or another connection's
 * checkpoint was under way; a negative error. */
int mvcc_checkpoint(struct mvcc_store *s);

/* mvcc_wal_frames: frames in SQLite's WAL after the writer's last commit
 * (the writer's thread). */
int mvcc_wal_frames(const struct mvcc_store *s);

/*
 * A checkpointer: its own connection to the store's database, for one
 * thread other than the writer's, which checkpoints SQLite's WAL and makes
 * committed batches durable while the writer goes on committing (a
 * checkpoint of 2000 pages holds its thread for ~15 ms).  It must be closed
 * before the store is (and before mvcc_restore replaces its files).
 */
struct mvcc_checkpointer;

/* mvcc_checkpointer_open: open one for store s (reads only s's path and options). */
int mvcc_checkpointer_open(struct mvcc_store *s, struct mvcc_checkpointer **out);

/* mvcc_checkpointer_run: as mvcc_checkpoint, on the checkpointer's
 * connection; 0 also when another checkpoint is under way. */
int mvcc_checkpointer_run(struct mvcc_checkpointer *k);

/* mvcc_checkpointer_sync: as mvcc_sync for every batch the writer committed
 * before the call. */
int mvcc_checkpointer_sync(struct mvcc_checkpointer *k);

/* mvcc_checkpointer_close: NULL is ignored. */
void mvcc_checkpointer_close(struct mvcc_checkpointer *k);

/* --- requests --------------------------------------------------------------- */

enum mvcc_req_type {
    MVCC_REQ_NOOP = 0,         /* advances the consistent index only (empty entries, conf changes) */
    MVCC_REQ_RANGE,            /* a Range through the log (and inside txns) */
    MVCC_REQ_PUT,
    MVCC_REQ_DELETE_RANGE,
    MVCC_REQ_TXN,
    MVCC_REQ_COMPACT,
    MVCC_REQ_LEASE_GRANT,
    MVCC_REQ_LEASE_REVOKE,
    MVCC_REQ_LEASE_CHECKPOINT,
    MVCC_REQ_RECORD_PUT,       /* small records for membership and auth, outside the KV space */
    MVCC_REQ_RECORD_DELETE,
};

enum mvcc_sort_order { MVCC_SORT_NONE = 0, MVCC_SORT_ASCEND, MVCC_SORT_DESCEND };
enum mvcc_sort_target {
    MVCC_SORT_KEY = 0, MVCC_SORT_VERSION, MVCC_SORT_CREATE, MVCC_SORT_MOD, MVCC_SORT_VALUE
};

/*
 * Key ranges, as in etcd: range_end empty = the single key `key`; range_end
 * "\0" (one zero byte) = every key >= key; otherwise [key, range_end), empty
 * if range_end <= key.  A prefix p is [p, p with its last byte +1).
 */
struct mvcc_range_req {
    struct mvcc_buf key, range_end;
    int64_t revision;   /* <= 0: the current revision */
    int64_t limit;      /* <= 0: no limit; `more` says whether keys were left out */
    enum mvcc_sort_order sort_order;
    enum mvcc_sort_target sort_target; /* a target other than KEY with order NONE sorts ascending */
    bool keys_only, count_only;
    int64_t min_mod_revision, max_mod_revision;       /* 0: no bound */
    int64_t min_create_revision, max_create_revision; /* 0: no bound */
};

struct mvcc_put_req {
    struct mvcc_buf key, value;
    int64_t lease;      /* 0: none; must exist */
    bool prev_kv;       /* return the previous key-value */
    bool ignore_value;  /* keep the current value (the key must exist; value must be empty) */
    bool ignore_lease;  /* keep the current lease (the key must exist; lease must be 0) */
};

struct mvcc_delete_req {
    struct mvcc_buf key, range_end;
    bool prev_kv;
};

enum mvcc_cmp_target {
    MVCC_CMP_VERSION = 0, MVCC_CMP_CREATE, MVCC_CMP_MOD, MVCC_CMP_VALUE, MVCC_CMP_LEASE
};
enum mvcc_cmp_result { MVCC_CMP_EQUAL = 0, MVCC_CMP_GREATER, MVCC_CMP_LESS, MVCC_CMP_NOT_EQUAL };

/*
 * A txn compare, over one key or a key range (every key in it must satisfy
 * it; a VALUE compare on no key fails, other targets compare 0).
 */
struct mvcc_compare {
    enum mvcc_cmp_result result;
    enum mvcc_cmp_target target;
    struct mvcc_buf key, range_end;
    struct mvcc_buf value; /* for MVCC_CMP_VALUE */
    int64_t number;        /* version, create/mod revision or lease for the others */
};

struct mvcc_request;

/*
 * Txn: if every compare holds, run success, else failure.  Ops are requests
 * of type RANGE, PUT, DELETE_RANGE or TXN.  All compares of the taken path
 * (nested txns included) see the state before the txn; reads inside see the
 * txn's own earlier writes.  A put may not touch a key another put or a
 * delete of the txn touches (-CAIRN_E_DUPLICATE_KEY).
 */
struct mvcc_txn_req {
    const struct mvcc_compare *compares;
    size_t n_compares;
    const struct mvcc_request *success;
    size_t n_success;
    const struct mvcc_request *failure;
    size_t n_failure;
};

struct mvcc_compact_req {
    int64_t revision; /* <= compact revision: -CAIRN_E_COMPACTED; > current: -CAIRN_E_FUTURE_REV */
};

struct mvcc_lease_grant_req {
    int64_t id;  /* nonzero, chosen by the proposer */
    int64_t ttl; /* seconds */
};

struct mvcc_lease_revoke_req {
    int64_t id;
};

struct mvcc_lease_checkpoint {
    int64_t id;
    int64_t remaining_ttl;
};

struct mvcc_lease_checkpoint_req {
    const struct mvcc_lease_checkpoint *checkpoints; /* unknown leases are skipped, as in etcd */
    size_t n;
};

struct mvcc_record_req {
    struct mvcc_buf ns, name; /* namespace ("member", "user", ...) and name within it */
    struct mvcc_buf value;    /* RECORD_PUT only */
};

struct mvcc_request {
    enum mvcc_req_type type;
    union {
        struct mvcc_range_req range;
        struct mvcc_put_req put;
        struct mvcc_delete_req del;
        struct mvcc_txn_req txn;
        struct mvcc_compact_req compact;
        struct mvcc_lease_grant_req lease_grant;
        struct mvcc_lease_revoke_req lease_revoke;
        struct mvcc_lease_checkpoint_req lease_checkpoint;
        struct mvcc_record_req record;
    };
};

/* One committed Raft entry. */
struct mvcc_entry {
    uint64_t index, term;
    struct mvcc_request req;
};

/* --- responses -------------------------------------------------------------- */

struct mvcc_response;

struct mvcc_range_resp {
    struct mvcc_kv *kvs;
    size_t n_kvs;
    bool more;     /* the limit left keys out */
    int64_t count; /* keys in the range at that revision (before limit and min/max filters) */
};

struct mvcc_put_resp {
    struct mvcc_kv *prev_kv; /* with prev_kv and an existing key; else NULL */
};

struct mvcc_delete_resp {
    int64_t deleted;
    struct mvcc_kv *prev_kvs; /* with prev_kv: the deleted key-values, in key order */
    size_t n_prev_kvs;
};

struct mvcc_txn_resp {
    bool succeeded;
    struct mvcc_response *responses; /* one per op of the branch taken */
    size_t n_responses;
};

struct mvcc_lease_grant_resp {
    int64_t id, ttl; /* ttl after raising it to the minimum */
};

struct mvcc_record_resp {
    int64_t deleted; /* RECORD_DELETE: 1 if the record existed */
};

/*
 * A request's response.  err != 0: the request failed and wrote nothing.
 * revision is etcd's header revision: for a write, the revision it wrote
 * (or the current one if it wrote nothing); for reads, the current one.
 * As in etcd 3.4, a nested txn's response carries revision 0.
 */
struct mvcc_response {
    enum mvcc_req_type type;
    int err;
    int64_t revision;
    int64_t compact_revision; /* set with -CAIRN_E_COMPACTED */
    union {
        struct mvcc_range_resp range;
        struct mvcc_put_resp put;
        struct mvcc_delete_resp del;
        struct mvcc_txn_resp txn;
        struct mvcc_lease_grant_resp lease_grant;
        struct mvcc_record_resp record;
    };
};

enum mvcc_event_type { MVCC_EVENT_PUT = 0, MVCC_EVENT_DELETE = 1 };

/* A change for watchers.  For DELETE, kv carries the key and mod_revision only. */
struct mvcc_event {
    enum mvcc_event_type type;
    struct mvcc_kv kv;
    struct mvcc_kv *prev_kv; /* the key's previous live value, NULL if none */
};

struct mvcc_applied {
    uint64_t index;
    bool skipped;              /* at or below the consistent index: nothing done, resp unset */
    struct mvcc_response resp;
    size_t first_event, n_events; /* this entry's slice of mvcc_result.events */
};

struct mvcc_result {
    struct mvcc_applied *entries; /* one per entry given, in order */
    size_t n_entries;
    struct mvcc_event *events;    /* every event of the batch, in revision order */
    size_t n_events;
    int64_t revision;             /* the store's revision after the batch */
    uint64_t consistent_index;    /* after the batch */
    bool event_values;            /* events' prev_kv carry values (mvcc_set_event_values) */
    void *priv_;                  /* the allocator behind it all */
};

/*
 * mvcc_set_event_values: whether the events of the batches applied from now
 * on carry the key's previous value in prev_kv (on at open).  Reading it
 * costs a lookup in the store for every put over a live key (about 7k of a
 * put's 50k instructions) and every key a delete or a lease revoke removes,
 * and only watchers use it, so a caller with nobody watching turns it off.
 * Off, such an event still has its prev_kv, with the revisions, lease and
 * version, and the result's event_values is false; its value is empty
 * unless the request read it anyway (a put or delete with prev_kv, a put
 * with ignore_value, read it for the response).
 */
void mvcc_set_event_values(struct mvcc_store *s, bool on);

/*
 * mvcc_apply: apply n committed entries in order, in ONE SQLite transaction
 * that also stores the new consistent index (the highest index applied) and
 * term.  Entries at or below the stored consistent index are skipped.  A
 * request that fails (lease not found, compacted, ...) gets its error in its
 * response; that is not a failure of mvcc_apply.  On success *out is the
 * result, owned by the caller, freed with mvcc_result_free.  On a storage
 * failure nothing of the batch is applied and a negative error is returned:
 * the state machine cannot go on, and the caller should stop (etcd panics).
 */
int mvcc_apply(struct mvcc_store *s, const struct mvcc_entry *entries, size_t n,
               struct mvcc_result **out);

/* mvcc_result_free: free a result and everything it points to.  NULL is ignored. */
void mvcc_result_free(struct mvcc_result *r);

/* --- state ------------------------------------------------------------------ */

struct mvcc_status {
    int64_t revision;            /* current revision */
    int64_t compact_revision;    /* reads below it fail; 0 if never compacted */
    int64_t compact_done;        /* compaction physically finished up to here */
    uint64_t consistent_index, consistent_term;
    int64_t db_size;             /* bytes in the database file */
    int64_t db_size_in_use;      /* bytes in pages holding data (db_size minus free pages) */
    int64_t keys;                /* live keys: the newest revision is not a tombstone (from the key index) */
    uint64_t value_cache_hits;   /* reader values found in the value cache, since open */
    uint64_t value_cache_misses; /* ... and read from SQLite */
    int64_t value_cache_bytes;   /* memory the cache holds (0: no cache) */
};

/* mvcc_store_status: the writer's view (between applies). */
int mvcc_store_status(struct mvcc_store *s, struct mvcc_status *st);

/* --- compaction --------------------------------------------------------------- */

/*
 * A Compact request is applied at once: reads below its revision fail from
 * that batch on, and the scheduled revision is stored with the batch.  The
 * rows it drops (per key, everything at or below N except the newest, and
 * that one too if it is a tombstone) are deleted afterwards, by
 * mvcc_compact_step, in transactions of at most max_rows rows (0: 1000, as
 * etcd), so the applier is never blocked for long; a step also looks at no
 * more than 32 keys per row of its budget, so steps over keys with nothing to
 * drop stay short too.  The daemon calls it between apply batches while it
 * reports *done == false, or loops until done.  A compaction cut short by a
 * crash is still scheduled after reopen.  What is logically compacted is
 * invisible to every read even before it is deleted; a reader call that began
 * before the Compact batch still reads its own batch whole (its snapshot
 * keeps the rows).
 */
int mvcc_compact_step(struct mvcc_store *s, size_t max_rows, bool *done);

/* mvcc_compact_pending: true if compaction rows remain to be deleted. */
bool mvcc_compact_pending(struct mvcc_store *s);

/* --- size and defragmentation ------------------------------------------------ */

/*
 * mvcc_defrag_step: give up to max_pages free pages back to the file system
 * (incremental auto-vacuum: the database is created with it), *remaining is
 * the free pages left.  Short steps, run between apply batches; this is the
 * defragmentation Cairn uses (docs/perf/mvcc.md compares it with VACUUM).
 */
int mvcc_defrag_step(struct mvcc_store *s, int64_t max_pages, int64_t *remaining);

/* mvcc_vacuum: rebuild the whole database (VACUUM), packing partly-used pages
 * too.  Blocks the writer for the whole rebuild (measured 4 to 5 s per GiB,
 * docs/perf/mvcc.md) and needs free space for a full copy: for an operator's
 * explicit defragment, not for routine use.  Close the readers first or they
 * keep the old pages alive. */
int mvcc_vacuum(struct mvcc_store *s);

/* --- readers ------------------------------------------------------------------ */

/*
 * mvcc_reader_open: a read-only handle on the store's database (its own
 * SQLite connection), for one thread at a time.  Each call reads the latest
 * committed batch as of its start, whole, without waiting for the writer and
 * without holding it up (see Concurrency above).  May be called from any
 * thread, while the writer works.  Close it with mvcc_reader_close before the
 * store.  Returns 0 or a negative error.
 */
int mvcc_reader_open(struct mvcc_store *s, struct mvcc_reader **out);
void mvcc_reader_close(struct mvcc_reader *r);

/*
 * mvcc_reader_keep: with keep, each call leaves its read transaction and
 * index version open, and the next call reuses them when the writer has
 * published nothing since (it reads what a fresh start would; a point get
 * costs a fifth less).  While held, the handle keeps the WAL from being
 * checkpointed past its snapshot and the index versions since from being
 * freed, so its owner calls mvcc_reader_idle whenever the handle may sit
 * unused (tens of milliseconds).  Off by default; turning it off releases.
 * mvcc_reader_idle: release what a kept handle holds (nothing if nothing).
 */
void mvcc_reader_keep(struct mvcc_reader *r, bool keep);
int mvcc_reader_idle(struct mvcc_reader *r);

/* mvcc_reader_status: the latest committed state as this reader sees it. */
int mvcc_reader_status(struct mvcc_reader *r, struct mvcc_status *st);

struct mvcc_range_result {
    int64_t revision;         /* header revision: the current one */
    int64_t compact_revision; /* the store's compact revision */
    struct mvcc_range_resp resp;
    void *priv_;
};

/*
 * mvcc_range: etcd's Range.  Returns 0 and *out (free with
 * mvcc_range_result_free); -CAIRN_E_COMPACTED if req->revision is below the
 * compact revision (*compact_rev, if not NULL, is set to it);
 * -CAIRN_E_FUTURE_REV above the current revision; -CAIRN_E_KEY_EMPTY.
 */
int mvcc_range(struct mvcc_reader *r, const struct mvcc_range_req *req,
               struct mvcc_range_result **out, int64_t *compact_rev);
void mvcc_range_result_free(struct mvcc_range_result *res);

/* One stored revision of a key, tombstones included. */
struct mvcc_history_row {
    struct mvcc_kv kv;   /* for a tombstone: key, mod_revision, zero version */
    int64_t sub_revision;
    bool tombstone;
};

struct mvcc_history_req {
    struct mvcc_buf key, range_end;   /* as in Range */
    int64_t min_revision, max_revision; /* main revisions, inclusive; 0: unbounded */
    int64_t limit;                    /* rows per page; <= 0: 1000 */
    int64_t after_main, after_sub;    /* continuation: rows strictly after this revision */
};

struct mvcc_history_result {
    int64_t revision, compact_revision;
    struct mvcc_history_row *rows; /* in (main, sub) order */
    size_t n_rows;
    bool more;                     /* continue with after_* = next_main/next_sub */
    int64_t next_main, next_sub;
    void *priv_;
};

/*
 * mvcc_history: Cairn's own query: every stored revision of the keys in
 * range with min_revision <= main <= max_revision, in revision order, one page
 * at a time.  Rows below the compact revision appear only if compaction keeps
 * them.  Free *out with mvcc_history_result_free.
 */
int mvcc_history(struct mvcc_reader *r, const struct mvcc_history_req *req,
                 struct mvcc_history_result **out);
void mvcc_history_result_free(struct mvcc_history_result *res);

/*
 * mvcc_hash_kv: etcd's HashKV: a CRC-32C over every key revision at or below
 * rev (<= 0: current) that compaction keeps, in revision order; members at
 * the same state have the same hash whatever their physical compaction
 * progress.  Returns -CAIRN_E_COMPACTED for rev below the compact revision,
 * -CAIRN_E_FUTURE_REV above the current one.  cur_rev/compact_rev may be NULL.
 * It reads every stored revision, so it is slow on a big store (the applier
 * keeps going meanwhile): run it rarely (etcd's corruption check runs every
 * few minutes).
 */
int mvcc_hash_kv(struct mvcc_reader *r, int64_t rev, uint32_t *hash, int64_t *cur_rev,
                 int64_t *compact_rev);

struct mvcc_lease {
    int64_t id, ttl;
    int64_t remaining_ttl;   /* last checkpoint; 0 if never checkpointed */
    struct mvcc_buf *keys;   /* mvcc_lease_get only: attached keys, sorted */
    size_t n_keys;
};

struct mvcc_lease_list {
    struct mvcc_lease *leases; /* by id */
    size_t n;
    void *priv_;
};

/* mvcc_lease_list: every lease (keys not filled).  Free with mvcc_lease_list_free. */
int mvcc_lease_list(struct mvcc_reader *r, struct mvcc_lease_list **out);

/* mvcc_lease_get: one lease with its attached keys, as a one-element list.
 * -CAIRN_E_LEASE_NOT_FOUND if there is none. */
int mvcc_lease_get(struct mvcc_reader *r, int64_t id, struct mvcc_lease_list **out);
void mvcc_lease_list_free(struct mvcc_lease_list *l);

struct mvcc_record {
    struct mvcc_buf name, value;
};

struct mvcc_record_list {
    struct mvcc_record *records; /* by name */
    size_t n;
    void *priv_;
};

/* mvcc_record_list: every record of namespace ns; name.len > 0 selects one
 * (an empty list if missing).  Free with mvcc_record_list_free. */
int mvcc_record_list(struct mvcc_reader *r, struct mvcc_buf ns, struct mvcc_buf name,
                     struct mvcc_record_list **out);
void mvcc_record_list_free(struct mvcc_record_list *l);

/* --- snapshots ---------------------------------------------------------------- */

/*
 * mvcc_snapshot_write: write a consistent copy of the store, as of the
 * latest committed batch, to path (written to path.tmp, fsynced, renamed),
 * with SQLite's online backup API on the reader's connection: the writer
 * keeps applying meanwhile.  *index (may be NULL) gets the copy's consistent
 * index.
 */
int mvcc_snapshot_write(struct mvcc_reader *r, const char *path, uint64_t *index);

/*
 * mvcc_restore: replace the store in dir by the copy at snapshot_path (which
 * is checked first and left in place).  The store must be closed.  Errors
 * as for mvcc_open, with a message in err.
 */
int mvcc_restore(const char *dir, const char *snapshot_path, char *err, size_t errlen);

/*
 * mvcc_snapshot_check: open the copy at path read-only (left as it is),
 * check that it is a Cairn store of this schema and, with full, run SQLite's
 * PRAGMA integrity_check over every page (slow on a big file: reads it all).
 * *st (may be NULL) gets the copy's state (revision, compact revision,
 * consistent index and term, sizes; keys is 0).  Returns 0, or
 * -CAIRN_E_CORRUPT / -CAIRN_E_SCHEMA / -errno with a message naming the
 * file and the fault in err.
 */
int mvcc_snapshot_check(const char *path, bool full, struct mvcc_status *st, char *err, size_t errlen);

/*
 * mvcc_set_consistent_index: overwrite the store's consistent index and term,
 * keeping every key, revision and lease, in one transaction.  This is for
 * `cairnd restore`, which makes a copy of another cluster's store the state
 * of a new cluster whose log starts again at index 1: the applier skips
 * entries at or below the stored index, so a copy left at its old index
 * would skip the new log.  Only on a store with no reader open.
 */
int mvcc_set_consistent_index(struct mvcc_store *s, uint64_t index, uint64_t term);

#endif
