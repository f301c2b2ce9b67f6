/*
 * Member start-up: IDs, bootstrap and recovery of <data-dir>/member.
 *
 * IDs follow etcd's idea: a member's ID is a hash of its peer URLs and the
 * cluster token, the cluster ID a hash of the token and every initial
 * member's ID, so members configured alike agree without talking, and
 * members with different tokens cannot mistake each other.  The WAL's
 * metadata keeps the IDs and the initial membership (a ClusterInit); on a
 * restart they come from there, and the configuration must still name the
 * same member and token.
 */
#include "daemon/boot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <systemd/sd-daemon.h>

#include "base/errors.h"
#include "base/log.h"
#include "daemon/msgids.h"
#include "daemon/raftmsg.h"
#include "proto/internal.pb-c.h"
#include "storage/mvcc.h"
#include "storage/snap.h"
#include "storage/wal.h"

static int fail(char *err, size_t len, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t len, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return rc;
}

/* hash64: the first 8 bytes of SHA-256 over the parts, never 0 (0 means "none" to raft). */
static uint64_t hash64(const void *const *parts, const size_t *lens, size_t n)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (size_t i = 0; i < n; i++)
        EVP_DigestUpdate(ctx, parts[i], lens[i] + 1); /* with the NUL: a separator */
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | md[i];
    return v ? v : 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

uint64_t boot_member_id(const char *token, const char *const *peer_urls, size_t n)
{
    const char *sorted[BOOT_MAX_URLS + 1];
    const void *parts[BOOT_MAX_URLS + 2];
    size_t lens[BOOT_MAX_URLS + 2];
    if (n > BOOT_MAX_URLS)
        n = BOOT_MAX_URLS;
    memcpy(sorted, peer_urls, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_str);
    parts[0] = token;
    lens[0] = strlen(token);
    for (size_t i = 0; i < n; i++) {
        parts[i + 1] = sorted[i];
        lens[i + 1] = strlen(sorted[i]);
    }
    return hash64(parts, lens, n + 1);
}

/*
 * The cluster ID comes from the token alone, not from the initial members:
 * a member that joins later (--initial-cluster-state existing) lists the
 * members of today, not those the cluster started with, and must still
 * arrive at the same ID.  Give every cluster its own token (etcd's advice too).
 */
static uint64_t cluster_id_of(const char *token)
{
    const void *parts[2] = {"cluster", token};
    size_t lens[2] = {7, strlen(token)};
    return hash64(parts, lens, 2);
}

static void members_free(struct boot_state *bs)
{
    for (size_t i = 0; i < bs->n_members; i++)
        for (size_t k = 0; k < bs->members[i].n_peer_urls; k++)
            free(bs->members[i].peer_urls[k]);
    memset(bs->members, 0, sizeof bs->members);
    bs->n_members = 0;
}

/* The membership and IDs --initial-cluster describes. */
static int members_from_config(const struct config *cfg, struct boot_state *bs, char *err, size_t len)
{
    bs->self_id = 0;
    if (cfg->n_members > RAFT_MAX_MEMBERS)
        return fail(err, len, -CAIRN_E_CONFIG, "option --initial-cluster: at most %d members", RAFT_MAX_MEMBERS);
    for (size_t i = 0; i < cfg->n_members; i++) {
        const struct config_member *cm = &cfg->members[i];
        struct boot_member *m = &bs->members[bs->n_members++];
        const char *urls[BOOT_MAX_URLS];
        snprintf(m->name, sizeof m->name, "%s", cm->name);
        for (size_t k = 0; k < cm->peer_urls.n && k < BOOT_MAX_URLS; k++) {
            m->peer_urls[k] = strdup(cm->peer_urls.v[k].url);
            urls[k] = cm->peer_urls.v[k].url;
            m->n_peer_urls++;
        }
        m->id = boot_member_id(cfg->initial_cluster_token, urls, m->n_peer_urls);
        for (size_t j = 0; j + 1 < bs->n_members; j++)
            if (bs->members[j].id == m->id)
                return fail(err, len, -CAIRN_E_CONFIG,
                            "option --initial-cluster: members '%s' and '%s' have the same peer URLs",
                            bs->members[j].name, m->name);
        if (!strcmp(cm->name, cfg->name))
            bs->self_id = m->id;
    }
    if (!bs->self_id)
        return fail(err, len, -CAIRN_E_CONFIG, "option --initial-cluster: it has no member named '%s' (--name)",
                    cfg->name);
    bs->cluster_id = cluster_id_of(cfg->initial_cluster_token);
    return 0;
}

