/*
 * The WAL's write side: creating and opening a log directory (with its
 * flock), appending batches with one fdatasync each, cutting a new segment
 * when the current one is full, and releasing old segments.  Reading and
 * repair live in wal_read.c, the record codec in wal_record.c.
 */
#include "storage/wal_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/errors.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int wal_reserve(struct wal *w, size_t n)
{
    if (n <= w->bufcap)
        return 0;
    size_t cap = w->bufcap ? w->bufcap : 4096;
    while (cap < n)
        cap *= 2;
    uint8_t *b = realloc(w->buf, cap);
    if (!b)
        return -ENOMEM;
    w->buf = b;
    w->bufcap = cap;
    return 0;
}

static int fsync_dir(struct wal *w)
{
    return wal_io->fsync(w->dirfd);
}

/* Write all n bytes at off; a short write is retried until an error. */
static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off, size_t *written)
{
    *written = 0;
    while (*written < n) {
        ssize_t r = wal_io->pwrite(fd, p + *written, n - *written, (off_t)(off + *written));
        if (r == -EINTR)
            continue;
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EIO;
        *written += (size_t)r;
    }
    return 0;
}

static void options(struct wal *w, const struct wal_options *opts)
{
    w->segment_size = WAL_DEFAULT_SEGMENT_SIZE;
    w->keep = WAL_DEFAULT_KEEP_SEGMENTS;
    if (opts && opts->segment_size)
        w->segment_size = opts->segment_size;
    if (opts && opts->keep_segments)
        w->keep = opts->keep_segments;
    w->no_prealloc = opts ? opts->no_preallocate : 0;
}

static struct wal *wal_alloc(const char *dir, const struct wal_options *opts)
{
    struct wal *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->dirfd = w->lockfd = w->fd = -1;
    w->dir = strdup(dir);
    if (!w->dir) {
        free(w);
        return NULL;
    }
    options(w, opts);
    return w;
}

/* Take the directory's flock and write our PID into the lock file, so a
 * second opener can say who holds it. */
static int take_lock(struct wal *w, struct wal_error *err)
{
    char pid[32];
    int fd = openat(w->dirfd, WAL_LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0)
        return wal_seterr(err, -errno, WAL_LOCK_NAME, 0, "cannot open lock file in %s: %s",
                          w->dir, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        ssize_t r = pread(fd, pid, sizeof pid - 1, 0);
        pid[r > 0 ? r : 0] = '\0';
        pid[strcspn(pid, " \n")] = '\0';
        close(fd);
        if (e != EWOULDBLOCK)
            return wal_seterr(err, -e, WAL_LOCK_NAME, 0, "cannot lock %s: %s", w->dir, strerror(e));
        return wal_seterr(err, -CAIRN_E_WAL_LOCKED, WAL_LOCK_NAME, 0,
                          "WAL directory %s is locked by process %s", w->dir,
                          pid[0] ? pid : "(unknown: it has not written its PID yet)");
    }
    /* Fixed width, written in place: no truncation, so reopening on a
     * full disk needs no new block for it. */
    int n = snprintf(pid, sizeof pid, "%-20ld\n", (long)getpid());
    if (pwrite(fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return wal_seterr(err, -e, WAL_LOCK_NAME, 0, "cannot write lock file in %s: %s",
                          w->dir, strerror(e));
    }
    w->lockfd = fd;
    return 0;
}

/* Leftover temporary segments are cuts that never completed their rename:
 * they were never part of the log. */
static void remove_temporaries(struct wal *w)
{
    int fd = dup(w->dirfd);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    struct dirent *de;

    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 8 && strcmp(de->d_name + l - 8, ".wal.tmp") == 0)
            unlinkat(w->dirfd, de->d_name, 0);
    }
    closedir(d);
}

