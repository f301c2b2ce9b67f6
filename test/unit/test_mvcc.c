/* storage/mvcc: every etcd semantic the issue lists, one named test each. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
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
#include <sqlite3.h>

#include "base/errors.h"
#include "storage/mvcc.h"
#include "storage/mvcc_internal.h" /* mvcc_reader_test_hook */

#define B(s) ((struct mvcc_buf){(s), strlen(s)})
#define NOB ((struct mvcc_buf){NULL, 0})

struct fx {
    char dir[64];
    struct mvcc_store *s;
    struct mvcc_reader *r;
    uint64_t index;
    struct mvcc_result *last;
};

static void rm_rf(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Every test's reads go through a value cache (cairnd's configuration);
 * test_mvcc_model's even seeds and the other tests read without one. */
static void fx_open_with(struct fx *f, struct mvcc_options o)
{
    char err[256];
    o.value_cache_bytes = 1 << 20;
    assert_int_equal(mvcc_open(f->dir, &o, &f->s, err, sizeof(err)), 0);
    assert_int_equal(mvcc_reader_open(f->s, &f->r), 0);
}

static void fx_open(struct fx *f)
{
    fx_open_with(f, (struct mvcc_options){0});
}

static void fx_close(struct fx *f)
{
    mvcc_result_free(f->last);
    f->last = NULL;
    mvcc_reader_close(f->r);
    mvcc_close(f->s);
    f->r = NULL;
    f->s = NULL;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_mvcc.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    fx_open(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    fx_close(f);
    rm_rf(f->dir);
    free(f);
    return 0;
}

/* Apply one request as the next entry; the response stays valid until the next call. */
static struct mvcc_response *apply(struct fx *f, struct mvcc_request req)
{
    mvcc_result_free(f->last);
    struct mvcc_entry e = {.index = ++f->index, .term = 1, .req = req};
    assert_int_equal(mvcc_apply(f->s, &e, 1, &f->last), 0);
    assert_int_equal(f->last->n_entries, 1);
    assert_false(f->last->entries[0].skipped);
    return &f->last->entries[0].resp;
}

static int64_t put(struct fx *f, const char *k, const char *v)
{
    struct mvcc_response *r =
        apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B(k), .value = B(v)}});
    assert_int_equal(r->err, 0);
    return r->revision;
}

static int64_t put_lease(struct fx *f, const char *k, const char *v, int64_t lease)
{
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_PUT,
                                 .put = {.key = B(k), .value = B(v), .lease = lease}});
    assert_int_equal(r->err, 0);
    return r->revision;
}

static struct mvcc_response *del(struct fx *f, const char *k, const char *end)
{
    return apply(f, (struct mvcc_request){.type = MVCC_REQ_DELETE_RANGE,
                                          .del = {.key = B(k), .range_end = end ? B(end) : NOB}});
}

static int64_t rev_now(struct fx *f)
{
    struct mvcc_status st;
    assert_int_equal(mvcc_reader_status(f->r, &st), 0);
    return st.revision;
}

/* Range, asserting success. */
static struct mvcc_range_result *rng(struct fx *f, struct mvcc_range_req req)
{
    struct mvcc_range_result *res = NULL;
    assert_int_equal(mvcc_range(f->r, &req, &res, NULL), 0);
    return res;
}

/* The single key's kv at rev (0: current), or found=false. */
static bool get(struct fx *f, const char *k, int64_t rev, struct mvcc_kv *kv, char *val, size_t vlen)
{
    struct mvcc_range_result *res = rng(f, (struct mvcc_range_req){.key = B(k), .revision = rev});
    bool found = res->resp.n_kvs == 1;
    if (found) {
        *kv = res->resp.kvs[0];
        snprintf(val, vlen, "%.*s", (int)kv->value.len, (const char *)kv->value.data);
        kv->key = kv->value = NOB;
    }
    mvcc_range_result_free(res);
    return found;
}

static void lease_grant(struct fx *f, int64_t id, int64_t ttl)
{
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_LEASE_GRANT, .lease_grant = {id, ttl}});
    assert_int_equal(r->err, 0);
}

static void compact(struct fx *f, int64_t rev, int expect_err)
{
    struct mvcc_response *r =
        apply(f, (struct mvcc_request){.type = MVCC_REQ_COMPACT, .compact = {rev}});
    assert_int_equal(r->err, expect_err);
}

static void compact_finish(struct fx *f)
{
    bool done = false;
    while (!done)
        assert_int_equal(mvcc_compact_step(f->s, 2, &done), 0);
}

/* --- revisions ------------------------------------------------------------------ */

static void test_new_store_starts_at_revision_1(void **state)
{
    struct fx *f = *state;
    assert_int_equal(rev_now(f), 1);
    assert_int_equal(put(f, "a", "1"), 2);
}

static void test_revision_only_grows_across_reopen(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");
    put(f, "a", "2");
    del(f, "a", NULL);
    assert_int_equal(rev_now(f), 4);
    compact(f, 4, 0);
    compact_finish(f);
    fx_close(f);
    fx_open(f);
    /* the newest row was a compacted tombstone: the revision must not fall back */
    assert_int_equal(rev_now(f), 4);
    assert_int_equal(put(f, "b", "1"), 5);
}

static void test_main_revision_per_request_sub_revision_per_operation(void **state)
{
    struct fx *f = *state;
    struct mvcc_request ops[] = {
        {.type = MVCC_REQ_PUT, .put = {.key = B("x"), .value = B("1")}},
        {.type = MVCC_REQ_PUT, .put = {.key = B("y"), .value = B("2")}},
        {.type = MVCC_REQ_DELETE_RANGE, .del = {.key = B("z")}},
    };
    put(f, "z", "0");
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.success = ops, .n_success = 3}});
    assert_int_equal(r->err, 0);
    assert_int_equal(r->revision, 3);
    assert_int_equal(f->last->n_events, 3);
    struct mvcc_history_result *h;
    assert_int_equal(mvcc_history(f->r,
                                  &(struct mvcc_history_req){.key = B("a"), .range_end = B("\xff"),
                                                             .min_revision = 3},
                                  &h),
                     0);
    assert_int_equal(h->n_rows, 3);
    const char *keys[] = {"x", "y", "z"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(h->rows[i].kv.mod_revision, 3);
        assert_int_equal(h->rows[i].sub_revision, i);
        assert_memory_equal(h->rows[i].kv.key.data, keys[i], 1);
    }
    assert_true(h->rows[2].tombstone);
    mvcc_history_result_free(h);
}

static void test_delete_of_missing_key_does_not_bump_revision(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");
    struct mvcc_response *r = del(f, "b", NULL);
    assert_int_equal(r->err, 0);
    assert_int_equal(r->del.deleted, 0);
    assert_int_equal(r->revision, 2);
    assert_int_equal(f->last->n_events, 0);
    r = del(f, "c", "d");
    assert_int_equal(r->del.deleted, 0);
    assert_int_equal(rev_now(f), 2);
}

static void test_read_only_txn_does_not_bump_revision(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");
    struct mvcc_request ops[] = {{.type = MVCC_REQ_RANGE, .range = {.key = B("a")}}};
    struct mvcc_compare cmp = {.target = MVCC_CMP_VALUE, .result = MVCC_CMP_EQUAL,
                               .key = B("a"), .value = B("1")};
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_TXN,
                                 .txn = {.compares = &cmp, .n_compares = 1, .success = ops,
                                         .n_success = 1}});
    assert_int_equal(r->err, 0);
    assert_true(r->txn.succeeded);
    assert_int_equal(r->revision, 2);
    assert_int_equal(r->txn.responses[0].range.n_kvs, 1);
    assert_int_equal(rev_now(f), 2);
}

static void test_create_mod_version_as_etcd(void **state)
{
    struct fx *f = *state;
    struct mvcc_kv kv;
    char v[16];
    put(f, "a", "1");   /* 2 */
    put(f, "b", "x");   /* 3 */
    put(f, "a", "2");   /* 4 */
    assert_true(get(f, "a", 0, &kv, v, sizeof(v)));
    assert_int_equal(kv.create_revision, 2);
    assert_int_equal(kv.mod_revision, 4);
    assert_int_equal(kv.version, 2);
    assert_string_equal(v, "2");
    assert_true(get(f, "a", 3, &kv, v, sizeof(v)));
    assert_int_equal(kv.version, 1);
    assert_string_equal(v, "1");
}

static void test_put_then_delete_resets_version(void **state)
{
    struct fx *f = *state;
    struct mvcc_kv kv;
    char v[16];
    put(f, "a", "1");
    put(f, "a", "2");
    assert_int_equal(del(f, "a", NULL)->del.deleted, 1);
    assert_false(get(f, "a", 0, &kv, v, sizeof(v)));
    int64_t rev = put(f, "a", "3");
    assert_true(get(f, "a", 0, &kv, v, sizeof(v)));
    assert_int_equal(kv.version, 1);
    assert_int_equal(kv.create_revision, rev);
}

static void test_ignore_value_and_lease_on_missing_key_fail(void **state)
{
    struct fx *f = *state;
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B("a"), .ignore_value = true}});
    assert_int_equal(r->err, -CAIRN_E_KEY_NOT_FOUND);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT,
                                       .put = {.key = B("a"), .value = B("v"), .ignore_lease = true}});
    assert_int_equal(r->err, -CAIRN_E_KEY_NOT_FOUND);
    assert_int_equal(rev_now(f), 1);
    /* and on an existing key they keep what is there */
    lease_grant(f, 7, 100);
    put_lease(f, "a", "old", 7);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT,
                                       .put = {.key = B("a"), .ignore_value = true, .prev_kv = true}});
    assert_int_equal(r->err, 0);
    assert_non_null(r->put.prev_kv);
    struct mvcc_kv kv;
    char v[16];
    assert_true(get(f, "a", 0, &kv, v, sizeof(v)));
    assert_string_equal(v, "old");
    assert_int_equal(kv.lease, 0); /* lease not ignored: the put's lease 0 applies */
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT,
                                       .put = {.key = B("a"), .value = B("v"), .lease = 7,
                                               .ignore_lease = true}});
    assert_int_equal(r->err, -CAIRN_E_LEASE_PROVIDED);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT,
                                       .put = {.key = B("a"), .value = B("v"), .ignore_value = true}});
    assert_int_equal(r->err, -CAIRN_E_VALUE_PROVIDED);
}

static void test_put_with_unknown_lease_fails(void **state)
{
    struct fx *f = *state;
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B("a"), .lease = 5}});
    assert_int_equal(r->err, -CAIRN_E_LEASE_NOT_FOUND);
    assert_int_equal(rev_now(f), 1);
}

