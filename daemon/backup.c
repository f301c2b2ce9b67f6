/*
 * Snapshot save (see backup.h).  One mutex guards the session table.  The
 * copy, its hash and its size are made on a reader thread (rpc_call_read:
 * the read path's threads own the store's read handles); chunks are read
 * with one pread of at most 1 MiB on the nng thread that got the request: a
 * short read of a file just written (in the page cache), never a wait on
 * another thread.  A copy is of this member's store as it has applied it, so
 * a save from a follower that lags is older; the reply says which revision.
 */
#include "daemon/backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "proto/cairn.pb-c.h"
#include "storage/mvcc.h"

enum { S_FREE, S_COPYING, S_READY };

struct session {
    struct backups *b;
    int state;
    uint64_t id;
    char path[4400];
    int fd;
    int refs;             /* chunk reads in progress (the fd stays open) */
    uint64_t size;
    int64_t revision;
    uint8_t sha256[32];
    int64_t last_ms;      /* last request for it */
};

struct backups {
    struct node *node;
    char dir[4200];
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct session s[BACKUP_MAX_SESSIONS];
    int stopping;
    pthread_t thread;
};

/* Remove every backup-* file in dir (copies and their .tmp) a previous run may have left. */
static void remove_copies(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, "backup-", 7))
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
}

/* Drop a session's copy; mu held, no chunk read in progress. */
static void session_clear(struct session *s)
{
    if (s->fd >= 0)
        close(s->fd);
    if (s->path[0])
        unlink(s->path);
    struct backups *b = s->b;
    memset(s, 0, sizeof(*s));
    s->b = b;
    s->fd = -1;
}

/* Delete the copies idle too long; mu held. */
static void expire(struct backups *b, int64_t now)
{
    for (int i = 0; i < BACKUP_MAX_SESSIONS; i++) {
        struct session *s = &b->s[i];
        if (s->state == S_READY && !s->refs && now - s->last_ms >= BACKUP_IDLE_MS) {
            log_info(LOG_FIELDS(LOG_HEX("CAIRN_SNAPSHOT", s->id)),
                     "snapshot save %016" PRIx64 ": nobody asked for it for %d s; deleted its copy", s->id,
                     BACKUP_IDLE_MS / 1000);
            session_clear(s);
        }
    }
}

static void *expiry_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-backup"); /* top -H, perf and gdb show it */
    struct backups *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 5;
        pthread_cond_timedwait(&b->cond, &b->mu, &ts);
        expire(b, mono_now_ms());
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* SHA-256 and size of the file open at fd. */
static int hash_file(int fd, uint8_t sha[32], uint64_t *size)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *buf = malloc(BACKUP_CHUNK_BYTES);
    int rc = 0;
    uint64_t off = 0;
    if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        rc = -ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t n = pread(fd, buf, BACKUP_CHUNK_BYTES, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        off += (uint64_t)n;
    }
    unsigned int len = 0;
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_DigestFinal_ex(ctx, md, &len);
    memcpy(sha, md, 32);
    *size = off;
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}

