/*
 * storage/mvcc snapshots: a consistent copy of the database written with
 * SQLite's online backup API from a reader's connection (one read
 * transaction for the whole copy, so the writer keeps going), and the
 * replacement of a closed store by such a copy.  Framing, checksums and
 * streaming to followers belong to storage/snap, not here.
 */
#include "storage/mvcc_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/errors.h"

static int fsync_path(const char *path, bool dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int fsync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    int rc = fsync_path(dirname(copy), true);
    free(copy);
    return rc;
}

int mvcc_snapshot_write(struct mvcc_reader *r, const char *path, uint64_t *index)
{
    char *tmp = NULL;
    struct conn dst = {0};
    int rc;
    mvcc_reader_idle(r); /* the backup takes its own read of the newest state */
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return -ENOMEM;
    unlink(tmp);
    if ((rc = conn_open(&dst, tmp, false, &(struct mvcc_options){.cache_mb = 1, .mmap_mb = -1}, NULL, 0)) < 0)
        goto out;
    sqlite3_backup *b = sqlite3_backup_init(dst.db, "main", r->c.db, "main");
    if (!b) {
        rc = sql_err(sqlite3_errcode(dst.db));
        goto out;
    }
    /* All pages in one step: one read transaction, one consistent state. */
    int src = sqlite3_backup_step(b, -1);
    int fin = sqlite3_backup_finish(b);
    if (src != SQLITE_DONE || fin != SQLITE_OK) {
        rc = sql_err(src != SQLITE_DONE ? src : fin);
        goto out;
    }
    /* A self-contained file: no -wal beside it is needed to read it. */
    if ((rc = sql_err(sqlite3_exec(dst.db, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL))) < 0)
        goto out;
    struct state st;
    if ((rc = state_get(&dst, &st)) < 0)
        goto out;
    if (index)
        *index = st.ci;
    conn_close(&dst);
    if ((rc = fsync_path(tmp, false)) < 0)
        goto out;
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto out;
    }
    rc = fsync_parent(path);
out:
    conn_close(&dst);
    if (rc < 0 && tmp)
        unlink(tmp);
    free(tmp);
    return rc;
}

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;
    char buf[1 << 16];
    if (in < 0)
        return -errno;
    if ((out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        rc = -errno;
        goto done;
    }
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto done;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = -errno;
                goto done;
            }
            off += w;
        }
    }
    if (fsync(out) < 0)
        rc = -errno;
done:
    if (out >= 0)
        close(out);
    close(in);
    return rc;
}

int mvcc_restore(const char *dir, const char *snapshot_path, char *err, size_t errlen)
{
    struct conn c = {0};
    char *db = NULL, *tmp = NULL, *wal = NULL, *shm = NULL;
    int rc;
    if (err && errlen)
        err[0] = 0;
    /* Check the copy before the store is touched. */
    if ((rc = conn_open(&c, snapshot_path, true, &(struct mvcc_options){.cache_mb = 1, .mmap_mb = -1}, err, errlen)) < 0)
        goto out;
    struct state st;
    if ((rc = schema_init(&c, false, NULL, err, errlen)) < 0)
        goto out;
    if ((rc = state_get(&c, &st)) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: no state row: %s", snapshot_path, cairn_strerror(rc));
        goto out;
    }
    conn_close(&c);
    if (asprintf(&db, "%s/%s", dir, MVCC_DB_NAME) < 0 || asprintf(&tmp, "%s.restore", db) < 0 ||
        asprintf(&wal, "%s-wal", db) < 0 || asprintf(&shm, "%s-shm", db) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = copy_file(snapshot_path, tmp)) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: copying %s: %s", tmp, snapshot_path, strerror(-rc));
        goto out;
    }
    /* The old WAL must never be replayed over the new file. */
    if ((unlink(wal) < 0 && errno != ENOENT) || (unlink(shm) < 0 && errno != ENOENT) ||
        rename(tmp, db) < 0) {
        rc = -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: replacing the database: %s", db, strerror(errno));
        goto out;
    }
    rc = fsync_path(dir, true);
out:
    conn_close(&c);
    if (rc < 0 && tmp)
        unlink(tmp);
    free(db);
    free(tmp);
    free(wal);
    free(shm);
    return rc;
}

int mvcc_snapshot_check(const char *path, bool full, struct mvcc_status *st, char *err, size_t errlen)
{
    struct conn c = {0};
    int rc;
    if (err && errlen)
        err[0] = 0;
    struct stat sb;
    if (stat(path, &sb) < 0) {
        rc = -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    if (!S_ISREG(sb.st_mode)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: not a regular file", path);
        return -EINVAL;
    }
    if ((rc = conn_open(&c, path, true, &(struct mvcc_options){.cache_mb = 4, .mmap_mb = -1}, err, errlen)) < 0)
        goto out;
    if ((rc = schema_init(&c, false, NULL, err, errlen)) < 0)
        goto out;
    if (full) {
        /* integrity_check reports up to N problems as rows; "ok" alone means none */
        sqlite3_stmt *q = NULL;
        int src = sqlite3_prepare_v2(c.db, "PRAGMA integrity_check(5)", -1, &q, NULL);
        char first[256] = "";
        int bad = 0;
        while (src == SQLITE_OK || src == SQLITE_ROW) {
            if ((src = sqlite3_step(q)) != SQLITE_ROW)
                break;
            const char *row = (const char *)sqlite3_column_text(q, 0);
            if (row && strcmp(row, "ok")) {
                if (!bad++)
                    snprintf(first, sizeof first, "%s", row);
            }
        }
        sqlite3_finalize(q);
        if (src != SQLITE_DONE || bad) {
            if (err && errlen)
                snprintf(err, errlen, "%s: damaged: SQLite's integrity check found %s%s", path,
                         bad ? first : sqlite3_errmsg(c.db), bad > 1 ? " (and more)" : "");
            rc = -CAIRN_E_CORRUPT;
            goto out;
        }
    }
    struct mvcc_status s;
    if ((rc = status_read(&c, &s)) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot read its state row: %s", path, cairn_strerror(rc));
        goto out;
    }
    if (st)
        *st = s;
out:
    conn_close(&c);
    return rc;
}

int mvcc_set_consistent_index(struct mvcc_store *s, uint64_t index, uint64_t term)
{
    struct state st = s->st;
    st.ci = index;
    st.term = term;
    int rc = conn_exec(&s->c, ST_BEGIN_IMMEDIATE);
    if (rc < 0)
        return rc;
    if ((rc = state_put(&s->c, &st)) < 0 || (rc = conn_exec(&s->c, ST_COMMIT)) < 0) {
        conn_exec(&s->c, ST_ROLLBACK);
        return rc;
    }
    /* No reader is open (the caller's promise), so no published index version needs the new state. */
    s->st = st;
    return 0;
}
