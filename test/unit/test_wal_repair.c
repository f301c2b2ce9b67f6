/*
 * WAL damage: a torn last record is cut (at every byte offset, both as a
 * short file and as zeros in preallocated space) and reported; a flipped bit
 * anywhere in a record before the tail is corruption with file and offset and
 * leaves the files untouched; wal_dump tells the same story.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/errors.h"
#include "storage/wal.h"
#include "storage/wal_internal.h"

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

struct fx {
    char *root;
    char dir[512];
    struct wal_seg *segs;
    size_t nsegs;
    uint64_t n;            /* entries written */
    uint64_t last_start;   /* offset of the last record in the last segment */
    uint64_t last_end;
    uint64_t last_data_end; /* without the padding */
};

static const struct wal_metadata meta = {7, 8, NULL, 0};
static const struct wal_options opts = {.segment_size = 4096, .no_preallocate = 1};

static void entry(uint64_t i, struct wal_entry *e, uint8_t *buf)
{
    e->index = i;
    e->term = 1 + i / 50;
    e->type = 0;
    e->len = 40 + i % 23;
    for (size_t k = 0; k < e->len; k++)
        buf[k] = (uint8_t)(i + k);
    e->data = buf;
}

static char *path(struct fx *f, const char *name)
{
    static char p[700];
    snprintf(p, sizeof p, "%s/%s", f->dir, name);
    return p;
}

static off_t fsize(const char *p)
{
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    return st.st_size;
}

/* A log of 3+ segments whose last record is a lone entry. */
static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    struct wal *w;
    struct wal_entry e[5];
    uint8_t bufs[5][80];
    const char *t = getenv("TMPDIR");

    if (!f || asprintf(&f->root, "%s/cairn-walr-XXXXXX", t ? t : "/tmp") < 0 || !mkdtemp(f->root))
        return -1;
    snprintf(f->dir, sizeof f->dir, "%s/wal", f->root);
    if (wal_create(f->dir, &meta, &opts, &w, NULL) != 0)
        return -1;
    uint64_t i = 1;
    /* Several segments, the last one about half full, so the lone entry
     * saved last lands in it with many records before it. */
    for (;;) {
        size_t n = 0;
        for (; n < 5; n++, i++)
            entry(i, &e[n], bufs[n]);
        struct wal_hardstate hs = {e[0].term, 1, i - 1};
        if (wal_save(w, &hs, e, n, NULL) != 0)
            return -1;
        if (wal_segment_count(w) < 3 || i < 120)
            continue;
        free(f->segs);
        if (wal_list(f->dir, &f->segs, &f->nsegs) != 0)
            return -1;
        off_t sz = fsize(path(f, f->segs[f->nsegs - 1].name));
        if (sz >= 2000 && sz < (off_t)opts.segment_size)
            break;
    }
    entry(i, &e[0], bufs[0]);
    if (wal_save(w, NULL, e, 1, NULL) != 0)
        return -1;
    f->n = i;
    f->last_end = (uint64_t)fsize(path(f, f->segs[f->nsegs - 1].name));
    f->last_start = f->last_end - WAL_HDR - wal_pad8(WAL_ENTRY_HDR + e[0].len);
    f->last_data_end = f->last_start + WAL_HDR + WAL_ENTRY_HDR + e[0].len;
    wal_close(w);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f->root);
    free(f->segs);
    free(f);
    return 0;
}

static uint8_t *slurp(const char *p, size_t *len)
{
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    rewind(fp);
    uint8_t *b = malloc(*len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, *len, fp), *len);
    fclose(fp);
    return b;
}

static void spit(const char *p, const uint8_t *b, size_t len)
{
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, len, fp), len);
    fclose(fp);
}

static void check_entries(struct wal *w, uint64_t n)
{
    struct wal_contents c;
    uint8_t buf[80];
    struct wal_entry want;
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, n);
    for (uint64_t i = 1; i <= n; i++) {
        entry(i, &want, buf);
        assert_int_equal(c.entries[i - 1].index, i);
        assert_int_equal(c.entries[i - 1].term, want.term);
        assert_int_equal(c.entries[i - 1].len, want.len);
        assert_memory_equal(c.entries[i - 1].data, buf, want.len);
    }
}

