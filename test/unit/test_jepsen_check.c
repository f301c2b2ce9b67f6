/*
 * Tests of the history checker (test/jepsen/check.h): the parser's errors,
 * every example in test/jepsen/histories/ against the verdict its
 * "# expect: EXIT KIND..." line names, generated valid histories over many
 * seeds, and a stale read planted in each of them.
 * JEPSEN_CHECK_SEEDS=N runs more seeds (default 30).
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test/jepsen/check.h"

static struct history *parse(const char *text, char *err, size_t errlen)
{
    struct history *h = NULL;
    int rc = hist_parse_buf(text, strlen(text), &h, err, errlen);
    if (rc < 0)
        return NULL;
    return h;
}

static void expect_parse_error(const char *text, const char *needle)
{
    char err[512];
    struct history *h = parse(text, err, sizeof(err));
    if (h) {
        hist_free(h);
        fail_msg("parsed, but expected an error containing '%s'", needle);
    }
    if (!strstr(err, needle))
        fail_msg("error '%s' does not contain '%s'", err, needle);
}

static void test_parser_errors_name_the_line(void **state)
{
    (void)state;
    expect_parse_error("cairn-history 2\n", "line 1: the first line must be 'cairn-history 1'");
    expect_parse_error("cairn-history 1\nfrobnicate 1 2\n", "line 2: unknown record kind 'frobnicate'");
    expect_parse_error("cairn-history 1\nok 1 5 100 3\n", "line 2: ok for operation id 5 that was never invoked");
    expect_parse_error("cairn-history 1\ninv 1 5 100 get x\nok 1 5 200 1 ~ 0\ninv 2 5 300 get x\n",
                       "line 4: duplicate operation id 5");
    expect_parse_error("cairn-history 1\ninv 1 5 100  get x\n", "line 2: empty token at column 13");
    expect_parse_error("cairn-history 1\ninv 1 5 1x0 get x\n", "line 2: time '1x0' is not a non-negative");
    expect_parse_error("cairn-history 1\ninv 1 5 100 put x~ v\n", "line 2: key 'x~' is not a key");
    expect_parse_error("cairn-history 1\ninv 1 5 100 get x\nok 1 5 200 1 v\n",
                       "line 3: ok of get (id 5) needs 3 result token(s), got 2");
    expect_parse_error("cairn-history 1\ninv 1 5 100 get x\ninv 1 6 150 get x\n",
                       "line 3: process 1 invokes id 6 while its id 5");
    expect_parse_error("cairn-history 1\ninv 1 5 100 get x\nok 1 5 50 1 ~ 0\n", "line 3: operation id 5 completes at 50");
    expect_parse_error("cairn-history 1\nevent 3 10 1 put x v\n", "line 2: event of watch 3 that never started");
    expect_parse_error("cairn-history 1\nlogstart 1\nlog 2 put x v\nlog 1 put y v\nlogend 2\n",
                       "line 4: log revision 1 after revision 2");
    expect_parse_error("cairn-history 1\nlogstart 1\nlog 1 put x v\n", "logstart without logend");
    expect_parse_error("cairn-history 1\ninv 1 5 100 wat x\n", "line 2: unknown operation 'wat'");
}

static void test_unfinished_invocation_reads_as_info(void **state)
{
    (void)state;
    char err[256];
    struct history *h = parse("cairn-history 1\ninv 1 5 100 put x v\n", err, sizeof(err));
    assert_non_null(h);
    assert_int_equal(h->nops, 1);
    assert_int_equal(h->ops[0].status, HS_INFO);
    assert_true(h->ops[0].ret == HIST_INF);
    assert_int_equal(h->nunfinished, 1);
    hist_free(h);
}

/* The writer's lines read back as the same records. */
static void test_writer_round_trip(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    const char *put[] = {"k/1", "p1.1"}, *res[] = {"7"}, *bad[] = {"a b"};
    assert_int_equal(hist_write_header(f), 0);
    assert_int_equal(hist_write_meta(f, "seed", "42"), 0);
    assert_int_equal(hist_write_watch_start(f, 1, 5, "k/", 1), 0);
    assert_int_equal(hist_write_inv(f, 1, 1, 10, "put", put, 2), 0);
    assert_int_equal(hist_write_ok(f, 1, 1, 20, res, 1), 0);
    assert_int_equal(hist_write_inv(f, 1, 2, 30, "put", bad, 1), -EINVAL);
    assert_int_equal(hist_write_inv(f, 2, 3, 30, "get", put, 1), 0);
    assert_int_equal(hist_write_info(f, 2, 3, 40, "timeout"), 0);
    assert_int_equal(hist_write_event(f, 1, 25, 7, true, "k/1", "p1.1"), 0);
    assert_int_equal(hist_write_watch_end(f, 1, 50, "cancelled"), 0);
    assert_int_equal(hist_write_fault(f, 15, true, "kill", "leader=m2"), 0);
    assert_int_equal(hist_write_logstart(f, 7), 0); /* revisions 1..6 compacted away */
    assert_int_equal(hist_write_log(f, 7, true, "k/1", "p1.1", 0), 0);
    assert_int_equal(hist_write_logend(f, 7), 0);
    fclose(f);
    char err[256];
    struct history *h = NULL;
    int rc = hist_parse_buf(buf, len, &h, err, sizeof(err));
    if (rc < 0)
        fail_msg("%s", err);
    assert_int_equal(h->nops, 2);
    assert_int_equal(h->nwatches, 1);
    assert_int_equal(h->watches[0].nev, 1);
    assert_int_equal(h->nfaults, 1);
    assert_string_equal(h->faults[0].args, "leader=m2");
    assert_string_equal(hist_meta_get(h, "seed"), "42");
    struct check_opts o;
    check_opts_default(&o);
    struct check_report rep;
    assert_int_equal(check_history(h, &o, &rep), 0);
    assert_int_equal(check_exit_code(&rep), 0);
    check_report_free(&rep);
    hist_free(h);
    free(buf);
}