/* The ClusterInit kept in every WAL segment's metadata. */
static int pack_cluster(const struct boot_state *bs, const char *token, uint8_t **out, size_t *out_len)
{
    Cairnint__ClusterInit ci = CAIRNINT__CLUSTER_INIT__INIT;
    Cairn__Member ms[RAFT_MAX_MEMBERS], *mp[RAFT_MAX_MEMBERS];
    ci.cluster_id = bs->cluster_id;
    ci.member_id = bs->self_id;
    ci.token = (char *)token;
    ci.n_members = bs->n_members;
    ci.members = mp;
    for (size_t i = 0; i < bs->n_members; i++) {
        cairn__member__init(&ms[i]);
        ms[i].id = bs->members[i].id;
        ms[i].name = (char *)bs->members[i].name;
        ms[i].n_peer_urls = bs->members[i].n_peer_urls;
        ms[i].peer_urls = (char **)bs->members[i].peer_urls;
        mp[i] = &ms[i];
    }
    *out_len = cairnint__cluster_init__get_packed_size(&ci);
    *out = malloc(*out_len ? *out_len : 1);
    if (!*out)
        return -ENOMEM;
    cairnint__cluster_init__pack(&ci, *out);
    return 0;
}

int boot_pack_member_set(const struct boot_member *members, size_t n, uint8_t **out, size_t *out_len)
{
    Cairnint__MemberSet set = CAIRNINT__MEMBER_SET__INIT;
    Cairn__Member ms[RAFT_MAX_MEMBERS], *mp[RAFT_MAX_MEMBERS];
    if (n > RAFT_MAX_MEMBERS)
        return -EINVAL;
    set.n_members = n;
    set.members = mp;
    for (size_t i = 0; i < n; i++) {
        cairn__member__init(&ms[i]);
        ms[i].id = members[i].id;
        ms[i].name = (char *)members[i].name;
        ms[i].n_peer_urls = members[i].n_peer_urls;
        ms[i].peer_urls = (char **)members[i].peer_urls;
        mp[i] = &ms[i];
    }
    *out_len = cairnint__member_set__get_packed_size(&set);
    *out = malloc(*out_len ? *out_len : 1);
    if (!*out)
        return -ENOMEM;
    cairnint__member_set__pack(&set, *out);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
            *p = '/';
        }
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/*
 * A copy of another cluster's store becomes the state of a new one (etcdutl
 * snapshot restore): every key, revision and lease stays; the alarms go,
 * since they belonged to the old members; the consistent index restarts at 0
 * so that the bootstrap's entry 1 (the new member set, written next) and
 * then the new cluster's log apply.
 */
static int restore_prepare(struct mvcc_store *s)
{
    int rc = mvcc_set_consistent_index(s, 0, 0);
    if (rc < 0)
        return rc;
    /* the alarm record (daemon/alarm.c: ns "alarm", name "set"), as entry 1 of nothing */
    struct mvcc_entry e = {.index = 1, .term = 1, .req = {.type = MVCC_REQ_RECORD_DELETE}};
    e.req.record.ns = (struct mvcc_buf){(const uint8_t *)"alarm", 5};
    e.req.record.name = (struct mvcc_buf){(const uint8_t *)"set", 3};
    struct mvcc_result *res = NULL;
    if ((rc = mvcc_apply(s, &e, 1, &res)) < 0)
        return rc;
    mvcc_result_free(res);
    return mvcc_set_consistent_index(s, 0, 0);
}

/*
 * A fresh member directory, built under member.tmp and renamed into place so
 * a crash leaves either nothing or a whole directory.  A new cluster's member
 * starts from raft's bootstrap snapshot {index 1, term 1, the initial voters}
 * with a store whose consistent index is 1; a joining member from nothing.
 */