/* Cut the last record at every byte: as a short file (a crash before the
 * size grew) and as zeros in a preallocated tail (a crash before the data
 * blocks were written).  Each reopens to exactly the entries before it. */
static void test_torn_last_record_at_every_offset_reopens_to_entries_before_it(void **state)
{
    struct fx *f = *state;
    const char *last = f->segs[f->nsegs - 1].name;
    size_t len;
    uint8_t *orig = slurp(path(f, last), &len);

    assert_int_equal(len, f->last_end);
    assert_true(f->nsegs >= 3);
    for (int zeros = 0; zeros <= 1; zeros++) {
        for (uint64_t k = f->last_start; k < f->last_end; k++) {
            struct wal *w;
            struct wal_error err;
            struct wal_contents c;
            uint8_t *b = calloc(1, f->last_end + 4096);
            assert_non_null(b);
            memcpy(b, orig, k);
            spit(path(f, last), b, zeros ? f->last_end + 4096 : k);
            free(b);

            int rc = wal_open(f->dir, NULL, &opts, &w, &err);
            if (rc != 0)
                fail_msg("cut at %llu (zeros %d): %s at %s:%llu: %s", (unsigned long long)k, zeros,
                         cairn_errname(rc), err.file, (unsigned long long)err.offset, err.msg);
            assert_int_equal(wal_read_all(w, &c), 0);
            if (zeros && k >= f->last_data_end) {
                /* Only padding zeroed: the padding is not data, the record is whole. */
                check_entries(w, f->n);
                assert_int_equal(c.repair.cut, 0);
                wal_close(w);
                continue;
            }
            check_entries(w, f->n - 1);
            if (k == f->last_start) {
                /* A clean end at a record boundary, or only preallocated zeros. */
                assert_int_equal(c.repair.cut, 0);
            } else {
                assert_int_equal(c.repair.cut, 1);
                assert_string_equal(c.repair.file, last);
                assert_int_equal(c.repair.offset, f->last_start);
                assert_true(c.repair.bytes > 0);
                assert_true(strlen(c.repair.reason) > 0);
                /* The file was truncated to the last whole record. */
                assert_int_equal(fsize(path(f, last)), (off_t)f->last_start);
            }
            /* Every 16th cut: the repaired log takes the entry again. */
            if (k % 16 == 0) {
                struct wal_entry e;
                uint8_t buf[80];
                entry(f->n, &e, buf);
                assert_int_equal(wal_save(w, NULL, &e, 1, NULL), 0);
                wal_close(w);
                assert_int_equal(wal_open(f->dir, NULL, &opts, &w, &err), 0);
                check_entries(w, f->n);
            }
            wal_close(w);
        }
    }
    spit(path(f, last), orig, len);
    free(orig);
}

/* Truncating the last segment anywhere keeps exactly the entries whose
 * records end before the cut. */
static void test_truncating_last_segment_anywhere_keeps_whole_records(void **state)
{
    struct fx *f = *state;
    const char *last = f->segs[f->nsegs - 1].name;
    size_t len;
    uint8_t *orig = slurp(path(f, last), &len);
    uint64_t ends[512], idx[512];
    size_t nrec = 0;
    uint64_t off = 0, bad;
    uint32_t crc = 0;
    struct wal_rec r;
    char why[160];
    uint64_t first_in_last = 0;

    /* Map each record's end to the last entry index complete at that point. */
    uint64_t cur = 0;
    while (wal_scan_next(orig, len, off, &crc, off > 0, &r, &bad, why, sizeof why) ==
           WAL_SCAN_RECORD) {
        if (r.type == WAL_REC_ENTRY) {
            cur = wal_get64(r.data);
            if (!first_in_last)
                first_in_last = cur;
        }
        ends[nrec] = r.end;
        idx[nrec++] = cur;
        off = r.end;
        assert_true(nrec < 512);
    }
    assert_int_equal(off, len);
    assert_true(first_in_last > 1);
    /* The segment header (crc, metadata, state) must survive: start after it. */
    for (uint64_t k = ends[2]; k <= len; k++) {
        struct wal *w;
        struct wal_error err;
        uint64_t want = first_in_last - 1;
        for (size_t i = 0; i < nrec; i++)
            if (ends[i] <= k && idx[i])
                want = idx[i];
        spit(path(f, last), orig, k);
        assert_int_equal(wal_open(f->dir, NULL, &opts, &w, &err), 0);
        check_entries(w, want);
        wal_close(w);
    }
    spit(path(f, last), orig, len);
    free(orig);
}