static void test_txn_may_not_write_the_same_key_twice(void **state)
{
    struct fx *f = *state;
    struct mvcc_request two_puts[] = {
        {.type = MVCC_REQ_PUT, .put = {.key = B("a"), .value = B("1")}},
        {.type = MVCC_REQ_PUT, .put = {.key = B("a"), .value = B("2")}},
    };
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.success = two_puts, .n_success = 2}});
    assert_int_equal(r->err, -CAIRN_E_DUPLICATE_KEY);
    struct mvcc_request put_in_deleted[] = {
        {.type = MVCC_REQ_DELETE_RANGE, .del = {.key = B("a"), .range_end = B("c")}},
        {.type = MVCC_REQ_PUT, .put = {.key = B("b"), .value = B("2")}},
    };
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_TXN,
                                       .txn = {.success = put_in_deleted, .n_success = 2}});
    assert_int_equal(r->err, -CAIRN_E_DUPLICATE_KEY);
    /* a nested txn's put under an outer delete */
    struct mvcc_request inner[] = {{.type = MVCC_REQ_PUT, .put = {.key = B("b"), .value = B("x")}}};
    struct mvcc_request outer[] = {
        {.type = MVCC_REQ_DELETE_RANGE, .del = {.key = B("b")}},
        {.type = MVCC_REQ_TXN, .txn = {.success = inner, .n_success = 1}},
    };
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.failure = outer, .n_failure = 2}});
    assert_int_equal(r->err, -CAIRN_E_DUPLICATE_KEY);
    /* the same key in then and else of one nested txn is fine: only one runs */
    struct mvcc_request nested[] = {
        {.type = MVCC_REQ_TXN,
         .txn = {.success = inner, .n_success = 1, .failure = inner, .n_failure = 1}},
    };
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.success = nested, .n_success = 1}});
    assert_int_equal(r->err, 0);
    assert_int_equal(rev_now(f), 2);
    /* two deletes of one key are allowed: the second finds nothing */
    struct mvcc_request two_dels[] = {
        {.type = MVCC_REQ_DELETE_RANGE, .del = {.key = B("b")}},
        {.type = MVCC_REQ_DELETE_RANGE, .del = {.key = B("a"), .range_end = B("z")}},
    };
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.success = two_dels, .n_success = 2}});
    assert_int_equal(r->err, 0);
    assert_int_equal(r->txn.responses[0].del.deleted, 1);
    assert_int_equal(r->txn.responses[1].del.deleted, 0);
    assert_int_equal(r->revision, 3);
}

/* Run a txn with one compare; return whether it succeeded. */
static bool cmp1(struct fx *f, struct mvcc_compare c)
{
    struct mvcc_response *r =
        apply(f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.compares = &c, .n_compares = 1}});
    assert_int_equal(r->err, 0);
    return r->txn.succeeded;
}

static void test_txn_compares_every_target_and_result(void **state)
{
    struct fx *f = *state;
    lease_grant(f, 9, 60);
    put(f, "a", "m");          /* 2: create 2, version 1 */
    put_lease(f, "a", "m", 9); /* 3: mod 3, version 2, lease 9 */
    const enum mvcc_cmp_result R[] = {MVCC_CMP_EQUAL, MVCC_CMP_NOT_EQUAL, MVCC_CMP_LESS,
                                      MVCC_CMP_GREATER};
    struct {
        enum mvcc_cmp_target t;
        int64_t actual;
    } ints[] = {{MVCC_CMP_VERSION, 2}, {MVCC_CMP_CREATE, 2}, {MVCC_CMP_MOD, 3}, {MVCC_CMP_LEASE, 9}};
    for (size_t i = 0; i < 4; i++)
        for (int d = -1; d <= 1; d++)
            for (size_t k = 0; k < 4; k++) {
                int64_t n = ints[i].actual + d; /* compare actual against n */
                bool want = R[k] == MVCC_CMP_EQUAL       ? d == 0
                            : R[k] == MVCC_CMP_NOT_EQUAL ? d != 0
                            : R[k] == MVCC_CMP_LESS      ? ints[i].actual < n
                                                         : ints[i].actual > n;
                struct mvcc_compare c = {.target = ints[i].t, .result = R[k], .key = B("a"), .number = n};
                assert_int_equal(cmp1(f, c), want);
            }
    const char *vals[] = {"l", "m", "n"};
    for (int d = 0; d < 3; d++)
        for (size_t k = 0; k < 4; k++) {
            bool want = R[k] == MVCC_CMP_EQUAL       ? d == 1
                        : R[k] == MVCC_CMP_NOT_EQUAL ? d != 1
                        : R[k] == MVCC_CMP_LESS      ? d == 2 /* "m" < "n" */
                                                     : d == 0;
            struct mvcc_compare c = {.target = MVCC_CMP_VALUE, .result = R[k], .key = B("a"),
                                     .value = B(vals[d])};
            assert_int_equal(cmp1(f, c), want);
        }
    /* a missing key: VALUE always fails, others compare against 0 */
    assert_false(cmp1(f, (struct mvcc_compare){.target = MVCC_CMP_VALUE, .result = MVCC_CMP_NOT_EQUAL,
                                               .key = B("nope"), .value = B("x")}));
    assert_true(cmp1(f, (struct mvcc_compare){.target = MVCC_CMP_CREATE, .result = MVCC_CMP_EQUAL,
                                              .key = B("nope"), .number = 0}));
    assert_int_equal(rev_now(f), 3);
}

static void test_txn_compare_over_a_key_range(void **state)
{
    struct fx *f = *state;
    put(f, "p/1", "x");
    put(f, "p/2", "x");
    put(f, "q", "y");
    struct mvcc_compare all_x = {.target = MVCC_CMP_VALUE, .result = MVCC_CMP_EQUAL,
                                 .key = B("p/"), .range_end = B("p0"), .value = B("x")};
    assert_true(cmp1(f, all_x));
    all_x.range_end = B("\0"); /* "q" joins the range and is not "x" */
    all_x.range_end.len = 1;
    assert_false(cmp1(f, all_x));
    struct mvcc_compare mods = {.target = MVCC_CMP_MOD, .result = MVCC_CMP_LESS, .key = B("p/"),
                                .range_end = B("p0"), .number = 4};
    assert_true(cmp1(f, mods));
    mods.number = 3;
    assert_false(cmp1(f, mods));
}

static void test_txn_reads_see_earlier_writes_and_compares_see_state_before(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");
    struct mvcc_request inner_ops[] = {{.type = MVCC_REQ_RANGE, .range = {.key = B("a")}}};
    struct mvcc_compare inner_cmp = {.target = MVCC_CMP_VALUE, .result = MVCC_CMP_EQUAL,
                                     .key = B("a"), .value = B("1")};
    struct mvcc_request ops[] = {
        {.type = MVCC_REQ_PUT, .put = {.key = B("a"), .value = B("2"), .prev_kv = true}},
        {.type = MVCC_REQ_RANGE, .range = {.key = B("a")}},
        {.type = MVCC_REQ_TXN, .txn = {.compares = &inner_cmp, .n_compares = 1,
                                       .success = inner_ops, .n_success = 1}},
    };
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.success = ops, .n_success = 3}});
    assert_int_equal(r->err, 0);
    assert_int_equal(r->revision, 3);
    assert_int_equal(r->txn.responses[0].revision, 3);
    assert_memory_equal(r->txn.responses[0].put.prev_kv->value.data, "1", 1);
    assert_int_equal(r->txn.responses[1].range.n_kvs, 1);
    assert_memory_equal(r->txn.responses[1].range.kvs[0].value.data, "2", 1);
    assert_int_equal(r->txn.responses[1].revision, 3);
    /* the nested compare was decided on the state before the txn */
    assert_true(r->txn.responses[2].txn.succeeded);
    assert_int_equal(r->txn.responses[2].revision, 0);
}

/* --- reads ----------------------------------------------------------------------- */

static void test_read_below_compact_revision_fails_with_it(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 5; i++)
        put(f, "a", "v");
    compact(f, 4, 0);
    struct mvcc_range_result *res = NULL;
    int64_t crev = 0;
    assert_int_equal(mvcc_range(f->r, &(struct mvcc_range_req){.key = B("a"), .revision = 3}, &res, &crev),
                     -CAIRN_E_COMPACTED);
    assert_int_equal(crev, 4);
    res = rng(f, (struct mvcc_range_req){.key = B("a"), .revision = 4});
    assert_int_equal(res->resp.n_kvs, 1);
    assert_int_equal(res->resp.kvs[0].mod_revision, 4);
    mvcc_range_result_free(res);
    /* through the log too, and compacting again at or below fails */
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_RANGE, .range = {.key = B("a"), .revision = 2}});
    assert_int_equal(r->err, -CAIRN_E_COMPACTED);
    assert_int_equal(r->compact_revision, 4);
    compact(f, 4, -CAIRN_E_COMPACTED);
    compact(f, 7, -CAIRN_E_FUTURE_REV);
}

static struct mvcc_status cache_stats(struct fx *f)
{
    struct mvcc_status st;
    assert_int_equal(mvcc_reader_status(f->r, &st), 0);
    return st;
}

static void test_reads_fill_the_value_cache_and_every_revision_reads_right(void **state)
{
    struct fx *f = *state;
    struct mvcc_kv kv;
    char v[32];
    int64_t r1 = put(f, "k", "one");
    struct mvcc_status st0 = cache_stats(f);
    assert_true(st0.value_cache_bytes > 0);
    assert_true(get(f, "k", 0, &kv, v, sizeof v));
    assert_string_equal(v, "one");
    struct mvcc_status st = cache_stats(f);
    assert_int_equal(st.value_cache_misses, st0.value_cache_misses + 1);
    assert_int_equal(st.value_cache_hits, st0.value_cache_hits);
    assert_true(st.value_cache_bytes > st0.value_cache_bytes);
    /* the second read is served from the cache */
    assert_true(get(f, "k", 0, &kv, v, sizeof v));
    assert_string_equal(v, "one");
    assert_int_equal(cache_stats(f).value_cache_hits, st.value_cache_hits + 1);

    /* a new revision is a new entry: the old one still answers reads at its revision */
    int64_t r2 = put(f, "k", "two");
    assert_true(get(f, "k", 0, &kv, v, sizeof v));
    assert_string_equal(v, "two");
    assert_int_equal(kv.mod_revision, r2);
    assert_true(get(f, "k", r1, &kv, v, sizeof v));
    assert_string_equal(v, "one");
    /* an empty value too */
    put(f, "k", "");
    for (int i = 0; i < 2; i++) {
        assert_true(get(f, "k", 0, &kv, v, sizeof v));
        assert_string_equal(v, "");
    }
    /* a delete hides the cached value; a compaction fails reads below it, cached or not */
    del(f, "k", NULL);
    assert_false(get(f, "k", 0, &kv, v, sizeof v));
    compact(f, r2, 0);
    compact_finish(f);
    struct mvcc_range_result *res = NULL;
    assert_int_equal(mvcc_range(f->r, &(struct mvcc_range_req){.key = B("k"), .revision = r1}, &res, NULL),
                     -CAIRN_E_COMPACTED);
    assert_true(get(f, "k", r2, &kv, v, sizeof v));
    assert_string_equal(v, "two");

    /* a range of more than 16 keys reads through the cache but leaves it as it is */
    char key[16];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "r%02d", i);
        put(f, key, key);
    }
    st = cache_stats(f);
    res = rng(f, (struct mvcc_range_req){.key = B("r"), .range_end = B("s")});
    assert_int_equal(res->resp.n_kvs, 20);
    mvcc_range_result_free(res);
    struct mvcc_status st2 = cache_stats(f);
    assert_int_equal(st2.value_cache_misses, st.value_cache_misses + 20);
    assert_int_equal(st2.value_cache_bytes, st.value_cache_bytes);
    /* one of up to 16 fills it */
    res = rng(f, (struct mvcc_range_req){.key = B("r00"), .range_end = B("r16")});
    assert_int_equal(res->resp.n_kvs, 16);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = B("r"), .range_end = B("s")});
    for (size_t i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "r%02zu", i);
        assert_int_equal(res->resp.kvs[i].value.len, strlen(key));
        assert_memory_equal(res->resp.kvs[i].value.data, key, strlen(key));
    }
    mvcc_range_result_free(res);
    assert_int_equal(cache_stats(f).value_cache_hits, st2.value_cache_hits + 16);
}