static int create_member_dir(const struct config *cfg, struct boot_state *bs, int bootstrap, const char *restore_from,
                             struct mvcc_status *restored, char *err, size_t len)
{
    char tmp[4200], sub[4300];
    int rc;
    uint8_t *blob = NULL, *conf = NULL;
    size_t blob_len = 0, conf_len = 0;
    struct wal *w = NULL;

    snprintf(tmp, sizeof tmp, "%s.tmp", bs->member_dir);
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS); /* a leftover of a crash during an earlier bootstrap */
    if ((rc = mkdir_p(tmp, 0700)) < 0)
        return fail(err, len, rc, "cannot create %s: %s", tmp, strerror(-rc));

    snprintf(sub, sizeof sub, "%s/db", tmp);
    struct mvcc_store *s = NULL;
    char why[512] = "";
    if (restore_from && ((rc = mkdir_p(sub, 0700)) < 0 || (rc = mvcc_restore(sub, restore_from, why, sizeof why)) < 0)) {
        fail(err, len, rc, "cannot copy %s into %s: %s", restore_from, sub, why[0] ? why : cairn_strerror(rc));
        goto out;
    }
    if ((rc = mvcc_open(sub, NULL, &s, why, sizeof why)) < 0) {
        fail(err, len, rc, "cannot %s the store: %s", restore_from ? "open the restored" : "create", why);
        goto out;
    }
    if (restore_from && (rc = restore_prepare(s)) < 0) {
        mvcc_close(s);
        fail(err, len, rc, "cannot prepare the restored store in %s: %s", sub, cairn_strerror(rc));
        goto out;
    }
    if (bootstrap) {
        /* entry 1 of a new cluster: the member set, in the store so snapshots carry it */
        uint8_t *set = NULL;
        size_t set_len = 0;
        if ((rc = boot_pack_member_set(bs->members, bs->n_members, &set, &set_len)) < 0) {
            mvcc_close(s);
            goto out;
        }
        struct mvcc_entry e = {.index = 1, .term = 1, .req = {.type = MVCC_REQ_RECORD_PUT}};
        e.req.record.ns = (struct mvcc_buf){(const uint8_t *)MEMBERS_RECORD_NS, strlen(MEMBERS_RECORD_NS)};
        e.req.record.name = (struct mvcc_buf){(const uint8_t *)MEMBERS_RECORD_NAME, strlen(MEMBERS_RECORD_NAME)};
        e.req.record.value = (struct mvcc_buf){set, set_len};
        struct mvcc_result *res = NULL;
        rc = mvcc_apply(s, &e, 1, &res);
        free(set);
        mvcc_result_free(res);
        if (rc == 0)
            rc = mvcc_sync(s);
    }
    if (rc == 0 && restored)
        rc = mvcc_store_status(s, restored);
    mvcc_close(s);
    if (rc < 0) {
        fail(err, len, rc, "cannot initialise the store in %s: %s", sub, cairn_strerror(rc));
        goto out;
    }

    snprintf(sub, sizeof sub, "%s/snap", tmp);
    if ((rc = mkdir_p(sub, 0700)) < 0) {
        fail(err, len, rc, "cannot create %s: %s", sub, strerror(-rc));
        goto out;
    }
    struct raft_conf_state cs = {0};
    if (bootstrap) {
        for (size_t i = 0; i < bs->n_members; i++)
            cs.voters[cs.n_voters++] = bs->members[i].id;
        if ((rc = raftmsg_conf_encode(&cs, &conf, &conf_len)) < 0)
            goto out;
        struct snap_meta sm = {.term = 1, .index = 1, .conf_state = conf, .conf_len = conf_len};
        if ((rc = snap_save(sub, &sm)) < 0) {
            fail(err, len, rc, "cannot write the bootstrap snapshot in %s: %s", sub, cairn_strerror(rc));
            goto out;
        }
    }

    if ((rc = pack_cluster(bs, cfg->initial_cluster_token, &blob, &blob_len)) < 0)
        goto out;
    snprintf(sub, sizeof sub, "%s/wal", tmp);
    struct wal_metadata meta = {.member_id = bs->self_id, .cluster_id = bs->cluster_id, .blob = blob,
                                .blob_len = blob_len};
    struct wal_error we = {0};
    if ((rc = wal_create(sub, &meta, NULL, &w, &we)) < 0) {
        fail(err, len, rc, "cannot create the WAL in %s: %s", sub, we.msg[0] ? we.msg : cairn_strerror(rc));
        goto out;
    }
    if (bootstrap) {
        struct wal_snapshot ws = {.index = 1, .term = 1};
        struct wal_hardstate hs = {.term = 1, .vote = 0, .commit = 1};
        if ((rc = wal_save_snapshot(w, &ws)) < 0 || (rc = wal_save(w, &hs, NULL, 0, NULL)) < 0) {
            fail(err, len, rc, "cannot write the WAL in %s: %s", sub, cairn_strerror(rc));
            goto out;
        }
    }
    rc = wal_close(w);
    w = NULL;
    if (rc == 0 && (rc = fsync_dir(tmp)) == 0 && rename(tmp, bs->member_dir) < 0)
        rc = -errno;
    if (rc == 0)
        rc = fsync_dir(cfg->data_dir);
    if (rc < 0)
        fail(err, len, rc, "cannot move %s into place: %s", tmp, cairn_strerror(rc));