static void expect_corrupt(struct fx *f, const char *file, uint64_t off)
{
    struct wal *w = NULL;
    struct wal_error err;
    int rc = wal_open(f->dir, NULL, &opts, &w, &err);
    if (rc != -CAIRN_E_CORRUPT)
        fail_msg("expected CORRUPT at %s:%llu, got %s", file, (unsigned long long)off,
                 cairn_errname(rc));
    assert_null(w);
    assert_string_equal(err.file, file);
    assert_int_equal(err.offset, off);
}

/* Flip each bit of the header and data of a record in the middle of a
 * middle segment, and of one in the middle of the last segment. */
static void test_flipped_bit_in_middle_record_is_corruption_with_file_and_offset(void **state)
{
    struct fx *f = *state;

    for (size_t which = 1; which < f->nsegs; which += f->nsegs - 2) {
        const char *name = f->segs[which].name;
        size_t len;
        uint8_t *orig = slurp(path(f, name), &len);
        uint64_t offs[512], off = 0, bad;
        uint32_t lens[512], crc = 0;
        size_t nrec = 0;
        struct wal_rec r;
        char why[160];

        while (wal_scan_next(orig, len, off, &crc, off > 0, &r, &bad, why, sizeof why) ==
               WAL_SCAN_RECORD) {
            offs[nrec] = r.off;
            lens[nrec++] = r.len;
            off = r.end;
        }
        size_t mid = nrec / 2;
        assert_true(mid > 3 && mid + 1 < nrec);
        for (uint64_t byte = 0; byte < WAL_HDR + lens[mid]; byte++) {
            for (int bit = 0; bit < 8; bit++) {
                uint8_t *b = malloc(len);
                assert_non_null(b);
                memcpy(b, orig, len);
                b[offs[mid] + byte] ^= (uint8_t)(1u << bit);
                spit(path(f, name), b, len);
                expect_corrupt(f, name, offs[mid]);
                /* Untouched: the operator sees exactly what was on disk. */
                size_t after;
                uint8_t *now = slurp(path(f, name), &after);
                assert_int_equal(after, len);
                assert_memory_equal(now, b, len);
                free(now);
                free(b);
            }
        }
        spit(path(f, name), orig, len);
        free(orig);
    }
}

static char *dump(struct fx *f, int *rc)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    assert_non_null(fp);
    *rc = wal_dump(f->dir, fp);
    fclose(fp);
    return text;
}

static void test_dump_reports_corruption_and_torn_tail_where_they_are(void **state)
{
    struct fx *f = *state;
    const char *mid = f->segs[1].name, *last = f->segs[f->nsegs - 1].name;
    size_t len, llen;
    uint8_t *orig = slurp(path(f, mid), &len), *lorig = slurp(path(f, last), &llen);
    char want[200];
    int rc;

    char *text = dump(f, &rc);
    assert_int_equal(rc, 0);
    free(text);

    /* Torn: the last record loses its final byte. */
    spit(path(f, last), lorig, llen - 1);
    text = dump(f, &rc);
    assert_int_equal(rc, 1);
    snprintf(want, sizeof want, "TORN TAIL in %s at offset %llu", last,
             (unsigned long long)f->last_start);
    assert_non_null(strstr(text, want));
    free(text);

    /* Plus a flipped bit in a middle segment: corrupt, and the dump goes on. */
    uint8_t *b = malloc(len);
    memcpy(b, orig, len);
    {
        uint64_t off = 0, bad;
        uint32_t crc = 0;
        struct wal_rec r;
        char why[160];
        for (int k = 0; k < 6; k++) {
            assert_int_equal(wal_scan_next(orig, len, off, &crc, off > 0, &r, &bad, why, sizeof why),
                             WAL_SCAN_RECORD);
            off = r.end;
        }
        b[r.off + WAL_HDR + 3] ^= 0x10; /* inside the 6th record's data */
    }
    spit(path(f, mid), b, len);
    struct wal *w;
    struct wal_error err;
    assert_int_equal(wal_open(f->dir, NULL, &opts, &w, &err), -CAIRN_E_CORRUPT);
    text = dump(f, &rc);
    assert_int_equal(rc, -CAIRN_E_CORRUPT);
    snprintf(want, sizeof want, "CORRUPT in %s at offset %llu", mid, (unsigned long long)err.offset);
    assert_non_null(strstr(text, want));
    assert_string_equal(err.file, mid);
    assert_non_null(strstr(text, "TORN TAIL")); /* the later segments were still read */
    assert_non_null(strstr(text, "CORRUPT (opening refuses it)"));
    free(text);
    free(b);
    spit(path(f, mid), orig, len);
    spit(path(f, last), lorig, llen);
    free(orig);
    free(lorig);
}