int wal_segment_create(struct wal *w, uint64_t seq, uint64_t first,
                       const struct wal_snapshot *snap, struct wal_error *err)
{
    char name[WAL_NAME_LEN + 1], tmp[WAL_NAME_LEN + 5];
    uint8_t st[24], sn[16];
    uint32_t crc = w->crc;
    size_t len = 0;
    int fd, rc;
    struct wal_seg *segs;

    snprintf(name, sizeof name, "%016llx-%016llx.wal", (unsigned long long)seq,
             (unsigned long long)first);
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    rc = wal_reserve(w, 4 * WAL_HDR + wal_pad8(w->meta_len) + sizeof st + sizeof sn);
    if (rc < 0)
        return wal_seterr(err, rc, name, 0, "out of memory");
    segs = realloc(w->segs, (w->nsegs + 1) * sizeof *segs);
    if (!segs)
        return wal_seterr(err, -ENOMEM, name, 0, "out of memory");
    w->segs = segs;

    wal_put64(st, w->hs.term);
    wal_put64(st + 8, w->hs.vote);
    wal_put64(st + 16, w->hs.commit);
    len += wal_frame_crc(w->buf, crc);
    len += wal_frame(w->buf + len, WAL_REC_METADATA, w->meta, w->meta_len, &crc);
    len += wal_frame(w->buf + len, WAL_REC_STATE, st, sizeof st, &crc);
    if (snap) {
        wal_put64(sn, snap->index);
        wal_put64(sn + 8, snap->term);
        len += wal_frame(w->buf + len, WAL_REC_SNAPSHOT, sn, sizeof sn, &crc);
    }

    fd = openat(w->dirfd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return wal_seterr(err, -errno, tmp, 0, "cannot create segment: %s", strerror(errno));
    if (!w->no_prealloc) {
        rc = wal_io->fallocate(fd, 0, (off_t)w->segment_size);
        if (rc < 0) {
            wal_seterr(err, rc, tmp, 0, "cannot preallocate %llu bytes: %s",
                       (unsigned long long)w->segment_size, strerror(-rc));
            goto fail;
        }
    }
    size_t written;
    rc = write_all(fd, w->buf, len, 0, &written);
    if (rc < 0) {
        wal_seterr(err, rc, tmp, 0, "cannot write segment header: %s", strerror(-rc));
        goto fail;
    }
    /* fsync, not fdatasync: the new file's size and allocation must last. */
    rc = wal_io->fsync(fd);
    if (rc < 0) {
        wal_seterr(err, rc, tmp, 0, "cannot sync new segment: %s", strerror(-rc));
        goto fail;
    }
    if (renameat(w->dirfd, tmp, w->dirfd, name) < 0) {
        rc = -errno;
        wal_seterr(err, rc, tmp, 0, "cannot rename to %s: %s", name, strerror(errno));
        goto fail;
    }
    rc = fsync_dir(w);
    if (rc < 0) {
        /* The rename may or may not survive a crash: we cannot tell, so stop. */
        w->failed = rc;
        close(fd);
        return wal_seterr(err, rc, name, 0, "cannot sync WAL directory %s: %s", w->dir,
                          strerror(-rc));
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = fd;
    w->off = len;
    w->prealloc_end = w->no_prealloc ? len : w->segment_size;
    w->zeroed_end = len;
    w->crc = crc;
    w->segs[w->nsegs].seq = seq;
    w->segs[w->nsegs].first = first;
    memcpy(w->segs[w->nsegs].name, name, sizeof name);
    w->nsegs++;
    return 0;
fail:
    close(fd);
    unlinkat(w->dirfd, tmp, 0);
    return rc;
}

static int encode_meta(struct wal *w, const struct wal_metadata *meta)
{
    if (meta->blob_len > WAL_MAX_RECORD - 16 || (meta->blob_len && !meta->blob))
        return -CAIRN_E_INVALID_ARGUMENT;
    w->meta_len = 16 + meta->blob_len;
    w->meta = malloc(w->meta_len);
    if (!w->meta)
        return -ENOMEM;
    wal_put64(w->meta, meta->member_id);
    wal_put64(w->meta + 8, meta->cluster_id);
    if (meta->blob_len)
        memcpy(w->meta + 16, meta->blob, meta->blob_len);
    return 0;
}

int wal_exists(const char *dir)
{
    struct wal_seg *segs;
    size_t n;
    int rc = wal_list(dir, &segs, &n);

    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    free(segs);
    return n > 0;
}

/* fsync the directory that holds dir (dir's own entry in it). */
static int fsync_parent(const char *dir)
{
    char *parent = strdup(dir), *slash;
    int fd, rc;

    if (!parent)
        return -ENOMEM;
    for (size_t l = strlen(parent); l > 1 && parent[l - 1] == '/'; l--)
        parent[l - 1] = '\0';
    slash = strrchr(parent, '/');
    if (slash == parent)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    fd = open(slash ? parent : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(parent);
    if (fd < 0)
        return -errno;
    rc = wal_io->fsync(fd);
    close(fd);
    return rc;
}

/* A handle for dir with the directory open and its lock taken; on failure
 * nothing is left allocated or locked. */
static int open_locked(const char *dir, const struct wal_options *opts, struct wal **out,
                       struct wal_error *err)
{
    struct wal *w = wal_alloc(dir, opts);
    int rc;

    if (!w)
        return wal_seterr(err, -ENOMEM, NULL, 0, "out of memory");
    w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0) {
        rc = wal_seterr(err, -errno, NULL, 0, "cannot open %s: %s", dir, strerror(errno));
        wal_close(w);
        return rc;
    }
    rc = take_lock(w, err);
    if (rc < 0) {
        wal_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

int wal_create(const char *dir, const struct wal_metadata *meta,
               const struct wal_options *opts, struct wal **out, struct wal_error *err)
{
    struct wal *w = NULL;
    struct wal_snapshot zero = {0, 0};
    int rc;

    if (!dir || !meta || !out)
        return wal_seterr(err, -CAIRN_E_INVALID_ARGUMENT, NULL, 0, "wal_create: missing argument");
    *out = NULL;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return wal_seterr(err, -errno, NULL, 0, "cannot create WAL directory %s: %s", dir,
                          strerror(errno));
    rc = open_locked(dir, opts, &w, err);
    if (rc < 0)
        return rc;
    rc = wal_exists(dir);
    if (rc != 0) {
        rc = wal_seterr(err, rc < 0 ? rc : -EEXIST, NULL, 0, "%s already holds a WAL", dir);
        goto fail;
    }
    remove_temporaries(w);
    rc = encode_meta(w, meta);
    if (rc < 0) {
        wal_seterr(err, rc, NULL, 0, "invalid metadata");
        goto fail;
    }
    w->contents.meta.member_id = meta->member_id;
    w->contents.meta.cluster_id = meta->cluster_id;
    w->contents.meta.blob = w->meta + 16;
    w->contents.meta.blob_len = meta->blob_len;
    /* A snapshot record at 0 lets a fresh log be read "at snapshot 0". */
    rc = wal_segment_create(w, 0, 0, &zero, err);
    if (rc < 0)
        goto fail;
    /* The directory itself may be new: make its entry durable too. */
    rc = fsync_parent(dir);
    if (rc < 0) {
        wal_seterr(err, rc, NULL, 0, "cannot sync the parent of %s: %s", dir, strerror(-rc));
        goto fail;
    }
    *out = w;
    return 0;
fail:
    wal_close(w);
    return rc;
}

int wal_open(const char *dir, const struct wal_snapshot *snap,
             const struct wal_options *opts, struct wal **out, struct wal_error *err)
{
    struct wal_snapshot zero = {0, 0};
    struct wal *w;
    int rc;

    if (!dir || !out)
        return wal_seterr(err, -CAIRN_E_INVALID_ARGUMENT, NULL, 0, "wal_open: missing argument");
    *out = NULL;
    rc = open_locked(dir, opts, &w, err);
    if (rc < 0)
        return rc;
    remove_temporaries(w);
    rc = wal_list(dir, &w->segs, &w->nsegs);
    if (rc < 0) {
        wal_seterr(err, rc, NULL, 0, "cannot list %s: %s", dir, strerror(-rc));
        goto fail;
    }
    if (w->nsegs == 0) {
        rc = wal_seterr(err, -CAIRN_E_NOT_FOUND, NULL, 0, "no WAL segments in %s", dir);
        goto fail;
    }
    rc = wal_read_log(w, snap ? snap : &zero, err);
    if (rc < 0)
        goto fail;
    *out = w;
    return 0;
fail:
    wal_close(w);
    return rc;
}

/* Finish the current segment and start the next.  Nothing of a batch has
 * been written yet when this runs, so a failure leaves the log as it was. */
static int cut(struct wal *w)
{
    int rc = wal_io->ftruncate(w->fd, (off_t)w->off);
    if (rc == 0)
        rc = wal_io->fsync(w->fd);
    if (rc < 0)
        return rc;
    w->prealloc_end = w->zeroed_end = w->off;
    return wal_segment_create(w, w->segs[w->nsegs - 1].seq + 1, w->last_index + 1, NULL, NULL);
}

/* Undo the visible part of a failed write: whatever reached the file past
 * w->off is cut off, so a later, shorter batch cannot leave stale records
 * behind it. */
static void rollback(struct wal *w)
{
    int rc = wal_io->ftruncate(w->fd, (off_t)w->off);
    if (rc < 0) {
        w->failed = rc;
        return;
    }
    w->prealloc_end = w->zeroed_end = w->off;
}

/*
 * Zeros written ahead of the log.  posix_fallocate leaves ext4's extents
 * marked unwritten, and the first write into each block converts one: every
 * fdatasync whose batch reached a new block wrote the inode too, a second
 * device write before the flush (a 37 KB batch's fdatasync took 0.20-0.24 ms
 * against 0.13 ms in a file written before, docs/perf/wal.md).  Writing
 * zeros a chunk ahead, after a batch's fdatasync and with their writeback
 * started at once, converts the extents a chunk at a time, away from the
 * fdatasyncs that clients wait for.  Best effort, and not through wal_io:
 * zeros past the end of the log are what recovery finds there whether these
 * writes happened, happened in part or not at all.  It costs a second write
 * of each WAL block to the device.
 */
#define WAL_ZERO_CHUNK (256u * 1024)
static uint8_t zero_chunk[WAL_ZERO_CHUNK];

static void zero_ahead(struct wal *w)
{
    if (w->no_prealloc || w->off + WAL_ZERO_CHUNK / 2 <= w->zeroed_end || w->zeroed_end >= w->prealloc_end)
        return;
    uint64_t from = w->zeroed_end > w->off ? w->zeroed_end : w->off;
    uint64_t to = from + WAL_ZERO_CHUNK < w->prealloc_end ? from + WAL_ZERO_CHUNK : w->prealloc_end;
    if (from >= to)
        return;
    ssize_t k = pwrite(w->fd, zero_chunk, (size_t)(to - from), (off_t)from);
    if (k <= 0) {
        w->zeroed_end = w->prealloc_end; /* no second try in this segment */
        return;
    }
    sync_file_range(w->fd, (off_t)from, (off_t)k, SYNC_FILE_RANGE_WRITE);
    w->zeroed_end = from + (uint64_t)k;
}

static int append(struct wal *w, const struct wal_hardstate *hs, const struct wal_entry *ents,
                  size_t n, const struct wal_snapshot *snap, int sync, uint64_t *sync_ns)
{
    size_t total = 0, len = 0, written;
    uint32_t crc;
    uint64_t t0;
    int rc;

    if (sync_ns)
        *sync_ns = 0;
    if (!w || (n && !ents))
        return -CAIRN_E_INVALID_ARGUMENT;
    if (w->failed)
        return w->failed;
    if (!hs && !n && !snap)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].len > WAL_MAX_RECORD - WAL_ENTRY_HDR || (ents[i].len && !ents[i].data))
            return -CAIRN_E_INVALID_ARGUMENT;
        if (i ? ents[i].index != ents[i - 1].index + 1
              : ents[0].index == 0 || ents[0].index > w->last_index + 1)
            return -CAIRN_E_INVALID_ARGUMENT;
        total += WAL_HDR + wal_pad8(WAL_ENTRY_HDR + ents[i].len);
    }
    total += (hs ? WAL_HDR + 24 : 0) + (snap ? WAL_HDR + 16 : 0);

    if (w->off >= w->segment_size) {
        rc = cut(w);
        if (rc < 0)
            return rc;
    }
    rc = wal_reserve(w, total);
    if (rc < 0)
        return rc;

    crc = w->crc;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = w->buf + len;
        size_t dlen = WAL_ENTRY_HDR + ents[i].len;
        /* Built in place in the batch buffer, so each payload is copied once. */
        wal_put64(p + WAL_HDR, ents[i].index);
        wal_put64(p + WAL_HDR + 8, ents[i].term);
        wal_put32(p + WAL_HDR + 16, ents[i].type);
        wal_put32(p + WAL_HDR + 20, 0);
        if (ents[i].len)
            memcpy(p + WAL_HDR + WAL_ENTRY_HDR, ents[i].data, ents[i].len);
        len += wal_frame(p, WAL_REC_ENTRY, p + WAL_HDR, dlen, &crc);
    }
    if (hs) {
        uint8_t st[24];
        wal_put64(st, hs->term);
        wal_put64(st + 8, hs->vote);
        wal_put64(st + 16, hs->commit);
        len += wal_frame(w->buf + len, WAL_REC_STATE, st, sizeof st, &crc);
    }
    if (snap) {
        uint8_t sn[16];
        wal_put64(sn, snap->index);
        wal_put64(sn + 8, snap->term);
        len += wal_frame(w->buf + len, WAL_REC_SNAPSHOT, sn, sizeof sn, &crc);
    }

    /* Space given back after an earlier failure: try to preallocate again. */
    if (!w->no_prealloc && w->prealloc_end < w->segment_size && w->off + len > w->prealloc_end &&
        wal_io->fallocate(w->fd, (off_t)w->prealloc_end,
                          (off_t)(w->segment_size - w->prealloc_end)) == 0)
        w->prealloc_end = w->segment_size;

    rc = write_all(w->fd, w->buf, len, w->off, &written);
    if (rc < 0) {
        if (written)
            rollback(w);
        return rc;
    }
    t0 = now_ns();
    rc = sync ? wal_io->fdatasync(w->fd) : 0;
    if (sync_ns)
        *sync_ns = now_ns() - t0;
    if (rc < 0) {
        w->failed = rc;
        return rc;
    }
    w->off += len;
    if (w->off > w->prealloc_end)
        w->prealloc_end = w->off;
    if (w->off > w->zeroed_end)
        w->zeroed_end = w->off;
    zero_ahead(w);
    w->crc = crc;
    if (n)
        w->last_index = ents[n - 1].index;
    if (snap && snap->index > w->last_index)
        w->last_index = snap->index;
    if (hs)
        w->hs = *hs;
    return 0;
}