out:
    wal_close(w);
    free(blob);
    free(conf);
    return rc;
}

/* The WAL metadata must name this member of this cluster. */
static int check_identity(const struct config *cfg, const struct wal_contents *wc, struct boot_state *bs, char *err,
                          size_t len)
{
    Cairnint__ClusterInit *ci = cairnint__cluster_init__unpack(NULL, wc->meta.blob_len, wc->meta.blob);
    if (!ci)
        return fail(err, len, -CAIRN_E_CORRUPT, "%s: the WAL metadata does not decode: not a Cairn data directory?",
                    bs->wal_dir);
    int rc = 0;
    const char *self_name = "";
    for (size_t i = 0; i < ci->n_members; i++)
        if (ci->members[i]->id == wc->meta.member_id)
            self_name = ci->members[i]->name;
    if (ci->cluster_id != wc->meta.cluster_id || ci->member_id != wc->meta.member_id) {
        rc = fail(err, len, -CAIRN_E_CORRUPT, "%s: the WAL metadata contradicts itself (cluster %016" PRIx64
                  " vs %016" PRIx64 ")", bs->wal_dir, ci->cluster_id, wc->meta.cluster_id);
    } else if (strcmp(self_name, cfg->name)) {
        rc = fail(err, len, -CAIRN_E_CLUSTER_ID_MISMATCH,
                  "data directory %s belongs to member '%s' (%016" PRIx64 ") of cluster %016" PRIx64
                  ", not to --name '%s'; use that member's name or another --data-dir",
                  cfg->data_dir, self_name, wc->meta.member_id, wc->meta.cluster_id, cfg->name);
    } else if (strcmp(ci->token ? ci->token : "", cfg->initial_cluster_token)) {
        rc = fail(err, len, -CAIRN_E_CLUSTER_ID_MISMATCH,
                  "data directory %s belongs to cluster %016" PRIx64 " made with --initial-cluster-token '%s', "
                  "not '%s'; use that token or another --data-dir",
                  cfg->data_dir, wc->meta.cluster_id, ci->token ? ci->token : "", cfg->initial_cluster_token);
    }
    if (rc == 0) {
        members_free(bs);
        bs->cluster_id = ci->cluster_id;
        bs->self_id = ci->member_id;
        for (size_t i = 0; i < ci->n_members && i < RAFT_MAX_MEMBERS; i++) {
            struct boot_member *m = &bs->members[bs->n_members++];
            m->id = ci->members[i]->id;
            snprintf(m->name, sizeof m->name, "%s", ci->members[i]->name);
            for (size_t k = 0; k < ci->members[i]->n_peer_urls && k < BOOT_MAX_URLS; k++)
                m->peer_urls[m->n_peer_urls++] = strdup(ci->members[i]->peer_urls[k]);
        }
    }
    cairnint__cluster_init__free_unpacked(ci, NULL);
    return rc;
}

/*
 * The store's schema upgrade at open (mvcc_upgrade_fn): in the journal when
 * it begins and when it is done, and systemd told how far it is and given
 * more time meanwhile, since the member is not ready before it ends: the
 * units' TimeoutStartSec= is 2 min, 1M keys take about 8 s, and a stop
 * rolls the copy back.  Each report asks for two more minutes, not one
 * report's interval: SQLite reports nothing while it commits, a sixth of
 * the time (docs/storage-mvcc.md, "Layout"), longer on a slow disk.
 */