static void test_read_above_current_revision_fails_future_rev(void **state)
{
    struct fx *f = *state;
    put(f, "a", "v");
    struct mvcc_range_result *res = NULL;
    assert_int_equal(mvcc_range(f->r, &(struct mvcc_range_req){.key = B("a"), .revision = 3}, &res, NULL),
                     -CAIRN_E_FUTURE_REV);
    assert_int_equal(mvcc_range(f->r, &(struct mvcc_range_req){.key = NOB}, &res, NULL),
                     -CAIRN_E_KEY_EMPTY);
}

static void test_reads_at_past_revisions(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1"); /* 2 */
    put(f, "b", "1"); /* 3 */
    put(f, "a", "2"); /* 4 */
    del(f, "b", NULL); /* 5 */
    put(f, "c", "1"); /* 6 */
    int64_t want[][3] = {{0, 0, 0}, {0, 0, 0}, {2, 0, 0}, {2, 3, 0}, {4, 3, 0}, {4, 0, 0}, {4, 0, 6}};
    const char *keys[] = {"a", "b", "c"};
    for (int rev = 1; rev <= 6; rev++) {
        struct mvcc_range_result *res =
            rng(f, (struct mvcc_range_req){.key = B("a"), .range_end = B("z"), .revision = rev});
        size_t j = 0;
        for (int k = 0; k < 3; k++) {
            if (!want[rev][k])
                continue;
            assert_true(j < res->resp.n_kvs);
            assert_memory_equal(res->resp.kvs[j].key.data, keys[k], 1);
            assert_int_equal(res->resp.kvs[j].mod_revision, want[rev][k]);
            j++;
        }
        assert_int_equal(res->resp.n_kvs, j);
        assert_int_equal(res->revision, 6); /* the header is the current revision */
        mvcc_range_result_free(res);
    }
}

static void test_range_end_single_prefix_and_from_key(void **state)
{
    struct fx *f = *state;
    const char *keys[] = {"a", "ab", "abc", "b", "c"};
    for (int i = 0; i < 5; i++)
        put(f, keys[i], "v");
    struct mvcc_range_result *res = rng(f, (struct mvcc_range_req){.key = B("ab")});
    assert_int_equal(res->resp.n_kvs, 1);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = B("ab"), .range_end = B("ac")}); /* prefix "ab" */
    assert_int_equal(res->resp.n_kvs, 2);
    mvcc_range_result_free(res);
    struct mvcc_buf zero = {"", 1};
    res = rng(f, (struct mvcc_range_req){.key = B("abc"), .range_end = zero});
    assert_int_equal(res->resp.n_kvs, 3);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = zero, .range_end = zero}); /* every key */
    assert_int_equal(res->resp.n_kvs, 5);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = B("c"), .range_end = B("a")}); /* end <= key */
    assert_int_equal(res->resp.n_kvs, 0);
    assert_int_equal(res->resp.count, 0);
    mvcc_range_result_free(res);
}

static void test_range_limit_more_count_and_sorting(void **state)
{
    struct fx *f = *state;
    put(f, "k1", "c"); /* 2 */
    put(f, "k2", "a"); /* 3 */
    put(f, "k3", "b"); /* 4 */
    put(f, "k2", "d"); /* 5: k2 version 2 */
    struct mvcc_buf lo = B("k"), hi = B("l");
    struct mvcc_range_result *res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .limit = 2});
    assert_int_equal(res->resp.n_kvs, 2);
    assert_true(res->resp.more);
    assert_int_equal(res->resp.count, 3);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .limit = 3});
    assert_false(res->resp.more);
    mvcc_range_result_free(res);
    /* sort by value descending, limit 2: d (k2), c (k1) */
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .limit = 2,
                                         .sort_order = MVCC_SORT_DESCEND, .sort_target = MVCC_SORT_VALUE});
    assert_int_equal(res->resp.n_kvs, 2);
    assert_memory_equal(res->resp.kvs[0].key.data, "k2", 2);
    assert_memory_equal(res->resp.kvs[1].key.data, "k1", 2);
    assert_true(res->resp.more);
    mvcc_range_result_free(res);
    /* target MOD with order NONE sorts ascending: k1 (2), k3 (4), k2 (5) */
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .sort_target = MVCC_SORT_MOD});
    assert_memory_equal(res->resp.kvs[1].key.data, "k3", 2);
    assert_memory_equal(res->resp.kvs[2].key.data, "k2", 2);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .sort_order = MVCC_SORT_DESCEND});
    assert_memory_equal(res->resp.kvs[0].key.data, "k3", 2);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .sort_order = MVCC_SORT_DESCEND,
                                         .sort_target = MVCC_SORT_VERSION});
    assert_memory_equal(res->resp.kvs[0].key.data, "k2", 2);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .sort_order = MVCC_SORT_ASCEND,
                                         .sort_target = MVCC_SORT_CREATE});
    assert_memory_equal(res->resp.kvs[0].key.data, "k1", 2);
    mvcc_range_result_free(res);
}

static void test_range_keys_only_count_only_and_min_max_filters(void **state)
{
    struct fx *f = *state;
    put(f, "k1", "v"); /* 2 */
    put(f, "k2", "v"); /* 3 */
    put(f, "k3", "v"); /* 4 */
    put(f, "k1", "w"); /* 5 */
    struct mvcc_buf lo = B("k"), hi = B("l");
    struct mvcc_range_result *res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .keys_only = true});
    assert_int_equal(res->resp.n_kvs, 3);
    assert_int_equal(res->resp.kvs[0].value.len, 0);
    assert_int_equal(res->resp.kvs[0].version, 2);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .count_only = true});
    assert_int_equal(res->resp.n_kvs, 0);
    assert_int_equal(res->resp.count, 3);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .min_mod_revision = 3,
                                         .max_mod_revision = 4});
    assert_int_equal(res->resp.n_kvs, 2); /* k2, k3 */
    assert_int_equal(res->resp.count, 3); /* count ignores the filters, as in etcd */
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .min_create_revision = 3});
    assert_int_equal(res->resp.n_kvs, 2);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = lo, .range_end = hi, .max_create_revision = 2});
    assert_int_equal(res->resp.n_kvs, 1);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = B("k1"), .max_mod_revision = 4});
    assert_int_equal(res->resp.n_kvs, 0);
    assert_int_equal(res->resp.count, 1);
    mvcc_range_result_free(res);
}

/* --- compaction ------------------------------------------------------------------ */

static size_t history_count(struct fx *f, const char *k)
{
    struct mvcc_history_result *h;
    assert_int_equal(mvcc_history(f->r, &(struct mvcc_history_req){.key = B(k)}, &h), 0);
    size_t n = h->n_rows;
    mvcc_history_result_free(h);
    return n;
}

static void test_compaction_keeps_newest_at_or_below_unless_tombstone(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");  /* 2 */
    put(f, "a", "2");  /* 3 */
    put(f, "b", "1");  /* 4 */
    del(f, "b", NULL); /* 5 */
    put(f, "c", "1");  /* 6 */
    put(f, "a", "3");  /* 7 */
    put(f, "c", "2");  /* 8 */
    compact(f, 6, 0);
    /* logically gone at once, before any row is deleted */
    assert_int_equal(history_count(f, "a"), 2); /* 3 (newest <= 6) and 7 */
    assert_int_equal(history_count(f, "b"), 0); /* tombstone at 5 <= 6: whole key gone */
    assert_int_equal(history_count(f, "c"), 2);
    assert_true(mvcc_compact_pending(f->s));
    compact_finish(f);
    assert_false(mvcc_compact_pending(f->s));
    assert_int_equal(history_count(f, "a"), 2);
    assert_int_equal(history_count(f, "b"), 0);
    struct mvcc_kv kv;
    char v[8];
    assert_true(get(f, "a", 6, &kv, v, sizeof(v)));
    assert_string_equal(v, "2");
    assert_false(get(f, "b", 6, &kv, v, sizeof(v)));
    assert_true(get(f, "c", 6, &kv, v, sizeof(v)));
    assert_int_equal(kv.version, 1);
}

static void test_interrupted_compaction_is_pending_after_reopen_and_finishes(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 20; i++)
        put(f, i % 2 ? "a" : "b", "v");
    compact(f, 15, 0);
    bool done;
    assert_int_equal(mvcc_compact_step(f->s, 3, &done), 0); /* one short step, then "crash" */
    assert_false(done);
    fx_close(f);
    fx_open(f);
    assert_true(mvcc_compact_pending(f->s));
    struct mvcc_status st;
    assert_int_equal(mvcc_store_status(f->s, &st), 0);
    assert_int_equal(st.compact_revision, 15);
    compact_finish(f);
    assert_int_equal(history_count(f, "a"), 4); /* a is at the odd revisions: 15 (newest <= 15), 17, 19, 21 */
    fx_close(f);
    /* and finish_compaction does it inside open */
    char err[256];
    assert_int_equal(mvcc_open(f->dir, &(struct mvcc_options){.finish_compaction = true}, &f->s,
                               err, sizeof(err)), 0);
    assert_false(mvcc_compact_pending(f->s));
    assert_int_equal(mvcc_reader_open(f->s, &f->r), 0);
}

/* --- leases ------------------------------------------------------------------------ */

static void test_lease_revoke_deletes_its_keys_in_one_revision(void **state)
{
    struct fx *f = *state;
    lease_grant(f, 42, 30);
    put_lease(f, "b", "1", 42);
    put_lease(f, "a", "1", 42);
    put_lease(f, "c", "1", 42);
    put(f, "c", "2"); /* re-put without the lease: detached */
    put(f, "d", "1");
    int64_t before = rev_now(f);
    struct mvcc_lease_list *l;
    assert_int_equal(mvcc_lease_get(f->r, 42, &l), 0);
    assert_int_equal(l->leases[0].n_keys, 2);
    mvcc_lease_list_free(l);
    struct mvcc_response *r =
        apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_REVOKE, .lease_revoke = {42}});
    assert_int_equal(r->err, 0);
    assert_int_equal(r->revision, before + 1);
    assert_int_equal(f->last->n_events, 2);
    assert_int_equal(f->last->events[0].type, MVCC_EVENT_DELETE);
    assert_memory_equal(f->last->events[0].kv.key.data, "a", 1);
    assert_memory_equal(f->last->events[1].kv.key.data, "b", 1);
    assert_int_equal(f->last->events[1].kv.mod_revision, before + 1);
    struct mvcc_kv kv;
    char v[8];
    assert_false(get(f, "a", 0, &kv, v, sizeof(v)));
    assert_true(get(f, "c", 0, &kv, v, sizeof(v)));
    assert_int_equal(mvcc_lease_get(f->r, 42, &l), -CAIRN_E_LEASE_NOT_FOUND);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_REVOKE, .lease_revoke = {42}});
    assert_int_equal(r->err, -CAIRN_E_LEASE_NOT_FOUND);
    /* a lease without keys revokes without a revision */
    lease_grant(f, 43, 30);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_REVOKE, .lease_revoke = {43}});
    assert_int_equal(r->err, 0);
    assert_int_equal(rev_now(f), before + 1);
}

