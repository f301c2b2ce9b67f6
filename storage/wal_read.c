/*
 * Reading the WAL at a snapshot, and repair.  Every segment from the one
 * holding the snapshot onward is verified record by record; a torn tail of
 * the last segment is cut, anything else damaged fails the open with the file
 * and offset and nothing is changed.  Entry data is copied into an arena the
 * handle owns, so the segment buffers are freed as soon as they are parsed.
 */
#include "storage/wal_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/errors.h"

struct wal_chunk {
    struct wal_chunk *next;
    size_t used, cap;
    uint8_t data[];
};

#define CHUNK_SIZE (1u << 20)

static void *arena_copy(struct wal *w, const void *src, size_t len)
{
    struct wal_chunk *c = w->chunks;

    if (!c || c->cap - c->used < len) {
        size_t cap = len > CHUNK_SIZE ? len : CHUNK_SIZE;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = w->chunks;
        w->chunks = c;
    }
    void *p = c->data + c->used;
    if (len)
        memcpy(p, src, len);
    c->used += len;
    return p;
}

void wal_free_contents(struct wal *w)
{
    if (!w)
        return;
    while (w->chunks) {
        struct wal_chunk *next = w->chunks->next;
        free(w->chunks);
        w->chunks = next;
    }
    free(w->contents.entries);
    /* The metadata lives in w->meta, which the writer keeps needing. */
    struct wal_metadata meta = w->contents.meta;
    memset(&w->contents, 0, sizeof w->contents);
    w->contents.meta = meta;
    w->ents_cap = 0;
}

int wal_read_all(struct wal *w, struct wal_contents *out)
{
    if (!w || !out)
        return -CAIRN_E_INVALID_ARGUMENT;
    *out = w->contents;
    return 0;
}

/* Place entry e at its index: a later write at an index replaces the earlier
 * one and everything after it (a new leader truncated the log). */
static int add_entry(struct wal *w, uint64_t base, const struct wal_rec *r, const char *file,
                     struct wal_error *err)
{
    struct wal_contents *c = &w->contents;
    uint64_t index = wal_get64(r->data);
    uint64_t pos;

    if (index <= base)
        return 0;
    pos = index - base - 1;
    if (pos > c->n_entries)
        return wal_seterr(err, -CAIRN_E_CORRUPT, file, r->off,
                          "entry %llu leaves a gap: the log so far ends at %llu",
                          (unsigned long long)index, (unsigned long long)(base + c->n_entries));
    c->n_entries = (size_t)pos;
    if (c->n_entries == w->ents_cap) {
        size_t cap = w->ents_cap ? w->ents_cap * 2 : 1024;
        struct wal_entry *e = realloc(c->entries, cap * sizeof *e);
        if (!e)
            return wal_seterr(err, -ENOMEM, file, r->off, "out of memory");
        c->entries = e;
        w->ents_cap = cap;
    }
    struct wal_entry *e = &c->entries[c->n_entries];
    e->index = index;
    e->term = wal_get64(r->data + 8);
    e->type = wal_get32(r->data + 16);
    e->len = r->len - WAL_ENTRY_HDR;
    e->data = arena_copy(w, r->data + WAL_ENTRY_HDR, e->len);
    if (!e->data)
        return wal_seterr(err, -ENOMEM, file, r->off, "out of memory");
    c->n_entries++;
    return 0;
}

static int take_meta(struct wal *w, const struct wal_rec *r, const char *file,
                     struct wal_error *err)
{
    if (w->meta) {
        if (w->meta_len != r->len || memcmp(w->meta, r->data, r->len) != 0)
            return wal_seterr(err, -CAIRN_E_CORRUPT, file, r->off,
                              "metadata differs from the earlier segments'");
        return 0;
    }
    w->meta = malloc(r->len);
    if (!w->meta)
        return wal_seterr(err, -ENOMEM, file, r->off, "out of memory");
    memcpy(w->meta, r->data, r->len);
    w->meta_len = r->len;
    w->contents.meta.member_id = wal_get64(r->data);
    w->contents.meta.cluster_id = wal_get64(r->data + 8);
    w->contents.meta.blob_len = r->len - 16;
    w->contents.meta.blob = w->meta + 16;
    return 0;
}

/* Parse one segment; *end gets where its valid records end.  On a torn tail
 * *torn is set (the caller decides whether a torn segment is acceptable). */
static int read_segment(struct wal *w, const struct wal_seg *seg, const struct wal_snapshot *snap,
                        int *have_crc, int *found, uint64_t *end, int *torn,
                        struct wal_error *err)
{
    uint8_t *buf = NULL;
    size_t size;
    uint64_t off = 0, bad_end;
    struct wal_rec r;
    char why[160];
    int rc = wal_read_file(w->dirfd, seg->name, &buf, &size);

