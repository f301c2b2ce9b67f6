/*
 * Starting a member from its data directory: derive the member and cluster
 * IDs from the configuration, then either bootstrap a new data directory
 * (atomically: built under member.tmp, renamed to member) or recover an
 * existing one (newest snapshot, WAL after it, the store), refusing a
 * directory that belongs to another member or cluster.  The result is what
 * the node thread needs to create its Raft state.
 */
#ifndef CAIRN_DAEMON_BOOT_H
#define CAIRN_DAEMON_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/config.h"
#include "raft/raft.h"

struct wal;
struct mvcc_store;

#define BOOT_MAX_URLS CONFIG_MAX_URLS

/* A member of the cluster as this member knows it. */
struct boot_member {
    uint64_t id;
    char name[128];
    size_t n_peer_urls;
    char *peer_urls[BOOT_MAX_URLS]; /* owned */
};

struct boot_state {
    uint64_t cluster_id, self_id;
    size_t n_members;
    struct boot_member members[RAFT_MAX_MEMBERS];
    char member_dir[4096], wal_dir[4200], snap_dir[4200], db_dir[4200], incoming_dir[4200];
    struct wal *wal;                /* open for appending; owned until taken */
    struct mvcc_store *store;       /* open; owned until taken */
    struct raft_restore restore;    /* hard state, snapshot meta and entries (into wal's memory) */
    struct raft_entry *entries;     /* the array behind restore.entries */
    int bootstrapped;               /* 1: a new cluster was just created here */
    int joining;                    /* 1: --initial-cluster-state existing on an empty directory */
};

/*
 * boot_open: prepare the data directory of cfg and fill *bs.  Returns 0, or
 * a negative error with a message for people in err (the directory, the
 * file, what does not match).  On failure nothing is left open.
 */
int boot_open(const struct config *cfg, struct boot_state *bs, char *err, size_t errlen);

/* What boot_restore made. */
struct boot_restore_info {
    uint64_t cluster_id, self_id;
    size_t n_members;
    int64_t revision, compact_revision; /* of the restored store (kept from the copy) */
    int64_t db_size;
    char member_dir[4096];
};

/*
 * boot_restore: `cairnd restore`: make <data-dir>/member for cfg's --name
 * from the store copy at snapshot (already checked by the caller), like a
 * new cluster's bootstrap (IDs from --initial-cluster and its token, Raft's
 * bootstrap snapshot, a WAL with the ClusterInit) except that the store is
 * the copy, with the new member set, no alarms, and its consistent index at
 * 1.  The data directory must be missing or empty.  Returns 0, or a
 * negative error (-CAIRN_E_CONFIG for a bad configuration or a non-empty
 * directory) with a message for people in err.
 */
int boot_restore(const struct config *cfg, const char *snapshot, struct boot_restore_info *info, char *err,
                 size_t errlen);

/* boot_release_restore: drop the WAL entries copy once raft_new has taken it. */
void boot_release_restore(struct boot_state *bs);

/* boot_close: close whatever bs still owns (wal, store) and free its memory. */
void boot_close(struct boot_state *bs);

/*
 * The member set lives in the store as one record (internal.proto MemberSet):
 * written by a new cluster's first entry and by every membership change.
 */
#define MEMBERS_RECORD_NS "cluster"
#define MEMBERS_RECORD_NAME "members"

/* boot_pack_member_set: a packed MemberSet of these members (malloc'd into *out). */
int boot_pack_member_set(const struct boot_member *members, size_t n, uint8_t **out, size_t *out_len);

/* boot_member_id: the ID a member with these peer URLs gets in a cluster with token. */
uint64_t boot_member_id(const char *token, const char *const *peer_urls, size_t n);

#endif