static void test_lease_grant_checkpoint_and_list(void **state)
{
    struct fx *f = *state;
    mvcc_reader_close(f->r);
    mvcc_close(f->s);
    char err[256];
    assert_int_equal(mvcc_open(f->dir, &(struct mvcc_options){.min_lease_ttl = 5}, &f->s, err,
                               sizeof(err)), 0);
    assert_int_equal(mvcc_reader_open(f->s, &f->r), 0);
    struct mvcc_response *r =
        apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_GRANT, .lease_grant = {1, 2}});
    assert_int_equal(r->lease_grant.ttl, 5);
    lease_grant(f, 2, 100);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_GRANT, .lease_grant = {2, 10}});
    assert_int_equal(r->err, -CAIRN_E_LEASE_EXISTS);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_GRANT,
                                       .lease_grant = {3, 9000000001LL}});
    assert_int_equal(r->err, -CAIRN_E_LEASE_TTL_TOO_LARGE);
    struct mvcc_lease_checkpoint cps[] = {{2, 77}, {99, 1}};
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_CHECKPOINT,
                                       .lease_checkpoint = {cps, 2}});
    assert_int_equal(r->err, 0);
    struct mvcc_lease_list *l;
    assert_int_equal(mvcc_lease_list(f->r, &l), 0);
    assert_int_equal(l->n, 2);
    assert_int_equal(l->leases[0].id, 1);
    assert_int_equal(l->leases[1].ttl, 100);
    assert_int_equal(l->leases[1].remaining_ttl, 77);
    mvcc_lease_list_free(l);
    assert_int_equal(rev_now(f), 1);
}

/* --- apply machinery ---------------------------------------------------------------- */

static void test_entries_at_or_below_consistent_index_are_skipped(void **state)
{
    struct fx *f = *state;
    struct mvcc_entry e[3] = {
        {.index = 5, .term = 2, .req = {.type = MVCC_REQ_PUT, .put = {.key = B("a"), .value = B("1")}}},
        {.index = 6, .term = 2, .req = {.type = MVCC_REQ_NOOP}},
        {.index = 7, .term = 3, .req = {.type = MVCC_REQ_PUT, .put = {.key = B("a"), .value = B("2")}}},
    };
    struct mvcc_result *res;
    assert_int_equal(mvcc_apply(f->s, e, 2, &res), 0);
    assert_int_equal(res->consistent_index, 6);
    mvcc_result_free(res);
    fx_close(f);
    fx_open(f);
    /* replay from 5: only 7 applies */
    assert_int_equal(mvcc_apply(f->s, e, 3, &res), 0);
    assert_true(res->entries[0].skipped);
    assert_true(res->entries[1].skipped);
    assert_false(res->entries[2].skipped);
    assert_int_equal(res->entries[2].resp.revision, 3);
    assert_int_equal(res->n_events, 1);
    assert_int_equal(res->entries[2].first_event, 0);
    mvcc_result_free(res);
    struct mvcc_status st;
    assert_int_equal(mvcc_reader_status(f->r, &st), 0);
    assert_int_equal(st.consistent_index, 7);
    assert_int_equal(st.consistent_term, 3);
    assert_int_equal(st.revision, 3);
}

static void test_events_carry_kv_and_prev_kv(void **state)
{
    struct fx *f = *state;
    put(f, "a", "1");
    put(f, "a", "2");
    struct mvcc_event *ev = &f->last->events[0];
    assert_int_equal(ev->type, MVCC_EVENT_PUT);
    assert_memory_equal(ev->kv.value.data, "2", 1);
    assert_int_equal(ev->kv.version, 2);
    assert_non_null(ev->prev_kv);
    assert_memory_equal(ev->prev_kv->value.data, "1", 1);
    del(f, "a", NULL);
    ev = &f->last->events[0];
    assert_int_equal(ev->type, MVCC_EVENT_DELETE);
    assert_int_equal(ev->kv.mod_revision, 4);
    assert_int_equal(ev->prev_kv->mod_revision, 3);
    put(f, "a", "3");
    assert_null(f->last->events[0].prev_kv);
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_DELETE_RANGE,
                                 .del = {.key = B("a"), .range_end = B("b"), .prev_kv = true}});
    assert_int_equal(r->del.n_prev_kvs, 1);
    assert_memory_equal(r->del.prev_kvs[0].value.data, "3", 1);
}

static void test_events_without_old_values_when_nobody_needs_them(void **state)
{
    struct fx *f = *state;
    int64_t r1 = put(f, "a", "1");
    assert_true(f->last->event_values);
    mvcc_set_event_values(f->s, false);
    int64_t r2 = put(f, "a", "2");
    assert_false(f->last->event_values);
    struct mvcc_event *ev = &f->last->events[0];
    assert_memory_equal(ev->kv.value.data, "2", 1);
    /* the previous revision is there, its value is not */
    assert_non_null(ev->prev_kv);
    assert_int_equal(ev->prev_kv->mod_revision, r1);
    assert_int_equal(ev->prev_kv->version, 1);
    assert_int_equal(ev->prev_kv->value.len, 0);
    /* a put that asks for the old value, or keeps it, still reads it */
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B("a"), .value = B("3"), .prev_kv = true}});
    assert_int_equal(r->err, 0);
    assert_non_null(r->put.prev_kv);
    assert_int_equal(r->put.prev_kv->mod_revision, r2);
    assert_memory_equal(r->put.prev_kv->value.data, "2", 1);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B("a"), .ignore_value = true, .lease = 0}});
    assert_int_equal(r->err, 0);
    struct mvcc_kv kv;
    char v[8];
    assert_true(get(f, "a", 0, &kv, v, sizeof v));
    assert_string_equal(v, "3");
    assert_int_equal(kv.version, 4);
    /* a delete's event too, unless it asks for the old values */
    int64_t r4 = put(f, "b", "4");
    del(f, "a", NULL);
    ev = &f->last->events[0];
    assert_int_equal(ev->type, MVCC_EVENT_DELETE);
    assert_int_equal(ev->prev_kv->version, 4);
    assert_int_equal(ev->prev_kv->value.len, 0);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_DELETE_RANGE,
                                       .del = {.key = B("b"), .range_end = B("c"), .prev_kv = true}});
    assert_int_equal(r->del.n_prev_kvs, 1);
    assert_int_equal(r->del.prev_kvs[0].mod_revision, r4);
    assert_memory_equal(r->del.prev_kvs[0].value.data, "4", 1);
    /* and a lease revoke's */
    lease_grant(f, 7, 60);
    put_lease(f, "l", "held", 7);
    apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_REVOKE, .lease_revoke = {7}});
    ev = &f->last->events[0];
    assert_int_equal(ev->type, MVCC_EVENT_DELETE);
    assert_int_equal(ev->prev_kv->lease, 7);
    assert_int_equal(ev->prev_kv->value.len, 0);
    mvcc_set_event_values(f->s, true);
    put(f, "a", "4");
    put(f, "a", "5");
    assert_true(f->last->event_values);
    assert_memory_equal(f->last->events[0].prev_kv->value.data, "4", 1);
}

static void test_records_live_outside_the_kv_space(void **state)
{
    struct fx *f = *state;
    struct mvcc_response *r = apply(
        f, (struct mvcc_request){.type = MVCC_REQ_RECORD_PUT,
                                 .record = {.ns = B("member"), .name = B("m1"), .value = B("url")}});
    assert_int_equal(r->err, 0);
    apply(f, (struct mvcc_request){.type = MVCC_REQ_RECORD_PUT,
                                   .record = {.ns = B("member"), .name = B("m2"), .value = B("u2")}});
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_RECORD_DELETE,
                                       .record = {.ns = B("member"), .name = B("m1")}});
    assert_int_equal(r->record.deleted, 1);
    struct mvcc_record_list *l;
    assert_int_equal(mvcc_record_list(f->r, B("member"), NOB, &l), 0);
    assert_int_equal(l->n, 1);
    assert_memory_equal(l->records[0].value.data, "u2", 2);
    mvcc_record_list_free(l);
    assert_int_equal(rev_now(f), 1);
}

static void test_history_pages_through_every_revision_with_tombstones(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 10; i++) {
        put(f, "h/a", "v");
        if (i % 3 == 2)
            del(f, "h/a", NULL);
        put(f, "h/b", "w");
    }
    put(f, "i", "x");
    struct mvcc_history_req q = {.key = B("h/"), .range_end = B("h0"), .limit = 4};
    size_t total = 0, tombs = 0;
    int64_t last_main = 0, last_sub = -1;
    for (;;) {
        struct mvcc_history_result *h;
        assert_int_equal(mvcc_history(f->r, &q, &h), 0);
        for (size_t i = 0; i < h->n_rows; i++) {
            int64_t m = h->rows[i].kv.mod_revision, s = h->rows[i].sub_revision;
            assert_true(m > last_main || (m == last_main && s > last_sub));
            last_main = m;
            last_sub = s;
            tombs += h->rows[i].tombstone;
        }
        total += h->n_rows;
        bool more = h->more;
        q.after_main = h->next_main;
        q.after_sub = h->next_sub;
        mvcc_history_result_free(h);
        if (!more)
            break;
    }
    assert_int_equal(total, 23);
    assert_int_equal(tombs, 3);
    /* a revision window */
    struct mvcc_history_result *h;
    assert_int_equal(mvcc_history(f->r, &(struct mvcc_history_req){.key = B("h/b"), .min_revision = 3,
                                                                   .max_revision = 6}, &h), 0);
    assert_int_equal(h->n_rows, 2);
    mvcc_history_result_free(h);
}

static void test_hash_kv_ignores_physical_compaction_progress(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 30; i++)
        put(f, i % 3 ? "x" : "y", "v");
    del(f, "y", NULL);
    uint32_t h1, h2, h3, h4;
    int64_t cur, crev;
    assert_int_equal(mvcc_hash_kv(f->r, 0, &h1, &cur, &crev), 0);
    assert_int_equal(cur, 32);
    assert_int_equal(mvcc_hash_kv(f->r, 20, &h2, NULL, NULL), 0);
    assert_int_not_equal(h1, h2);
    compact(f, 20, 0);
    assert_int_equal(mvcc_hash_kv(f->r, 0, &h3, NULL, &crev), 0);
    assert_int_equal(crev, 20);
    compact_finish(f);
    assert_int_equal(mvcc_hash_kv(f->r, 0, &h4, NULL, NULL), 0);
    assert_int_equal(h3, h4);
    assert_int_equal(mvcc_hash_kv(f->r, 19, &h4, NULL, NULL), -CAIRN_E_COMPACTED);
    assert_int_equal(mvcc_hash_kv(f->r, 40, &h4, NULL, NULL), -CAIRN_E_FUTURE_REV);
}

/* --- files ---------------------------------------------------------------------------- */

struct writer_arg {
    struct fx *f;
    int n;
};

static void *writer_thread(void *p)
{
    struct writer_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        struct mvcc_entry e = {.index = ++a->f->index,
                               .req = {.type = MVCC_REQ_PUT, .put = {.key = B("w"), .value = B("v")}}};
        struct mvcc_result *res;
        if (mvcc_apply(a->f->s, &e, 1, &res) != 0)
            return (void *)1;
        mvcc_result_free(res);
    }
    return NULL;
}

static void test_snapshot_while_writing_then_restore(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 200; i++)
        put(f, "k", "v");
    lease_grant(f, 5, 50);
    char snap[96];
    snprintf(snap, sizeof(snap), "%s.snap", f->dir);
    pthread_t t;
    struct writer_arg wa = {f, 300};
    assert_int_equal(pthread_create(&t, NULL, writer_thread, &wa), 0);
    uint64_t index = 0;
    int rc = mvcc_snapshot_write(f->r, snap, &index);
    void *tr;
    pthread_join(t, &tr);
    assert_int_equal(rc, 0);
    assert_null(tr);
    assert_true(index >= 201 && index <= 501);
    uint32_t hash_then;
    /* the copy is exactly the state at its index: revision index-1 puts of "k"/"w" */
    fx_close(f);
    char err[256];
    assert_int_equal(mvcc_restore(f->dir, snap, err, sizeof(err)), 0);
    fx_open(f);
    struct mvcc_status st;
    assert_int_equal(mvcc_reader_status(f->r, &st), 0);
    assert_int_equal(st.consistent_index, index);
    assert_int_equal(st.revision, (int64_t)index); /* every entry but the grant wrote once */
    assert_int_equal(mvcc_hash_kv(f->r, 0, &hash_then, NULL, NULL), 0);
    struct mvcc_lease_list *l;
    assert_int_equal(mvcc_lease_get(f->r, 5, &l), 0);
    mvcc_lease_list_free(l);
    f->index = index;
    put(f, "after", "restore");
    unlink(snap);
    /* a bad copy is refused and leaves the store alone */
    int fd = open(snap, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(write(fd, "garbage garbage garbage garbage", 31) == 31);
    close(fd);
    fx_close(f);
    assert_int_not_equal(mvcc_restore(f->dir, snap, err, sizeof(err)), 0);
    assert_non_null(strstr(err, snap));
    unlink(snap);
    fx_open(f);
    assert_int_equal(rev_now(f), (int64_t)index + 1);
}

