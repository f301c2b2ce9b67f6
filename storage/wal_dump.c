/*
 * wal_dump: the operator's view of a WAL directory (`cairnd wal dump DIR`).
 * It walks every segment with the same scanner wal_open uses, so what it
 * calls torn or corrupt is exactly what opening would cut or refuse.  It only
 * reads: no lock is taken and nothing is repaired.
 */
#include "storage/wal_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/errors.h"

struct dump {
    FILE *out;
    int dirfd;
    int status;             /* 0 intact, 1 torn tail, -CAIRN_E_CORRUPT */
    uint32_t crc;
    int have_crc;
    int have_last;
    uint64_t last_index;    /* of the entries seen so far */
    uint64_t records, entries, states, snapshots;
};

static void corrupt(struct dump *d)
{
    d->status = -CAIRN_E_CORRUPT;
}

static void print_record(struct dump *d, const struct wal_seg *seg, const struct wal_rec *r)
{
    FILE *out = d->out;

    fprintf(out, "  %-12" PRIu64 " %-9s %-8u ", r->off, wal_type_name(r->type), r->len);
    switch (r->type) {
    case WAL_REC_CRC:
        fprintf(out, "running crc 0x%08x", r->crc);
        break;
    case WAL_REC_METADATA:
        fprintf(out, "member %" PRIx64 " cluster %" PRIx64 " blob %u bytes", wal_get64(r->data),
                wal_get64(r->data + 8), r->len - 16);
        break;
    case WAL_REC_ENTRY: {
        uint64_t index = wal_get64(r->data);
        fprintf(out, "index %" PRIu64 " term %" PRIu64 " type %u data %u bytes", index,
                wal_get64(r->data + 8), wal_get32(r->data + 16), r->len - WAL_ENTRY_HDR);
        if (d->have_last && index <= d->last_index)
            fprintf(out, " (replaces the log from index %" PRIu64 ")", index);
        else if (d->have_last && index > d->last_index + 1) {
            fprintf(out, " GAP: previous entry was %" PRIu64, d->last_index);
            corrupt(d);
        }
        d->last_index = index;
        d->have_last = 1;
        d->entries++;
        break;
    }
    case WAL_REC_STATE:
        fprintf(out, "term %" PRIu64 " vote %" PRIx64 " commit %" PRIu64, wal_get64(r->data),
                wal_get64(r->data + 8), wal_get64(r->data + 16));
        d->states++;
        break;
    case WAL_REC_SNAPSHOT:
        fprintf(out, "index %" PRIu64 " term %" PRIu64, wal_get64(r->data),
                wal_get64(r->data + 8));
        d->snapshots++;
        break;
    }
    fprintf(out, "  crc ok\n");
    (void)seg;
    d->records++;
}

static void dump_segment(struct dump *d, const struct wal_seg *seg, int is_last)
{
    uint8_t *buf = NULL;
    size_t size;
    uint64_t off = 0, bad_end;
    struct wal_rec r;
    char why[160];
    int rc = wal_read_file(d->dirfd, seg->name, &buf, &size);

    if (rc < 0) {
        fprintf(d->out, "segment %s: cannot read: %s\n", seg->name, strerror(-rc));
        corrupt(d);
        d->have_crc = 0;
        return;
    }
    fprintf(d->out, "segment %s (seq %" PRIu64 ", first index %" PRIu64 ", %zu bytes)\n",
            seg->name, seg->seq, seg->first, size);
    fprintf(d->out, "  %-12s %-9s %-8s %s\n", "offset", "type", "length", "contents");
    for (;;) {
        enum wal_scan s = wal_scan_next(buf, size, off, &d->crc, d->have_crc, &r, &bad_end,
                                        why, sizeof why);
        if (s == WAL_SCAN_END) {
            if (off < size)
                fprintf(d->out, "  %-12" PRIu64 " end       (%" PRIu64 " bytes of zeros follow: preallocated)\n",
                        off, (uint64_t)size - off);
            else
                fprintf(d->out, "  %-12" PRIu64 " end\n", off);
            break;
        }
        if (s == WAL_SCAN_TORN && is_last) {
            fprintf(d->out, "  %-12" PRIu64 " TORN TAIL in %s at offset %" PRIu64 ": %s; %" PRIu64
                    " bytes, only zeros after; opening cuts the file to %" PRIu64 " bytes\n",
                    off, seg->name, off, why, bad_end - off, off);
            if (d->status == 0)
                d->status = 1;
            break;
        }
        if (s != WAL_SCAN_RECORD) {
            fprintf(d->out, "  %-12" PRIu64 " CORRUPT in %s at offset %" PRIu64 ": %s%s; %" PRIu64
                    " bytes after it not shown\n", off, seg->name, off, why,
                    s == WAL_SCAN_TORN ? " (torn, but not in the last segment)" : "",
                    (uint64_t)size - off);
            corrupt(d);
            /* The chain is broken: the next segment's crc record restarts it. */
            d->have_crc = 0;
            break;
        }
        if (off == 0 && r.type != WAL_REC_CRC) {
            fprintf(d->out, "  %-12d CORRUPT in %s at offset 0: segment starts with a %s record\n",
                    0, seg->name, wal_type_name(r.type));
            corrupt(d);
        }
        d->have_crc = 1;
        print_record(d, seg, &r);
        off = r.end;
    }
    free(buf);
}

int wal_dump(const char *dir, FILE *out)
{
    struct dump d = {.out = out, .dirfd = -1};
    struct wal_seg *segs = NULL;
    size_t n = 0;
    char pid[32];
    int rc, fd;

    if (!dir || !out)
        return -CAIRN_E_INVALID_ARGUMENT;
    rc = wal_list(dir, &segs, &n);
    if (rc < 0) {
        fprintf(out, "cannot list %s: %s\n", dir, strerror(-rc));
        return rc;
    }
    d.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d.dirfd < 0) {
        rc = -errno;
        fprintf(out, "cannot open %s: %s\n", dir, strerror(errno));
        goto out;
    }
    fprintf(out, "WAL %s: %zu segment%s\n", dir, n, n == 1 ? "" : "s");
    fd = openat(d.dirfd, WAL_LOCK_NAME, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r = read(fd, pid, sizeof pid - 1);
        pid[r > 0 ? r : 0] = '\0';
        pid[strcspn(pid, " \n")] = '\0';
        if (pid[0])
            fprintf(out, "lock file names process %s (it may have exited)\n", pid);
        close(fd);
    }
    for (size_t i = 0; i < n; i++) {
        if (i && segs[i].seq != segs[i - 1].seq + 1) {
            fprintf(out, "MISSING segment(s) between seq %" PRIu64 " and %" PRIu64 "\n",
                    segs[i - 1].seq, segs[i].seq);
            corrupt(&d);
            d.have_crc = 0;
        }
        dump_segment(&d, &segs[i], i + 1 == n);
    }
    fprintf(out, "summary: %" PRIu64 " records, %" PRIu64 " entries", d.records, d.entries);
    if (d.have_last)
        fprintf(out, " (last index %" PRIu64 ")", d.last_index);
    fprintf(out, ", %" PRIu64 " states, %" PRIu64 " snapshots; %s\n", d.states, d.snapshots,
            d.status == 0 ? "intact" : d.status == 1 ? "torn tail (opening repairs it)"
                                                     : "CORRUPT (opening refuses it)");
    rc = d.status;
out:
    if (d.dirfd >= 0)
        close(d.dirfd);
    free(segs);
    return rc;
}