static void store_upgrade(void *arg, const struct mvcc_upgrade *u)
{
    (void)arg;
    int64_t ms = u->elapsed_ns / 1000000;
    if (u->phase == MVCC_UPGRADE_DONE) {
        log_event(LOG_LEVEL_NOTICE, MSGID_STORE_UPGRADE,
                  LOG_FIELDS(LOG_STR("CAIRN_FILE", u->path), LOG_I64("CAIRN_ROWS", u->rows),
                             LOG_I64("CAIRN_DURATION_MS", ms)),
                  "upgraded the store %s from schema %d to %d: %" PRId64 " revisions in %.1f s", u->path, u->from,
                  u->to, u->rows, (double)ms / 1000);
        sd_notifyf(0, "STATUS=upgraded the store's schema in %.1f s; recovering", (double)ms / 1000);
        return;
    }
    if (u->phase == MVCC_UPGRADE_BEGIN)
        log_event(LOG_LEVEL_NOTICE, MSGID_STORE_UPGRADE,
                  LOG_FIELDS(LOG_STR("CAIRN_FILE", u->path), LOG_I64("CAIRN_ROWS", u->rows)),
                  "upgrading the store %s from schema %d to %d: copying its %" PRId64
                  " revisions once before serving (about 8 s per million; a stop starts it over)",
                  u->path, u->from, u->to, u->rows);
    sd_notifyf(0, "EXTEND_TIMEOUT_USEC=120000000\nSTATUS=upgrading the store's schema (%" PRId64 " revisions): %" PRId64
                  " s so far", u->rows, ms / 1000);
}