struct pair_reader {
    struct mvcc_reader *r;
    atomic_int stop;
    atomic_long reads;
    long torn;
};

/* Reads x and y, which every txn sets to the same value: a reader must never
 * see one without the other. */
static void *pair_reader_thread(void *p)
{
    struct pair_reader *pr = p;
    while (!atomic_load(&pr->stop)) {
        struct mvcc_range_result *res;
        struct mvcc_range_req q = {.key = B("x"), .range_end = B("z")};
        if (mvcc_range(pr->r, &q, &res, NULL) != 0) {
            pr->torn++;
            break;
        }
        if (res->resp.n_kvs == 2) {
            const struct mvcc_kv *x = &res->resp.kvs[0], *y = &res->resp.kvs[1];
            if (x->value.len != y->value.len || memcmp(x->value.data, y->value.data, x->value.len) ||
                y->mod_revision != x->mod_revision + 1 || y->mod_revision != res->revision)
                pr->torn++;
        } else if (res->resp.n_kvs != 0) {
            pr->torn++;
        }
        atomic_fetch_add(&pr->reads, 1);
        mvcc_range_result_free(res);
    }
    return NULL;
}

/*
 * A kept handle (mvcc_reader_keep) holds its read between calls and reuses it
 * only while nothing is written: every call still sees the newest batch, and
 * status, a snapshot copy and closing work on a handle that holds a read.
 */
static void test_kept_reader_sees_every_write_and_lets_go(void **state)
{
    struct fx *f = *state;
    mvcc_reader_keep(f->r, true);
    struct mvcc_kv kv;
    char v[32];
    for (int i = 0; i < 50; i++) {
        char want[32];
        snprintf(want, sizeof want, "v%d", i);
        int64_t rev = put(f, "k", want);
        for (int rep = 0; rep < 3; rep++) { /* the second and third reuse the held read */
            assert_true(get(f, "k", 0, &kv, v, sizeof v));
            assert_string_equal(v, want);
            assert_int_equal(kv.mod_revision, rev);
        }
        if (i % 10 == 0)
            assert_int_equal(rev_now(f), rev); /* status begins its own transaction */
    }
    char snap[128];
    snprintf(snap, sizeof snap, "%s/kept.snap", f->dir);
    assert_true(get(f, "k", 0, &kv, v, sizeof v));
    assert_int_equal(mvcc_snapshot_write(f->r, snap, NULL), 0);
    assert_true(get(f, "k", 0, &kv, v, sizeof v));
    assert_int_equal(mvcc_reader_idle(f->r), 0);
    assert_int_equal(mvcc_reader_idle(f->r), 0); /* nothing held: nothing to do */
    put(f, "k", "after");
    assert_true(get(f, "k", 0, &kv, v, sizeof v));
    assert_string_equal(v, "after");
    mvcc_reader_keep(f->r, false);
    unlink(snap);
}

static void test_readers_on_other_threads_see_whole_batches_only(void **state)
{
    struct fx *f = *state;
    struct pair_reader pr[2] = {{0}, {0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(mvcc_reader_open(f->s, &pr[i].r), 0);
        mvcc_reader_keep(pr[i].r, i == 1); /* one holds its read between calls */
        assert_int_equal(pthread_create(&t[i], NULL, pair_reader_thread, &pr[i]), 0);
    }
    /* at least 400 batches, and on until both readers have read a while
     * (bounded, for a machine too busy to schedule them) */
    for (int i = 0; i < 400 || ((atomic_load(&pr[0].reads) < 100 || atomic_load(&pr[1].reads) < 100) &&
                                i < 200000); i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        struct mvcc_request ops[] = {
            {.type = MVCC_REQ_PUT, .put = {.key = B("x"), .value = B(v)}},
            {.type = MVCC_REQ_PUT, .put = {.key = B("y"), .value = B(v)}},
        };
        /* two entries per batch: the first writes x only, the second y, so
         * only whole batches keep them equal */
        struct mvcc_entry e[2] = {
            {.index = ++f->index, .req = {.type = MVCC_REQ_TXN, .txn = {.success = ops, .n_success = 1}}},
            {.index = ++f->index, .req = {.type = MVCC_REQ_TXN, .txn = {.success = ops + 1, .n_success = 1}}},
        };
        struct mvcc_result *res;
        assert_int_equal(mvcc_apply(f->s, e, 2, &res), 0);
        mvcc_result_free(res);
    }
    for (int i = 0; i < 2; i++) {
        atomic_store(&pr[i].stop, 1);
        pthread_join(t[i], NULL);
        mvcc_reader_close(pr[i].r);
    }
    assert_true(atomic_load(&pr[0].reads) > 0 && atomic_load(&pr[1].reads) > 0);
    assert_int_equal(pr[0].torn + pr[1].torn, 0);
}

/* --- readers while the writer works --------------------------------------------------- */

/*
 * Every write to the group g/00..g/09 is one txn over all ten keys: puts of
 * the value "r<revision>", or one delete of them all.  So a read at any
 * revision must show all ten with the same mod revision and that value, or
 * none.
 */
#define GROUP 10

static bool group_whole(const struct mvcc_range_result *res, int64_t at)
{
    size_t n = res->resp.n_kvs;
    if (n == 0)
        return true;
    if (n != GROUP)
        return false;
    const struct mvcc_kv *kv = res->resp.kvs;
    char want[24];
    int wl = snprintf(want, sizeof(want), "r%lld", (long long)kv[0].mod_revision);
    if (kv[0].mod_revision > at)
        return false;
    for (size_t i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "g/%02zu", i);
        if (kv[i].mod_revision != kv[0].mod_revision || kv[i].version != kv[0].version ||
            kv[i].key.len != strlen(key) || memcmp(kv[i].key.data, key, kv[i].key.len) ||
            kv[i].value.len != (size_t)wl || memcmp(kv[i].value.data, want, (size_t)wl))
            return false;
    }
    return true;
}

struct watcher {
    struct mvcc_reader *r;
    atomic_int *stop;
    atomic_long reads;
    long past_reads, compacted, bad;
    int64_t last_rev;
    uint64_t rng;
};

static void *watcher_thread(void *p)
{
    struct watcher *w = p;
    while (!atomic_load(w->stop)) {
        struct mvcc_range_req q = {.key = B("g/"), .range_end = B("g0")};
        struct mvcc_range_result *res;
        if (mvcc_range(w->r, &q, &res, NULL) != 0) {
            w->bad++;
            break;
        }
        /* whole txns only, and never an older batch than the last call saw */
        if (res->revision < w->last_rev || !group_whole(res, res->revision))
            w->bad++;
        w->last_rev = res->revision;
        int64_t lo = res->compact_revision > 1 ? res->compact_revision : 1;
        mvcc_range_result_free(res);
        atomic_fetch_add(&w->reads, 1);
        /* and a read in the past, which compaction may overtake meanwhile */
        w->rng = w->rng * 6364136223846793005ULL + 1442695040888963407ULL;
        q.revision = lo + (int64_t)((w->rng >> 33) % (uint64_t)(w->last_rev - lo + 1));
        int rc = mvcc_range(w->r, &q, &res, NULL);
        if (rc == -CAIRN_E_COMPACTED) {
            w->compacted++;
            continue;
        }
        if (rc != 0 || res->revision < w->last_rev || !group_whole(res, q.revision))
            w->bad++;
        if (rc == 0) {
            w->last_rev = res->revision;
            mvcc_range_result_free(res);
        }
        w->past_reads++;
    }
    return NULL;
}

struct group_writer {
    struct fx *f;
    struct watcher *w;
    int nw;
    atomic_int done; /* set once it has written enough */
    atomic_int stop;
    int batches, failed;
};

/* The only writer: batches of one to three group txns, a Compact now and
 * then, and compaction steps between batches. */
static void *group_writer_thread(void *p)
{
    struct group_writer *g = p;
    struct fx *f = g->f;
    struct mvcc_status st;
    bool present = false;
    if (mvcc_store_status(f->s, &st) != 0)
        g->failed++;
    int64_t rev = st.revision;
    static char vals[3][24];
    struct mvcc_request puts[3][GROUP];
    static char keys[GROUP][16];
    for (int i = 0; i < GROUP; i++)
        snprintf(keys[i], sizeof(keys[i]), "g/%02d", i);
    for (int b = 0; !atomic_load(&g->stop) && !g->failed; b++) {
        struct mvcc_entry e[3];
        int n = 1 + b % 3;
        for (int i = 0; i < n; i++) {
            if ((b + i) % 7 == 6) {
                e[i] = (struct mvcc_entry){.req = {.type = MVCC_REQ_DELETE_RANGE,
                                                   .del = {.key = B("g/"), .range_end = B("g0")}}};
                rev += present; /* deleting nothing writes nothing */
                present = false;
            } else {
                snprintf(vals[i], sizeof(vals[i]), "r%lld", (long long)++rev);
                for (int k = 0; k < GROUP; k++)
                    puts[i][k] = (struct mvcc_request){
                        .type = MVCC_REQ_PUT, .put = {.key = B(keys[k]), .value = B(vals[i])}};
                e[i] = (struct mvcc_entry){
                    .req = {.type = MVCC_REQ_TXN, .txn = {.success = puts[i], .n_success = GROUP}}};
                present = true;
            }
            e[i].index = ++f->index;
            e[i].term = 1;
        }
        struct mvcc_result *res;
        if (mvcc_apply(f->s, e, (size_t)n, &res) != 0 || res->revision != rev) {
            g->failed++;
            break;
        }
        mvcc_result_free(res);
        if (b % 25 == 24) {
            struct mvcc_entry c = {.index = ++f->index,
                                   .req = {.type = MVCC_REQ_COMPACT, .compact = {rev - 3}}};
            if (mvcc_apply(f->s, &c, 1, &res) != 0)
                g->failed++;
            else
                mvcc_result_free(res);
        }
        bool done;
        if (mvcc_compact_step(f->s, 4, &done) != 0)
            g->failed++;
        g->batches = b + 1;
        bool enough = b >= 600;
        for (int i = 0; i < g->nw; i++)
            enough = enough && atomic_load(&g->w[i].reads) >= 200;
        if (enough || b >= 200000)
            atomic_store(&g->done, 1);
    }
    return NULL;
}

/* A snapshot taken while the writer and the readers run is one batch too.
 * Returns what went wrong, or NULL (no assertion: other threads are running). */
