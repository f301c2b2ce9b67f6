/*
 * The WAL record codec: framing records with their chained CRC, and the one
 * scanner that both opening and wal_dump use to tell a valid record, a clean
 * end, a torn tail and corruption apart.  Also segment listing and the real
 * I/O behind the test seam.  No state of its own.
 */
#include "storage/wal_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crc32c.h"
#include "storage/dirlist.h"
#include "base/errors.h"

static ssize_t real_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    ssize_t r = pwrite(fd, buf, n, off);
    return r < 0 ? -errno : r;
}

static int real_fdatasync(int fd)
{
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int real_fsync(int fd)
{
    return fsync(fd) < 0 ? -errno : 0;
}

static int real_fallocate(int fd, off_t off, off_t len)
{
    return -posix_fallocate(fd, off, len);
}

static int real_ftruncate(int fd, off_t len)
{
    return ftruncate(fd, len) < 0 ? -errno : 0;
}

const struct wal_io wal_io_real = {
    real_pwrite, real_fdatasync, real_fsync, real_fallocate, real_ftruncate,
};
const struct wal_io *wal_io = &wal_io_real;

const char *wal_type_name(uint32_t type)
{
    switch (type) {
    case WAL_REC_METADATA: return "metadata";
    case WAL_REC_ENTRY: return "entry";
    case WAL_REC_STATE: return "state";
    case WAL_REC_CRC: return "crc";
    case WAL_REC_SNAPSHOT: return "snapshot";
    default: return "unknown";
    }
}

int wal_seterr(struct wal_error *err, int code, const char *file, uint64_t off,
               const char *fmt, ...)
{
    if (err) {
        va_list ap;
        snprintf(err->file, sizeof err->file, "%s", file ? file : "");
        err->offset = off;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

size_t wal_frame(uint8_t *dst, uint32_t type, const void *data, size_t len, uint32_t *crc)
{
    size_t padded = wal_pad8(len);

    *crc = crc32c_extend(*crc, data, len);
    wal_put32(dst, type);
    wal_put32(dst + 4, (uint32_t)len);
    wal_put32(dst + 8, *crc);
    wal_put32(dst + 12, crc32c_extend(0, dst, 12));
    if (len && data != dst + WAL_HDR) /* callers may build the payload in place */
        memcpy(dst + WAL_HDR, data, len);
    memset(dst + WAL_HDR + len, 0, padded - len);
    return WAL_HDR + padded;
}

size_t wal_frame_crc(uint8_t *dst, uint32_t crc)
{
    wal_put32(dst, WAL_REC_CRC);
    wal_put32(dst + 4, 0);
    wal_put32(dst + 8, crc);
    wal_put32(dst + 12, crc32c_extend(0, dst, 12));
    return WAL_HDR;
}

static int all_zero(const uint8_t *p, size_t n)
{
    static const uint8_t zero[4096];
    while (n >= sizeof zero) {
        if (memcmp(p, zero, sizeof zero) != 0)
            return 0;
        p += sizeof zero;
        n -= sizeof zero;
    }
    return memcmp(p, zero, n) == 0;
}

/* A damaged record is a torn tail only if nothing but zeros follows it:
 * a crash interrupts only the last write, and a later write would have
 * waited for this one's fdatasync. */
static enum wal_scan damaged(const uint8_t *buf, size_t size, uint64_t end,
                             uint64_t *bad_end, char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static enum wal_scan damaged(const uint8_t *buf, size_t size, uint64_t end,
                             uint64_t *bad_end, char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    if (end > size)
        end = size;
    *bad_end = end;
    return all_zero(buf + end, size - end) ? WAL_SCAN_TORN : WAL_SCAN_BAD;
}

/* The payload size a record type must have (min for variable ones). */
static int len_ok(uint32_t type, uint32_t len)
{
    switch (type) {
    case WAL_REC_METADATA: return len >= 16;
    case WAL_REC_ENTRY: return len >= WAL_ENTRY_HDR;
    case WAL_REC_STATE: return len == 24;
    case WAL_REC_CRC: return len == 0;
    case WAL_REC_SNAPSHOT: return len == 16;
    default: return 0;
    }
}

enum wal_scan wal_scan_next(const uint8_t *buf, size_t size, uint64_t off, uint32_t *crc,
                            int have_crc, struct wal_rec *rec, uint64_t *bad_end,
                            char *why, size_t whylen)
{
    const uint8_t *p = buf + off;
    size_t rest;

    if (off >= size)
        return WAL_SCAN_END;
    rest = size - off;
    if (rest < WAL_HDR) {
        if (all_zero(p, rest))
            return WAL_SCAN_END;
        return damaged(buf, size, size, bad_end, why, whylen,
                       "partial record header (%zu of %u bytes) at end of file", rest, WAL_HDR);
    }
    if (all_zero(p, WAL_HDR)) {
        if (all_zero(p, rest))
            return WAL_SCAN_END;
        return damaged(buf, size, off + WAL_HDR, bad_end, why, whylen,
                       "zero-filled record header followed by data");
    }

    rec->type = wal_get32(p);
    rec->len = wal_get32(p + 4);
    rec->crc = wal_get32(p + 8);
    rec->off = off;
    rec->data = p + WAL_HDR;
    if (crc32c_extend(0, p, 12) != wal_get32(p + 12))
        return damaged(buf, size, off + WAL_HDR, bad_end, why, whylen,
                       "record header checksum mismatch");
    if (!len_ok(rec->type, rec->len) || rec->len > WAL_MAX_RECORD) {
        uint64_t end = rec->len > WAL_MAX_RECORD ? size : off + WAL_HDR + wal_pad8(rec->len);
        return damaged(buf, size, end, bad_end, why, whylen,
                       "record of unknown type %u or impossible length %u", rec->type, rec->len);
    }
    rec->end = off + WAL_HDR + wal_pad8(rec->len);
    if (rec->end > size)
        return damaged(buf, size, size, bad_end, why, whylen,
                       "%s record of %u bytes cut short by the end of file",
                       wal_type_name(rec->type), rec->len);
    if (rec->type == WAL_REC_CRC) {
        if (have_crc && rec->crc != *crc)
            return damaged(buf, size, rec->end, bad_end, why, whylen,
                           "crc record carries 0x%08x but the running CRC is 0x%08x",
                           rec->crc, *crc);
        *crc = rec->crc;
        return WAL_SCAN_RECORD;
    }
    if (!have_crc)
        return damaged(buf, size, rec->end, bad_end, why, whylen,
                       "%s record before the segment's crc record", wal_type_name(rec->type));
    uint32_t c = crc32c_extend(*crc, rec->data, rec->len);
    if (c != rec->crc)
        return damaged(buf, size, rec->end, bad_end, why, whylen,
                       "%s record CRC mismatch (stored 0x%08x, computed 0x%08x)",
                       wal_type_name(rec->type), rec->crc, c);
    *crc = c;
    return WAL_SCAN_RECORD;
}

static int parse_name(const char *name, struct wal_seg *s)
{
    char check[WAL_NAME_LEN + 1];
    unsigned long long seq, first;

    if (strlen(name) != WAL_NAME_LEN)
        return 0;
    if (sscanf(name, "%16llx-%16llx.wal", &seq, &first) != 2)
        return 0;
    snprintf(check, sizeof check, "%016llx-%016llx.wal", seq, first);
    if (strcmp(check, name) != 0)
        return 0;
    s->seq = seq;
    s->first = first;
    memcpy(s->name, name, WAL_NAME_LEN + 1);
    return 1;
}

static int seg_cmp(const void *a, const void *b)
{
    const struct wal_seg *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int parse_seg(const char *name, void *elem)
{
    return parse_name(name, elem);
}

int wal_list(const char *dir, struct wal_seg **out, size_t *n)
{
    void *segs;
    int rc = dirlist_read(dir, sizeof **out, parse_seg, seg_cmp, &segs, n);
    if (rc == 0)
        *out = segs;
    return rc;
}

int wal_read_file(int dirfd, const char *name, uint8_t **buf, size_t *size)
{
    struct stat st;
    uint8_t *b = NULL;
    size_t got = 0;
    int rc = 0;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    b = malloc((size_t)st.st_size + 1);
    if (!b) {
        rc = -ENOMEM;
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break; /* shrank under us: read what is there */
        got += (size_t)r;
    }
    *buf = b;
    *size = got;
    b = NULL;
out:
    free(b);
    close(fd);
    return rc;
}