static int recover(const struct config *cfg, struct boot_state *bs, char *err, size_t len)
{
    struct snap_meta sm = {0};
    struct snap_load_info info = {0};
    struct wal_snapshot ws = {0};
    struct wal_error we = {0};
    struct wal_options wo = {.keep_segments = cfg->max_wal_files};
    char why[512] = "";
    int rc = snap_load_newest(bs->snap_dir, &sm, &info);
    if (rc == 0) {
        if (info.broken)
            log_event(LOG_LEVEL_ERR, MSGID_CORRUPTION, LOG_FIELDS(LOG_STR("CAIRN_FILE", info.broken_name)),
                    "%u snapshot file(s) in %s failed verification and were renamed *.broken; using %s",
                    info.broken, bs->snap_dir, info.name);
        ws.index = sm.index;
        ws.term = sm.term;
        bs->restore.snapshot.index = sm.index;
        bs->restore.snapshot.term = sm.term;
        rc = raftmsg_conf_decode(sm.conf_state, sm.conf_len, &bs->restore.snapshot.conf_state);
        if (rc < 0)
            rc = fail(err, len, -CAIRN_E_CORRUPT, "%s/%s: the membership in the snapshot does not decode",
                      bs->snap_dir, info.name);
        snap_meta_free(&sm);
        if (rc < 0)
            return rc;
    } else if (rc != -CAIRN_E_NOT_FOUND) {
        return fail(err, len, rc, "cannot read the snapshots in %s: %s", bs->snap_dir, cairn_strerror(rc));
    }

    if ((rc = wal_open(bs->wal_dir, &ws, &wo, &bs->wal, &we)) < 0) {
        if (we.file[0])
            return fail(err, len, rc, "WAL %s/%s at offset %" PRIu64 ": %s", bs->wal_dir, we.file, we.offset, we.msg);
        return fail(err, len, rc, "cannot open the WAL in %s: %s", bs->wal_dir,
                    we.msg[0] ? we.msg : cairn_strerror(rc));
    }
    struct wal_contents wc;
    wal_read_all(bs->wal, &wc);
    if (wc.repair.cut)
        log_event(LOG_LEVEL_WARNING, MSGID_WAL_REPAIRED, LOG_FIELDS(LOG_STR("CAIRN_FILE", wc.repair.file), LOG_U64("CAIRN_OFFSET", wc.repair.offset)),
                    "WAL: cut a torn tail of %" PRIu64 " bytes from %s at offset %" PRIu64 " (%s); it was never acknowledged",
                    wc.repair.bytes, wc.repair.file, wc.repair.offset, wc.repair.reason);
    if ((rc = check_identity(cfg, &wc, bs, err, len)) < 0)
        return rc;

    bs->restore.hard_state = (struct raft_hard_state){wc.hardstate.term, wc.hardstate.vote, wc.hardstate.commit};
    if (wc.n_entries) {
        bs->entries = calloc(wc.n_entries, sizeof(*bs->entries));
        if (!bs->entries)
            return -ENOMEM;
        for (size_t i = 0; i < wc.n_entries; i++)
            bs->entries[i] = (struct raft_entry){.term = wc.entries[i].term, .index = wc.entries[i].index,
                                                 .type = wc.entries[i].type, .len = (uint32_t)wc.entries[i].len,
                                                 .data = wc.entries[i].data};
        bs->restore.entries = bs->entries;
        bs->restore.n_entries = wc.n_entries;
    }

    /* An 8 MiB page cache per connection, not SQLite's 64: reads go through
     * mmap, and a batch dirties a few hundred pages at the table's right
     * edge, so the rest only held RSS.  1M keys of 256 bytes loaded at 256
     * puts in flight: 163 MB RSS after the load, 222 MB with 64 MiB, the
     * same put rate (docs/performance.md). */
    struct mvcc_options mo = {.min_lease_ttl = (cfg->election_ms * 3 + 1999) / 2000, .finish_compaction = false,
                              .cache_mb = 8, .value_cache_bytes = (size_t)cfg->value_cache_bytes,
                              .checkpoint_elsewhere = true, /* the node's checkpointer (ckpt.h) */
                              .on_upgrade = store_upgrade};
    if ((rc = mvcc_open(bs->db_dir, &mo, &bs->store, why, sizeof why)) < 0)
        return fail(err, len, rc, "cannot open the store: %s", why);
    struct mvcc_status st;
    if ((rc = mvcc_store_status(bs->store, &st)) < 0)
        return fail(err, len, rc, "cannot read the store's state in %s: %s", bs->db_dir, cairn_strerror(rc));
    if (st.consistent_index < ws.index)
        return fail(err, len, -CAIRN_E_CORRUPT,
                    "the store in %s holds entries up to index %" PRIu64 " but the snapshot is at %" PRIu64
                    ": the store was replaced or lost its last writes; restore the member from a backup or re-add it",
                    bs->db_dir, st.consistent_index, ws.index);
    bs->joining = bs->restore.hard_state.term == 0 && ws.index == 0 && wc.n_entries == 0;
    log_info(LOG_FIELDS(LOG_HEX("CAIRN_MEMBER", bs->self_id), LOG_HEX("CAIRN_CLUSTER", bs->cluster_id),
                        LOG_U64("CAIRN_INDEX", st.consistent_index), LOG_I64("CAIRN_REVISION", st.revision)),
             "recovered %s: snapshot at %" PRIu64 ", %zu WAL entries after it, store applied to %" PRIu64
             ", revision %" PRId64,
             bs->member_dir, ws.index, wc.n_entries, st.consistent_index, st.revision);
    return 0;
}

