/*
 * Snapshot files: round trip, fall-back past a snapshot that fails its
 * checksum (renamed *.broken), listing order, purging with the copies they
 * name, and leftovers of interrupted saves.
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
#include "storage/snap.h"

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int setup(void **state)
{
    const char *t = getenv("TMPDIR");
    char *d;
    if (asprintf(&d, "%s/cairn-snap-XXXXXX", t ? t : "/tmp") < 0 || !mkdtemp(d))
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

static char *path(void **state, const char *name)
{
    static char p[600];
    snprintf(p, sizeof p, "%s/%s", (char *)*state, name);
    return p;
}

static char *name_of(uint64_t term, uint64_t index)
{
    static char n[64];
    snprintf(n, sizeof n, "%016llx-%016llx.snap", (unsigned long long)term,
             (unsigned long long)index);
    return n;
}

static void save(void **state, uint64_t term, uint64_t index)
{
    char conf[32], db[32];
    snprintf(conf, sizeof conf, "voters %llu", (unsigned long long)index);
    snprintf(db, sizeof db, "%016llx.snap.db", (unsigned long long)index);
    struct snap_meta m = {term, index, conf, strlen(conf), db};
    assert_int_equal(snap_save((char *)*state, &m), 0);
}

static void expect_newest(void **state, uint64_t term, uint64_t index, unsigned broken)
{
    struct snap_meta m;
    struct snap_load_info info;
    char conf[32], db[32];
    assert_int_equal(snap_load_newest((char *)*state, &m, &info), 0);
    assert_int_equal(m.term, term);
    assert_int_equal(m.index, index);
    snprintf(conf, sizeof conf, "voters %llu", (unsigned long long)index);
    snprintf(db, sizeof db, "%016llx.snap.db", (unsigned long long)index);
    assert_int_equal(m.conf_len, strlen(conf));
    assert_memory_equal(m.conf_state, conf, m.conf_len);
    assert_string_equal(m.db_file, db);
    assert_string_equal(info.name, name_of(term, index));
    assert_int_equal(info.broken, broken);
    snap_meta_free(&m);
    assert_null(m.conf_state);
}

static void flip(const char *p, long off)
{
    int fd = open(p, O_RDWR);
    unsigned char c;
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0x04;
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void test_save_then_load_newest_round_trips(void **state)
{
    save(state, 1, 100);
    save(state, 2, 300);
    save(state, 2, 200);
    expect_newest(state, 2, 300, 0);
    /* Saving the same snapshot again replaces it atomically. */
    save(state, 2, 300);
    expect_newest(state, 2, 300, 0);
    /* No conf state and no db file is fine too. */
    struct snap_meta bare = {3, 400, NULL, 0, NULL}, m;
    assert_int_equal(snap_save((char *)*state, &bare), 0);
    assert_int_equal(snap_load((char *)*state, name_of(3, 400), &m), 0);
    assert_int_equal(m.conf_len, 0);
    assert_string_equal(m.db_file, "");
    snap_meta_free(&m);
}

static void test_bad_checksum_falls_back_to_previous_and_is_renamed_broken(void **state)
{
    save(state, 1, 100);
    save(state, 1, 200);
    save(state, 2, 300);
    struct stat st;
    assert_int_equal(stat(path(state, name_of(2, 300)), &st), 0);
    /* Every byte of the newest file matters: flip each in turn. */
    for (long off = 0; off < st.st_size; off++) {
        flip(path(state, name_of(2, 300)), off);
        expect_newest(state, 1, 200, 1);
        char broken[128];
        snprintf(broken, sizeof broken, "%s.broken", name_of(2, 300));
        assert_int_equal(access(path(state, name_of(2, 300)), F_OK), -1);
        assert_int_equal(access(path(state, broken), F_OK), 0);
        unlink(path(state, broken));
        save(state, 2, 300);
    }
    /* Two bad ones: falls back two, and says which was newest. */
    flip(path(state, name_of(2, 300)), 20);
    assert_int_equal(truncate(path(state, name_of(1, 200)), 30), 0);
    struct snap_meta m;
    struct snap_load_info info;
    assert_int_equal(snap_load_newest((char *)*state, &m, &info), 0);
    assert_int_equal(m.index, 100);
    assert_int_equal(info.broken, 2);
    assert_string_equal(info.broken_name, name_of(2, 300));
    snap_meta_free(&m);
    /* A later load no longer sees the broken ones. */
    expect_newest(state, 1, 100, 0);
}