int wal_save(struct wal *w, const struct wal_hardstate *hs,
             const struct wal_entry *entries, size_t n, uint64_t *sync_ns)
{
    return append(w, hs, entries, n, NULL, 1, sync_ns);
}

int wal_save_snapshot(struct wal *w, const struct wal_snapshot *snap)
{
    if (!snap)
        return -CAIRN_E_INVALID_ARGUMENT;
    return append(w, NULL, NULL, 0, snap, 1, NULL);
}

int wal_write_state(struct wal *w, const struct wal_hardstate *hs)
{
    if (!hs)
        return -CAIRN_E_INVALID_ARGUMENT;
    return append(w, hs, NULL, 0, NULL, 0, NULL);
}

int wal_release_to(struct wal *w, uint64_t index)
{
    size_t j, drop;
    int rc = 0;

    if (!w)
        return -CAIRN_E_INVALID_ARGUMENT;
    /* etcd's ReleaseLockTo: keep the segment before the first one that
     * starts at or after index, since it may hold entries up to index. */
    for (j = 0; j < w->nsegs && w->segs[j].first < index; j++)
        ;
    drop = j == w->nsegs ? w->nsegs - 1 : (j ? j - 1 : 0);
    if (w->nsegs - drop < w->keep)
        drop = w->nsegs > w->keep ? w->nsegs - w->keep : 0;
    if (drop == 0)
        return 0;
    for (size_t i = 0; i < drop; i++) {
        if (unlinkat(w->dirfd, w->segs[i].name, 0) < 0 && errno != ENOENT) {
            rc = -errno;
            drop = i;
            break;
        }
    }
    memmove(w->segs, w->segs + drop, (w->nsegs - drop) * sizeof *w->segs);
    w->nsegs -= drop;
    if (drop) {
        int r = fsync_dir(w);
        if (rc == 0)
            rc = r;
    }
    return rc;
}

uint64_t wal_last_index(const struct wal *w)
{
    return w ? w->last_index : 0;
}

size_t wal_segment_count(const struct wal *w)
{
    return w ? w->nsegs : 0;
}

int wal_close(struct wal *w)
{
    int rc = 0;

    if (!w)
        return 0;
    wal_free_contents(w);
    if (w->fd >= 0 && close(w->fd) < 0)
        rc = -errno;
    if (w->lockfd >= 0)
        close(w->lockfd); /* closing drops the flock */
    if (w->dirfd >= 0)
        close(w->dirfd);
    free(w->segs);
    free(w->meta);
    free(w->buf);
    free(w->dir);
    free(w);
    return rc;
}