    *torn = 0;
    if (rc < 0)
        return wal_seterr(err, rc, seg->name, 0, "cannot read: %s", strerror(-rc));
    for (;;) {
        enum wal_scan s = wal_scan_next(buf, size, off, &w->crc, *have_crc, &r,
                                        &bad_end, why, sizeof why);
        if (s == WAL_SCAN_END)
            break;
        if (s == WAL_SCAN_TORN) {
            *torn = 1;
            w->contents.repair.offset = off;
            w->contents.repair.bytes = bad_end - off;
            snprintf(w->contents.repair.reason, sizeof w->contents.repair.reason, "%s", why);
            break;
        }
        if (s == WAL_SCAN_BAD) {
            rc = wal_seterr(err, -CAIRN_E_CORRUPT, seg->name, off, "%s", why);
            goto out;
        }
        if (off == 0 && r.type != WAL_REC_CRC) {
            rc = wal_seterr(err, -CAIRN_E_CORRUPT, seg->name, 0,
                            "segment starts with a %s record, not a crc record",
                            wal_type_name(r.type));
            goto out;
        }
        *have_crc = 1;
        switch (r.type) {
        case WAL_REC_METADATA:
            rc = take_meta(w, &r, seg->name, err);
            break;
        case WAL_REC_ENTRY:
            rc = add_entry(w, snap->index, &r, seg->name, err);
            break;
        case WAL_REC_STATE:
            w->hs.term = wal_get64(r.data);
            w->hs.vote = wal_get64(r.data + 8);
            w->hs.commit = wal_get64(r.data + 16);
            break;
        case WAL_REC_SNAPSHOT:
            if (wal_get64(r.data) == snap->index) {
                if (wal_get64(r.data + 8) != snap->term) {
                    rc = wal_seterr(err, -CAIRN_E_CORRUPT, seg->name, off,
                                    "snapshot at index %llu has term %llu in the WAL, not %llu",
                                    (unsigned long long)snap->index,
                                    (unsigned long long)wal_get64(r.data + 8),
                                    (unsigned long long)snap->term);
                    break;
                }
                *found = 1;
            }
            break;
        default:
            break;
        }
        if (rc < 0)
            goto out;
        off = r.end;
    }
    if (off == 0 && !*torn) {
        /* An empty renamed segment cannot come from a crash: cuts are atomic. */
        rc = wal_seterr(err, -CAIRN_E_CORRUPT, seg->name, 0, "segment holds no records");
        goto out;
    }
    if (off == 0) {
        rc = wal_seterr(err, -CAIRN_E_CORRUPT, seg->name, 0,
                        "segment's first record is damaged: %s", w->contents.repair.reason);
        goto out;
    }
    *end = off;
out:
    free(buf);
    return rc;
}

int wal_read_log(struct wal *w, const struct wal_snapshot *snap, struct wal_error *err)
{
    struct wal_contents *c = &w->contents;
    size_t start = w->nsegs, i;
    int have_crc = 0, found = 0, torn = 0, rc;
    uint64_t end = 0;

    /* Start at the newest segment whose first index is at or before the
     * snapshot: every entry after the snapshot is in it or after it. */
    for (i = w->nsegs; i-- > 0;)
        if (w->segs[i].first <= snap->index) {
            start = i;
            break;
        }
    if (start == w->nsegs)
        return wal_seterr(err, -CAIRN_E_NOT_FOUND, w->segs[0].name, 0,
                          "no segment reaches back to snapshot index %llu (released?)",
                          (unsigned long long)snap->index);
    for (i = start + 1; i < w->nsegs; i++)
        if (w->segs[i].seq != w->segs[i - 1].seq + 1)
            return wal_seterr(err, -CAIRN_E_CORRUPT, w->segs[i].name, 0,
                              "segment sequence jumps from %llu to %llu: a segment is missing",
                              (unsigned long long)w->segs[i - 1].seq,
                              (unsigned long long)w->segs[i].seq);

    w->crc = 0;
    memset(&w->hs, 0, sizeof w->hs);
    for (i = start; i < w->nsegs; i++) {
        rc = read_segment(w, &w->segs[i], snap, &have_crc, &found, &end, &torn, err);
        if (rc < 0)
            goto fail;
        if (torn && i + 1 < w->nsegs) {
            rc = wal_seterr(err, -CAIRN_E_CORRUPT, w->segs[i].name, c->repair.offset,
                            "%s (not in the last segment, so not a torn write)",
                            c->repair.reason);
            goto fail;
        }
    }
    if (!w->meta) {
        rc = wal_seterr(err, -CAIRN_E_CORRUPT, w->segs[start].name, 0, "no metadata record");
        goto fail;
    }
    if (!found) {
        rc = wal_seterr(err, -CAIRN_E_NOT_FOUND, NULL, 0,
                        "the WAL holds no record of a snapshot at index %llu term %llu",
                        (unsigned long long)snap->index, (unsigned long long)snap->term);
        goto fail;
    }

    const char *last = w->segs[w->nsegs - 1].name;
    w->fd = openat(w->dirfd, last, O_RDWR | O_CLOEXEC);
    if (w->fd < 0) {
        rc = wal_seterr(err, -errno, last, 0, "cannot open for writing: %s", strerror(errno));
        goto fail;
    }
    if (torn) {
        /* Only now, with everything before verified, is anything changed. */
        rc = wal_io->ftruncate(w->fd, (off_t)end);
        if (rc == 0)
            rc = wal_io->fsync(w->fd);
        if (rc < 0) {
            wal_seterr(err, rc, last, end, "cannot cut the torn tail: %s", strerror(-rc));
            goto fail;
        }
        c->repair.cut = 1;
        snprintf(c->repair.file, sizeof c->repair.file, "%s", last);
        w->prealloc_end = end;
    } else {
        memset(&c->repair, 0, sizeof c->repair);
        w->prealloc_end = (uint64_t)lseek(w->fd, 0, SEEK_END);
    }
    w->off = end;
    w->zeroed_end = end; /* what lies past the log is not known to be written */
    /* Best effort: a log reopened on a full disk still opens. */
    if (!w->no_prealloc && w->prealloc_end < w->segment_size &&
        wal_io->fallocate(w->fd, (off_t)w->prealloc_end,
                          (off_t)(w->segment_size - w->prealloc_end)) == 0)
        w->prealloc_end = w->segment_size;

    c->hardstate = w->hs;
    c->last_index = c->n_entries ? c->entries[c->n_entries - 1].index : snap->index;
    w->last_index = c->last_index;
    return 0;
fail:
    wal_free_contents(w);
    return rc;
}
