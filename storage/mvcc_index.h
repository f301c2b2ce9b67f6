/*
 * storage/mvcc key index: every key's revisions, in memory, ordered by key
 * (etcd's treeIndex), readable by any number of threads while the applier
 * changes it.  Internal to storage/mvcc; nothing here is part of mvcc.h.
 *
 * Versions.  The writer builds each batch on a working copy: B+tree nodes
 * it has not created in this batch are copied before they change (path
 * copying), so a published tree never changes shape.  After the batch's
 * SQLite COMMIT it publishes an immutable version {tree roots, state row}
 * with one atomic store.  A reader pins the newest version and reads it for
 * as long as it likes; the writer never waits for it.  Memory the working
 * copy stops using is retired with the version number from which it is
 * unreachable and freed once no reader is pinned below that number
 * (epoch-based reclamation, run by the writer after each publish).
 *
 * Per-key revisions (struct keyrec) are the one thing changed in place: a
 * put appends to its key's array while there is room, publishing the new
 * count with a release store.  A reader of version V sees such entries (they
 * have main revisions above V's) and ignores them: every read of the index
 * is at a revision R <= V's revision.  When the array is full, or when
 * compaction drops revisions, the key gets a new keyrec (copied) instead,
 * so what a pinned reader can see never shrinks.
 */
#ifndef CAIRN_STORAGE_MVCC_INDEX_H
#define CAIRN_STORAGE_MVCC_INDEX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The state row (mirrored in every published version). */
struct state {
    int64_t rev, compact_rev, compact_done;
    uint64_t ci, term;
};

/* One stored revision of a key.  version 0: a tombstone. */
struct krev {
    int64_t main, create, version, lease;
    uint32_t sub;
    uint32_t pad_;
};

/*
 * A key and its revisions, oldest first.  One allocation: this header, the
 * key right after klen (byte 20), then cap revisions from the next multiple
 * of 8 bytes.  n is read by readers with acquire; the entries below it never
 * change.  The lease index reuses it with cap 0 (key = 8-byte lease id, then
 * the user key).
 */
struct keyrec {
    uint64_t gen;        /* the version that created it */
    _Atomic uint32_t n;  /* revisions in use */
    uint32_t cap;
    uint32_t klen;
    unsigned char key[];
};

/* Where a keyrec's revisions start: after a key of klen bytes. */
static inline size_t kr_revs_at(size_t klen)
{
    return (offsetof(struct keyrec, key) + klen + 7u) & ~(size_t)7u;
}

static inline struct krev *kr_revs(const struct keyrec *kr)
{
    return (struct krev *)((unsigned char *)kr + kr_revs_at(kr->klen));
}

/* The revisions a reader may look at (acquire: they are fully written). */
static inline uint32_t kr_count(const struct keyrec *kr)
{
    return atomic_load_explicit(&((struct keyrec *)kr)->n, memory_order_acquire);
}

/* Index of the newest revision with main <= rev among the first n, or -1. */
long kr_at(const struct keyrec *kr, uint32_t n, int64_t rev);

/* The main revision from which revision i (of the first n) no longer shows:
 * the next one's, or its own for a tombstone; INT64_MAX for the live newest.
 * Compaction at N drops exactly the revisions with dead <= N, a prefix. */
static inline int64_t kr_dead(const struct keyrec *kr, uint32_t n, uint32_t i)
{
    const struct krev *r = kr_revs(kr);
    if (r[i].version == 0)
        return r[i].main;
    return i + 1 < n ? r[i + 1].main : INT64_MAX;
}

struct ixnode; /* a B+tree node: opaque outside mvcc_index.c */

/* A published state: immutable once published. */
struct ixver {
    uint64_t seq;                /* version number, from 1 */
    struct ixnode *root, *lroot; /* key index, lease index */
    struct state st;
    int64_t keys;                /* live keys (newest revision not a tombstone), for metrics */
};

/* A reader's pin (one per reader handle): the version it may be using. */
struct ixpin {
    _Atomic uint64_t seq; /* 0: not pinned */
    struct ixpin *next, *prev;
};

struct ptrvec {
    void **v;
    size_t n, cap;
};

struct ixlog {
    struct keyrec *kr;
    uint32_t n;
};

struct ixretired {
    uint64_t tag;
    void *p;
};

/* The writer's count of live keys per lease in its working version (the
 * lease index holds the pairs; this says how many without a walk).  Open
 * addressing over nonzero lease IDs. */
struct lease_count {
    int64_t id; /* 0: an empty slot */
    int64_t n;
};

struct lease_counts {
    struct lease_count *v;
    size_t cap, used; /* cap: 0 or a power of two */
    int64_t n0;       /* lease 0's count: its ID marks an empty slot (the store never attaches to it) */
};

