/*
 * Raft snapshot files: the metadata of a snapshot (term, index, membership)
 * with a checksum, one file per snapshot named %016llx-%016llx.snap (term,
 * index), written atomically.  The state-machine copy is storage/mvcc's
 * file; a snapshot only names it.  docs/storage-wal.md describes the bytes.
 * Stateless functions over a directory; safe from any one thread at a time
 * per directory.
 */
#ifndef CAIRN_STORAGE_SNAP_H
#define CAIRN_STORAGE_SNAP_H

#include <stddef.h>
#include <stdint.h>

/* etcd's MaxSnapFiles. */
#define SNAP_DEFAULT_KEEP 5
/* A bound on the opaque parts, so a damaged length cannot ask for gigabytes. */
#define SNAP_MAX_CONF (16u * 1024 * 1024)
#define SNAP_MAX_DB_NAME 4096u

/*
 * A snapshot's metadata.  conf_state is Raft's membership, opaque bytes the
 * daemon encodes; db_file names the state-machine copy (a file name in the
 * same directory, or a path; NULL or "" for none).  As input the caller owns
 * the pointers; as output of snap_load* they are malloc'd and freed with
 * snap_meta_free.
 */
struct snap_meta {
    uint64_t term;
    uint64_t index;
    const void *conf_state;
    size_t conf_len;
    const char *db_file;
};

/* A snapshot file in a listing (from its name; not verified). */
struct snap_id {
    uint64_t term;
    uint64_t index;
    char name[48];
};

/* What snap_load_newest did besides loading. */
struct snap_load_info {
    char name[48];          /* the file loaded */
    unsigned broken;        /* newer files that failed verification, renamed *.broken */
    char broken_name[48];   /* the newest of those (empty if none) */
};

/*
 * snap_save: write meta to dir as %016llx-%016llx.snap through a temporary
 * file, fsync, rename, and a directory fsync, so a crash leaves either no
 * file or a whole one.  Returns 0 or a negative error.  The caller keeps
 * ownership of meta.
 */
int snap_save(const char *dir, const struct snap_meta *meta);

/*
 * snap_load: read and verify the snapshot file dir/name into *out (freed by
 * the caller with snap_meta_free).  Returns 0, -CAIRN_E_CORRUPT if the file
 * fails its checksum or does not match its name, or a negative error.
 */
int snap_load(const char *dir, const char *name, struct snap_meta *out);

/*
 * snap_load_newest: load the newest snapshot in dir that verifies.  Each
 * newer one that fails verification is renamed to <name>.broken (kept for an
 * operator) and the next older one is tried.  Returns 0 with *out filled
 * (caller frees with snap_meta_free), -CAIRN_E_NOT_FOUND if no valid
 * snapshot exists, or a negative error (an I/O error stops the search
 * without renaming).  info may be NULL.
 */
int snap_load_newest(const char *dir, struct snap_meta *out, struct snap_load_info *info);

/* snap_meta_free: free what snap_load* put in m and zero it. */
void snap_meta_free(struct snap_meta *m);

/*
 * snap_list: the snapshot files in dir, newest (highest index) first, in a
 * malloc'd array the caller frees.  Returns 0 or a negative error.
 */
int snap_list(const char *dir, struct snap_id **out, size_t *n);

/*
 * snap_purge: delete all but the newest keep snapshot files (0 means
 * SNAP_DEFAULT_KEEP), with the state-machine copies they name inside dir
 * that no kept snapshot names, and leftover temporary files.  Files renamed
 * *.broken are left for the operator.  Returns 0 or a negative error.
 */
int snap_purge(const char *dir, unsigned keep);

#endif
