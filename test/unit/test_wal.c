/*
 * WAL behaviours: round trips across many segment cuts, reading at a
 * snapshot, overwrites after a term change, locking, release, argument
 * checks.  Damage and repair are in test_wal_repair.c, full disks in
 * test_wal_enospc.c.
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
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/errors.h"
#include "storage/wal.h"
#include "storage/wal_internal.h" /* w->off */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static char *make_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char *d;
    if (asprintf(&d, "%s/cairn-wal-XXXXXX", t ? t : "/tmp") < 0)
        return NULL;
    if (!mkdtemp(d)) {
        free(d);
        return NULL;
    }
    return d;
}

static int setup(void **state)
{
    char *d = make_tmpdir();
    if (!d)
        return -1;
    *state = d;
    return 0;
}

static int teardown(void **state)
{
    nftw(*state, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

static char *waldir(void **state)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/wal", (char *)*state);
    return path;
}

/* Deterministic payload for (index, term) so reads can be checked. */
static size_t payload(uint64_t index, uint64_t term, uint8_t *buf, size_t max)
{
    size_t len = (size_t)((index * 37 + term * 11) % max);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(index * 7 + term * 3 + i);
    return len;
}

static const struct wal_metadata meta = {0x1111, 0x2222, "blob!", 5};

static void save_range(struct wal *w, uint64_t from, uint64_t to, uint64_t term, size_t batch)
{
    static uint8_t bufs[64][300];
    struct wal_entry e[64];
    assert_true(batch <= 64);
    for (uint64_t i = from; i <= to;) {
        size_t n = 0;
        for (; n < batch && i <= to; n++, i++) {
            e[n].index = i;
            e[n].term = term;
            e[n].type = (uint32_t)(i % 3);
            e[n].data = bufs[n];
            e[n].len = payload(i, term, bufs[n], sizeof bufs[n]);
        }
        struct wal_hardstate hs = {term, 7, i - 1};
        uint64_t ns = 0;
        assert_int_equal(wal_save(w, &hs, e, n, &ns), 0);
    }
}

static void check_entry(const struct wal_entry *e, uint64_t index, uint64_t term)
{
    uint8_t want[300];
    size_t len = payload(index, term, want, sizeof want);
    assert_int_equal(e->index, index);
    assert_int_equal(e->term, term);
    assert_int_equal(e->type, (uint32_t)(index % 3));
    assert_int_equal(e->len, len);
    if (len)
        assert_memory_equal(e->data, want, len);
}

static const struct wal_options small = {.segment_size = 4096, .keep_segments = 2};

static void test_round_trip_across_many_segment_cuts(void **state)
{
    struct wal *w;
    struct wal_contents c;
    struct wal_error err;
    const uint64_t N = 3000;

    assert_int_equal(wal_create(waldir(state), &meta, &small, &w, &err), 0);
    save_range(w, 1, N, 3, 7);
    size_t segs = wal_segment_count(w);
    assert_true(segs > 50); /* the test is about cuts: make sure there were many */
    assert_int_equal(wal_last_index(w), N);
    assert_int_equal(wal_close(w), 0);

    assert_int_equal(wal_open(waldir(state), NULL, &small, &w, &err), 0);
    assert_int_equal(wal_segment_count(w), segs);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.meta.member_id, 0x1111);
    assert_int_equal(c.meta.cluster_id, 0x2222);
    assert_int_equal(c.meta.blob_len, 5);
    assert_memory_equal(c.meta.blob, "blob!", 5);
    assert_int_equal(c.hardstate.term, 3);
    assert_int_equal(c.hardstate.vote, 7);
    assert_int_equal(c.hardstate.commit, N);
    assert_int_equal(c.n_entries, N);
    assert_int_equal(c.last_index, N);
    assert_int_equal(c.repair.cut, 0);
    for (uint64_t i = 0; i < N; i++)
        check_entry(&c.entries[i], i + 1, 3);

    /* Appending after a reopen continues the same log. */
    save_range(w, N + 1, N + 500, 4, 50);
    assert_int_equal(wal_close(w), 0);
    assert_int_equal(wal_open(waldir(state), NULL, &small, &w, &err), 0);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, N + 500);
    check_entry(&c.entries[N - 1], N, 3);
    check_entry(&c.entries[N], N + 1, 4);
    check_entry(&c.entries[N + 499], N + 500, 4);
    assert_int_equal(c.hardstate.term, 4);
    wal_close(w);
}