static bool has_kind(const struct check_report *rep, const char *kind)
{
    for (int i = 0; i < CHK_N; i++)
        for (size_t j = 0; j < rep->r[i].nfindings; j++)
            if (strcmp(rep->r[i].findings[j].kind, kind) == 0)
                return true;
    return false;
}

/* Every file of test/jepsen/histories/ gets the verdict its "# expect:" line names. */
static void test_example_histories(void **state)
{
    (void)state;
    const char *dir = "test/jepsen/histories";
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s (run from the source root)", dir);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strstr(de->d_name, ".hist"))
            continue;
        char path[512], err[512];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct history *h = NULL;
        if (hist_parse_file(path, &h, err, sizeof(err)) < 0)
            fail_msg("%s", err);
        FILE *f = fopen(path, "r");
        char line[512] = "";
        while (f && fgets(line, sizeof(line), f) && strncmp(line, "# expect:", 9) != 0)
            ;
        if (f)
            fclose(f);
        if (strncmp(line, "# expect:", 9) != 0)
            fail_msg("%s has no '# expect:' line", path);
        struct check_opts o;
        check_opts_default(&o);
        struct check_report rep;
        assert_int_equal(check_history(h, &o, &rep), 0);
        char *save = NULL, *tok = strtok_r(line + 9, " \n", &save);
        int want = atoi(tok);
        if (check_exit_code(&rep) != want) {
            check_print_text(stderr, h, &rep);
            fail_msg("%s: exit %d, expected %d", path, check_exit_code(&rep), want);
        }
        while ((tok = strtok_r(NULL, " \n", &save)))
            if (!has_kind(&rep, tok)) {
                check_print_text(stderr, h, &rep);
                fail_msg("%s: no finding of kind %s", path, tok);
            }
        check_report_free(&rep);
        hist_free(h);
        files++;
    }
    closedir(d);
    assert_true(files >= 10);
}

static struct history *generate(const struct check_gen *g)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(check_generate(f, g), 0);
    fclose(f);
    char err[512];
    struct history *h = NULL;
    if (hist_parse_buf(buf, len, &h, err, sizeof(err)) < 0)
        fail_msg("generated history (seed %llu) does not parse: %s", (unsigned long long)g->seed, err);
    free(buf);
    return h;
}

/*
 * Make one get stale: a get of k that began after put P2 of k completed,
 * which began after put P1 of k completed, now returns P1's value.  Values
 * are unique, so no order explains it.  Returns false if there is none.
 */
static bool plant_stale_read(struct history *h)
{
    for (size_t g = 0; g < h->nops; g++) {
        struct hist_op *get = &h->ops[g];
        if (get->kind != HK_GET || get->status != HS_OK)
            continue;
        for (size_t b = 0; b < h->nops; b++) {
            const struct hist_op *p2 = &h->ops[b];
            if (p2->kind != HK_PUT || p2->status != HS_OK || p2->keys[0] != get->keys[0] || p2->ret >= get->inv)
                continue;
            for (size_t a = 0; a < h->nops; a++) {
                const struct hist_op *p1 = &h->ops[a];
                if (p1->kind != HK_PUT || p1->status != HS_OK || p1->keys[0] != get->keys[0] || p1->ret >= p2->inv ||
                    p1->vals[0] == get->rvals[0])
                    continue;
                get->rvals[0] = p1->vals[0];
                get->modrev = p1->rev;
                return true;
            }
        }
    }
    return false;
}