struct ix {
    /* published: readers load these */
    _Atomic(struct ixver *) cur;
    _Atomic uint64_t cur_seq;
    /* the writer's */
    struct ixver *pub;            /* == cur */
    struct ixver *next;           /* allocated before COMMIT, so publishing cannot fail */
    uint64_t seq;                 /* working version: pub->seq + 1 */
    struct ixnode *root, *lroot;  /* working roots */
    int64_t keys;                 /* live keys in the working version */
    struct ptrvec created;        /* allocated for the working version */
    struct ptrvec retired;        /* unreachable from the working version */
    struct ixlog *log;            /* in-place appends to published keyrecs */
    size_t nlog, caplog;
    struct ixretired *q;          /* retired by published versions, oldest first */
    size_t qhead, qn, qcap;
    struct lease_counts lc;       /* live keys per lease, working version */
    bool poisoned;                /* a failed batch could not be undone */
    pthread_mutex_t pins_mu;      /* guards the pin list (reader open/close, reclaim scan) */
    struct ixpin *pins;
};

/* --- lifecycle ------------------------------------------------------------------ */

/* Bulk loading at open: rows in (main, sub) order, as the revision table
 * stores them.  Returns 0 or -ENOMEM. */
struct ixbuild;
struct ixbuild *ix_build_new(void);
int ix_build_row(struct ixbuild *b, const void *key, size_t klen, const struct krev *r);
/* Build the trees into ix (initialized here), publishing version 1 with st.
 * Frees b in every case. */
int ix_build_finish(struct ixbuild *b, struct ix *ix, const struct state *st);
void ix_build_abort(struct ixbuild *b);

/* Free everything.  No reader may be pinned.  A zeroed ix is fine. */
void ix_destroy(struct ix *ix);

/* --- reading (any thread, on a pinned version; or the writer on its working roots) */

struct keyrec *ix_get(const struct ixnode *root, const void *key, size_t klen);

/* The tree grows a level only when its root splits, after about 16^depth
 * inserts: 24 levels are out of reach. */
#define IX_MAX_DEPTH 24
struct ixiter {
    int depth;
    const struct ixnode *node[IX_MAX_DEPTH];
    int idx[IX_MAX_DEPTH];
};
/* Position it at the first key >= key (klen 0: the first key). */
void ix_seek(struct ixiter *it, const struct ixnode *root, const void *key, size_t klen);
/* The key at the position, then advance; NULL at the end. */
struct keyrec *ix_next(struct ixiter *it);

/* The tree's shape: for tests, and to see how full its nodes are. */
struct ixshape {
    size_t leaves, inners, keys; /* keys: in the leaves */
    size_t bytes;                /* the nodes' and separators' memory, keyrecs not counted */
    int depth;                   /* levels, leaves included */
};
void ix_shape(const struct ixnode *root, struct ixshape *out);

/* Pin the newest version (p must be unpinned); valid until ix_unpin. */
const struct ixver *ix_pin(struct ix *ix, struct ixpin *p);
void ix_unpin(struct ixpin *p);
void ix_pin_register(struct ix *ix, struct ixpin *p);
void ix_pin_unregister(struct ix *ix, struct ixpin *p);

/* --- writing (the writer thread only, on the working version) -------------------- */

/* Append r to key's revisions (kr: its current keyrec, NULL for a new key). */
int ix_add_rev(struct ix *ix, struct keyrec *kr, const void *key, size_t klen, const struct krev *r);
/* Drop the first k revisions of kr (all of them: the key leaves the index). */
int ix_drop_revs(struct ix *ix, struct keyrec *kr, uint32_t k);
/* The lease index: (lease, key) pairs for live keys with a lease. */
int ix_lease_add(struct ix *ix, int64_t lease, const void *key, size_t klen);
int ix_lease_del(struct ix *ix, int64_t lease, const void *key, size_t klen);
/* How many live keys lease has in the working version (the writer's). */
int64_t ix_lease_count(const struct ix *ix, int64_t lease);
/* The lease index key for (lease, key): 8 bytes then the key; out has klen + 8 bytes. */
void ix_lease_key(int64_t lease, const void *key, size_t klen, unsigned char *out);
void ix_lease_prefix(int64_t lease, unsigned char out[8]);

/* Make publishing the working version unable to fail (call before COMMIT). */
int ix_prepare(struct ix *ix);
/* Publish the working version with state st (after COMMIT), free what no
 * reader can reach any more, and start the next working version. */
void ix_publish(struct ix *ix, const struct state *st);
/* Drop the working version (after ROLLBACK): the published one stays
 * current.  Returns 0, or a negative error if the index could not be made
 * whole again (then ix->poisoned is set and every write must fail). */
int ix_abort(struct ix *ix);
/* Is there anything in the working version to publish? */
bool ix_dirty(const struct ix *ix);

#endif