static void test_default_options_and_preallocated_segment_reads_clean(void **state)
{
    struct wal *w;
    struct wal_contents c;
    struct stat st;
    char path[600];

    /* Default 64 MiB preallocation: the zeros after the records are a clean end. */
    assert_int_equal(wal_create(waldir(state), &meta, NULL, &w, NULL), 0);
    save_range(w, 1, 10, 1, 3);
    wal_close(w);
    snprintf(path, sizeof path, "%s/0000000000000000-0000000000000000.wal", waldir(state));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal((uint64_t)st.st_size, WAL_DEFAULT_SEGMENT_SIZE);
    assert_int_equal(wal_open(waldir(state), NULL, NULL, &w, NULL), 0);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 10);
    assert_int_equal(c.repair.cut, 0);
    wal_close(w);
}

/* 1 if a block of path in [from, to) is allocated but unwritten, 0 if none is, -1 if the file system cannot say. */
static int unwritten_in(const char *path, uint64_t from, uint64_t to)
{
    enum { MAX_EXTENTS = 256 };
    struct fiemap *fm = calloc(1, sizeof(*fm) + MAX_EXTENTS * sizeof(struct fiemap_extent));
    int fd = open(path, O_RDONLY);
    assert_non_null(fm);
    assert_true(fd >= 0);
    fm->fm_start = from;
    fm->fm_length = to - from;
    fm->fm_flags = FIEMAP_FLAG_SYNC; /* writeback done, so the extents are converted */
    fm->fm_extent_count = MAX_EXTENTS;
    int rc = ioctl(fd, FS_IOC_FIEMAP, fm) < 0 ? -1 : 0;
    for (unsigned i = 0; rc == 0 && i < fm->fm_mapped_extents; i++)
        if (fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
            rc = 1;
    close(fd);
    free(fm);
    return rc;
}

static void test_blocks_ahead_of_the_log_are_written_before_appends_reach_them(void **state)
{
    struct wal *w;
    struct wal_contents c;
    char path[600];
    const uint64_t ahead = 128 * 1024; /* half of wal.c's chunk: it writes more when closer than that */

    assert_int_equal(wal_create(waldir(state), &meta, NULL, &w, NULL), 0);
    snprintf(path, sizeof path, "%s/0000000000000000-0000000000000000.wal", waldir(state));
    save_range(w, 1, 10, 1, 3);
    /* Only a file system that leaves fallocated blocks unwritten has
     * anything to gain (ext4, xfs); elsewhere there is nothing to check. */
    if (unwritten_in(path, 32u << 20, 33u << 20) != 1) {
        wal_close(w);
        skip();
    }
    /* Single appends and batches, the log growing past several chunks: the
     * blocks the next appends write are written already, so their
     * fdatasync has no extent to convert and no inode to write. */
    for (uint64_t from = 11, k = 0; from < 6000; from += 500, k++) {
        save_range(w, from, from + 499, 1, k % 2 ? 1 : 64);
        assert_int_equal(unwritten_in(path, 0, w->off + ahead), 0);
    }
    /* Reopened, the log does not know what lies ahead: the next append writes it again. */
    assert_int_equal(wal_close(w), 0);
    assert_int_equal(wal_open(waldir(state), NULL, NULL, &w, NULL), 0);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 6010);
    assert_int_equal(c.repair.cut, 0); /* the zeros ahead read as a clean end */
    check_entry(&c.entries[6009], 6010, 1);
    save_range(w, 6011, 6011, 1, 1);
    assert_int_equal(unwritten_in(path, 0, w->off + ahead), 0);
    wal_close(w);
}

