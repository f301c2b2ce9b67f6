/*
 * The write-ahead log: Cairn's durable Raft log.  A directory of preallocated
 * segment files holding checksummed records (hard state, entries, snapshot
 * markers), appended in batches with one fdatasync each (group commit).
 * It knows nothing of Raft messages or protobuf: the daemon copies raft's
 * structs into the plain ones below.  docs/storage-wal.md describes the bytes.
 * A handle is not thread-safe: one thread (the node thread) owns it.
 */
#ifndef CAIRN_STORAGE_WAL_H
#define CAIRN_STORAGE_WAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* etcd's defaults: 64 MiB segments, 5 segments kept after a release. */
#define WAL_DEFAULT_SEGMENT_SIZE (64u * 1024 * 1024)
#define WAL_DEFAULT_KEEP_SEGMENTS 5
/* Largest record payload; a bound so a reader never trusts an absurd length. */
#define WAL_MAX_RECORD (256u * 1024 * 1024)

/* One Raft log entry.  data points at len bytes owned as each function says. */
struct wal_entry {
    uint64_t index;
    uint64_t term;
    uint32_t type;
    const void *data;
    size_t len;
};

/* Raft's HardState. */
struct wal_hardstate {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
};

/* The index and term of a snapshot taken (the WAL keeps only these two). */
struct wal_snapshot {
    uint64_t index;
    uint64_t term;
};

/* Identity written at the start of every segment.  blob is opaque to the WAL. */
struct wal_metadata {
    uint64_t member_id;
    uint64_t cluster_id;
    const void *blob;
    size_t blob_len;
};

/* Options; a NULL options pointer or a zero field means the default. */
struct wal_options {
    uint64_t segment_size;   /* bytes preallocated per segment; cut when full */
    unsigned keep_segments;  /* wal_release_to never leaves fewer than this */
    int no_preallocate;      /* nonzero: do not fallocate segments (tests, tmpfs) */
};

/*
 * Where and why something failed.  Functions taking a struct wal_error * fill
 * it on failure when the pointer is not NULL: file is the base name of the
 * segment (empty when the failure concerns no single file), offset the byte
 * offset of the damaged record inside it, msg a sentence for people.
 */
struct wal_error {
    char file[64];
    uint64_t offset;
    char msg[256];
};

/*
 * What opening cut from the tail of the last segment: a record torn by a crash
 * mid-write (never acknowledged, because its fdatasync had not returned).
 * cut is 0 when nothing was cut (a clean end, or only preallocated zeros).
 */
struct wal_repair {
    int cut;
    char file[64];
    uint64_t offset;        /* the file was truncated to this length */
    uint64_t bytes;         /* bytes of damaged record(s) removed */
    char reason[160];
};

/* Everything wal_read_all returns; pointers are owned by the struct wal. */
struct wal_contents {
    struct wal_metadata meta;
    struct wal_hardstate hardstate;   /* the last one saved, zero if none */
    struct wal_entry *entries;        /* after the snapshot, in index order */
    size_t n_entries;
    uint64_t last_index;              /* index of the last entry, or the snapshot's */
    struct wal_repair repair;
};

struct wal;

/*
 * wal_create: make a new WAL in dir (created if missing; its parent must
 * exist) holding meta, and open it for appending at index 1.  Fails with
 * -EEXIST if dir already holds a WAL, -CAIRN_E_WAL_LOCKED if another handle
 * holds it.  On success *out is a handle the caller frees with wal_close.
 * meta is copied.  err may be NULL.
 */
int wal_create(const char *dir, const struct wal_metadata *meta,
               const struct wal_options *opts, struct wal **out, struct wal_error *err);

/*
 * wal_exists: 1 if dir holds at least one WAL segment, 0 if not (or dir is
 * missing), a negative error if dir cannot be read.
 */
int wal_exists(const char *dir);