/* Answer one chunk of a ready session at offset (the session is referenced by the caller). */
static void send_chunk(struct rpc_call *c, struct session *s, uint64_t offset)
{
    struct backups *b = s->b;
    size_t want = s->size - offset < BACKUP_CHUNK_BYTES ? (size_t)(s->size - offset) : BACKUP_CHUNK_BYTES;
    uint8_t *buf = malloc(want ? want : 1);
    ssize_t n = -1;
    int err = ENOMEM;
    if (buf) {
        size_t got = 0;
        while (got < want) {
            n = pread(s->fd, buf + got, want - got, (off_t)(offset + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                err = n < 0 ? errno : EIO; /* shorter than it was when hashed: someone changed it */
                break;
            }
            got += (size_t)n;
        }
        n = got == want ? (ssize_t)got : -1;
    }
    if (n < 0) {
        rpc_call_error(c, CAIRN_E_IO, "snapshot %016" PRIx64 ": cannot read %s at offset %" PRIu64 ": %s", s->id,
                       s->path, offset, strerror(err));
    } else {
        Cairn__Response resp = CAIRN__RESPONSE__INIT;
        Cairn__SnapshotResponse body = CAIRN__SNAPSHOT_RESPONSE__INIT;
        body.snapshot_id = s->id;
        body.offset = offset;
        body.total_size = s->size;
        body.blob.data = buf;
        body.blob.len = (size_t)n;
        body.done = offset + (uint64_t)n == s->size;
        if (body.done) {
            body.sha256.data = s->sha256;
            body.sha256.len = 32;
        }
        body.revision = s->revision;
        resp.body_case = CAIRN__RESPONSE__BODY_SNAPSHOT;
        resp.snapshot = &body;
        rpc_call_reply(c, &resp, 0);
    }
    free(buf);
    pthread_mutex_lock(&b->mu);
    s->refs--;
    s->last_ms = mono_now_ms();
    pthread_mutex_unlock(&b->mu);
}

/* On a reader thread: make the copy, hash it, answer with its first chunk. */
static void make_copy(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    struct session *s = arg;
    struct backups *b = s->b;
    char why[512] = "";
    struct mvcc_status st = {0};
    int64_t t0 = mono_now_ms();
    int rc = r ? mvcc_snapshot_write(r, s->path, NULL) : err;
    if (rc == 0 && (rc = mvcc_snapshot_check(s->path, false, &st, why, sizeof why)) == 0) {
        s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
        rc = s->fd < 0 ? -errno : hash_file(s->fd, s->sha256, &s->size);
    }
    if (rc < 0) {
        log_warning(LOG_FIELDS(LOG_HEX("CAIRN_SNAPSHOT", s->id)), "snapshot save: cannot copy the store to %s: %s",
                    s->path, why[0] ? why : cairn_strerror(rc));
        pthread_mutex_lock(&b->mu);
        session_clear(s);
        pthread_mutex_unlock(&b->mu);
        if (!r)
            rpc_call_unreadable(c, err);
        else
            rpc_call_error(c, rc == -ENOSPC ? CAIRN_E_NO_SPACE : CAIRN_E_IO,
                           "cannot copy the store for the snapshot: %s", why[0] ? why : cairn_strerror(rc));
        return;
    }
    s->revision = st.revision;
    log_notice(LOG_FIELDS(LOG_HEX("CAIRN_SNAPSHOT", s->id), LOG_I64("CAIRN_REVISION", st.revision),
                          LOG_U64("CAIRN_BYTES", s->size), LOG_I64("CAIRN_DURATION_MS", mono_now_ms() - t0)),
               "snapshot save %016" PRIx64 " for %s: copied the store at revision %" PRId64 " (%" PRIu64
               " bytes) in %" PRId64 " ms",
               s->id, rpc_call_remote(c), st.revision, s->size, mono_now_ms() - t0);
    pthread_mutex_lock(&b->mu);
    s->state = S_READY;
    s->refs++;
    pthread_mutex_unlock(&b->mu);
    send_chunk(c, s, 0);
}

static void snapshot(void *arg, struct rpc_call *c)
{
    struct backups *b = arg;
    const Cairn__SnapshotRequest *q = rpc_call_request(c)->snapshot;
    pthread_mutex_lock(&b->mu);
    expire(b, mono_now_ms());
    if (b->stopping) {
        pthread_mutex_unlock(&b->mu);
        rpc_call_error(c, CAIRN_E_STOPPED, NULL);
        return;
    }
    if (q->snapshot_id == 0) {
        struct session *s = NULL;
        for (int i = 0; i < BACKUP_MAX_SESSIONS && !s; i++)
            if (b->s[i].state == S_FREE)
                s = &b->s[i];
        if (!s) {
            pthread_mutex_unlock(&b->mu);
            rpc_call_error(c, CAIRN_E_TOO_MANY_REQUESTS,
                           "too many snapshot saves in progress (%d at most); wait for one to end (an abandoned one "
                           "is deleted after %d s idle)",
                           BACKUP_MAX_SESSIONS, BACKUP_IDLE_MS / 1000);
            return;
        }
        s->state = S_COPYING;
        s->id = node_next_request_id(b->node);
        s->last_ms = mono_now_ms();
        snprintf(s->path, sizeof s->path, "%s/backup-%016" PRIx64 ".db", b->dir, s->id);
        pthread_mutex_unlock(&b->mu);
        rpc_call_read(c, 0, make_copy, s);
        return;
    }
    struct session *s = NULL;
    for (int i = 0; i < BACKUP_MAX_SESSIONS && !s; i++)
        if (b->s[i].state != S_FREE && b->s[i].id == q->snapshot_id)
            s = &b->s[i];
    if (!s || s->state != S_READY) {
        pthread_mutex_unlock(&b->mu);
        rpc_call_error(c, CAIRN_E_NOT_FOUND,
                       "snapshot %016" PRIx64 " %s on this member; start a new save with snapshot_id 0",
                       q->snapshot_id,
                       s ? "is still being copied (ask again once its first chunk came)"
                         : "does not exist (it was idle for a minute, the member restarted, or the ID is wrong)");
        return;
    }
    if (q->offset > s->size) {
        uint64_t size = s->size;
        pthread_mutex_unlock(&b->mu);
        rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT,
                       "offset %" PRIu64 " is past the end of snapshot %016" PRIx64 " (%" PRIu64 " bytes)", q->offset,
                       q->snapshot_id, size);
        return;
    }
    s->refs++;
    s->last_ms = mono_now_ms();
    pthread_mutex_unlock(&b->mu);
    send_chunk(c, s, q->offset);
}

size_t backup_routes(struct backups *b, struct rpc_route *out, size_t max)
{
    const struct rpc_route routes[] = {
        {CAIRN__REQUEST__BODY_SNAPSHOT, snapshot, b, 0},
    };
    return rpc_routes_copy(out, max, routes, sizeof routes / sizeof routes[0]);
}

int backup_start(const struct config *cfg, struct node *n, struct backups **out)
{
    struct backups *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->node = n;
    snprintf(b->dir, sizeof b->dir, "%s/member/incoming", cfg->data_dir); /* boot.c's layout */
    for (int i = 0; i < BACKUP_MAX_SESSIONS; i++) {
        b->s[i].b = b;
        b->s[i].fd = -1;
    }
    remove_copies(b->dir);
    pthread_mutex_init(&b->mu, NULL);
    mono_cond_init(&b->cond);
    int rc = -pthread_create(&b->thread, NULL, expiry_main, b);
    if (rc < 0) {
        pthread_cond_destroy(&b->cond);
        pthread_mutex_destroy(&b->mu);
        free(b);
        return rc;
    }
    *out = b;
    return 0;
}

void backup_stop(struct backups *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    /* the read path and the client contexts have stopped: no copy or chunk read is in progress */
    for (int i = 0; i < BACKUP_MAX_SESSIONS; i++)
        session_clear(&b->s[i]);
    remove_copies(b->dir);
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->mu);
    free(b);
}