static void test_generated_histories_valid_and_planted_stale_read_found(void **state)
{
    (void)state;
    const char *env = getenv("JEPSEN_CHECK_SEEDS");
    int seeds = env ? atoi(env) : 30;
    for (int s = 1; s <= seeds; s++) {
        struct check_gen g;
        check_gen_default(&g);
        g.seed = (uint64_t)s;
        g.nops = 600 + (size_t)(s % 5) * 200;
        g.nkeys = 2 + (size_t)(s % 7);
        g.nprocs = 2 + (unsigned)(s % 6);
        g.info_pct = (unsigned)(s % 4) * 3;
        g.group = s % 3 ? 3 : 0;
        struct history *h = generate(&g);
        struct check_opts o;
        check_opts_default(&o);
        struct check_report rep;
        assert_int_equal(check_history(h, &o, &rep), 0);
        if (check_exit_code(&rep) != 0) {
            check_print_text(stderr, h, &rep);
            fail_msg("generated history seed %d judged %d", s, check_exit_code(&rep));
        }
        assert_true(rep.r[CHK_WATCH].nchecked > 0);
        check_report_free(&rep);

        assert_true(plant_stale_read(h));
        assert_int_equal(check_history(h, &o, &rep), 0);
        if (rep.r[CHK_LIN].verdict != CV_VIOLATION || !has_kind(&rep, "not-linearizable")) {
            check_print_text(stderr, h, &rep);
            fail_msg("seed %d: the planted stale read was not found", s);
        }
        assert_int_equal(check_exit_code(&rep), 1);
        check_report_free(&rep);
        hist_free(h);
    }
}

/* Drop the log's events below rev and start it there, as a compaction to rev - 1 would. */
static size_t compact_log(struct history *h, int64_t rev)
{
    size_t k = 0;
    while (k < h->nlog && h->log[k].rev < rev)
        k++;
    memmove(h->log, h->log + k, (h->nlog - k) * sizeof(*h->log));
    h->nlog -= k;
    h->logstart = rev;
    return k;
}

/*
 * A compacted log gets its front back from the watchers (check_rebuild.c):
 * generated histories with their logs cut at the middle are judged as
 * before, a stale read is still found, and a revision no watcher delivered
 * stops the rebuild and says which.
 */
static void test_compacted_log_rebuilt_from_watches(void **state)
{
    (void)state;
    for (int s = 1; s <= 12; s++) {
        struct check_gen g;
        check_gen_default(&g);
        g.seed = (uint64_t)s;
        g.nops = 800;
        g.nkeys = 3 + (size_t)(s % 4);
        g.info_pct = 6;
        g.group = 3;
        struct history *h = generate(&g);
        assert_true(h->nlog > 20 && h->nwatches > 0);
        int64_t cut = h->log[h->nlog / 2].rev;
        size_t dropped = compact_log(h, cut);
        struct check_opts o;
        check_opts_default(&o);
        struct check_report rep;
        assert_int_equal(check_history(h, &o, &rep), 0);
        if (check_exit_code(&rep) != 0 || rep.st.log_rebuilt_below != cut || rep.st.log_rebuilt_events != dropped) {
            check_print_text(stderr, h, &rep);
            fail_msg("seed %d: compacted at %lld: exit %d, rebuilt below %lld (%zu of %zu events)", s, (long long)cut,
                     check_exit_code(&rep), (long long)rep.st.log_rebuilt_below, rep.st.log_rebuilt_events, dropped);
        }
        check_report_free(&rep);

        assert_true(plant_stale_read(h));
        assert_int_equal(check_history(h, &o, &rep), 0);
        assert_int_equal(rep.r[CHK_LIN].verdict, CV_VIOLATION);
        check_report_free(&rep);

        /* no watcher delivered revision 2: no rebuild, and the report says why */
        for (size_t w = 0; w < h->nwatches; w++) {
            struct hist_watch *hw = &h->watches[w];
            size_t k = 0;
            for (size_t e = 0; e < hw->nev; e++)
                if (hw->ev[e].rev != 2)
                    hw->ev[k++] = hw->ev[e];
            hw->nev = k;
        }
        assert_int_equal(check_history(h, &o, &rep), 0);
        assert_int_equal(rep.st.log_rebuilt_below, 0);
        assert_non_null(strstr(rep.st.log_rebuild_why, "revision 2"));
        check_report_free(&rep);
        hist_free(h);
    }
}

/* A search with a tiny budget ends "unknown", exit 3, and says so. */
static void test_budget_exhausted_is_unknown(void **state)
{
    (void)state;
    struct check_gen g;
    check_gen_default(&g);
    g.seed = 3;
    g.nops = 400;
    struct history *h = generate(&g);
    struct check_opts o;
    check_opts_default(&o);
    o.budget = 5;
    struct check_report rep;
    assert_int_equal(check_history(h, &o, &rep), 0);
    assert_int_equal(rep.r[CHK_LIN].verdict, CV_UNKNOWN);
    assert_true(has_kind(&rep, "budget-exhausted"));
    assert_int_equal(check_exit_code(&rep), 3);
    check_report_free(&rep);
    hist_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_errors_name_the_line),
        cmocka_unit_test(test_unfinished_invocation_reads_as_info),
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_example_histories),
        cmocka_unit_test(test_generated_histories_valid_and_planted_stale_read_found),
        cmocka_unit_test(test_budget_exhausted_is_unknown),
        cmocka_unit_test(test_compacted_log_rebuilt_from_watches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