static const char *check_snapshot_copy(struct fx *f, int nth)
{
    char snap[96], dir[96], err[256];
    const char *why = NULL;
    struct mvcc_store *s = NULL;
    struct mvcc_reader *r = NULL;
    struct mvcc_range_result *res;
    struct mvcc_range_req q = {.key = B("g/"), .range_end = B("g0")};
    struct mvcc_status st;
    uint64_t index = 0;
    snprintf(snap, sizeof(snap), "%s.snap%d", f->dir, nth);
    snprintf(dir, sizeof(dir), "%s.restored%d", f->dir, nth);
    if (mvcc_snapshot_write(f->r, snap, &index) != 0)
        why = "snapshot_write";
    else if (mkdir(dir, 0700) != 0 || mvcc_restore(dir, snap, err, sizeof(err)) != 0)
        why = "restore";
    else if (mvcc_open(dir, NULL, &s, err, sizeof(err)) != 0 || mvcc_reader_open(s, &r) != 0)
        why = "open the copy";
    else if (mvcc_reader_status(r, &st) != 0 || st.consistent_index != index)
        why = "the copy's consistent index";
    else if (mvcc_range(r, &q, &res, NULL) != 0)
        why = "range on the copy";
    else {
        if (!group_whole(res, st.revision))
            why = "the copy holds part of a txn";
        mvcc_range_result_free(res);
    }
    mvcc_reader_close(r);
    mvcc_close(s);
    unlink(snap);
    rm_rf(dir);
    return why;
}

static void test_readers_see_whole_batches_while_the_writer_applies_and_compacts(void **state)
{
    struct fx *f = *state;
    atomic_int stop = 0;
    struct watcher w[2] = {{.stop = &stop, .rng = 1}, {.stop = &stop, .rng = 2}};
    struct group_writer g = {.f = f, .w = w, .nw = 2};
    pthread_t tw[2], tg;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(mvcc_reader_open(f->s, &w[i].r), 0);
        mvcc_reader_keep(w[i].r, i == 1); /* one holds its read between calls */
        assert_int_equal(pthread_create(&tw[i], NULL, watcher_thread, &w[i]), 0);
    }
    assert_int_equal(pthread_create(&tg, NULL, group_writer_thread, &g), 0);
    /* snapshots from a third reader while the others read and the writer writes */
    const char *snap_bad = NULL;
    for (int i = 0; !atomic_load(&g.done); i++)
        if (i < 3 && !snap_bad)
            snap_bad = check_snapshot_copy(f, i);
        else
            sched_yield();
    atomic_store(&g.stop, 1);
    pthread_join(tg, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(tw[i], NULL);
        mvcc_reader_close(w[i].r);
    }
    print_message("%d batches; readers: %ld+%ld reads, %ld+%ld in the past, %ld+%ld compacted\n",
                  g.batches, atomic_load(&w[0].reads), atomic_load(&w[1].reads), w[0].past_reads,
                  w[1].past_reads, w[0].compacted, w[1].compacted);
    if (snap_bad)
        print_message("snapshot: %s\n", snap_bad);
    assert_null(snap_bad);
    assert_int_equal(g.failed, 0);
    assert_int_equal(w[0].bad + w[1].bad, 0);
    assert_true(atomic_load(&w[0].reads) > 0 && atomic_load(&w[1].reads) > 0);
    assert_true(w[0].past_reads + w[1].past_reads > 0);
}

/* A reader parked in the middle of a Range: its version pinned, its read
 * transaction open, its keys chosen, their values not read yet. */
struct park {
    sem_t parked, go;
    struct mvcc_reader *r;
    struct mvcc_range_result *res;
    int rc;
};

static void park_hook(void *arg)
{
    struct park *p = arg;
    sem_post(&p->parked);
    while (sem_wait(&p->go) != 0)
        ;
}

static void *parked_reader_thread(void *arg)
{
    struct park *p = arg;
    struct mvcc_range_req q = {.key = B("k"), .range_end = B("l")};
    p->rc = mvcc_range(p->r, &q, &p->res, NULL);
    return NULL;
}

static void writer_hung(int sig)
{
    static const char msg[] = "test_mvcc: the writer waited for a parked reader\n";
    (void)sig;
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(2);
    _exit(1);
}

static int64_t rows_with_value(const char *path, const char *value)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t n = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM rev WHERE value = ?1", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(st, 1, value, (int)strlen(value), SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_writer_is_not_held_up_by_a_reader_parked_mid_range(void **state)
{
    struct fx *f = *state;
    char key[16];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        put(f, key, "old");
    }
    int64_t then = rev_now(f);
    struct park p = {0};
    sem_init(&p.parked, 0, 0);
    sem_init(&p.go, 0, 0);
    assert_int_equal(mvcc_reader_open(f->s, &p.r), 0);
    mvcc_reader_test_hook(p.r, park_hook, &p);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, parked_reader_thread, &p), 0);
    while (sem_wait(&p.parked) != 0)
        ;
    /* Everything the writer does must finish while the reader stays parked.
     * If one waited for it, nothing would ever release it: the alarm turns
     * that hang into a failure (a guard, not a timing assertion). */
    signal(SIGALRM, writer_hung);
    alarm(120);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 50; i++) {
            snprintf(key, sizeof(key), "k%02d", i);
            put(f, key, "new");
        }
    assert_int_equal(del(f, "k00", "k25")->del.deleted, 25);
    compact(f, rev_now(f), 0);
    compact_finish(f);
    assert_int_equal(mvcc_sync(f->s), 0);
    uint32_t hash;
    assert_int_equal(mvcc_hash_kv(f->r, 0, &hash, NULL, NULL), 0);
    char snap[96];
    snprintf(snap, sizeof(snap), "%s.snap", f->dir);
    assert_int_equal(mvcc_snapshot_write(f->r, snap, NULL), 0);
    unlink(snap);
    alarm(0);
    /* the rows the parked reader is about to return are gone from the file */
    char path[96];
    snprintf(path, sizeof(path), "%s/mvcc.db", f->dir);
    assert_int_equal(rows_with_value(path, "old"), 0);
    sem_post(&p.go);
    pthread_join(t, NULL);
    /* and it returns its batch, whole: every key as it was then */
    assert_int_equal(p.rc, 0);
    assert_int_equal(p.res->revision, then);
    assert_int_equal(p.res->resp.n_kvs, 50);
    for (int i = 0; i < 50; i++) {
        const struct mvcc_kv *kv = &p.res->resp.kvs[i];
        assert_int_equal(kv->mod_revision, i + 2);
        assert_int_equal(kv->version, 1);
        assert_int_equal(kv->value.len, 3);
        assert_memory_equal(kv->value.data, "old", 3);
    }
    mvcc_range_result_free(p.res);
    /* its next call reads the present */
    mvcc_reader_test_hook(p.r, NULL, NULL);
    struct mvcc_range_result *res;
    struct mvcc_range_req q = {.key = B("k"), .range_end = B("l")};
    assert_int_equal(mvcc_range(p.r, &q, &res, NULL), 0);
    assert_int_equal(res->revision, rev_now(f));
    assert_int_equal(res->resp.n_kvs, 25);
    assert_memory_equal(res->resp.kvs[0].value.data, "new", 3);
    mvcc_range_result_free(res);
    mvcc_reader_close(p.r);
    sem_destroy(&p.parked);
    sem_destroy(&p.go);
}

/* Run sql on the database file directly, as another program would. */
static void sql_on(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_open_refuses_foreign_corrupt_and_newer_files(void **state)
{
    struct fx *f = *state;
    fx_close(f);
    char path[128], err[256];
    struct mvcc_store *s = NULL;
    snprintf(path, sizeof(path), "%s/mvcc.db", f->dir);
    /* newer schema */
    sql_on(path, "PRAGMA user_version = 99");
    assert_int_equal(mvcc_open(f->dir, NULL, &s, err, sizeof(err)), -CAIRN_E_SCHEMA);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "99"));
    /* not a database at all */
    unlink(path);
    char wal[140];
    snprintf(wal, sizeof(wal), "%s-wal", path);
    unlink(wal);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char junk[4096];
    memset(junk, 'x', sizeof(junk));
    assert_int_equal(write(fd, junk, sizeof(junk)), (int)sizeof(junk));
    close(fd);
    assert_int_equal(mvcc_open(f->dir, NULL, &s, err, sizeof(err)), -CAIRN_E_CORRUPT);
    assert_non_null(strstr(err, path));
    /* a foreign SQLite database */
    unlink(path);
    sql_on(path, "CREATE TABLE t(x)");
    assert_int_equal(mvcc_open(f->dir, NULL, &s, err, sizeof(err)), -CAIRN_E_SCHEMA);
    assert_non_null(strstr(err, "application_id"));
    unlink(path);
    fx_open(f);
}

/* 300 keys of 2 KiB put, deleted and compacted away: their pages are free, still in the file. */
/* Turn a closed store's file back into schema 2: rev keyed by (main, sub), WITHOUT ROWID. */
static void to_schema_2(const char *path)
{
    sql_on(path, "BEGIN;"
                 "CREATE TABLE rev_v2 (main INTEGER NOT NULL, sub INTEGER NOT NULL, key BLOB NOT NULL,"
                 " create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL, value BLOB,"
                 " PRIMARY KEY (main, sub)) WITHOUT ROWID;"
                 "INSERT INTO rev_v2 SELECT main, sub, key, create_rev, version, lease, value FROM rev;"
                 "DROP TABLE rev; ALTER TABLE rev_v2 RENAME TO rev; PRAGMA user_version = 2; COMMIT");
}

static int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return v;
}

/* What a schema upgrade told mvcc_open's caller (mvcc_options' on_upgrade). */
struct upgrade_seen {
    int calls, begins, dones;
    enum mvcc_upgrade_phase first, last;
    int from, to;
    int64_t rows, elapsed_ns;
    char path[128];
};

static void see_upgrade(void *arg, const struct mvcc_upgrade *u)
{
    struct upgrade_seen *w = arg;
    if (!w->calls++)
        w->first = u->phase;
    w->last = u->phase;
    w->begins += u->phase == MVCC_UPGRADE_BEGIN;
    w->dones += u->phase == MVCC_UPGRADE_DONE;
    w->from = u->from;
    w->to = u->to;
    w->rows = u->rows;
    w->elapsed_ns = u->elapsed_ns;
    snprintf(w->path, sizeof w->path, "%s", u->path);
}

/* Every row of the store's history, as "main.sub key version" lines. */
static void history_text(struct fx *f, char *out, size_t len)
{
    struct mvcc_history_req q = {.key = B("\x01"), .range_end = B("\xff"), .limit = 1000};
    struct mvcc_history_result *h;
    size_t at = 0;
    assert_int_equal(mvcc_history(f->r, &q, &h), 0);
    for (size_t i = 0; i < h->n_rows && at < len; i++)
        at += (size_t)snprintf(out + at, len - at, "%lld.%lld %.*s %lld\n", (long long)h->rows[i].kv.mod_revision,
                               (long long)h->rows[i].sub_revision, (int)h->rows[i].kv.key.len,
                               (const char *)h->rows[i].kv.key.data, (long long)h->rows[i].kv.version);
    mvcc_history_result_free(h);
}

