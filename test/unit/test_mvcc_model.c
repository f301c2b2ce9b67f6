/*
 * storage/mvcc against a reference model: long random sequences of requests
 * (puts, deletes, txns with nested txns, ranges at random past revisions,
 * compactions, leases, records), batches, replays, compaction steps and
 * reopens; every response, every event and the whole stored state must agree
 * with test_mvcc_model.h's model.  Odd seeds read through a value cache small
 * enough to evict all the time.  MVCC_SEEDS and MVCC_OPS make it longer.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "test/unit/test_mvcc_model.h"

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : dflt;
}

struct run {
    char dir[64];
    struct mvcc_store *s;
    struct mvcc_reader *rd;
    size_t value_cache_bytes;
    uint64_t cache_hits, cache_misses; /* over every open */
};

static void run_open(struct run *x, bool finish)
{
    char err[256];
    struct mvcc_options o = {.finish_compaction = finish, .value_cache_bytes = x->value_cache_bytes};
    int rc = mvcc_open(x->dir, &o, &x->s, err, sizeof(err));
    if (rc)
        print_message("mvcc_open: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(mvcc_reader_open(x->s, &x->rd), 0);
}

static void run_close(struct run *x)
{
    struct mvcc_status st;
    assert_int_equal(mvcc_reader_status(x->rd, &st), 0);
    x->cache_hits += st.value_cache_hits;
    x->cache_misses += st.value_cache_misses;
    mvcc_reader_close(x->rd);
    mvcc_close(x->s);
    x->rd = NULL;
    x->s = NULL;
}

static void check_read(struct run *x, const struct model *m, struct pool *p, struct rng *r)
{
    struct mvcc_range_req q;
    gen_range_req(r, p, m, &q);
    struct mvcc_range_result *res = NULL;
    int64_t crev = -1;
    int rc = mvcc_range(x->rd, &q, &res, &crev);
    struct mvcc_range_resp want;
    int wrc = m_range(m, p, &q, m->rev, &want);
    assert_int_equal(rc, wrc);
    if (rc == -CAIRN_E_COMPACTED)
        assert_int_equal(crev, m->compact_rev);
    if (rc == 0) {
        assert_int_equal(res->revision, m->rev);
        range_eq(&res->resp, &want);
        mvcc_range_result_free(res);
        /* again, served from what the first read left in the value cache */
        if (x->value_cache_bytes && chance(r, 50)) {
            assert_int_equal(mvcc_range(x->rd, &q, &res, NULL), 0);
            range_eq(&res->resp, &want);
            mvcc_range_result_free(res);
        }
    }
}

static void run_seed(uint64_t seed, int nops)
{
    struct run x = {0};
    struct model m;
    struct pool p = {0}, pm = {0};
    struct rng r = {seed * 0x9E3779B97F4A7C15ULL + 1};
    struct mvcc_entry batch[8];
    size_t nbatch = 0;
    uint64_t index = 0;
    snprintf(x.dir, sizeof(x.dir), "/tmp/test_mvcc_model.XXXXXX");
    assert_non_null(mkdtemp(x.dir));
    /* 4 KiB: its budget binds before its 64 ways fill; 64 KiB: the ways fill first */
    x.value_cache_bytes = seed % 2 == 0 ? 0 : seed % 4 == 1 ? 4 << 10 : 64 << 10;
    run_open(&x, false);
    model_init(&m);
    for (int op = 0; op < nops; op++) {
        int a = rnd(&r, 100);
        if (a < 2) {
            run_close(&x);
            run_open(&x, chance(&r, 50));
        } else if (a < 7) {
            bool done;
            for (int i = rnd(&r, 3); i >= 0; i--)
                assert_int_equal(mvcc_compact_step(x.s, 1 + (size_t)rnd(&r, 8), &done), 0);
        } else if (a < 20) {
            check_read(&x, &m, &pm, &r);
        } else if (a < 22) {
            bool done = !chance(&r, 50);
            while (!done)
                assert_int_equal(mvcc_compact_step(x.s, 0, &done), 0);
            check_store(&m, x.rd, mvcc_compact_pending(x.s) ? NULL : mvcc_path(x.s));
        } else if (a < 24 && nbatch) {
            /* a replay of the last batch: all skipped, nothing changes */
            struct mvcc_result *res;
            assert_int_equal(mvcc_apply(x.s, batch, nbatch, &res), 0);
            for (size_t i = 0; i < nbatch; i++)
                assert_true(res->entries[i].skipped);
            assert_int_equal(res->n_events, 0);
            assert_int_equal(res->revision, m.rev);
            mvcc_result_free(res);
        } else {
            pool_reset(&p);
            pool_reset(&pm);
            nbatch = 1 + (size_t)rnd(&r, 8);
            for (size_t i = 0; i < nbatch; i++) {
                batch[i].index = ++index;
                batch[i].term = 1 + index / 100;
                gen_request(&r, &p, &m, &batch[i].req);
            }
            /* a quarter of the batches without old values in events (nobody watching) */
            bool values = chance(&r, 75);
            mvcc_set_event_values(x.s, values);
            struct mvcc_result *res;
            assert_int_equal(mvcc_apply(x.s, batch, nbatch, &res), 0);
            assert_int_equal(res->event_values, values);
            assert_int_equal(res->n_entries, nbatch);
            m.nevents = 0;
            for (size_t i = 0; i < nbatch; i++) {
                struct mvcc_applied want;
                model_apply(&m, &pm, &batch[i], &want);
                const struct mvcc_applied *got = &res->entries[i];
                assert_false(got->skipped);
                resp_eq(&got->resp, &want.resp);
                assert_int_equal(got->first_event, want.first_event);
                assert_int_equal(got->n_events, want.n_events);
            }
            assert_int_equal(res->n_events, m.nevents);
            for (size_t i = 0; i < m.nevents; i++) {
                struct mvcc_event want = m.events[i];
                struct mvcc_kv prev;
                const struct mvcc_event *got = &res->events[i];
                if (!values && want.prev_kv && got->prev_kv && got->prev_kv->value.len == 0) {
                    prev = *want.prev_kv; /* all but the value (a request that read it anyway has it) */
                    prev.value = (struct mvcc_buf){NULL, 0};
                    want.prev_kv = &prev;
                }
                event_eq(&res->events[i], &want);
            }
            assert_int_equal(res->revision, m.rev);
            assert_int_equal(res->consistent_index, m.ci);
            mvcc_result_free(res);
        }
    }
    bool done = false;
    while (!done)
        assert_int_equal(mvcc_compact_step(x.s, 0, &done), 0);
    check_store(&m, x.rd, mvcc_path(x.s));
    run_close(&x);
    if (x.value_cache_bytes) /* the cache was used, and the reads above agreed with the model */
        assert_true(x.cache_hits > 0 && x.cache_misses > 0);
    else
        assert_true(x.cache_hits == 0 && x.cache_misses == 0);
    print_message("seed %llu: value cache %zu bytes, %llu hits, %llu misses\n", (unsigned long long)seed,
                  x.value_cache_bytes, (unsigned long long)x.cache_hits, (unsigned long long)x.cache_misses);
    model_free(&m);
    pool_free(&p);
    pool_free(&pm);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", x.dir);
    assert_int_equal(system(cmd), 0);
}

static void test_random_sequences_agree_with_the_model(void **state)
{
    (void)state;
    int seeds = env_int("MVCC_SEEDS", 50), ops = env_int("MVCC_OPS", 2000);
    uint64_t first = (uint64_t)env_int("MVCC_SEED", 1);
    for (uint64_t s = first; s < first + (uint64_t)seeds; s++) {
        run_seed(s, ops);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_sequences_agree_with_the_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