static void test_overwrite_after_term_change_reads_last_write(void **state)
{
    struct wal *w;
    struct wal_contents c;

    assert_int_equal(wal_create(waldir(state), &meta, &small, &w, NULL), 0);
    save_range(w, 1, 100, 1, 10);
    /* A new leader at term 2 truncates back to 60 and writes 61..80. */
    save_range(w, 61, 80, 2, 5);
    /* And another at term 3 rewrites from 71, across a cut. */
    save_range(w, 71, 150, 3, 9);
    assert_int_equal(wal_last_index(w), 150);
    wal_close(w);

    assert_int_equal(wal_open(waldir(state), NULL, &small, &w, NULL), 0);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 150);
    for (uint64_t i = 1; i <= 150; i++)
        check_entry(&c.entries[i - 1], i, i <= 60 ? 1 : i <= 70 ? 2 : 3);
    wal_close(w);

    /* An overwrite that shortens the log: nothing after it survives. */
    assert_int_equal(wal_open(waldir(state), NULL, &small, &w, NULL), 0);
    save_range(w, 40, 45, 4, 6);
    assert_int_equal(wal_last_index(w), 45);
    wal_close(w);
    assert_int_equal(wal_open(waldir(state), NULL, &small, &w, NULL), 0);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 45);
    check_entry(&c.entries[38], 39, 1);
    check_entry(&c.entries[44], 45, 4);
    wal_close(w);
}

static void test_read_at_snapshot_returns_entries_after_it(void **state)
{
    struct wal *w;
    struct wal_contents c;
    struct wal_error err;
    struct wal_snapshot s = {120, 2};

    assert_int_equal(wal_create(waldir(state), &meta, &small, &w, NULL), 0);
    save_range(w, 1, 100, 1, 10);
    save_range(w, 101, 200, 2, 10);
    assert_int_equal(wal_save_snapshot(w, &s), 0);
    save_range(w, 201, 260, 2, 10);
    wal_close(w);

    assert_int_equal(wal_open(waldir(state), &s, &small, &w, &err), 0);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 140);
    check_entry(&c.entries[0], 121, 2);
    check_entry(&c.entries[139], 260, 2);
    assert_int_equal(c.hardstate.commit, 260);
    wal_close(w);

    /* A snapshot the WAL never recorded, or with another term, is refused. */
    struct wal_snapshot unknown = {130, 2}, wrongterm = {120, 1};
    assert_int_equal(wal_open(waldir(state), &unknown, &small, &w, &err), -CAIRN_E_NOT_FOUND);
    assert_non_null(strstr(err.msg, "130"));
    assert_int_equal(wal_open(waldir(state), &wrongterm, &small, &w, &err), -CAIRN_E_CORRUPT);
    assert_non_null(strstr(err.msg, "term"));
    assert_true(strlen(err.file) > 0);
}

static void test_release_keeps_newest_and_what_snapshot_needs(void **state)
{
    struct wal *w;
    struct wal_contents c;
    struct wal_snapshot s = {500, 1};
    const struct wal_options keep3 = {.segment_size = 4096, .keep_segments = 3};

    assert_int_equal(wal_create(waldir(state), &meta, &keep3, &w, NULL), 0);
    save_range(w, 1, 600, 1, 10);
    assert_int_equal(wal_save_snapshot(w, &s), 0);
    size_t before = wal_segment_count(w);
    assert_true(before > 10);

    /* Releasing at 0 removes nothing. */
    assert_int_equal(wal_release_to(w, 0), 0);
    assert_int_equal(wal_segment_count(w), before);
    assert_int_equal(wal_release_to(w, 500), 0);
    size_t after = wal_segment_count(w);
    assert_true(after < before);
    assert_true(after >= 3);
    wal_close(w);

    /* The log still reads at the snapshot, with every entry after it. */
    assert_int_equal(wal_open(waldir(state), &s, &keep3, &w, NULL), 0);
    assert_int_equal(wal_segment_count(w), after);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 100);
    check_entry(&c.entries[0], 501, 1);
    /* Releasing past the end still keeps keep_segments files. */
    assert_int_equal(wal_release_to(w, 10000), 0);
    assert_int_equal(wal_segment_count(w), 3);
    wal_close(w);
    /* But reading at 0 now fails: its segments are gone. */
    assert_int_equal(wal_open(waldir(state), NULL, &keep3, &w, NULL), -CAIRN_E_NOT_FOUND);
}

