/*
 * WAL internals shared by wal.c (writing), wal_read.c (reading, repair),
 * wal_dump.c and wal_record.c (the record codec and scanner), plus the I/O
 * seam tests use to make writes fail.  Not part of the public interface.
 */
#ifndef CAIRN_STORAGE_WAL_INTERNAL_H
#define CAIRN_STORAGE_WAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "storage/wal.h"

/*
 * Record frame (little-endian), 8-byte aligned:
 *   u32 type | u32 len | u32 crc | u32 hcrc | data[len] | zero pad to 8
 * crc is the running CRC-32C chained over the data of every record since
 * the first segment (a crc record carries it into each new segment); hcrc is
 * the CRC-32C of the first 12 header bytes, so a length is trusted only if
 * its header is intact.
 */
#define WAL_HDR 16u

enum wal_rec_type {
    WAL_REC_METADATA = 1,  /* u64 member, u64 cluster, blob */
    WAL_REC_ENTRY = 2,     /* u64 index, u64 term, u32 type, u32 0, data */
    WAL_REC_STATE = 3,     /* u64 term, u64 vote, u64 commit */
    WAL_REC_CRC = 4,       /* no data; crc = the running CRC so far */
    WAL_REC_SNAPSHOT = 5,  /* u64 index, u64 term */
};

#define WAL_ENTRY_HDR 24u
#define WAL_LOCK_NAME "wal.lock"
#define WAL_NAME_LEN 37 /* 16 + 1 + 16 + ".wal" */

static inline uint64_t wal_pad8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

/* The I/O seam: every write-side system call goes through these, so tests
 * can fail them (ENOSPC, EIO).  Each returns >= 0 or -errno. */
struct wal_io {
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    int (*fdatasync)(int fd);
    int (*fsync)(int fd);
    int (*fallocate)(int fd, off_t off, off_t len);
    int (*ftruncate)(int fd, off_t len);
};
/* Points at the real calls; tests may swap it (single-threaded only). */
extern const struct wal_io *wal_io;
extern const struct wal_io wal_io_real;

/* One segment in a directory listing. */
struct wal_seg {
    uint64_t seq;
    uint64_t first;     /* index of the first entry expected in it */
    char name[WAL_NAME_LEN + 1];
};

/* A decoded record; data points into the scanned buffer. */
struct wal_rec {
    uint32_t type;
    uint32_t len;
    uint32_t crc;
    const uint8_t *data;
    uint64_t off;       /* where the record starts */
    uint64_t end;       /* where the next one starts */
};

enum wal_scan {
    WAL_SCAN_RECORD,    /* *rec is a valid record */
    WAL_SCAN_END,       /* end of file, or only zeros from here (preallocated) */
    WAL_SCAN_TORN,      /* bad record with only zeros after it: torn if in the last segment */
    WAL_SCAN_BAD,       /* bad record followed by more data: corruption */
};

/*
 * wal_scan_next: decode the record at off in buf[0..size).  *crc is the
 * running CRC; have_crc says whether it is known yet (before a segment's crc
 * record it is not, when a read starts at that segment).  On RECORD, *crc is
 * advanced.  On TORN or BAD, why gets a sentence and *bad_end the end of the
 * damaged extent.
 */
enum wal_scan wal_scan_next(const uint8_t *buf, size_t size, uint64_t off, uint32_t *crc,
                            int have_crc, struct wal_rec *rec, uint64_t *bad_end,
                            char *why, size_t whylen);

/* wal_frame: write a record (header, data, pad) at dst, chaining *crc.
 * dst must hold WAL_HDR + wal_pad8(len) bytes.  Returns bytes written. */
size_t wal_frame(uint8_t *dst, uint32_t type, const void *data, size_t len, uint32_t *crc);
/* wal_frame_crc: a crc record carrying crc. */
size_t wal_frame_crc(uint8_t *dst, uint32_t crc);

/* Little-endian helpers. */
static inline void wal_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t wal_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static inline void wal_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t wal_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * wal_list: the segments in dir, sorted by sequence, in a malloc'd array the
 * caller frees.  Files that merely look similar (*.tmp) are not listed.
 */
int wal_list(const char *dir, struct wal_seg **out, size_t *n);

/* wal_read_file: the whole file dir/name in a malloc'd buffer (caller frees). */
int wal_read_file(int dirfd, const char *name, uint8_t **buf, size_t *size);

/* wal_seterr: fill err (if not NULL) and return code. */
int wal_seterr(struct wal_error *err, int code, const char *file, uint64_t off,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* wal_type_name: "entry", "state", ... for dumps and messages. */
const char *wal_type_name(uint32_t type);

/* The handle.  The fields below "read results" belong to wal_read.c. */
struct wal {
    char *dir;
    int dirfd;
    int lockfd;
    int fd;                 /* the last segment, open for writing */
    struct wal_seg *segs;   /* every segment, by sequence */
    size_t nsegs;
    uint64_t off;           /* where the next record goes in the last segment */
    uint64_t prealloc_end;  /* bytes of the last segment known allocated */
    uint64_t zeroed_end;    /* bytes of it written at least once (zeros ahead of off), or given up on */
    uint32_t crc;           /* running CRC after the last record */
    uint64_t last_index;
    struct wal_hardstate hs;
    uint8_t *meta;          /* encoded metadata record payload */
    size_t meta_len;
    uint64_t segment_size;
    unsigned keep;
    int no_prealloc;
    int failed;             /* a failed fdatasync poisons the handle */
    uint8_t *buf;           /* batch encoding buffer */
    size_t bufcap;

    /* read results */
    struct wal_contents contents;
    size_t ents_cap;
    struct wal_chunk *chunks; /* arena holding entry data and the metadata blob */
};

/* wal_read_log: the reading half of wal_open (wal_read.c): fills w's read
 * results, repairs a torn tail, sets off/crc/last_index/hs/meta. */
int wal_read_log(struct wal *w, const struct wal_snapshot *snap, struct wal_error *err);

/* wal_segment_create: write a new segment (seq, first) holding a crc record,
 * the metadata and hard state (and *snap if not NULL), via a temporary file,
 * fsync, rename, directory fsync; the new one becomes w->fd. */
int wal_segment_create(struct wal *w, uint64_t seq, uint64_t first,
                       const struct wal_snapshot *snap, struct wal_error *err);

/* wal_reserve: make w->buf hold at least n bytes. */
int wal_reserve(struct wal *w, size_t n);

#endif
