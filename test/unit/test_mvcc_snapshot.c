/* storage/mvcc snapshots as `cairnd restore` uses them: checking a copy, and
 * restarting a copy's consistent index so a new cluster's log applies. */
#include <errno.h>
#include <fcntl.h>
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
#include "storage/mvcc.h"

#define B(s) ((struct mvcc_buf){(s), strlen(s)})

struct fx {
    char dir[64], copy[128], dir2[80];
};

static void rm_rf(const char *dir)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void put(struct mvcc_store *s, uint64_t index, const char *key, const char *value)
{
    struct mvcc_entry e = {.index = index, .term = 3, .req = {.type = MVCC_REQ_PUT}};
    e.req.put.key = B(key);
    e.req.put.value = B(value);
    struct mvcc_result *res = NULL;
    assert_int_equal(mvcc_apply(s, &e, 1, &res), 0);
    assert_false(res->entries[0].skipped);
    assert_int_equal(res->entries[0].resp.err, 0);
    mvcc_result_free(res);
}

/* A store with 300 keys of 1 KiB (many pages) at indexes 1..300, term 3, and a copy of it. */
static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof f->dir, "/tmp/cairn-test-mvsnap-%d", (int)getpid());
    snprintf(f->dir2, sizeof f->dir2, "%s-2", f->dir);
    snprintf(f->copy, sizeof f->copy, "%s.copy.db", f->dir);
    rm_rf(f->dir);
    rm_rf(f->dir2);
    unlink(f->copy);
    struct mvcc_store *s;
    struct mvcc_reader *r;
    char err[256], key[32], val[1024];
    assert_int_equal(mvcc_open(f->dir, NULL, &s, err, sizeof err), 0);
    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = 0;
    for (int i = 1; i <= 300; i++) {
        snprintf(key, sizeof key, "k%03d", i);
        put(s, (uint64_t)i, key, val);
    }
    assert_int_equal(mvcc_reader_open(s, &r), 0);
    uint64_t index = 0;
    assert_int_equal(mvcc_snapshot_write(r, f->copy, &index), 0);
    assert_int_equal(index, 300);
    mvcc_reader_close(r);
    mvcc_close(s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    rm_rf(f->dir);
    rm_rf(f->dir2);
    unlink(f->copy);
    free(f);
    return 0;
}

static void test_check_reports_the_copys_state(void **state)
{
    struct fx *f = *state;
    struct mvcc_status st;
    char err[512];
    int rc = mvcc_snapshot_check(f->copy, true, &st, err, sizeof err);
    if (rc)
        print_message("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(st.revision, 301); /* the store starts at 1; 300 puts */
    assert_int_equal(st.consistent_index, 300);
    assert_int_equal(st.consistent_term, 3);
    assert_true(st.db_size > 300 * 1024);
}

static void test_check_finds_a_damaged_page_and_names_the_file(void **state)
{
    struct fx *f = *state;
    int fd = open(f->copy, O_WRONLY);
    assert_true(fd >= 0);
    char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    /* pages 3 to 10 (4 KiB pages): b-tree pages of the rev table, not the header */
    for (int p = 2; p < 10; p++)
        assert_int_equal(pwrite(fd, junk, sizeof junk, (off_t)p * 4096), (ssize_t)sizeof junk);
    close(fd);
    char err[512] = "";
    int rc = mvcc_snapshot_check(f->copy, true, NULL, err, sizeof err);
    assert_int_equal(rc, -CAIRN_E_CORRUPT);
    assert_non_null(strstr(err, f->copy));
}

static void test_check_refuses_a_foreign_or_missing_file(void **state)
{
    struct fx *f = *state;
    char err[512] = "";
    FILE *fp = fopen(f->copy, "w");
    fputs("this is not a database, just text that is long enough to look like a header at all\n", fp);
    fclose(fp);
    int rc = mvcc_snapshot_check(f->copy, false, NULL, err, sizeof err);
    assert_true(rc == -CAIRN_E_CORRUPT || rc == -CAIRN_E_SCHEMA);
    assert_non_null(strstr(err, f->copy));
    unlink(f->copy);
    assert_int_equal(mvcc_snapshot_check(f->copy, false, NULL, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, f->copy));
}

static void test_set_consistent_index_lets_a_new_log_apply_and_keeps_the_data(void **state)
{
    struct fx *f = *state;
    char err[512];
    struct mvcc_store *s;
    struct mvcc_status st;
    assert_int_equal(mkdir(f->dir2, 0700), 0);
    assert_int_equal(mvcc_restore(f->dir2, f->copy, err, sizeof err), 0);
    assert_int_equal(mvcc_open(f->dir2, NULL, &s, err, sizeof err), 0);
    /* as copied, the entries of a new log (index 2 on) would be skipped */
    struct mvcc_entry e = {.index = 2, .term = 1, .req = {.type = MVCC_REQ_PUT}};
    e.req.put.key = B("new");
    e.req.put.value = B("x");
    struct mvcc_result *res = NULL;
    assert_int_equal(mvcc_apply(s, &e, 1, &res), 0);
    assert_true(res->entries[0].skipped);
    mvcc_result_free(res);

    assert_int_equal(mvcc_set_consistent_index(s, 1, 1), 0);
    assert_int_equal(mvcc_store_status(s, &st), 0);
    assert_int_equal(st.consistent_index, 1);
    assert_int_equal(st.consistent_term, 1);
    assert_int_equal(st.revision, 301);
    put(s, 2, "new", "x");
    assert_int_equal(mvcc_sync(s), 0);
    mvcc_close(s);

    /* after a reopen: the new index, every old key and the new one */
    assert_int_equal(mvcc_open(f->dir2, NULL, &s, err, sizeof err), 0);
    assert_int_equal(mvcc_store_status(s, &st), 0);
    assert_int_equal(st.consistent_index, 2);
    assert_int_equal(st.revision, 302);
    struct mvcc_reader *r;
    assert_int_equal(mvcc_reader_open(s, &r), 0);
    struct mvcc_range_req q = {.key = B("k"), .range_end = B("l"), .count_only = true};
    struct mvcc_range_result *rr = NULL;
    assert_int_equal(mvcc_range(r, &q, &rr, NULL), 0);
    assert_int_equal(rr->resp.count, 300);
    mvcc_range_result_free(rr);
    mvcc_reader_close(r);
    mvcc_close(s);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_check_reports_the_copys_state),
        T(test_check_finds_a_damaged_page_and_names_the_file),
        T(test_check_refuses_a_foreign_or_missing_file),
        T(test_set_consistent_index_lets_a_new_log_apply_and_keeps_the_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