/* A record missing from the end of a middle segment breaks the CRC chain at
 * the next segment's crc record; a missing segment breaks the sequence. */
static void test_lost_tail_of_middle_segment_and_missing_segment_are_corruption(void **state)
{
    struct fx *f = *state;
    const char *mid = f->segs[1].name;
    size_t len;
    uint8_t *orig = slurp(path(f, mid), &len);
    uint64_t off = 0, prev = 0, bad;
    uint32_t crc = 0;
    struct wal_rec r;
    char why[160];

    while (wal_scan_next(orig, len, off, &crc, off > 0, &r, &bad, why, sizeof why) ==
           WAL_SCAN_RECORD) {
        prev = off;
        off = r.end;
    }
    spit(path(f, mid), orig, prev); /* drop its last whole record */
    expect_corrupt(f, f->segs[2].name, 0);
    spit(path(f, mid), orig, len);

    char hidden[800];
    snprintf(hidden, sizeof hidden, "%s.hidden", path(f, mid));
    assert_int_equal(rename(path(f, mid), hidden), 0);
    expect_corrupt(f, f->segs[2].name, 0);
    assert_int_equal(rename(hidden, path(f, mid)), 0);
    free(orig);
}

/* Zeros where a record header should be, with records after them, are not
 * a clean end: a hole in acknowledged data must not be cut silently. */
static void test_zeroed_record_followed_by_records_is_corruption(void **state)
{
    struct fx *f = *state;
    const char *last = f->segs[f->nsegs - 1].name;
    size_t len;
    uint8_t *orig = slurp(path(f, last), &len);
    uint64_t target = f->last_start - 128; /* some record before the last */
    uint64_t off = 0, bad;
    uint32_t crc = 0;
    struct wal_rec r;
    char why[160];

    while (wal_scan_next(orig, len, off, &crc, off > 0, &r, &bad, why, sizeof why) ==
               WAL_SCAN_RECORD && r.end <= target)
        off = r.end;
    uint8_t *b = malloc(len);
    memcpy(b, orig, len);
    memset(b + off, 0, r.end - off);
    spit(path(f, last), b, len);
    expect_corrupt(f, last, off);
    spit(path(f, last), orig, len);
    free(b);
    free(orig);
}

/* A crash during a cut leaves a temporary file that never became part of
 * the log: it is ignored and removed. */
static void test_leftover_temporary_segment_is_ignored(void **state)
{
    struct fx *f = *state;
    struct wal *w;
    char tmp[100];

    snprintf(tmp, sizeof tmp, "%016llx-%016llx.wal.tmp",
             (unsigned long long)f->segs[f->nsegs - 1].seq + 1, (unsigned long long)f->n + 1);
    spit(path(f, tmp), (const uint8_t *)"garbage", 7);
    assert_int_equal(wal_open(f->dir, NULL, &opts, &w, NULL), 0);
    check_entries(w, f->n);
    assert_int_equal(access(path(f, tmp), F_OK), -1);
    wal_close(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_torn_last_record_at_every_offset_reopens_to_entries_before_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncating_last_segment_anywhere_keeps_whole_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_bit_in_middle_record_is_corruption_with_file_and_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump_reports_corruption_and_torn_tail_where_they_are, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_tail_of_middle_segment_and_missing_segment_are_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zeroed_record_followed_by_records_is_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leftover_temporary_segment_is_ignored, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