/*
 * wal_open: lock dir, read and verify the log from the segment that holds
 * snap (index 0/term 0 for a fresh log) to the end, cut a torn tail, and
 * leave the handle ready to append.  Corruption (a bad record before the
 * tail, a broken CRC chain, a missing segment, an index gap) fails with
 * -CAIRN_E_CORRUPT and err naming file and offset; nothing is modified then.
 * A snapshot the log does not record fails with -CAIRN_E_NOT_FOUND.  A second
 * opener fails with -CAIRN_E_WAL_LOCKED and err->msg naming the holder's PID.
 * On success *out is owned by the caller (wal_close); read what was found
 * with wal_read_all.  snap and opts may be NULL.
 */
int wal_open(const char *dir, const struct wal_snapshot *snap,
             const struct wal_options *opts, struct wal **out, struct wal_error *err);

/*
 * wal_read_all: what wal_open read: metadata, last hard state, and every
 * entry after the snapshot (a later write at an index having replaced the
 * earlier one and all after it), plus what repair cut.  The pointers in *out
 * are owned by w and stay valid until wal_free_contents or wal_close; after
 * wal_create only the metadata is filled in.  Returns 0.
 */
int wal_read_all(struct wal *w, struct wal_contents *out);

/* wal_free_contents: drop the entries behind wal_read_all's answer once the
 * caller has copied them (optional; the metadata stays). */
void wal_free_contents(struct wal *w);

/*
 * wal_save: append entries[0..n) and then hs (NULL: unchanged) and make them
 * durable with one fdatasync.  Entries must have consecutive indexes, the
 * first at most last_index + 1 (a lower one overwrites the log from there).
 * Returns 0 once the batch is durable; *sync_ns (may be NULL) gets the
 * fdatasync's duration.  On a write error (-ENOSPC ...) nothing of the batch
 * counts and the log is as before: a later call may succeed.  After a failed
 * fdatasync the handle refuses every further write (the page cache can no
 * longer be trusted): reopen.  The caller keeps ownership of everything.
 */
int wal_save(struct wal *w, const struct wal_hardstate *hs,
             const struct wal_entry *entries, size_t n, uint64_t *sync_ns);

/*
 * wal_write_state: append hs WITHOUT fdatasync.  It becomes durable with the
 * next wal_save or wal_save_snapshot (records reach the disk in order, so it
 * is never durable after a later record).  For Raft's commit-only hard state
 * changes, which raft.h allows to wait for the next sync.  Returns 0 or a
 * negative error (as wal_save).
 */
int wal_write_state(struct wal *w, const struct wal_hardstate *hs);

/*
 * wal_save_snapshot: record durably that a snapshot at snap was taken, so the
 * log can later be read at it.  Save it before writing the snapshot file.
 * Returns 0 or a negative error (as wal_save).
 */
int wal_save_snapshot(struct wal *w, const struct wal_snapshot *snap);

/*
 * wal_release_to: remove the oldest segments that hold nothing needed to read
 * at a snapshot at index (every entry they hold is at or before it), but
 * never leave fewer than keep_segments.  Returns 0 or a negative error.
 */
int wal_release_to(struct wal *w, uint64_t index);

/* wal_last_index: the index of the last entry saved (or of the snapshot). */
uint64_t wal_last_index(const struct wal *w);

/* wal_segment_count: how many segment files the log has now. */
size_t wal_segment_count(const struct wal *w);

/* wal_close: release the lock and free w (NULL is fine).  Returns 0 or the
 * error of closing the files; w is freed either way. */
int wal_close(struct wal *w);

/*
 * wal_dump: print every record of every segment in dir to out: offset, type,
 * length, index and term (entries), CRC status, and where and how the log is
 * damaged, continuing with the next segment after damage.  Read-only, takes
 * no lock.  Returns 0 if the log is intact, 1 if only a torn tail (what
 * wal_open would cut) was found, -CAIRN_E_CORRUPT if anything else is damaged,
 * or a negative error if dir cannot be read.
 */
int wal_dump(const char *dir, FILE *out);

#endif