static void test_second_opener_is_refused_and_told_the_holder(void **state)
{
    struct wal *w, *w2 = NULL;
    struct wal_error err;
    char pid[32];

    assert_int_equal(wal_create(waldir(state), &meta, &small, &w, NULL), 0);
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    assert_int_equal(wal_open(waldir(state), NULL, &small, &w2, &err), -CAIRN_E_WAL_LOCKED);
    assert_null(w2);
    assert_non_null(strstr(err.msg, pid));
    assert_int_equal(wal_create(waldir(state), &meta, &small, &w2, &err), -CAIRN_E_WAL_LOCKED);

    /* Another process is refused too. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        struct wal *x = NULL;
        struct wal_error e;
        int rc = wal_open(waldir(state), NULL, &small, &x, &e);
        _exit(rc == -CAIRN_E_WAL_LOCKED && strstr(e.msg, pid) ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* Closing releases it. */
    wal_close(w);
    assert_int_equal(wal_open(waldir(state), NULL, &small, &w2, &err), 0);
    wal_close(w2);
}

static void test_create_refuses_an_existing_log(void **state)
{
    struct wal *w;
    assert_int_equal(wal_exists(waldir(state)), 0);
    assert_int_equal(wal_create(waldir(state), &meta, &small, &w, NULL), 0);
    struct wal_contents c;
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 0);
    assert_int_equal(c.meta.cluster_id, 0x2222);
    assert_int_equal(c.meta.blob_len, 5);
    wal_close(w);
    assert_int_equal(wal_exists(waldir(state)), 1);
    assert_int_equal(wal_create(waldir(state), &meta, &small, &w, NULL), -EEXIST);
}

static void test_create_with_trailing_slash_then_open(void **state)
{
    struct wal *w;
    char d[600];
    snprintf(d, sizeof d, "%s//", waldir(state));
    assert_int_equal(wal_create(d, &meta, &small, &w, NULL), 0);
    save_range(w, 1, 3, 1, 3);
    wal_close(w);
    assert_int_equal(wal_open(waldir(state), NULL, &small, &w, NULL), 0);
    assert_int_equal(wal_last_index(w), 3);
    wal_close(w);
}

static void test_open_of_missing_or_empty_dir_fails(void **state)
{
    struct wal *w;
    struct wal_error err;
    assert_int_equal(wal_open(waldir(state), NULL, NULL, &w, &err), -ENOENT);
    assert_int_equal(wal_open((char *)*state, NULL, NULL, &w, &err), -CAIRN_E_NOT_FOUND);
}