static void test_a_schema_2_store_is_upgraded_at_open_and_reads_the_same(void **state)
{
    struct fx *f = *state;
    char path[128], before[4096], after[4096];
    snprintf(path, sizeof(path), "%s/mvcc.db", f->dir);
    lease_grant(f, 7, 60);
    put(f, "a", "1");
    put_lease(f, "b", "1", 7);
    put(f, "a", "2");
    put(f, "d", "1");
    put(f, "e", "1");
    assert_int_equal(del(f, "d", "f")->del.deleted, 2); /* one revision, sub revisions 0 and 1 */
    put(f, "a", "3");
    uint32_t h1, h2;
    int64_t cur1, cur2;
    assert_int_equal(mvcc_hash_kv(f->r, 0, &h1, &cur1, NULL), 0);
    history_text(f, before, sizeof before);
    fx_close(f);
    to_schema_2(path);
    int64_t rows = sql_int(path, "SELECT count(*) FROM rev");
    struct upgrade_seen seen = {0};
    fx_open_with(f, (struct mvcc_options){.on_upgrade = see_upgrade, .on_upgrade_arg = &seen});
    /* the caller heard of it: when it began, and when it was done */
    assert_int_equal(seen.begins, 1);
    assert_int_equal(seen.dones, 1);
    assert_int_equal(seen.first, MVCC_UPGRADE_BEGIN);
    assert_int_equal(seen.last, MVCC_UPGRADE_DONE);
    assert_int_equal(seen.from, 2);
    assert_int_equal(seen.to, MVCC_SCHEMA_VERSION);
    assert_int_equal(seen.rows, rows);
    assert_true(rows >= 8);
    assert_true(seen.elapsed_ns > 0);
    assert_string_equal(seen.path, path);
    assert_int_equal(mvcc_hash_kv(f->r, 0, &h2, &cur2, NULL), 0);
    assert_int_equal(h1, h2);
    assert_int_equal(cur1, cur2);
    history_text(f, after, sizeof after);
    assert_string_equal(before, after);
    assert_non_null(strstr(after, "7.1 e 0\n"));
    struct mvcc_kv kv;
    char v[8];
    assert_true(get(f, "a", 4, &kv, v, sizeof(v))); /* an old value, read by its row */
    assert_string_equal(v, "2");
    struct mvcc_lease_list *l;
    assert_int_equal(mvcc_lease_get(f->r, 7, &l), 0);
    assert_int_equal(l->leases[0].n_keys, 1);
    mvcc_lease_list_free(l);
    assert_int_equal(put(f, "a", "4"), cur1 + 1);
    fx_close(f);
    assert_int_equal(sql_int(path, "PRAGMA user_version"), MVCC_SCHEMA_VERSION);
    assert_int_equal(sql_int(path, "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'rev%'"), 1);
    /* the old table's pages were freed without zeros over them (secure_delete
     * off), then written over or cut off the file: none is left free */
    assert_int_equal(sql_int(path, "PRAGMA freelist_count"), 0);
    assert_int_equal(sql_int(path, "SELECT count(*) FROM rev WHERE main = 7 AND sub = 1 AND key = CAST('e' AS BLOB)"), 1);
    seen = (struct upgrade_seen){0};
    fx_open_with(f, (struct mvcc_options){.on_upgrade = see_upgrade, .on_upgrade_arg = &seen});
    assert_int_equal(seen.calls, 0); /* nothing left to upgrade */
}

static void test_a_schema_2_store_it_cannot_number_is_refused_untouched(void **state)
{
    struct fx *f = *state;
    char path[128], err[512];
    struct mvcc_store *s = NULL;
    snprintf(path, sizeof(path), "%s/mvcc.db", f->dir);
    put(f, "a", "1");
    fx_close(f);
    to_schema_2(path);
    sql_on(path, "INSERT INTO rev VALUES (3, 1048576, 'x', 3, 1, 0, 'v')");
    struct upgrade_seen seen = {0};
    struct mvcc_options o = {.on_upgrade = see_upgrade, .on_upgrade_arg = &seen};
    assert_int_equal(mvcc_open(f->dir, &o, &s, err, sizeof(err)), -CAIRN_E_SCHEMA);
    assert_int_equal(seen.calls, 0); /* refused before it began */
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "cannot upgrade"));
    assert_int_equal(sql_int(path, "PRAGMA user_version"), 2);
    assert_int_equal(sql_int(path, "SELECT count(*) FROM rev"), 2);
    sql_on(path, "DELETE FROM rev WHERE main = 3");
    fx_open(f);
    struct mvcc_kv kv;
    char v[8];
    assert_true(get(f, "a", 0, &kv, v, sizeof(v)));
    assert_string_equal(v, "1");
}

static void test_writes_past_the_last_revision_are_refused_and_reads_go_on(void **state)
{
    struct fx *f = *state;
    char path[128], sql[128];
    snprintf(path, sizeof(path), "%s/mvcc.db", f->dir);
    lease_grant(f, 9, 60);
    put(f, "a", "1");
    fx_close(f);
    snprintf(sql, sizeof sql, "UPDATE state SET rev = %lld", (long long)(MVCC_MAX_REV - 1));
    sql_on(path, sql);
    fx_open(f);
    assert_int_equal(put_lease(f, "a", "2", 9), MVCC_MAX_REV);
    struct mvcc_response *r =
        apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B("b"), .value = B("1")}});
    assert_int_equal(r->err, -CAIRN_E_REVISIONS_EXHAUSTED);
    assert_int_equal(r->revision, MVCC_MAX_REV);
    assert_int_equal(del(f, "a", NULL)->err, -CAIRN_E_REVISIONS_EXHAUSTED);
    assert_int_equal(del(f, "zz", NULL)->err, 0); /* changes nothing */
    struct mvcc_request ops[] = {{.type = MVCC_REQ_PUT, .put = {.key = B("c"), .value = B("1")}}};
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.success = ops, .n_success = 1}});
    assert_int_equal(r->err, -CAIRN_E_REVISIONS_EXHAUSTED);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_REVOKE, .lease_revoke = {9}});
    assert_int_equal(r->err, -CAIRN_E_REVISIONS_EXHAUSTED);
    lease_grant(f, 10, 60); /* no revision needed */
    assert_int_equal(rev_now(f), MVCC_MAX_REV);
    struct mvcc_kv kv;
    char v[8];
    assert_true(get(f, "a", 0, &kv, v, sizeof(v)));
    assert_string_equal(v, "2");
    assert_int_equal(kv.mod_revision, MVCC_MAX_REV);
    assert_true(get(f, "a", MVCC_MAX_REV - 1, &kv, v, sizeof(v)));
    assert_string_equal(v, "1");
    char hist[512];
    history_text(f, hist, sizeof hist);
    assert_non_null(strstr(hist, "8796093022207.0 a 2\n"));
    uint32_t h;
    assert_int_equal(mvcc_hash_kv(f->r, MVCC_MAX_REV, &h, NULL, NULL), 0);
    compact(f, MVCC_MAX_REV, 0);
    compact_finish(f);
    fx_close(f);
    fx_open(f);
    assert_true(get(f, "a", 0, &kv, v, sizeof(v)));
    assert_string_equal(v, "2");
}

/* n keys "k%07d" with lease, put in big batches */
static void put_many(struct fx *f, int n, int64_t lease)
{
    enum { BATCH = 8192 };
    static char keys[BATCH][16];
    struct mvcc_entry *e = calloc(BATCH, sizeof(*e));
    for (int i = 0; i < n; i += BATCH) {
        int k = n - i < BATCH ? n - i : BATCH;
        for (int j = 0; j < k; j++) {
            snprintf(keys[j], sizeof keys[j], "k%07d", i + j);
            e[j] = (struct mvcc_entry){.index = ++f->index, .term = 1,
                                       .req = {.type = MVCC_REQ_PUT,
                                               .put = {.key = B(keys[j]), .value = B("v"), .lease = lease}}};
        }
        struct mvcc_result *res;
        assert_int_equal(mvcc_apply(f->s, e, (size_t)k, &res), 0);
        mvcc_result_free(res);
    }
    free(e);
}

static void test_a_request_changing_too_many_keys_is_refused_whole(void **state)
{
    struct fx *f = *state;
    lease_grant(f, 5, 60);
    lease_grant(f, 6, 60);
    put_many(f, MVCC_MAX_CHANGES, 5); /* as many keys as a lease can hold */
    char last[16];
    snprintf(last, sizeof last, "k%07d", MVCC_MAX_CHANGES);
    /* one more key on lease 5 would make it unrevocable: refused, also after a reopen (the counts are rebuilt) */
    int64_t rev = rev_now(f);
    struct mvcc_response *r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B(last), .value = B("v"), .lease = 5}});
    assert_int_equal(r->err, -CAIRN_E_LEASE_TOO_MANY_KEYS);
    fx_close(f);
    fx_open(f);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B(last), .value = B("v"), .lease = 5}});
    assert_int_equal(r->err, -CAIRN_E_LEASE_TOO_MANY_KEYS);
    assert_int_equal(rev_now(f), rev);
    /* a key already on lease 5, put again with it, attaches nothing */
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B("k0000007"), .value = B("w"), .lease = 5}});
    assert_int_equal(r->err, 0);
    put(f, last, "v"); /* one key past the limit, on no lease */
    rev = rev_now(f);
    r = del(f, "k", "l");
    assert_int_equal(r->err, -CAIRN_E_TOO_MANY_CHANGES);
    /* a txn counts its puts and its deletes together */
    struct mvcc_request ops[] = {
        {.type = MVCC_REQ_DELETE_RANGE, .del = {.key = B("k"), .range_end = B(last)}},
        {.type = MVCC_REQ_PUT, .put = {.key = B("x"), .value = B("1")}},
    };
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.success = ops, .n_success = 2}});
    assert_int_equal(r->err, -CAIRN_E_TOO_MANY_CHANGES);
    /* ... and its puts per lease: one key moved to lease 6 makes room on 5
     * for one, not for the two this txn would attach there */
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B("k0000001"), .value = B("v"), .lease = 6}});
    assert_int_equal(r->err, 0);
    rev = rev_now(f);
    struct mvcc_request two[] = {
        {.type = MVCC_REQ_PUT, .put = {.key = B("y"), .value = B("1"), .lease = 5}},
        {.type = MVCC_REQ_PUT, .put = {.key = B("z"), .value = B("1"), .lease = 5}},
    };
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.success = two, .n_success = 2}});
    assert_int_equal(r->err, -CAIRN_E_LEASE_TOO_MANY_KEYS);
    assert_int_equal(rev_now(f), rev);
    struct mvcc_range_result *res = rng(f, (struct mvcc_range_req){.key = B("k"), .range_end = B("l"), .count_only = true});
    assert_int_equal(res->resp.count, MVCC_MAX_CHANGES + 1);
    mvcc_range_result_free(res);
    res = rng(f, (struct mvcc_range_req){.key = B("y"), .range_end = B("{"), .count_only = true});
    assert_int_equal(res->resp.count, 0);
    mvcc_range_result_free(res);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_TXN, .txn = {.success = two, .n_success = 1}});
    assert_int_equal(r->err, 0);
    /* the full lease is revoked in one revision: exactly the limit of changes */
    rev = rev_now(f);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_LEASE_REVOKE, .lease_revoke = {5}});
    assert_int_equal(r->err, 0);
    assert_int_equal(r->revision, rev + 1);
    assert_int_equal(f->last->n_events, MVCC_MAX_CHANGES);
    fx_close(f);
    fx_open(f);
    struct mvcc_kv kv;
    char v[8];
    assert_false(get(f, "y", 0, &kv, v, sizeof(v)));
    assert_false(get(f, "k0000000", 0, &kv, v, sizeof(v)));
    assert_true(get(f, "k0000001", 0, &kv, v, sizeof(v))); /* moved to lease 6 */
    assert_true(get(f, last, 0, &kv, v, sizeof(v)));
    res = rng(f, (struct mvcc_range_req){.key = B("k"), .range_end = B("l"), .count_only = true});
    assert_int_equal(res->resp.count, 2);
    mvcc_range_result_free(res);
    /* the lease is gone, and a new one takes keys from none */
    lease_grant(f, 5, 60);
    r = apply(f, (struct mvcc_request){.type = MVCC_REQ_PUT, .put = {.key = B("k0000000"), .value = B("v"), .lease = 5}});
    assert_int_equal(r->err, 0);
}