static void test_no_valid_snapshot_is_not_found(void **state)
{
    struct snap_meta m;
    assert_int_equal(snap_load_newest((char *)*state, &m, NULL), -CAIRN_E_NOT_FOUND);
    save(state, 1, 100);
    flip(path(state, name_of(1, 100)), 45);
    assert_int_equal(snap_load_newest((char *)*state, &m, NULL), -CAIRN_E_NOT_FOUND);
    assert_int_equal(snap_load_newest("/nonexistent/cairn", &m, NULL), -ENOENT);
}

static void test_valid_file_under_another_name_is_broken(void **state)
{
    save(state, 1, 100);
    save(state, 1, 50);
    char renamed[128], from[700];
    snprintf(renamed, sizeof renamed, "%s", name_of(1, 900));
    snprintf(from, sizeof from, "%s", path(state, name_of(1, 100)));
    assert_int_equal(rename(from, path(state, renamed)), 0);
    struct snap_meta m;
    assert_int_equal(snap_load((char *)*state, renamed, &m), -CAIRN_E_CORRUPT);
    expect_newest(state, 1, 50, 1);
}

static void test_list_is_newest_first_and_ignores_other_files(void **state)
{
    struct snap_id *ids;
    size_t n;
    save(state, 1, 10);
    save(state, 3, 30);
    save(state, 2, 20);
    FILE *f = fopen(path(state, "notes.txt"), "w");
    fclose(f);
    f = fopen(path(state, "0000000000000001-000000000000000a.snap.broken"), "w");
    fclose(f);
    assert_int_equal(snap_list((char *)*state, &ids, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0].index, 30);
    assert_int_equal(ids[1].index, 20);
    assert_int_equal(ids[2].index, 10);
    assert_int_equal(ids[2].term, 1);
    free(ids);
}

static void test_purge_keeps_newest_and_their_copies(void **state)
{
    for (uint64_t i = 1; i <= 8; i++) {
        char db[64];
        save(state, 1, i * 10);
        snprintf(db, sizeof db, "%016llx.snap.db", (unsigned long long)(i * 10));
        FILE *f = fopen(path(state, db), "w");
        fputs("copy", f);
        fclose(f);
    }
    FILE *f = fopen(path(state, "0000000000000001-0000000000000090.snap.tmp"), "w");
    fclose(f);
    f = fopen(path(state, "0000000000000001-0000000000000001.snap.broken"), "w");
    fclose(f);

    assert_int_equal(snap_purge((char *)*state, 0), 0); /* default: 5 */
    struct snap_id *ids;
    size_t n;
    assert_int_equal(snap_list((char *)*state, &ids, &n), 0);
    assert_int_equal(n, SNAP_DEFAULT_KEEP);
    assert_int_equal(ids[n - 1].index, 40);
    free(ids);
    /* The copies of purged snapshots (index 10..30) went, the kept ones' stayed. */
    assert_int_equal(access(path(state, "000000000000001e.snap.db"), F_OK), -1);
    assert_int_equal(access(path(state, "000000000000000a.snap.db"), F_OK), -1);
    assert_int_equal(access(path(state, "0000000000000028.snap.db"), F_OK), 0);
    assert_int_equal(access(path(state, "0000000000000001-0000000000000090.snap.tmp"), F_OK), -1);
    assert_int_equal(access(path(state, "0000000000000001-0000000000000001.snap.broken"), F_OK), 0);

    assert_int_equal(snap_purge((char *)*state, 2), 0);
    assert_int_equal(snap_list((char *)*state, &ids, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1].index, 70);
    free(ids);
    expect_newest(state, 1, 80, 0);
}

static void test_save_rejects_bad_arguments(void **state)
{
    struct snap_meta m = {1, 1, NULL, 5, NULL};
    assert_int_equal(snap_save((char *)*state, &m), -CAIRN_E_INVALID_ARGUMENT);
    assert_int_equal(snap_save(NULL, &m), -CAIRN_E_INVALID_ARGUMENT);
    m.conf_len = 0;
    assert_int_equal(snap_save("/nonexistent/cairn", &m), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_save_then_load_newest_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_checksum_falls_back_to_previous_and_is_renamed_broken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_valid_snapshot_is_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_valid_file_under_another_name_is_broken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_is_newest_first_and_ignores_other_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_keeps_newest_and_their_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_rejects_bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