static void test_save_rejects_gaps_and_bad_batches(void **state)
{
    struct wal *w;
    struct wal_contents c;
    struct wal_entry e[2] = {{5, 1, 0, "x", 1}, {6, 1, 0, "y", 1}};

    assert_int_equal(wal_create(waldir(state), &meta, &small, &w, NULL), 0);
    /* The log is empty: index 5 would leave a gap. */
    assert_int_equal(wal_save(w, NULL, e, 2, NULL), -CAIRN_E_INVALID_ARGUMENT);
    e[0].index = 1;
    /* Not consecutive. */
    assert_int_equal(wal_save(w, NULL, e, 2, NULL), -CAIRN_E_INVALID_ARGUMENT);
    e[1].index = 2;
    e[1].data = NULL;
    assert_int_equal(wal_save(w, NULL, e, 2, NULL), -CAIRN_E_INVALID_ARGUMENT);
    e[1].data = "y";
    /* Nothing to do is not an error, and costs no sync. */
    uint64_t ns = 99;
    assert_int_equal(wal_save(w, NULL, NULL, 0, &ns), 0);
    assert_int_equal(ns, 0);
    assert_int_equal(wal_save(w, NULL, e, 2, &ns), 0);
    /* A hard state alone is durable too. */
    struct wal_hardstate hs = {9, 3, 2};
    assert_int_equal(wal_save(w, &hs, NULL, 0, NULL), 0);
    wal_close(w);
    assert_int_equal(wal_open(waldir(state), NULL, &small, &w, NULL), 0);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 2);
    assert_int_equal(c.hardstate.term, 9);
    assert_int_equal(c.hardstate.vote, 3);
    assert_int_equal(c.hardstate.commit, 2);
    assert_memory_equal(c.entries[1].data, "y", 1);
    wal_free_contents(w);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 0);
    assert_int_equal(c.meta.member_id, 0x1111);
    assert_memory_equal(c.meta.blob, "blob!", 5);
    wal_close(w);
}

static void test_large_entry_and_empty_entry_round_trip(void **state)
{
    struct wal *w;
    struct wal_contents c;
    size_t big = 3 * 4096 + 5; /* larger than a whole segment */
    uint8_t *data = malloc(big);
    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)(i * 13);
    struct wal_entry e[3] = {{1, 1, 0, NULL, 0}, {2, 1, 1, data, big}, {3, 1, 2, "z", 1}};

    assert_int_equal(wal_create(waldir(state), &meta, &small, &w, NULL), 0);
    assert_int_equal(wal_save(w, NULL, e, 3, NULL), 0);
    assert_int_equal(wal_save(w, NULL, e + 2, 1, NULL), 0); /* rewrite 3 after a cut */
    assert_int_equal(wal_segment_count(w), 2);
    wal_close(w);
    assert_int_equal(wal_open(waldir(state), NULL, &small, &w, NULL), 0);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, 3);
    assert_int_equal(c.entries[0].len, 0);
    assert_int_equal(c.entries[1].len, big);
    assert_memory_equal(c.entries[1].data, data, big);
    assert_int_equal(c.entries[2].type, 2);
    wal_close(w);
    free(data);
}

/* The operator's dump of a healthy log names every record. */
static void test_dump_lists_every_record_of_a_healthy_log(void **state)
{
    struct wal *w;
    char *text = NULL;
    size_t len = 0;

    assert_int_equal(wal_create(waldir(state), &meta, &small, &w, NULL), 0);
    save_range(w, 1, 200, 2, 10);
    size_t segs = wal_segment_count(w);
    wal_close(w);

    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(wal_dump(waldir(state), f), 0);
    fclose(f);
    size_t entries = 0, segments = 0, states = 0;
    for (char *p = text; (p = strstr(p, " entry ")); p++)
        entries++;
    for (char *p = text; (p = strstr(p, "\nsegment ")); p++)
        segments++;
    for (char *p = text; (p = strstr(p, " state ")); p++)
        states++;
    assert_int_equal(entries, 200);
    assert_int_equal(segments, segs);
    assert_int_equal(states, 20 + segs); /* one per batch, one per segment header */
    assert_non_null(strstr(text, "index 200 term 2"));
    assert_non_null(strstr(text, "intact"));
    assert_null(strstr(text, "CORRUPT"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_across_many_segment_cuts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_options_and_preallocated_segment_reads_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overwrite_after_term_change_reads_last_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_at_snapshot_returns_entries_after_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_keeps_newest_and_what_snapshot_needs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_opener_is_refused_and_told_the_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_refuses_an_existing_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_with_trailing_slash_then_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_of_missing_or_empty_dir_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_rejects_gaps_and_bad_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_entry_and_empty_entry_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump_lists_every_record_of_a_healthy_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blocks_ahead_of_the_log_are_written_before_appends_reach_them, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