static void free_pages_in_the_file(struct fx *f)
{
    char big[2048];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%03d", i);
        put(f, k, big);
    }
    assert_int_equal(del(f, "k", "l")->del.deleted, 300);
    compact(f, rev_now(f), 0);
    compact_finish(f);
}

static void test_size_and_defragmentation(void **state)
{
    struct fx *f = *state;
    free_pages_in_the_file(f);
    assert_int_equal(mvcc_sync(f->s), 0);
    struct mvcc_status st;
    assert_int_equal(mvcc_store_status(f->s, &st), 0);
    assert_true(st.db_size - st.db_size_in_use > 300 * 2048 / 2);
    int64_t remaining = 1;
    while (remaining > 0)
        assert_int_equal(mvcc_defrag_step(f->s, 16, &remaining), 0);
    struct mvcc_status after;
    assert_int_equal(mvcc_store_status(f->s, &after), 0);
    assert_true(after.db_size < st.db_size);
    assert_int_equal(after.db_size, after.db_size_in_use);
    assert_int_equal(mvcc_vacuum(f->s), 0);
    assert_int_equal(rev_now(f), st.revision);
}

/* file_bytes: the database file's size on disk. */
static int64_t file_bytes(struct fx *f)
{
    char path[128];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/mvcc.db", f->dir);
    assert_int_equal(stat(path, &sb), 0);
    return (int64_t)sb.st_size;
}

/* Free pages in the file, x put, then a defragmentation while the kept
 * reader f->r holds a snapshot from before it (the caller lets go).
 * Returns the file's size before the defragmentation. */
static int64_t defragment_under_a_kept_read(struct fx *f)
{
    free_pages_in_the_file(f);
    put(f, "x", "1");
    assert_int_equal(mvcc_checkpoint(f->s), 1);
    int64_t before = file_bytes(f);
    mvcc_reader_keep(f->r, true);
    struct mvcc_kv kv;
    char v[8];
    assert_true(get(f, "x", 0, &kv, v, sizeof v)); /* holds its snapshot */
    int64_t remaining = 1;
    while (remaining > 0)
        assert_int_equal(mvcc_defrag_step(f->s, 64, &remaining), 0);
    return before;
}

/*
 * A kept read is reused for 100 ms at most: a defragmentation writes pages
 * without publishing an index version, and a reader that kept reading on its
 * old snapshot would stop every checkpoint before those pages.
 */
static void test_kept_reader_lets_checkpoints_pass_a_defragmentation(void **state)
{
    struct fx *f = *state;
    defragment_under_a_kept_read(f);
    assert_int_equal(mvcc_checkpoint(f->s), 0); /* the held snapshot stops it */
    struct mvcc_kv kv;
    char v[8];
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do { /* reads back to back for 300 ms, never idle */
        assert_true(get(f, "x", 0, &kv, v, sizeof v));
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 < 300);
    assert_int_equal(mvcc_checkpoint(f->s), 1);
    mvcc_reader_keep(f->r, false);
}

/*
 * A reader on a snapshot from before a defragmentation holds back the
 * checkpoint that would shrink the file: mvcc_checkpoint says so (0), and
 * says 1 once the reader moved on, with the file then at the store's size.
 */
static void test_checkpoint_says_whether_it_reached_the_end(void **state)
{
    struct fx *f = *state;
    int64_t before = defragment_under_a_kept_read(f);
    assert_int_equal(mvcc_checkpoint(f->s), 0);
    assert_int_equal(file_bytes(f), before);
    mvcc_reader_keep(f->r, false); /* ends the read transaction */
    assert_int_equal(mvcc_checkpoint(f->s), 1);
    struct mvcc_status st;
    assert_int_equal(mvcc_store_status(f->s, &st), 0);
    assert_int_equal(file_bytes(f), st.db_size);
    assert_true(st.db_size < before / 2);
}

/* Reopen f's store with checkpoint_elsewhere. */
static void fx_reopen_elsewhere(struct fx *f)
{
    char err[256];
    fx_close(f);
    assert_int_equal(mvcc_open(f->dir, &(struct mvcc_options){.checkpoint_elsewhere = true}, &f->s, err, sizeof err),
                     0);
    assert_int_equal(mvcc_reader_open(f->s, &f->r), 0);
}

/* Put distinct keys of 3 KB values until SQLite's WAL holds at least frames pages; returns how many. */
static int fill_wal(struct fx *f, int frames)
{
    static char v[3000];
    char k[32];
    int n = 0;
    memset(v, 'v', sizeof v - 1);
    while (mvcc_wal_frames(f->s) < frames) {
        assert_true(n < 4 * frames); /* each put writes at least one page */
        snprintf(k, sizeof k, "fill-%d", n++);
        put(f, k, v);
    }
    return n;
}

/*
 * With checkpoint_elsewhere the writer's commits leave SQLite's WAL alone
 * past MVCC_WAL_FRAMES_DUE: the database file does not grow.  A
 * checkpointer's run copies it all into the file, after which the writer's
 * next commit starts the WAL over.
 */
static void test_checkpoint_elsewhere_leaves_the_wal_to_a_checkpointer(void **state)
{
    struct fx *f = *state;
    fx_reopen_elsewhere(f);
    int64_t start = file_bytes(f);
    int n = fill_wal(f, MVCC_WAL_FRAMES_DUE + 200);
    assert_int_equal(file_bytes(f), start); /* SQLite's own checkpoints would have run at MVCC_WAL_FRAMES_DUE */
    struct mvcc_checkpointer *k = NULL;
    assert_int_equal(mvcc_checkpointer_open(f->s, &k), 0);
    assert_int_equal(mvcc_checkpointer_run(k), 1);
    assert_true(file_bytes(f) > start + (int64_t)n * 2000);
    put(f, "after", "1");
    assert_true(mvcc_wal_frames(f->s) < 100);
    assert_int_equal(mvcc_checkpointer_sync(k), 0);
    mvcc_checkpointer_close(k);
    /* what the checkpoint copied reads back after a reopen */
    fx_reopen_elsewhere(f);
    struct mvcc_kv kv;
    char v[3100];
    assert_true(get(f, "fill-0", 0, &kv, v, sizeof v));
    assert_int_equal(strlen(v), 2999);
    assert_true(get(f, "after", 0, &kv, v, sizeof v));
}

/* ... and should no checkpointer keep up, the writer checkpoints once the WAL reaches MVCC_WAL_FRAMES_MAX. */
static void test_checkpoint_elsewhere_has_a_backstop(void **state)
{
    struct fx *f = *state;
    fx_reopen_elsewhere(f);
    int64_t start = file_bytes(f);
    int n = fill_wal(f, MVCC_WAL_FRAMES_MAX);
    assert_true(file_bytes(f) > start + (int64_t)n * 2000);
    put(f, "after", "1");
    assert_true(mvcc_wal_frames(f->s) < 100);
}

struct busy_writer {
    struct fx *f;
    atomic_int done;
};

static void *checkpointer_main(void *arg)
{
    struct busy_writer *w = arg;
    struct mvcc_checkpointer *k = NULL;
    assert_int_equal(mvcc_checkpointer_open(w->f->s, &k), 0);
    for (int i = 0; !atomic_load(&w->done); i++) {
        int rc = i % 4 == 3 ? mvcc_checkpointer_sync(k) : mvcc_checkpointer_run(k);
        assert_true(rc >= 0);
    }
    mvcc_checkpointer_close(k);
    return NULL;
}

/* A checkpointer that runs checkpoints and syncs back to back while the
 * writer commits and a reader reads: every batch reads back, before and
 * after a reopen. */
static void test_a_checkpointer_works_beside_the_writer(void **state)
{
    struct fx *f = *state;
    fx_reopen_elsewhere(f);
    struct busy_writer w = {.f = f};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, checkpointer_main, &w), 0);
    static char v[1000];
    char k[32], got[1100];
    struct mvcc_kv kv;
    memset(v, 'w', sizeof v - 1);
    for (int i = 0; i < 3000; i++) {
        snprintf(k, sizeof k, "busy-%d", i);
        v[0] = (char)('a' + i % 26);
        put(f, k, v);
        if (i % 7 == 0) {
            assert_true(get(f, k, 0, &kv, got, sizeof got));
            assert_int_equal(got[0], v[0]);
        }
    }
    atomic_store(&w.done, 1);
    pthread_join(t, NULL);
    fx_reopen_elsewhere(f);
    for (int i = 0; i < 3000; i++) {
        snprintf(k, sizeof k, "busy-%d", i);
        assert_true(get(f, k, 0, &kv, got, sizeof got));
        assert_int_equal(got[0], (char)('a' + i % 26));
        assert_int_equal(strlen(got), 999);
    }
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_new_store_starts_at_revision_1),
        T(test_revision_only_grows_across_reopen),
        T(test_main_revision_per_request_sub_revision_per_operation),
        T(test_delete_of_missing_key_does_not_bump_revision),
        T(test_read_only_txn_does_not_bump_revision),
        T(test_create_mod_version_as_etcd),
        T(test_put_then_delete_resets_version),
        T(test_ignore_value_and_lease_on_missing_key_fail),
        T(test_put_with_unknown_lease_fails),
        T(test_txn_may_not_write_the_same_key_twice),
        T(test_txn_compares_every_target_and_result),
        T(test_txn_compare_over_a_key_range),
        T(test_txn_reads_see_earlier_writes_and_compares_see_state_before),
        T(test_read_below_compact_revision_fails_with_it),
        T(test_reads_fill_the_value_cache_and_every_revision_reads_right),
        T(test_read_above_current_revision_fails_future_rev),
        T(test_reads_at_past_revisions),
        T(test_range_end_single_prefix_and_from_key),
        T(test_range_limit_more_count_and_sorting),
        T(test_range_keys_only_count_only_and_min_max_filters),
        T(test_compaction_keeps_newest_at_or_below_unless_tombstone),
        T(test_interrupted_compaction_is_pending_after_reopen_and_finishes),
        T(test_lease_revoke_deletes_its_keys_in_one_revision),
        T(test_lease_grant_checkpoint_and_list),
        T(test_entries_at_or_below_consistent_index_are_skipped),
        T(test_events_carry_kv_and_prev_kv),
        T(test_events_without_old_values_when_nobody_needs_them),
        T(test_records_live_outside_the_kv_space),
        T(test_history_pages_through_every_revision_with_tombstones),
        T(test_hash_kv_ignores_physical_compaction_progress),
        T(test_snapshot_while_writing_then_restore),
        T(test_kept_reader_sees_every_write_and_lets_go),
        T(test_kept_reader_lets_checkpoints_pass_a_defragmentation),
        T(test_readers_on_other_threads_see_whole_batches_only),
        T(test_readers_see_whole_batches_while_the_writer_applies_and_compacts),
        T(test_writer_is_not_held_up_by_a_reader_parked_mid_range),
        T(test_open_refuses_foreign_corrupt_and_newer_files),
        T(test_a_schema_2_store_is_upgraded_at_open_and_reads_the_same),
        T(test_a_schema_2_store_it_cannot_number_is_refused_untouched),
        T(test_writes_past_the_last_revision_are_refused_and_reads_go_on),
        T(test_a_request_changing_too_many_keys_is_refused_whole),
        T(test_size_and_defragmentation),
        T(test_checkpoint_says_whether_it_reached_the_end),
        T(test_checkpoint_elsewhere_leaves_the_wal_to_a_checkpointer),
        T(test_checkpoint_elsewhere_has_a_backstop),
        T(test_a_checkpointer_works_beside_the_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