int boot_open(const struct config *cfg, struct boot_state *bs, char *err, size_t len)
{
    int rc;
    memset(bs, 0, sizeof(*bs));
    snprintf(bs->member_dir, sizeof bs->member_dir, "%s/member", cfg->data_dir);
    snprintf(bs->wal_dir, sizeof bs->wal_dir, "%s/wal", bs->member_dir);
    snprintf(bs->snap_dir, sizeof bs->snap_dir, "%s/snap", bs->member_dir);
    snprintf(bs->db_dir, sizeof bs->db_dir, "%s/db", bs->member_dir);
    snprintf(bs->incoming_dir, sizeof bs->incoming_dir, "%s/incoming", bs->member_dir);

    if ((rc = members_from_config(cfg, bs, err, len)) < 0)
        goto fail;
    if ((rc = mkdir_p(cfg->data_dir, 0700)) < 0) {
        fail(err, len, rc, "cannot create --data-dir %s: %s", cfg->data_dir, strerror(-rc));
        goto fail;
    }
    rc = wal_exists(bs->wal_dir);
    if (rc < 0) {
        fail(err, len, rc, "cannot read %s: %s", bs->wal_dir, cairn_strerror(rc));
        goto fail;
    }
    if (rc == 0) {
        struct stat st;
        if (stat(bs->member_dir, &st) == 0) {
            rc = fail(err, len, -CAIRN_E_CORRUPT,
                      "%s exists but holds no WAL: a damaged data directory; move it away to start afresh",
                      bs->member_dir);
            goto fail;
        }
        int bootstrap = cfg->initial_cluster_state == CLUSTER_STATE_NEW;
        if ((rc = create_member_dir(cfg, bs, bootstrap, NULL, NULL, err, len)) < 0)
            goto fail;
        bs->bootstrapped = bootstrap;
        log_notice(LOG_FIELDS(LOG_HEX("CAIRN_MEMBER", bs->self_id), LOG_HEX("CAIRN_CLUSTER", bs->cluster_id)),
                   "%s %s: member %016" PRIx64 " of cluster %016" PRIx64 " with %zu initial member(s)",
                   bootstrap ? "bootstrapped a new cluster in" : "prepared to join a cluster in", bs->member_dir,
                   bs->self_id, bs->cluster_id, bs->n_members);
    }
    if ((rc = mkdir_p(bs->incoming_dir, 0700)) < 0) {
        fail(err, len, rc, "cannot create %s: %s", bs->incoming_dir, strerror(-rc));
        goto fail;
    }
    if ((rc = recover(cfg, bs, err, len)) < 0)
        goto fail;
    return 0;
fail:
    boot_close(bs);
    return rc;
}

void boot_release_restore(struct boot_state *bs)
{
    free(bs->entries);
    bs->entries = NULL;
    bs->restore.entries = NULL;
    bs->restore.n_entries = 0;
    if (bs->wal)
        wal_free_contents(bs->wal);
}

void boot_close(struct boot_state *bs)
{
    boot_release_restore(bs);
    if (bs->store)
        mvcc_close(bs->store);
    bs->store = NULL;
    wal_close(bs->wal);
    bs->wal = NULL;
    members_free(bs);
}

/* A data directory that does not exist or holds nothing. */
static int dir_empty(const char *path, char *first, size_t len)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 1 : -errno;
    struct dirent *de;
    int empty = 1;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(first, len, "%s", de->d_name);
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}

int boot_restore(const struct config *cfg, const char *snapshot, struct boot_restore_info *info, char *err,
                 size_t len)
{
    struct boot_state bs;
    char first[256] = "";
    struct mvcc_status st = {0};
    int rc;
    memset(&bs, 0, sizeof bs);
    memset(info, 0, sizeof *info);
    snprintf(bs.member_dir, sizeof bs.member_dir, "%s/member", cfg->data_dir);
    if ((rc = members_from_config(cfg, &bs, err, len)) < 0)
        goto out;
    if ((rc = dir_empty(cfg->data_dir, first, sizeof first)) <= 0) {
        if (rc == 0)
            rc = fail(err, len, -CAIRN_E_CONFIG,
                      "--data-dir %s is not empty (it holds '%s'): restore into a new, empty directory; "
                      "a member's old data is never overwritten",
                      cfg->data_dir, first);
        else
            fail(err, len, rc, "cannot read --data-dir %s: %s", cfg->data_dir, strerror(-rc));
        goto out;
    }
    int made = rc == 1 && access(cfg->data_dir, F_OK) < 0;
    if ((rc = mkdir_p(cfg->data_dir, 0700)) < 0) {
        fail(err, len, rc, "cannot create --data-dir %s: %s", cfg->data_dir, strerror(-rc));
        goto out;
    }
    if ((rc = create_member_dir(cfg, &bs, 1, snapshot, &st, err, len)) < 0) {
        /* leave the directory as it was found, so the restore can simply be run again */
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", bs.member_dir);
        nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        if (made)
            rmdir(cfg->data_dir);
        goto out;
    }
    info->cluster_id = bs.cluster_id;
    info->self_id = bs.self_id;
    info->n_members = bs.n_members;
    info->revision = st.revision;
    info->compact_revision = st.compact_revision;
    info->db_size = st.db_size;
    snprintf(info->member_dir, sizeof info->member_dir, "%s", bs.member_dir);
out:
    members_free(&bs);
    return rc;
}
